"""Zero-copy safetensors decoding: tensors as views into the file's bytes.

``safetensors.torch.load(bytes)`` copies every tensor while holding the GIL, which caps a
threaded scan at about 50 ResNet-18 files/s however many reader threads run (measured:
1 thread 53/s, 2 threads 49/s). The format is simple (an 8-byte little-endian header
length, a JSON header of {name: {dtype, shape, data_offsets}}, then the raw little-endian
data), so this module parses the header itself and returns views into the buffer it was
given, validating everything the safetensors library validates: the header fits, every
entry names a known dtype, a shape of non-negative ints and offsets inside the data whose
length matches dtype x shape, and the entries tile the data exactly (no gaps, no overlap,
nothing past the end, so a truncated file is caught). A tensor whose offset is not aligned
for its dtype is copied rather than viewed.
"""

from __future__ import annotations

import json
import math
import sys

import torch

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
           "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool, "C64": torch.complex64,
           "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
           "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64}
_MAX_HEADER = 100 << 20  # the safetensors library's own limit


class SafetensorsError(ValueError):
    """The bytes are not a well-formed safetensors file."""


def load(data) -> dict[str, torch.Tensor]:
    """{name: tensor} viewing `data`, a writable bytes-like object kept alive by the tensors.

    Raises SafetensorsError for anything malformed.
    """
    if sys.byteorder != "little":  # the data is little-endian; let the library convert
        from safetensors.torch import load as library_load
        return library_load(bytes(data))
    size = int.from_bytes(data[:8], "little")
    start = 8 + size
    if size > _MAX_HEADER or start > len(data):
        raise SafetensorsError(f"header length {size} does not fit in a {len(data)}-byte file")
    try:
        header = json.loads(bytes(data[8:start]))
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError(f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    payload = len(data) - start
    flat = torch.frombuffer(data, dtype=torch.uint8)  # data holds at least the 9-byte start
    tensors, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, begin, end = _entry(name, info, payload)
        spans.append((begin, end, name))
        raw = flat[start + begin:start + end]
        if (start + begin) % dtype.itemsize:  # misaligned for this dtype: copy
            raw = raw.clone()
        tensors[name] = raw.view(dtype).view(shape)
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise SafetensorsError(f"tensor {name!r} starts at byte {begin}, expected {position} "
                                   "(overlapping tensors or a gap)")
        position = end
    if position != payload:
        raise SafetensorsError(f"the tensors cover {position} of {payload} data bytes")
    return tensors


def _entry(name: str, info, payload: int) -> tuple[torch.dtype, list[int], int, int]:
    if not isinstance(info, dict):
        raise SafetensorsError(f"entry {name!r} is not an object")
    dtype = _DTYPES.get(info.get("dtype"))
    if dtype is None:
        raise SafetensorsError(f"tensor {name!r}: unknown dtype {info.get('dtype')!r}")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
        raise SafetensorsError(f"tensor {name!r}: shape must be a list of ints >= 0, got {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise SafetensorsError(f"tensor {name!r}: bad data_offsets {offsets!r}")
    begin, end = offsets
    if not begin <= end <= payload:
        raise SafetensorsError(f"tensor {name!r}: data_offsets {offsets} outside the "
                               f"{payload}-byte data (truncated file?)")
    if end - begin != math.prod(shape) * dtype.itemsize:
        raise SafetensorsError(f"tensor {name!r}: {end - begin} bytes do not hold a "
                               f"{info['dtype']} tensor of shape {shape}")
    return dtype, shape, begin, end


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
