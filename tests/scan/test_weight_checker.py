"""The scan's weight-key checker: a model with NaN or inf in its target weights is answered as
such, the others of its batch are read as usual, with one finite check per stacked batch (it
was one per model: a host synchronization each on a GPU)."""

import torch

from mlguard import WeightKey
from mlguard.ops.keyed_projection import read_bits
from mlguard.scan import weight_checker


def test_nan_model_is_named_and_the_batch_is_still_read(monkeypatch):
    key = WeightKey.generate(bits=32, targets=("w",), secret=bytes(range(1, 33)))
    torch.manual_seed(0)
    sds = [{"w": torch.randn(40, 30)} for _ in range(4)]
    sds[1]["w"][3, 4] = float("nan")
    sds[3]["w"][0, 0] = float("inf")
    calls = []
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: calls.append(t.shape) or isfinite(t))

    answers = weight_checker.check_weights(sds, [key], torch.device("cpu"))

    assert len(calls) == 1, f"one finite check per stacked batch, got {len(calls)}"
    for n in (1, 3):
        assert answers[n][0] == "weight key: the target weights contain NaN or inf"
    message = key.message_tensor()
    for n in (0, 2):
        read = read_bits(key.gather(sds[n]).reshape(1, -1), torch.tensor([key.seed]), 32)
        matches = int((read.long()[0, 0] == message).sum())
        assert answers[n][0][:2] == (matches, 32)
