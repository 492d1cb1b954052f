"""The models an owner trains at fingerprint generation (conferrable adversarial examples,
Lukas et al., ICLR 2021, Sec. 4): *surrogates* derived from the owner's model the way a thief
derives one (a fresh network trained on the owner model's answers), and *references* trained
independently on the ground truth. Small, seeded from the key's secret, CPU-friendly: Adam on
in-memory uint8 images, a few epochs each.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from . import _adversarial as adv


def fit(arch: Callable[[], nn.Module], images: torch.Tensor, labels: torch.Tensor, mean, std,
        epochs: int, seed: int, batch_size: int = 128, lr: float = 1e-3) -> nn.Module:
    """A fresh ``arch()`` (initialized from ``seed``) trained with Adam on ``images`` (uint8
    or [0, 1] floats, normalized with mean/std as the owner's training does) and ``labels``
    (classes (N,), or probabilities (N, C) as soft targets) for ``epochs`` epochs in a
    seeded order; returned in eval mode."""
    torch.manual_seed(seed)
    model = arch()
    if not isinstance(model, nn.Module):
        raise TypeError(f"arch must build a torch.nn.Module, got {type(model).__name__}")
    device = adv.model_device(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(check_int("epochs", epochs, low=1)):
        for idx in torch.randperm(len(images), generator=order).split(batch_size):
            x = adv.normalize(images[idx].to(device).float() / (255.0 if images.dtype
                                                                 == torch.uint8 else 1.0),
                              mean, std)
            loss = F.cross_entropy(model(x), labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def train_owner_models(model: nn.Module, arch: Callable[[], nn.Module], images: torch.Tensor,
                       labels: torch.Tensor, *, public: torch.Tensor | None = None,
                       surrogates: int = 3, references: int = 2, calibration: int = 4,
                       per_model: int = 6000, epochs: int = 3, mean=None, std=None,
                       seed: int = 0, batch_size: int = 256,
                       surrogate_labels: str = "hard") -> dict[str, list[nn.Module]]:
    """The three groups of models a conferrable key is made from, each model on its own
    keyed random ``per_model`` images, initialization and order:

    - ``surrogates``: trained on the owner ``model``'s answers to the owner's ``images`` and
      the unlabeled ``public`` images (``surrogate_labels``: "hard", its top-1, or "soft",
      its posteriors as targets): what retraining on stolen labels gives;
    - ``references``: trained on ``images`` with their true ``labels``, never seeing the owner
      model: the examples are optimized *not* to transfer to them;
    - ``calibration``: trained like the references, held out of the optimization: their reads
      of the finished key bound the verdict's null (an estimate made on models the examples
      were not tuned against).
    """
    surrogates = check_int("surrogates", surrogates, low=1)
    references = check_int("references", references, low=1)
    calibration = check_int("calibration", calibration, low=1)
    per_model = check_int("per_model", per_model, low=1)
    pixels, labels = adv.owner_data(images, labels, 2 ** 31)
    pool = pixels if public is None else torch.cat([pixels, adv.owner_data(
        public, torch.zeros(len(public), dtype=torch.int64), 1)[0]])
    if len(pixels) == 0:
        raise ValueError("images must not be empty: the owner's data trains the models")
    if surrogate_labels not in ("hard", "soft"):
        raise ValueError(f"surrogate_labels must be 'hard' or 'soft', got {surrogate_labels!r}")
    classes = _classes(model, pool[:1], mean, std)
    answers = adv.predictions(model, pool, mean, std, classes, batch_size) \
        if surrogate_labels == "hard" else _posteriors(model, pool, mean, std, batch_size)
    pixels_u8, pool_u8 = _as_u8(pixels), _as_u8(pool)

    def group(number: int, count: int, x: torch.Tensor, y: torch.Tensor) -> list[nn.Module]:
        out = []
        for i in range(count):
            g = ((seed * 3 + number) * 4099 + i) % (2 ** 62)  # distinct per group and model
            pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(g))
            pick = pick[:min(per_model, len(x))]
            out.append(fit(arch, x[pick], y[pick], mean, std, epochs, g))
        return out

    return {"surrogates": group(0, surrogates, pool_u8, answers),
            "references": group(1, references, pixels_u8, labels),
            "calibration": group(2, calibration, pixels_u8, labels)}


def _as_u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round().to(torch.uint8)


@torch.no_grad()
def _posteriors(model: nn.Module, x: torch.Tensor, mean, std, batch_size: int) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        return torch.cat([torch.softmax(model(adv.normalize(b.to(adv.model_device(model)),
                                                            mean, std)).float(), 1).cpu()
                          for b in x.split(batch_size)])
    finally:
        model.train(was)


@torch.no_grad()
def _classes(model: nn.Module, one: torch.Tensor, mean, std) -> int:
    was = model.training
    model.eval()
    try:
        out = model(adv.normalize(one.to(adv.model_device(model)), mean, std))
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < 2:
        raise ValueError("model must output (batch, num_classes) logits")
    return int(out.shape[1])
