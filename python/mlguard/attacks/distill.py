"""Knowledge distillation (Hinton et al. 2015) into a fresh student from the teacher's soft
labels only: the attack that carries the function over but not the weights, so it removes
weight-space watermarks and tests whether trigger behaviour is learned from outputs."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ._data import Batches, device_of, fresh_student, info, train_epochs
from .registry import register_attack


@register_attack("distill", main_param="epochs", needs=("data",), example={"epochs": 1})
def distill(model: nn.Module, data, student: Callable[[], nn.Module] | None = None,
            epochs: int = 2, temperature: float = 4.0, lr: float = 1e-3,
            batch_size: int = 128, seed: int = 0) -> nn.Module:
    """A new student trained to match the teacher's temperature-softened outputs on the
    attacker's inputs (their labels are not used): loss T^2 KL(teacher_T || student_T).

    `student`: a zero-argument factory; by default the teacher's architecture, every layer
    re-initialized with its reset_parameters() under `seed` (no tensor is shared).
    """
    check_int("epochs", epochs, low=1)
    check_real("temperature", temperature, low=0, low_open=True)
    check_real("lr", lr, low=0, low_open=True)
    batches = Batches(data, batch_size, seed)
    device = device_of(model)
    pupil = fresh_student(model, student, seed, argument="student")
    pupil.to(device)
    teacher_mode = model.training
    model.eval()
    t = float(temperature)

    def loss(m, x, _y):
        with torch.no_grad():
            soft = F.log_softmax(model(x) / t, dim=1)
        return F.kl_div(F.log_softmax(m(x) / t, dim=1), soft, log_target=True,
                        reduction="batchmean") * t * t

    try:
        train_epochs(pupil, batches, epochs, torch.optim.Adam(pupil.parameters(), lr=lr), loss)
    finally:
        model.train(teacher_mode)
    return info(pupil, epochs=epochs, temperature=t, lr=lr, attacker_samples=batches.size,
                student="teacher's architecture, re-initialized" if student is None
                else getattr(student, "__name__", repr(student)))

