"""Model extraction: a new model trained from the victim's answers, which carries over the
function but not the weights (Lukas et al., IEEE S&P 2022, Sec. V-B: the family that removes
every scheme they study).

- retrain: the attacker labels their own images by querying the victim and trains a fresh
  model (the victim's architecture re-initialized, or `arch=` for cross-architecture
  retraining) from scratch, on hard labels (the API's top-1) or soft ones (its posterior).
  WRT's CIFAR-10 budget: 60 epochs, SGD lr 0.1 (momentum 0.9, Nesterov, weight decay 5e-4),
  the rate times 0.2 at 1/3, 7/12 and 5/6 of the epochs, batch 64.
- smooth_retrain: WRT's "smooth retraining" (Lukas et al., Sec. V-B, a novel attack there):
  retraining on the answers of a smoothed victim, each attacker image queried `n_queries`
  times with noise and the answers averaged (the mean of its posteriors, or the majority
  vote of Cohen et al.'s randomized smoothing, ICML 2019) so that the victim's sharp
  decisions around its trigger inputs are not learnt. WRT's code averages the posteriors of
  3 queries (`query_labels_n_times: 3`) under random crop and flip; the paper names Gaussian
  noise, which is the default here (sigma 0.25 in pixel units, Cohen et al.'s smallest
  sigma), noise="crop_flip" is WRT's code.
- knockoff: Knockoff Nets (Orekondy et al., CVPR 2019, the "random" strategy): the same from
  a transfer set of another distribution, on the victim's posteriors.
- transfer: the victim's features (everything but its last layer) under a new head trained
  on the attacker's own task labels; `freeze=False` also fine-tunes the features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ._data import (Batches, check_normalization, check_student, fresh_student, info,
                    last_linear, private_copy, train_epochs)
from .registry import register_attack

LABELS = ("hard", "soft")


def _extract(model, data, arch, labels, epochs, lr, batch_size, seed, *, name,
             answers=None, **recorded) -> nn.Module:
    """Trains a fresh student on the victim's answers; `answers(x)` replaces the victim's
    logits as the teacher (smooth retraining) and returns class probabilities."""
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")
    epochs = check_int("epochs", epochs, low=1)
    lr = check_real("lr", lr, low=0, low_open=True)
    batches = Batches(data, batch_size, seed)
    student = fresh_student(model, arch, seed, argument="arch")
    if arch is not None:
        check_student(student, model, batches, "arch")
    victim_mode = model.training
    model.eval()

    def loss(m, x, _y):  # the attacker's own labels are never used: the API's answers are
        with torch.no_grad():
            answer = model(x).softmax(1) if answers is None else answers(x)
        logits = m(x)
        if labels == "hard":
            return F.cross_entropy(logits, answer.argmax(1))
        return -(answer * F.log_softmax(logits, 1)).sum(1).mean()

    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    milestones = sorted({max(1, round(epochs * f)) for f in (1 / 3, 7 / 12, 5 / 6)})
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.2)
    try:
        for _ in range(epochs):
            train_epochs(student, batches, 1, optimizer, loss)
            schedule.step()
    finally:
        model.train(victim_mode)
    return info(student, extraction=name, labels=labels, epochs=epochs, lr=lr,
                queries=batches.size * epochs * recorded.get("n_queries", 1)
                if batches.size is not None else None,
                attacker_samples=batches.size,
                student="victim's architecture, re-initialized" if arch is None
                else arch if isinstance(arch, str) else getattr(arch, "__name__", repr(arch)),
                **recorded)


@register_attack("retrain", main_param="epochs", needs=("data",), aliases=("retraining",),
                 example={"epochs": 1})
def retrain(model: nn.Module, data, arch: Callable[[], nn.Module] | None = None,
            labels: str = "hard", epochs: int = 60, lr: float = 0.1, batch_size: int = 64,
            seed: int = 0) -> nn.Module:
    """A fresh model trained from scratch on the victim's answers to the attacker's images
    (their own labels unused); `arch` for cross-architecture retraining."""
    return _extract(model, data, arch, labels, epochs, lr, batch_size, seed, name="retrain")


NOISES = ("gaussian", "crop_flip")
VOTES = ("mean", "majority")


@register_attack("smooth_retrain", main_param="epochs", needs=("data", "normalization"),
                 aliases=("smooth_retraining",), example={"epochs": 1})
def smooth_retrain(model: nn.Module, data, arch: Callable[[], nn.Module] | None = None,
                   sigma: float = 0.25, n_queries: int = 3, noise: str = "crop_flip",
                   vote: str = "mean", labels: str = "soft", epochs: int = 60,
                   lr: float = 0.1, batch_size: int = 64, seed: int = 0, mean=None,
                   std=None) -> nn.Module:
    """A fresh model trained from scratch on a smoothed victim's answers.

    Every attacker image is queried `n_queries` times with noise (by default WRT's random
    crop and flip, as its smooth retraining does; or Gaussian of `sigma` in pixel units,
    which only a victim trained under such noise answers usefully: on Fashion-MNIST's
    small_cnn sigma 0.25 made the labels useless and cost 31-75 points) and the answers'
    mean posterior or majority vote (`vote`) is its label (soft: the averaged distribution,
    hard: its top class). The noise is drawn afresh each epoch (the API is queried again)."""
    sigma = check_real("sigma", sigma, low=0)
    n_queries = check_int("n_queries", n_queries, low=1)
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    if vote not in VOTES:
        raise ValueError(f"vote must be one of {VOTES}, got {vote!r}")
    check_normalization(mean, std)
    generator = torch.Generator().manual_seed(seed)

    def answers(x):
        return smoothed_answers(model, x, sigma, n_queries, noise, vote, generator, mean, std)

    return _extract(model, data, arch, labels, epochs, lr, batch_size, seed,
                    name="smooth_retrain", answers=answers, sigma=sigma,
                    n_queries=n_queries, noise=noise, vote=vote)


@torch.no_grad()
def smoothed_answers(model: nn.Module, x: torch.Tensor, sigma: float, n_queries: int,
                     noise: str, vote: str, generator: torch.Generator, mean=None,
                     std=None) -> torch.Tensor:
    """The smoothed victim's class distribution for the batch `x` (model inputs): the mean
    over `n_queries` noised queries of its posterior ("mean") or of its one-hot top class
    ("majority": the vote shares of randomized smoothing). Noise is drawn from `generator`
    in pixel space (the inputs un-normalized by mean/std, clamped to [0, 1], re-normalized)."""
    shape = (1, -1, 1, 1)
    m = torch.zeros(1) if mean is None else torch.tensor(mean, dtype=torch.float32)
    s = torch.ones(1) if std is None else torch.tensor(std, dtype=torch.float32)
    m, s = m.to(x).view(shape), s.to(x).view(shape)
    pixels = x * s + m
    total = 0
    for _ in range(n_queries):
        if noise == "gaussian":
            noisy = pixels + sigma * torch.randn(x.shape, generator=generator).to(x)
            noisy = noisy.clamp(0, 1)
        else:  # WRT's augmentation: 4-pixel zero-padded random crop, then a random flip
            noisy = _crop_flip(pixels, generator)
        out = model((noisy - m) / s)
        total = total + (out.softmax(1) if vote == "mean"
                         else F.one_hot(out.argmax(1), out.shape[1]).to(out.dtype))
    return total / n_queries


def _crop_flip(pixels: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    h, w = pixels.shape[-2:]
    padded = F.pad(pixels, (pad, pad, pad, pad))
    out = torch.empty_like(pixels)
    for i in range(len(pixels)):
        dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(-1) if torch.rand((), generator=generator) < 0.5 else crop
    return out


@register_attack("knockoff", main_param="epochs", needs=("data",), aliases=("knockoff_nets",),
                 example={"epochs": 1})
def knockoff(model: nn.Module, data, arch: Callable[[], nn.Module] | None = None,
             labels: str = "soft", epochs: int = 4, lr: float = 0.1, batch_size: int = 64,
             seed: int = 0) -> nn.Module:
    """A fresh model trained on the victim's posteriors for a transfer set (`data`: images of
    another distribution, labels unused), as Knockoff Nets' random strategy."""
    return _extract(model, data, arch, labels, epochs, lr, batch_size, seed, name="knockoff")


@register_attack("transfer", main_param="epochs", needs=("data",),
                 aliases=("transfer_learning",), example={"epochs": 1})
def transfer(model: nn.Module, data, num_classes: int | None = None, freeze: bool = True,
             epochs: int = 5, lr: float = 1e-3, last_layer: str | None = None,
             batch_size: int = 64, seed: int = 0) -> nn.Module:
    """The victim's features under a new head (`num_classes` outputs; by default the
    victim's) trained on the attacker's own task labels; freeze=False trains all layers."""
    epochs = check_int("epochs", epochs, low=1)
    lr = check_real("lr", lr, low=0, low_open=True)
    batches = Batches(data, batch_size, seed)
    attacked = private_copy(model)
    name, head = last_linear(attacked, last_layer)
    outputs = head.out_features if num_classes is None else check_int("num_classes",
                                                                      num_classes, low=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new_head = nn.Linear(head.in_features, outputs, bias=head.bias is not None)
    attacked.set_submodule(name, new_head.to(head.weight.device))
    if freeze:
        for p in attacked.parameters():
            p.requires_grad_(False)
        for p in new_head.parameters():
            p.requires_grad_(True)
    trained = [p for p in attacked.parameters() if p.requires_grad]
    train_epochs(attacked, batches, epochs, torch.optim.Adam(trained, lr=lr),
                 lambda m, x, y: F.cross_entropy(m(x), y))
    for p, original in zip(attacked.parameters(), model.parameters()):
        p.requires_grad_(original.requires_grad)
    return info(attacked, head=name, num_classes=outputs, freeze=bool(freeze), epochs=epochs,
                lr=lr, attacker_samples=batches.size)
