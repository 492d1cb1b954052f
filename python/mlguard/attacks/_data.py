"""What every attack shares: the attacker's data in any common form, a private copy of the
model, and the layers that the literature's attacks name ("the last layer", "the last conv")."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .._checks import check_int, check_real
from ..files.model import resolve_arch


class Batches:
    """Re-iterable (x, y) batches from a DataLoader, a Dataset or an (x, y) tensor pair.

    x must already be what the model takes (normalized float tensors); a DataLoader is
    used as it is, a Dataset or a tensor pair is batched with a seeded shuffle.
    """

    def __init__(self, data, batch_size: int = 128, seed: int = 0, shuffle: bool = True,
                 name: str = "data"):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.seed, self.name = int(seed), name
        if isinstance(data, DataLoader):
            self.loader = data
            self.size = _length(data.dataset)
        elif isinstance(data, Dataset):
            self.loader = self._loader(data, batch_size, shuffle)
            self.size = _length(data)
        elif isinstance(data, (tuple, list)) and len(data) == 2 \
                and all(isinstance(t, torch.Tensor) for t in data):
            x, y = data
            if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
                raise ValueError(f"{name} as (x, y) needs x of shape (N, ...) and labels y of "
                                 f"shape (N,), got x {tuple(x.shape)} and y {tuple(y.shape)}")
            if not x.is_floating_point():
                raise ValueError(f"{name} x must be float tensors as the model takes them "
                                 f"(normalized), got dtype {x.dtype}")
            self.loader = self._loader(TensorDataset(x, y), batch_size, shuffle)
            self.size = len(x)
        else:
            raise TypeError(f"{name} must be a torch DataLoader, a Dataset or an (x, y) pair of "
                            f"tensors, got {type(data).__name__}")
        if self.size == 0:
            raise ValueError(f"{name} is empty: it needs at least one sample")

    def _loader(self, dataset, batch_size: int, shuffle: bool) -> DataLoader:
        self._generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                          generator=self._generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError(f"{self.name} must yield (x, y) batches, got "
                                 f"{type(batch).__name__}")
            yield batch[0], batch[1]

    def describe(self) -> str:
        return f"{self.size} samples" if self.size is not None else "a DataLoader"


def _length(dataset) -> int | None:
    try:
        return len(dataset)
    except TypeError:  # an IterableDataset
        return None


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy that shares no tensor with `model`: attacks never change their input."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return copy.deepcopy(model)


def check_student(student: nn.Module, victim: nn.Module, batches: Batches,
                  argument: str) -> None:
    """A student of another architecture must take the attacker's inputs and give as many
    outputs as the victim: tried on one sample before any training (modes restored), so a
    mismatch is an error naming `argument`, not a traceback in the middle of a run."""
    try:
        x = batches.loader.dataset[0][0][None]
    except (TypeError, IndexError, KeyError, NotImplementedError):
        return  # an iterable dataset: nothing to try without consuming it
    modes = student.training, victim.training
    student.eval(), victim.eval()
    try:
        with torch.no_grad():
            got = student(x.to(device_of(student)))
            want = victim(x.to(device_of(victim)))
    except RuntimeError as e:
        raise ValueError(f"{argument}: the student cannot take the attacker's inputs "
                         f"{tuple(x.shape[1:])}: {str(e).splitlines()[0]}") from None
    finally:
        student.train(modes[0]), victim.train(modes[1])
    if got.shape[1:] != want.shape[1:]:
        raise ValueError(f"{argument}: the student gives outputs of shape {tuple(got.shape[1:])}"
                         f", the victim {tuple(want.shape[1:])}")


def fresh_student(model: nn.Module, factory, seed: int, argument: str) -> nn.Module:
    """A model to train from nothing: `factory()` (a callable or "package.module:factory",
    so a config file can name another architecture), or the victim's architecture with every
    layer re-initialized by its reset_parameters() under `seed` (no tensor shared); a
    parameter no reset_parameters() covers is refused, naming the `argument` to use."""
    if isinstance(factory, str):
        try:
            factory = resolve_arch(factory)
        except ValueError as e:
            raise ValueError(f"{argument}: {e}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if factory is not None:
            if not callable(factory):
                raise TypeError(f"{argument} must be a zero-argument factory, got "
                                f"{type(factory).__name__}")
            student = factory()
            if not isinstance(student, nn.Module):
                raise TypeError(f"{argument}() must return an nn.Module, got "
                                f"{type(student).__name__}")
            return student.to(device_of(model))
        if getattr(model, "is_api", False):  # e.g. DawnWrapper: its forward is no_grad
            raise ValueError(f"the victim is a prediction API ({type(model).__name__}), not a "
                             f"network to re-initialize; give {argument}= the student's "
                             "architecture")
        student = private_copy(model)
        reset = [m for m in student.modules() if hasattr(m, "reset_parameters")]
        for m in reset:
            m.reset_parameters()
    covered = {id(p) for m in reset for p in m.parameters(recurse=False)}
    if any(p.is_floating_point() and p.numel() > 0 and id(p) not in covered
           for p in student.parameters()):
        raise ValueError(f"the victim has parameters that no reset_parameters() "
                         f"re-initializes; give {argument}= a factory")
    return student


def device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def last_linear(model: nn.Module, name: str | None = None) -> tuple[str, nn.Module]:
    """The classifier head: the module called `name`, or the last nn.Linear registered
    (for Sequential models and torchvision's classifiers, the final one applied)."""
    if name is not None:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"last_layer={name!r} is not a submodule of the model; its modules "
                             f"are {[n for n, _ in model.named_modules() if n][:20]}") from None
        if not isinstance(module, (nn.Linear, nn.Conv2d)) or \
                not hasattr(module, "reset_parameters"):
            raise ValueError(f"last_layer={name!r} is a {type(module).__name__}; it must be an "
                             "nn.Linear (or a 1x1 nn.Conv2d head)")
        return name, module
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError("the model has no nn.Linear layer: name its last layer with "
                         "last_layer='...'")
    return found[-1]


def last_conv(model: nn.Module, name: str | None = None) -> tuple[str, nn.Conv2d]:
    """The last nn.Conv2d registered, or the one called `name` (fine-pruning's layer)."""
    if name is not None:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"layer={name!r} is not a submodule of the model") from None
        if not isinstance(module, nn.Conv2d):
            raise ValueError(f"layer={name!r} is a {type(module).__name__}, not an nn.Conv2d")
        return name, module
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not found:
        raise ValueError("the model has no nn.Conv2d layer to fine-prune: name one with layer=")
    return found[-1]


def weight_tensors(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weights that magnitude pruning and quantization act on: floating parameters
    with at least 2 dimensions (conv kernels, linear matrices), not biases or norms."""
    return [(n, p) for n, p in model.named_parameters() if p.is_floating_point() and p.dim() >= 2]


class TrainingDiverged(RuntimeError):
    """An attack's training produced non-finite losses or weights: its model is not an attack
    result (it would read as "mark removed") but a failure, journaled as one."""


def train_epochs(model: nn.Module, data: Batches, epochs: int, optimizer, loss_fn,
                 after_step=None) -> None:
    """The attacker's plain training loop: `loss_fn(model, x, y)` per batch. Raises
    TrainingDiverged when a loss or, at the end, a weight is not finite (checked once per
    epoch: no host sync per step)."""
    device = device_of(model)
    model.train()
    for _ in range(epochs):
        finite = torch.ones((), dtype=torch.bool, device=device)
        for x, y in data:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, x.to(device), y.to(device))
            finite &= torch.isfinite(loss.detach()).all()
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
        if not finite:
            raise _diverged(optimizer, "a training loss was not finite")
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise _diverged(optimizer, "the trained weights are not finite")
    model.eval()


def _diverged(optimizer, what: str) -> TrainingDiverged:
    lrs = sorted({g["lr"] for g in optimizer.param_groups})
    return TrainingDiverged(f"the attack's training diverged: {what}; lower its lr (now "
                            f"{', '.join(f'{lr:g}' for lr in lrs)}) or check the data for "
                            "non-finite values")


def info(model: nn.Module, **figures) -> nn.Module:
    """Attaches what the attack did (e.g. the exact pruned fraction) as `model.attack_info`."""
    model.attack_info = figures
    return model



def check_normalization(mean, std) -> None:
    """Query-side and pixel-space attacks need both of the model's input mean and std, or
    neither (inputs already in [0, 1])."""
    if (mean is None) != (std is None):
        raise ValueError(f"mean and std go together (the model's input normalization), got "
                         f"mean={mean!r}, std={std!r}")


LABEL_SOURCES = ("victim", "data")


def label_source(victim: nn.Module, labels: str):
    """(x, y) -> the labels the attacker trains on: the victim's answers (`"victim"`: a thief
    who queries the model, WRT's `true_labels: False`) or the attacker's own (`"data"`)."""
    if labels not in LABEL_SOURCES:
        raise ValueError(f"labels must be one of {LABEL_SOURCES}, got {labels!r}")
    if labels == "data":
        return lambda x, y: y

    def answers(x, _y):
        was = victim.training
        victim.eval()
        try:
            with torch.no_grad():
                return victim(x).argmax(dim=1)
        finally:
            victim.train(was)

    return answers


def first_samples(batches: Batches, n: int, labels, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` attacker samples on `device`, labelled by `labels` (label_source)."""
    xs, ys, have = [], [], 0
    for x, y in batches:
        x = x.to(device)
        xs.append(x)
        ys.append(labels(x, y.to(device)))
        have += len(x)
        if have >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def train_copy(model: nn.Module, data, loss_fn, epochs, lr, batch_size: int, seed: int,
               prepare=None) -> tuple[nn.Module, Batches]:
    """A private copy of `model`, changed by `prepare(copy)` if given, then trained (every
    layer, Adam at `lr`) for `epochs` on the attacker's data with `loss_fn(m, x, y)`."""
    epochs = check_int("epochs", epochs, low=1)
    lr = check_real("lr", lr, low=0, low_open=True)
    batches = Batches(data, batch_size, seed)
    attacked = private_copy(model)
    if prepare is not None:
        with torch.no_grad():
            prepare(attacked)
    train_epochs(attacked, batches, epochs, torch.optim.Adam(attacked.parameters(), lr=lr),
                 loss_fn)
    return attacked, batches
