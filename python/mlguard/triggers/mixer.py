"""Embedding a trigger-set watermark in an ordinary training loop: one added line."""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist

from .._checks import check_int
from ..keys import TriggerKey
from ..ops import mix_triggers
from .retention_check import RetentionCheck, needed_matches, read_key

# Triggers appended to every batch unless told otherwise, picked from the measurements in
# benchmarks/RESULTS.md (bench_retention.py): 2 left the README's 5,000-image CIFAR-10 subset
# near chance for 6 epochs; 16 watermarks the README Quick start in its 4 epochs (84-88%).
DEFAULT_PER_BATCH = 16
"""Triggers TriggerMixer appends to each batch by default."""
# The adaptive mode (target=) doubles per_batch at most this many times by default: more
# triggers per batch cost step time and crowd out the real data.
DEFAULT_MAX_GROWTH = 4


def _int_or_none(value) -> int | None:
    """`value` as a Python int if it is an integer (numpy and torch ones too), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


class TriggerMixer:
    """Appends `per_batch` trigger samples to every batch: ``x, y = mixer(x, y)``.

    Triggers are taken from the key's trigger set in a cycle, augmented with keyed per-step
    crops (zero padding `pad`, default H // 8) and horizontal flips when `augment`, normalized
    with the key's mean/std, and appended in one fused op. The batch keeps its device, dtype
    and memory format; integer labels come back as int64. The step counter makes a given step
    reproducible (see state_dict()).

    Distributed training: rank r of W ranks takes draws (step * W + r) * per_batch + j, so
    in every step the ranks together take W * per_batch consecutive, distinct draws of the
    cycle (each draw also has its own augmentation). Rank and world size come from the
    default torch.distributed process group when it is initialized at the time of the call,
    or from `rank=` and `world_size=` (given together; they win). Resuming from state_dict()
    with the same world size reproduces every step exactly.

    Pattern-mode keys (key.mode == "pattern", a pattern -> class backdoor): draw d stamps
    the batch's image d % N (N = batch size) with pattern d % K and labels it with that
    pattern's target class. The batch is un-normalized with the key's mean/std, stamped in
    pixel space (patch replaces its region; noise adds and clamps to [0, 1]) and normalized
    again, in float32 elementwise ops (same bits on CPU and CUDA); `augment` does not apply
    (the carriers are the user's own, varied images).

    Retention check (off unless `model` is given): after every `check_every` calls (e.g.
    ``check_every=len(loader)`` for once per epoch) the mixer reads the key from `model`
    exactly as verify() does (eval mode, no gradients; every submodule's mode restored) on
    the model as it stands (trained on all but the batch just mixed), and when verify() would
    not detect the key at `alpha` it warns (UserWarning, one per check) with the matches, the
    matches needed and what to change. `check()` runs one at any time (e.g. after the last
    epoch); `checks` lists them all. Adaptive mode, `target` in (0, 1]: at every check whose
    retention (matches / total) is below `target`, per_batch doubles, up to `max_per_batch`
    (default 4 x the starting per_batch, and never above the key's size); it is never
    lowered (the triggers would be forgotten). Under torch.distributed pass the same
    replicated model on every rank: every rank checks at the same step and so keeps the same
    per_batch. A raise makes the cycle of draws skip ahead once; state_dict() keeps per_batch.
    """

    def __init__(self, key: TriggerKey, per_batch: int = DEFAULT_PER_BATCH, augment: bool = True,
                 pad: int | None = None, *,
                 rank: int | None = None, world_size: int | None = None,
                 model: torch.nn.Module | None = None, check_every: int | None = None,
                 alpha: float = 1e-6, target: float | None = None,
                 max_per_batch: int | None = None):
        if not isinstance(key, TriggerKey):
            raise TypeError(f"key must be a TriggerKey, got {type(key).__name__}")
        per_batch = check_int("per_batch", per_batch, low=0)
        if key.mode != "pattern" and per_batch > key.size:
            raise ValueError(f"per_batch={per_batch} is larger than the key's {key.size} "
                             f"triggers: a batch would hold the same trigger twice; use "
                             f"per_batch <= {key.size} or a key with more triggers")
        if (rank is None) != (world_size is None):
            raise ValueError(f"rank and world_size must be given together, got rank={rank!r}, "
                             f"world_size={world_size!r}")
        if world_size is not None:
            world_size = check_int("world_size", world_size, low=1)
            number = _int_or_none(rank)
            if number is None or not 0 <= number < world_size:
                raise ValueError(f"rank must be an int in [0, world_size={world_size}), "
                                 f"got {rank!r}")
            rank = number
        self.key = key
        self.per_batch = per_batch
        self.augment = bool(augment)
        self.pad = (key.shape[1] // 8 if pad is None else check_int("pad", pad, low=0)) if augment else 0
        self.rank, self.world_size = rank, world_size
        self.step = 0
        self.drawn = 0  # trigger draws on all ranks so far (views per trigger x key size)
        self._setup_check(model, check_every, alpha, target, max_per_batch)
        self._seed = key.seed("augment")
        self._mean, self._std = key.normalization()
        self._banks: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _setup_check(self, model, check_every, alpha, target, max_per_batch) -> None:
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module to check, got "
                            f"{type(model).__name__}")
        if model is None and (check_every is not None or target is not None
                              or max_per_batch is not None):
            raise ValueError("check_every, target and max_per_batch need model=, the model "
                             "being trained, to check (got model=None)")
        if model is not None and check_every is None:
            raise ValueError("model= needs check_every=, the steps between retention checks "
                             "(check_every=len(loader) for once per epoch)")
        self.model = model
        self.check_every = None if check_every is None else \
            check_int("check_every", check_every, low=1)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
            raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
        self.alpha = float(alpha)
        if target is not None and (isinstance(target, bool) or not isinstance(target, int | float)
                                   or not 0 < target <= 1):
            raise ValueError(f"target must be a retention in (0, 1], got {target!r}")
        self.target = None if target is None else float(target)
        limit = self.key.size if self.key.mode != "pattern" else None
        if max_per_batch is None:
            max_per_batch = DEFAULT_MAX_GROWTH * self.per_batch
            if limit is not None:
                max_per_batch = min(max_per_batch, limit)
        else:
            max_per_batch = check_int("max_per_batch", max_per_batch, low=self.per_batch)
            if limit is not None and max_per_batch > limit:
                raise ValueError(f"max_per_batch={max_per_batch} is larger than the key's "
                                 f"{limit} triggers; use max_per_batch <= {limit}")
        if self.target is not None and self.per_batch < 1:
            raise ValueError(f"target= raises per_batch by doubling it, which needs "
                             f"per_batch >= 1, got per_batch={self.per_batch}")
        self.max_per_batch = max_per_batch
        self.checks: list[RetentionCheck] = []
        units = self.key.patterns if self.key.mode == "pattern" else self.key.size
        self._units = units
        self._needed = needed_matches(units, 1.0 / self.key.num_classes, self.alpha)

    def check(self) -> RetentionCheck:
        """Reads the key from the model now (as verify() does), warns when verify() would not
        detect it at `alpha`, raises per_batch in the adaptive mode; returns the result."""
        return self._check()

    def _check(self) -> RetentionCheck:
        # stacklevel 3 below: the warning names the line that called check() or the mixer.
        if self.model is None:
            raise ValueError("this mixer has no model to check: TriggerMixer(key, model=model, "
                             "check_every=...)")
        matches, total = read_key(self.model, self.key)
        detected = matches >= self._needed
        before = self.per_batch
        if self.target is not None and matches / total < self.target:
            self.per_batch = min(2 * self.per_batch, self.max_per_batch)
        result = RetentionCheck(step=self.step, views=self.drawn / self._units, matches=matches,
                                total=total, needed=self._needed, alpha=self.alpha,
                                detected=detected, per_batch=self.per_batch,
                                raised_from=before if self.per_batch != before else None)
        self.checks.append(result)
        if not detected or result.raised_from is not None:
            warnings.warn(self._advice(result), UserWarning, stacklevel=3)
        return result

    def _advice(self, result: RetentionCheck) -> str:
        what = f"TriggerMixer retention check, {result}"
        if result.detected:  # a raise toward the target while already detected
            return (f"{what}; below target={self.target:g}, so per_batch is raised from "
                    f"{result.raised_from} to {self.per_batch} (max_per_batch="
                    f"{self.max_per_batch})")
        image_mode = self.key.mode != "pattern"
        most = f"at most the key's {self.key.size}" if image_mode else ""
        if result.raised_from is not None:
            fix = (f"per_batch is raised from {result.raised_from} to {self.per_batch} "
                   f"(below target={self.target:g}; max_per_batch={self.max_per_batch})")
        elif self.target is None:
            fix = (f"train more steps or raise per_batch (now {self.per_batch}"
                   f"{', ' + most if most else ''}), or pass target= to let the mixer raise it")
        elif result.retention < self.target:
            fix = (f"per_batch is at max_per_batch={self.max_per_batch}: raise max_per_batch"
                   f"{' (' + most + ')' if most else ''} or train more steps")
        else:
            fix = f"train more steps or raise target (now {self.target:g})"
        unit = "triggers" if image_mode else "patterns"
        return (f"{what}: the key would not be detected if training stopped now; {fix}. "
                f"Retention follows the views per trigger (steps x per_batch x ranks / "
                f"{self._units} {unit}); docs/guides/trigger-watermarks.md (sizing, per "
                f"trigger kind) gives the views each kind needed (this key: "
                f"{self.key.kind!r}).")

    def bank(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The trigger set and labels on `device`, made once per device."""
        device = torch.device(device)
        if device not in self._banks:
            self._banks[device] = self.key.materialize(device)
        return self._banks[device]

    def placement(self) -> tuple[int, int]:
        """(rank, world_size) this mixer draws for: explicit, the process group's, or (0, 1)."""
        if self.world_size is not None:
            return self.rank, self.world_size  # type: ignore[return-value]
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != self.key.shape:
            raise ValueError(f"x must be (N, *{self.key.shape}) to match the key, got {tuple(x.shape)}")
        if y.dtype != torch.int64:
            if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
            y = y.long()
        rank, world = self.placement()
        if self.key.mode == "pattern":
            out = self._stamp_batch(x, y, self.step * world + rank)
        else:
            bank, labels = self.bank(x.device)
            # The kernel's draw index is step * per_batch + j; a virtual step of step * W + r
            # gives rank r the r-th of W consecutive slices of the cycle in this step.
            out = mix_triggers(x, y, bank, labels, self.step * world + rank, self.per_batch,
                               self._seed, self.pad, self.augment, self._mean, self._std)
        self.step += 1
        self.drawn += self.per_batch * world
        if self.check_every is not None and self.step % self.check_every == 0:
            self._check()
        return out

    def _stamp_batch(self, x: torch.Tensor, y: torch.Tensor,
                     virtual_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] < 1:
            raise ValueError("x is an empty batch: pattern-mode keys stamp the batch's own "
                             "images, so a batch needs at least one")
        draws = virtual_step * self.per_batch + torch.arange(self.per_batch, device=x.device)
        which = draws % self.key.patterns
        carriers = x.detach()[draws % x.shape[0]].float()
        mean = torch.tensor(self._mean, dtype=torch.float32, device=x.device)[:, None, None]
        std = torch.tensor(self._std, dtype=torch.float32, device=x.device)[:, None, None]
        stamped = self.key.normalize(self.key.stamp(carriers * std + mean, which)).to(x.dtype)
        labels = self.key.targets.to(x.device)[which]
        channels_last = x.dim() == 4 and not x.is_contiguous() and \
            x.is_contiguous(memory_format=torch.channels_last)
        out = torch.cat([x, stamped])
        if channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out, torch.cat([y, labels])

    def state_dict(self) -> dict:
        return {"step": self.step, "per_batch": self.per_batch, "drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        """Restores the step (and per_batch and the draw count, when the state has them:
        states saved before the adaptive mode hold only the step)."""
        step = check_int("state['step']", state["step"], low=0)
        per_batch = check_int("state['per_batch']", state.get("per_batch", self.per_batch), low=0)
        if self.key.mode != "pattern" and per_batch > self.key.size:
            raise ValueError(f"state['per_batch']={per_batch} is larger than the key's "
                             f"{self.key.size} triggers: a state of another key?")
        self.step, self.per_batch = step, per_batch
        self.drawn = check_int("state['drawn']",
                               state.get("drawn", step * per_batch * self.placement()[1]), low=0)


class MixedLoader:
    """Wraps a DataLoader so that every (x, y, *rest) batch comes out with triggers appended
    to x and y; `rest` (indices, weights, ...) passes through unchanged and is not extended."""

    def __init__(self, loader: Iterable, mixer: TriggerMixer, device=None):
        self.loader, self.mixer = loader, mixer
        self.device = None if device is None else torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple]:
        for batch in self.loader:
            x, y, rest = split_batch(batch)
            if self.device is not None:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
            yield (*self.mixer(x, y), *rest)


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """(x, y, rest) of a loader batch (x, y, *rest)."""
    if isinstance(batch, torch.Tensor) or not isinstance(batch, tuple | list) or len(batch) < 2:
        raise TypeError(f"batches must be (x, y, ...) sequences, got {type(batch).__name__}")
    return batch[0], batch[1], tuple(batch[2:])


def mix(loader: Iterable, key: TriggerKey, device=None, per_batch: int = DEFAULT_PER_BATCH,
        augment: bool = True, pad: int | None = None, *,
        rank: int | None = None, world_size: int | None = None,
        model: torch.nn.Module | None = None, check_every: int | None = None,
        alpha: float = 1e-6, target: float | None = None,
        max_per_batch: int | None = None) -> MixedLoader:
    """``for x, y in mlguard.mix(loader, key, device="cuda"): ...`` — batches with triggers.

    With `model`, the mixer checks retention (see TriggerMixer) every `check_every` batches,
    by default len(loader): once per epoch, at its last batch."""
    if model is not None and check_every is None:
        try:
            check_every = len(loader)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError("model= with a loader that has no len() needs check_every=, the "
                             "batches between retention checks") from None
        if check_every < 1:
            raise ValueError(f"the loader is empty (len {check_every}): nothing to check")
    return MixedLoader(loader, TriggerMixer(key, per_batch, augment, pad, rank=rank,
                                            world_size=world_size, model=model,
                                            check_every=check_every, alpha=alpha,
                                            target=target, max_per_batch=max_per_batch),
                       device)
