"""Checkpoints as they leak: the one place that turns what a model file holds into a flat
{name: tensor} state_dict.

Training code saves weights in many shapes; all of these give the same state_dict:

- a plain state_dict (torch.save or safetensors);
- a checkpoint dict that wraps it under "state_dict", "model_state_dict", "model" or
  "module", beside anything else ("epoch", "optimizer", ...);
- names prefixed by DistributedDataParallel / DataParallel ("module.", on every name) or by
  torch.compile ("_orig_mod.", in front of the compiled module's names).

Tensors keep the dtype they have in the file. Loading never unpickles code (torch.load with
weights_only=True, or safetensors), and TorchScript archives are refused (loading one runs
code from the file).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

from .state_dict import load_state_dict as load_stream

# Where checkpoint dicts keep the weights, in the order they are tried.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")
DDP_PREFIX = "module."  # DistributedDataParallel / DataParallel: on every name or on none
COMPILE_PART = "_orig_mod"  # torch.compile: "_orig_mod.<name>", also inside a submodule's name
_READ_BLOCK = 1 << 20
_MAX_DEPTH = 4  # {"model": {"state_dict": ...}} at most this deep
_SHOWN = 5  # names listed in an error message


class CheckpointError(ValueError):
    """What a file holds is not a state_dict mlguard can use; the message says why."""


def unwrap(obj: Any, what: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """The flat state_dict in `obj` (what torch.load or safetensors gave), unwrapped and with
    the DDP / torch.compile prefixes removed (see the module docstring).

    Raises CheckpointError naming `what` for a checkpoint dict with no state_dict or with two
    candidates, and for entries that are not tensors.
    """
    state = _find_state_dict(obj, what, 0)
    return strip_prefixes(state, what)


def _find_state_dict(obj: Any, what: str, depth: int) -> Mapping:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"not a state_dict: {what} holds a {type(obj).__name__}")
    if all(isinstance(v, torch.Tensor) for v in obj.values()) and obj:
        return obj
    found = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
    distinct = [k for i, k in enumerate(found) if all(obj[k] is not obj[j] for j in found[:i])]
    if len(distinct) > 1:
        raise CheckpointError(
            f"ambiguous checkpoint: {what} holds {len(distinct)} candidate state_dicts "
            f"({', '.join(repr(k) for k in distinct)}); save the one to check on its own")
    if distinct and depth < _MAX_DEPTH:
        return _find_state_dict(obj[distinct[0]], f"{what}[{distinct[0]!r}]", depth + 1)
    bad = next(((k, v) for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if bad is None:  # an empty dict
        raise CheckpointError(f"not a state_dict: {what} is empty")
    name, value = bad
    raise CheckpointError(
        f"not a state_dict: entry {str(name)[:80]!r} is a {type(value).__name__}, not a "
        f"tensor, and no state_dict is found under {', '.join(map(repr, WRAPPER_KEYS))} "
        f"({what} holds {listing(obj)})")


def strip_prefixes(state: Mapping, what: str = "the state_dict") -> dict[str, torch.Tensor]:
    """`state` with "_orig_mod." name parts removed and a "module." prefix that every name
    carries removed (repeatedly: DDP around a compiled model and the other way round)."""
    bad = [k for k in state if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"not a state_dict: {what} has names that are not str: "
                              f"{bad[:_SHOWN]!r}")
    names = list(state)
    stripped = [".".join(p for p in n.split(".") if p != COMPILE_PART) for n in names]
    while stripped and all(n.startswith(DDP_PREFIX) for n in stripped):
        stripped = [n[len(DDP_PREFIX):] for n in stripped]
        stripped = [".".join(p for p in n.split(".") if p != COMPILE_PART) for n in stripped]
    if len(set(stripped)) != len(stripped):
        seen: set[str] = set()
        clash = next(n for n in stripped if n in seen or seen.add(n))
        raise CheckpointError(f"{what} has two entries named {clash!r} once the "
                              f"'{DDP_PREFIX}' / '{COMPILE_PART}.' prefixes are removed")
    return {new: state[old] for new, old in zip(stripped, names)}


def is_torchscript(names: list[str]) -> bool:
    """Whether a zip archive's member names are those of a TorchScript archive."""
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """(unwrapped state_dict on the CPU, SHA-256 of the file's bytes).

    Both come from one open file, so a file replaced meanwhile (renamed over) cannot give
    weights from one version and a hash of another; the file is read twice (loading, then
    hashing) rather than held in memory beside its tensors.
    """
    return _read(path, with_hash=True)  # type: ignore[return-value]


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights in a model file as a flat state_dict on the CPU, in the file's dtypes:
    unwrapped from checkpoint dicts, DDP / torch.compile prefixes removed, never unpickling
    code (see the module docstring). Raises CheckpointError (a ValueError) naming the file."""
    return _read(path, with_hash=False)[0]


# A Hugging Face save_pretrained folder keeps its weights in one of these (config.json beside).
PRETRAINED_FILES = ("model.safetensors", "pytorch_model.bin")
PRETRAINED_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def pretrained_weights_file(folder: str | os.PathLike) -> str:
    """The weights file of a `save_pretrained` folder (transformers, timm's
    save_for_hf): model.safetensors, else pytorch_model.bin. Raises CheckpointError for a
    sharded folder (its weights are spread over several files, each a partial state_dict)
    and for a folder with neither."""
    folder = os.fspath(folder)
    for name in PRETRAINED_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    for name in PRETRAINED_INDEXES:
        if os.path.isfile(os.path.join(folder, name)):
            raise CheckpointError(
                f"model folder {folder!r} is a sharded save_pretrained folder ({name}): mlguard "
                "reads a model from one weights file; save it unsharded, e.g. "
                "model.save_pretrained(folder, max_shard_size=\"1000GB\")")
    raise CheckpointError(
        f"model folder {folder!r} holds neither {' nor '.join(PRETRAINED_FILES)}: name a model "
        "file, or a save_pretrained folder")


def _read(path, with_hash: bool) -> tuple[dict[str, torch.Tensor], str | None]:
    path = os.fspath(path)
    if os.path.isdir(path):
        path = pretrained_weights_file(path)
    what = f"model file {path!r}"
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                f.seek(0)
                try:
                    names = zipfile.ZipFile(f).namelist()
                except (zipfile.BadZipFile, ValueError) as e:
                    raise CheckpointError(f"{what}: truncated or corrupt zip archive ({e})") \
                        from None
                if is_torchscript(names):
                    raise CheckpointError(f"{what} is a TorchScript archive: refused, because "
                                          "loading it runs code from the file; save its "
                                          "state_dict instead")
            f.seek(0)
            try:
                obj = load_stream(f, what, map_location="cpu")
            except ValueError as e:
                raise CheckpointError(str(e)) from None
            sha = _sha256(f) if with_hash else None
    except OSError as e:
        raise CheckpointError(f"{what} cannot be read ({e.strerror or e})") from None
    return unwrap(obj, what), sha


def _sha256(f) -> str:
    f.seek(0)
    h = hashlib.sha256()
    block = bytearray(_READ_BLOCK)
    view = memoryview(block)
    while n := f.readinto(block):
        h.update(view[:n])
    return h.hexdigest()


def listing(names) -> str:
    """A few of `names`, quoted, and how many more."""
    names = [str(n)[:60] for n in names]
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(repr(n) for n in names[:_SHOWN]) + more
