"""Finding model files and loading them safely: a suspect file is hostile input.

Formats are told apart by their first bytes, never by the file name:

- safetensors (an 8-byte little-endian header length, then a JSON header): tensors and
  nothing else, decoded without copying by ``safetensors_view`` (validated like the
  safetensors library does);
- ``torch.save`` archives (zip) and legacy ``torch.save`` pickles: ``torch.load`` with
  ``weights_only=True`` and ``map_location="cpu"`` only, so a pickle that names a function
  (``os.system``, ``open``, ...) is refused before anything is called;
- TorchScript archives (a zip with ``code/`` and ``constants.pkl``): loading one runs the
  code it contains, so only when the caller passes ``trust_torchscript=True``.

Every problem becomes a ``ModelFileError`` whose message names it ("truncated or corrupt
...", "unsafe pickle refused: ...", "non-finite weights: ..."); the scan turns it into an
error row and goes on.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files.checkpoint import CheckpointError, is_torchscript, unwrap
from ..files.state_dict import NOT_A_MODEL_FILE, detect, load_error
from . import safetensors_view
from .buffers import BufferPool, MemoryStream

# Suffixes picked up when walking a folder; files named explicitly are always scanned.
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".pts", ".ptl", ".jit")
_HASH_CHUNK = 8 << 20  # hashlib releases the GIL for each chunk


class ModelFileError(Exception):
    """A file that cannot be checked; the message names the problem for the error row."""


@dataclass
class ModelFile:
    """A file read into memory: its bytes (`data`, a view of `buffer`), size and SHA-256."""

    path: str
    size: int
    sha256: str
    data: memoryview
    buffer: torch.Tensor  # uint8, possibly larger than the file; from a BufferPool or not


@dataclass
class Decoded:
    """What a file holds: a state_dict (CPU tensors) or, when trusted, a TorchScript module."""

    format: str  # "safetensors", "torch.save" or "torchscript"
    state_dict: dict[str, torch.Tensor]
    module: torch.nn.Module | None = None


def discover(models) -> list[str]:
    """Absolute paths of the model files under `models` (files or folders, recursively).

    Folders contribute files whose suffix is in MODEL_SUFFIXES; a file named directly is
    always included. The result is sorted and free of duplicates, so every rank of a
    distributed scan sees the same list.
    """
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    if not isinstance(models, Iterable):
        raise TypeError(f"models must be a path or a list of paths, got {type(models).__name__}")
    found: set[str] = set()
    for item in models:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"models must hold paths, got {type(item).__name__} {item!r}")
        path = Path(item)
        if path.is_dir():
            found.update(os.path.abspath(p) for p in path.rglob("*")
                         if p.suffix.lower() in MODEL_SUFFIXES and p.is_file())
        elif path.exists():
            found.add(os.path.abspath(path))
        else:
            raise FileNotFoundError(f"models: no such file or folder: '{item}'")
    return sorted(found)


def read_model_file(path: str, pool: BufferPool | None = None) -> ModelFile:
    """Reads the whole file into memory, hashing it chunk by chunk as it comes in.

    Both the reads and the hashing release the GIL, so reader threads run in parallel. The
    memory comes from `pool` when given (give the buffer back once nothing views it).
    """
    digest = hashlib.sha256()
    buffer = None
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buffer = pool.acquire(size) if pool is not None else \
                torch.empty(size, dtype=torch.uint8)
            view, done = memoryview(buffer.numpy())[:size], 0
            while done < size:
                got = f.readinto(view[done:done + _HASH_CHUNK])
                if not got:
                    raise ModelFileError(f"file changed while being read ({done} of {size} bytes)")
                digest.update(view[done:done + got])
                done += got
            if f.read(1):
                raise ModelFileError("file changed while being read (it grew)")
    except (OSError, ModelFileError) as e:
        if buffer is not None and pool is not None:
            pool.release(buffer)
        if isinstance(e, ModelFileError):
            raise
        raise ModelFileError(f"cannot read file: {e.strerror or e}") from None
    return ModelFile(path=path, size=size, sha256=digest.hexdigest(), data=view, buffer=buffer)


def decode(data, trust_torchscript: bool = False) -> Decoded:
    """The tensors in a model file's bytes; raises ModelFileError naming the problem.

    Safetensors tensors are views into `data` (a writable bytes-like object; bytes are
    copied first); the other formats copy what they need, so `data` may be reused after.
    """
    data = memoryview(data if not isinstance(data, bytes) else bytearray(data))
    if not data:
        raise ModelFileError("empty file")
    kind = detect(data)  # the same rule, and wording, as every other loader
    if kind == "zip":
        return _decode_zip(data, trust_torchscript)
    if kind == "safetensors":
        return Decoded("safetensors", as_state_dict(_load_safetensors(data)))
    if kind == "pickle":
        return Decoded("torch.save", as_state_dict(_torch_load(MemoryStream(data))))
    raise ModelFileError(NOT_A_MODEL_FILE)


def check_finite(state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raises ModelFileError if a floating-point tensor holds NaN or infinity."""
    bad = [name for name, t in state_dict.items()
           if (t.is_floating_point() or t.is_complex()) and not _all_finite(t)]
    if bad:
        listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ModelFileError(f"non-finite weights: NaN or inf in {listed}")


def _all_finite(t: torch.Tensor) -> bool:
    # A NaN or inf anywhere makes the sum non-finite, so a finite sum proves the tensor
    # finite (6x cheaper than isfinite().all()); a non-finite sum, which finite values can
    # also reach by overflowing, is settled element by element.
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def as_state_dict(obj) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict: checkpoint dicts unwrapped and DDP / torch.compile
    prefixes removed, exactly as everywhere else (files.checkpoint.unwrap)."""
    try:
        return unwrap(obj, "the file")
    except CheckpointError as e:
        raise ModelFileError(str(e)) from None


# -- formats -------------------------------------------------------------------------------


def _load_safetensors(data: memoryview) -> dict[str, torch.Tensor]:
    try:
        return safetensors_view.load(data)
    except safetensors_view.SafetensorsError as e:
        raise ModelFileError(f"truncated or corrupt safetensors file: {e}") from None


def _decode_zip(data: memoryview, trust_torchscript: bool) -> Decoded:
    stream = MemoryStream(data)
    try:
        names = zipfile.ZipFile(stream).namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelFileError(f"truncated or corrupt zip archive: {_first_line(e)}") from None
    if is_torchscript(names):
        if not trust_torchscript:
            raise ModelFileError("TorchScript archive refused: loading it runs code from the "
                                 "file; pass trust_torchscript=True (--trust-torchscript) "
                                 "only for files you trust")
        stream.seek(0)
        try:
            module = torch.jit.load(stream, map_location="cpu")
        except Exception as e:
            raise ModelFileError(f"corrupt TorchScript archive: {_first_line(e)}") from None
        return Decoded("torchscript", dict(module.state_dict()), module.eval())
    stream.seek(0)
    return Decoded("torch.save", as_state_dict(_torch_load(stream)))


def _torch_load(stream: MemoryStream):
    """torch.load restricted to tensors and plain containers: no pickle code ever runs."""
    try:
        return torch.load(stream, weights_only=True, map_location="cpu")
    except Exception as e:
        raise ModelFileError(load_error(e)) from None


def _first_line(e: BaseException, limit: int = 200) -> str:
    line = (str(e).strip().splitlines() or [""])[0]
    return line[:limit]
