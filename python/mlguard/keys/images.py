"""Trigger images that a key carries: stored losslessly inside the key file, and read from
a user's own files.

A data-derived trigger set (noise, content, unrelated) or a user's own set is part of the
key: the images are stored in the key body (covered by its MAC and its commitment), so the
key file alone regenerates the exact triggers and no `source` can be passed wrongly later.
"""

from __future__ import annotations

import base64
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
# Files in a trigger folder that are not images (a labels file often sits beside them).
_NOT_IMAGES = {".txt", ".csv", ".json", ".md", ".yaml", ".yml", ".tsv"}
RESIZE_MODES = ("center_crop", "resize", "none")


def as_stored(images: torch.Tensor, name: str = "source") -> torch.Tensor:
    """The lossless stored form of images in [0, 1]: uint8 when every value is k/255, else
    float32. Refuses values outside [0, 1] (normalized images), NaN and other dtypes."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    images = images.detach().cpu()
    if images.dtype == torch.uint8:
        return images.contiguous()
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float in [0, 1] or uint8, got {images.dtype}")
    images = images.float()
    if images.numel() and not (torch.isfinite(images).all() and images.min() >= 0
                               and images.max() <= 1):
        lo, hi = float(images.nan_to_num().min()), float(images.nan_to_num().max())
        raise ValueError(f"{name} must hold images in [0, 1] (before any normalization) or "
                         f"uint8, got values in [{lo:.3g}, {hi:.3g}]")
    q = (images * 255.0).round()
    if torch.equal(q / 255.0, images):
        return q.to(torch.uint8).contiguous()
    return images.contiguous()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Stored images as float32 in [0, 1] (uint8 / 255, computed the same on every device)."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def encode(images: torch.Tensor) -> dict:
    """The key-body form of stored images: dtype, shape and zlib-compressed bytes (base64)."""
    images = as_stored(images)
    raw = images.numpy().astype(images.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
    return {"dtype": str(images.dtype).removeprefix("torch."), "shape": list(images.shape),
            "zlib_base64": base64.b64encode(zlib.compress(raw, 9)).decode("ascii")}


def decode(doc: object) -> torch.Tensor:
    """Inverse of encode; any inconsistency is a ValueError."""
    if not isinstance(doc, dict) or set(doc) != {"dtype", "shape", "zlib_base64"}:
        raise ValueError("stored images must be {dtype, shape, zlib_base64}")
    dtype = _DTYPES.get(doc["dtype"])
    shape = doc["shape"]
    if dtype is None:
        raise ValueError(f"stored images have unsupported dtype {doc['dtype']!r}")
    if not (isinstance(shape, list) and len(shape) == 4
            and all(isinstance(s, int) and s >= 0 for s in shape)):
        raise ValueError(f"stored images must have a 4-D shape, got {shape!r}")
    try:
        raw = zlib.decompress(base64.b64decode(doc["zlib_base64"], validate=True))
    except (ValueError, TypeError, zlib.error) as e:
        raise ValueError(f"stored images are corrupt ({e})") from None
    np_dtype = np.dtype("u1") if dtype == torch.uint8 else np.dtype("<f4")
    if len(raw) != math.prod(shape) * np_dtype.itemsize:
        raise ValueError(f"stored images hold {len(raw)} bytes, shape {shape} needs "
                         f"{math.prod(shape) * np_dtype.itemsize}")
    array = np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("="))
    return torch.from_numpy(array.reshape(shape).copy())


# -- a user's own trigger images --------------------------------------------------------------

def image_paths(images: str | os.PathLike | Sequence) -> list[Path]:
    """A folder's image files in sorted file-name order, or the given paths in their order."""
    if isinstance(images, (str, os.PathLike)):
        root = Path(images)
        if not root.exists():
            raise FileNotFoundError(f"images: {os.fspath(root)!r} does not exist")
        if not root.is_dir():
            return [root]
        paths = sorted((p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
                        and p.suffix.lower() not in _NOT_IMAGES), key=lambda p: p.name)
        if not paths:
            raise ValueError(f"images: folder {os.fspath(root)!r} holds no image files")
        return paths
    paths = [Path(p) for p in images]
    if not paths:
        raise ValueError("images must not be empty")
    return paths


def read_images(paths: list[Path], shape: tuple[int, int, int], resize: str) -> torch.Tensor:
    """Decodes files with Pillow by their content (not their extension) into (N, *shape) uint8.

    RGBA, palette and grayscale files are converted to the key's channels (alpha dropped).
    `resize`: "center_crop" scales the shorter side to fit and crops the centre (the
    torchvision Resize + CenterCrop way), "resize" stretches to the size, "none" requires
    files of exactly that size.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow comes with torchvision

    channels, height, width = shape
    if channels not in (1, 3):
        raise ValueError(f"images from files need 1 or 3 channels, the shape is {shape}")
    out = torch.empty((len(paths), *shape), dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB" if channels == 3 else "L")
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"images: {os.fspath(path)!r} is not an image Pillow can read "
                             f"({e})") from None
        out[i] = _to_tensor(_fit(im, height, width, resize, path))
    return out


def resize_tensor(images: torch.Tensor, shape: tuple[int, int, int], resize: str) -> torch.Tensor:
    """Tensor images of another size brought to `shape` the same way files are (via Pillow)."""
    from PIL import Image

    images = as_stored(images, "images")
    if images.dtype != torch.uint8:
        images = (images * 255.0).round().to(torch.uint8)
    out = torch.empty((images.shape[0], *shape), dtype=torch.uint8)
    for i, img in enumerate(images):
        array = img.permute(1, 2, 0).numpy()
        im = Image.fromarray(array[:, :, 0] if shape[0] == 1 else array)
        out[i] = _to_tensor(_fit(im, shape[1], shape[2], resize, f"images[{i}]"))
    return out


def _fit(im, height: int, width: int, resize: str, where):
    from PIL import Image

    if im.size == (width, height):
        return im
    if resize == "none":
        raise ValueError(f"images: {where} is {im.size[0]}x{im.size[1]} (WxH), the key needs "
                         f"{width}x{height}; pass resize='center_crop' or 'resize'")
    if resize == "resize":
        return im.resize((width, height), Image.BILINEAR)
    scale = max(height / im.size[1], width / im.size[0])
    w, h = max(width, round(im.size[0] * scale)), max(height, round(im.size[1] * scale))
    im = im.resize((w, h), Image.BILINEAR)
    left, top = int(round((w - width) / 2.0)), int(round((h - height) / 2.0))
    return im.crop((left, top, left + width, top + height))


def _to_tensor(im) -> torch.Tensor:
    array = np.asarray(im, dtype=np.uint8)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def read_labels(labels, count: int, num_classes: int) -> list[int]:
    """User-given labels: a sequence of integers, or a text file with one number per line
    (`6`, `6.0` and `6.000000000000000000e+00` all read as 6)."""
    if isinstance(labels, (str, os.PathLike)):
        path = os.fspath(labels)
        try:
            lines = Path(path).read_text(encoding="utf-8").split()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"labels file {path!r} cannot be read ({e})") from None
        values = []
        for n, line in enumerate(lines, 1):
            try:
                values.append(float(line))
            except ValueError:
                hint = (" (file name,label rows are read from a .csv file)"
                        if "," in line else "")
                raise ValueError(f"labels file {path!r}: entry {n} is {line!r}, not a "
                                 f"number{hint}") from None
        where = f"labels file {path!r}"
    else:
        if isinstance(labels, torch.Tensor):
            labels = labels.tolist()
        values = list(np.asarray(labels).reshape(-1).tolist())
        where = "labels"
    out = []
    for n, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
            raise ValueError(f"{where}: entry {n + 1} is {v!r}, not a whole number")
        if not 0 <= int(v) < num_classes:
            raise ValueError(f"{where}: entry {n + 1} is {int(v)}, outside [0, {num_classes})")
        out.append(int(v))
    if len(out) != count:
        raise ValueError(f"{where} has {len(out)} labels for {count} images")
    return out
