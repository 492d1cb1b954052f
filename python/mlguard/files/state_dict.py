"""Loading a state_dict from a binary stream without running code from it.

Two formats: `torch.save` files, always loaded with `weights_only=True`, and safetensors,
parsed here straight from the stream into freshly allocated tensors, so an encrypted file
never needs a second full-size plaintext copy (safetensors.torch.load would need the whole
file as one `bytes` object). The result equals safetensors.torch.load_file's (tested).
"""

from __future__ import annotations

import io
import json
import re
import struct
from typing import Any

import torch

FORMATS = ("auto", "torch", "safetensors")
_MAX_SAFETENSORS_HEADER = 100 << 20  # the same limit the safetensors library applies

# Safetensors dtype names; data is little-endian, as on every platform torch supports.
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "C64": torch.complex64,
}


# The one wording, in the scan's error rows and in every other loader's errors.
NOT_A_MODEL_FILE = ("not a model file: unrecognized format "
                    "(expected safetensors, torch.save or TorchScript)")


def detect(head) -> str | None:
    """A model file's format from its first bytes (never its name): "zip" (a torch.save
    archive, or TorchScript), "safetensors", "pickle" (a legacy torch.save file: pickle
    protocol 2+), or None for anything else. Used by every loader, the scan's included."""
    head = bytes(head[:9])
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    return None


def sniff(head: bytes) -> str:
    """'torch' or 'safetensors' for load_state_dict's format; ValueError for anything else."""
    if not head:
        raise ValueError("empty file")
    kind = detect(head)
    if kind is None:
        raise ValueError(NOT_A_MODEL_FILE)
    return "safetensors" if kind == "safetensors" else "torch"


def load_state_dict(f: io.RawIOBase | io.BufferedIOBase, what: str, format: str = "auto",
                    map_location: Any = None) -> dict:
    """The state_dict in seekable binary stream `f` (a torch.save file or safetensors).

    Never unpickles with code execution. Raises ValueError naming `what` if the data is not
    a loadable checkpoint.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "auto":
        head = f.read(16)
        f.seek(0)
        try:
            format = sniff(head)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
    if format == "safetensors":
        state = _load_safetensors(f, what)
        if map_location is not None:
            state = {k: v.to(map_location) for k, v in state.items()}
        return state
    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for bad data; report them as one
        raise ValueError(f"{what}: not a loadable torch checkpoint: {load_error(e)}") from None


_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*(.*?)(?: was not an allowed|\n|$)")


def load_error(e: BaseException) -> str:
    """One line for an error of `torch.load(..., weights_only=True)`. A refused pickle is
    named as such, without torch's advice to retry with weights_only=False: that would run
    the suspect file's code."""
    text = str(e)
    if "Weights only load failed" in text:
        found = _UNPICKLER_ERROR.search(text)
        detail = found.group(1).strip() if found else "it is not plain tensor data"
        what = "unsafe pickle" if "global" in detail.lower() else "pickle with unsupported content"
        return f"{what} refused (not unpickled): {detail}{_whole_module_hint(detail)}"
    line = (text.strip().splitlines() or [""])[0][:200]
    return f"truncated or corrupt torch.save file: {type(e).__name__}: {line}"


_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def _whole_module_hint(detail: str) -> str:
    """A refused class (not a function) is almost always torch.save(model): the whole
    pickled module, whose class cannot be loaded without running code from the file."""
    found = _GLOBAL.search(detail)
    if not found or not found.group(1).rsplit(".", 1)[-1][:1].isupper():
        return ""
    return (" (a whole model saved with torch.save(model)? Save model.state_dict() instead: "
            "loading a pickled class could run code from the file)")


def _read_exact(f, size: int, what: str) -> bytes:
    data = f.read(size)
    if data is None or len(data) != size:
        raise ValueError(f"{what}: safetensors data is truncated")
    return data


def _load_safetensors(f, what: str) -> dict[str, torch.Tensor]:
    (header_len,) = struct.unpack("<Q", _read_exact(f, 8, what))
    if header_len > _MAX_SAFETENSORS_HEADER:
        raise ValueError(f"{what}: safetensors header of {header_len} bytes is too large")
    try:
        header = json.loads(_read_exact(f, header_len, what).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{what}: safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{what}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    entries = []
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{what}: safetensors entry {name!r} is malformed "
                             f"(unknown dtype or bad shape/offsets)") from None
        entries.append((begin, end, name, dtype, shape))
    state: dict[str, torch.Tensor] = {}
    for begin, end, name, dtype, shape in sorted(entries, key=lambda e: e[0]):  # sequential reads
        if min(shape, default=0) < 0 or begin < 0 or end < begin:
            raise ValueError(f"{what}: safetensors entry {name!r} has bad shape or offsets")
        tensor = torch.empty(shape, dtype=dtype)
        nbytes = tensor.numel() * tensor.element_size()
        if end - begin != nbytes:
            raise ValueError(f"{what}: safetensors entry {name!r} has {end - begin} bytes of "
                             f"data for {nbytes} bytes of {dtype} {shape}")
        if nbytes:
            f.seek(data_start + begin)
            raw = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
            done = 0
            while done < nbytes:
                n = f.readinto(raw[done:])
                if not n:
                    raise ValueError(f"{what}: safetensors data is truncated")
                done += n
        state[name] = tensor
    return state


def load_state_dict_file(path, format: str = "auto", map_location: Any = None) -> dict:
    """A state_dict from a plain (unencrypted) file, loaded safely (see load_state_dict)."""
    with open(path, "rb") as f:
        return load_state_dict(f, f"model file {str(path)!r}", format, map_location)
