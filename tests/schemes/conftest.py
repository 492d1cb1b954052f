"""Tiny Fashion-MNIST models shared by the adversarial schemes' tests (trained once per
session): the owner's model, independent reference models, and a clean twin."""

import pytest
import torch

from _adversarial_models import fashion, trained


@pytest.fixture(scope="session")
def tiny_models():
    torch.set_num_threads(1)
    x, y = fashion()
    pool_x, pool_y = x[:20000], y[:20000]
    return {"x": x, "y": y, "owner": trained(0, pool_x, pool_y, 3000, epochs=2),
            "refs": [trained(i, pool_x, pool_y, 1500) for i in (1, 2, 3)],
            "twin": trained(7, pool_x, pool_y, 1500)}
