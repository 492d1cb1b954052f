"""Decode an image folder (or a .tar/.tar.gz of one) once into a uint8 tensor, cached on disk.

Data loading in watermarking runs is mostly JPEG decoding and per-image Python. Decoding once
gives one (N, C, H, W) uint8 tensor (CIFAR-10's 50k training images are 150 MB) that
`DeviceLoader` keeps on the training device. The cache file is keyed by a hash of the
source's file list, sizes and modification times, so a changed folder is decoded again, and
is loaded back with `torch.load(weights_only=True)` (it never runs code).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files.io import atomic_write

CACHE_ENV = "MLGUARD_CACHE"
_FORMAT = 1  # bump when the cached layout changes
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass(frozen=True)
class ImageSet:
    """Decoded images (N, C, H, W) uint8, labels (N,) int64 and the class names (folder
    names, sorted, as torchvision's ImageFolder numbers them)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def default_cache_dir() -> Path:
    """$MLGUARD_CACHE, else ~/.cache/mlguard."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mlguard")


def image_folder(path: str | os.PathLike, split: str | None = None, *,
                 cache_dir: str | os.PathLike | None = None, channels: int = 3,
                 workers: int | None = None) -> ImageSet:
    """An ImageFolder-layout data set (`<root>/<class>/<image>`) as one uint8 tensor.

    `path`: the folder, or a .tar/.tar.gz/.tgz archive holding it (read in place, nothing
    extracted). `split`: a sub-folder such as "train" or "test" (for an archive, the
    sub-folder of the archive's single top folder when there is one). All images must have
    the same size. `cache_dir=False` disables the cache.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {os.fspath(path)!r} does not exist")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    source = _TarSource(path, split) if path.is_file() else _FolderSource(path, split)
    cache = None
    if cache_dir is not False:
        cache = Path(cache_dir or default_cache_dir()) / f"images-{source.digest(channels)}.pt"
        if cache.exists():
            return _load_cache(cache)
    images, labels, classes = source.decode(channels, workers or min(8, os.cpu_count() or 1))
    result = ImageSet(images, labels, classes)
    if cache is not None:
        _save_cache(cache, result)
    return result


def cifar10(path: str | os.PathLike, split: str = "train", **kw) -> ImageSet:
    """CIFAR-10 in ImageFolder layout (a folder or the .tar.gz of one), e.g. the JPEG copy:
    `cifar10("cifar10-jpeg.tar.gz", "test")`. 50,000 / 10,000 images of 3 x 32 x 32."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    result = image_folder(path, split, **kw)
    if result.images.shape[1:] != (3, 32, 32) or len(result.classes) != 10:
        raise ValueError(f"{os.fspath(path)!r} is not CIFAR-10: {len(result.classes)} classes "
                         f"of {tuple(result.images.shape[1:])} images")
    return result


# -- sources --------------------------------------------------------------------------------

class _FolderSource:
    def __init__(self, root: Path, split: str | None):
        self.root = root / split if split else root
        if not self.root.is_dir():
            raise FileNotFoundError(f"no folder {os.fspath(self.root)!r}")
        self.classes = tuple(sorted(d.name for d in self.root.iterdir()
                                    if d.is_dir() and not d.name.startswith(".")))
        if not self.classes:
            raise ValueError(f"{os.fspath(self.root)!r} has no class folders "
                             "(expected <root>/<class>/<image>)")
        self.files = [(f, label) for label, c in enumerate(self.classes)
                      for f in sorted((self.root / c).iterdir())
                      if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES]
        if not self.files:
            raise ValueError(f"{os.fspath(self.root)!r} has no image files")

    def digest(self, channels: int) -> str:
        h = hashlib.sha256(f"folder/{_FORMAT}/{channels}/{self.root.resolve()}".encode())
        for f, label in self.files:
            st = f.stat()
            h.update(f"{f.relative_to(self.root)}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n"
                     .encode())
        return h.hexdigest()[:32]

    def decode(self, channels: int, workers: int):
        return _decode_all([f for f, _ in self.files], [lab for _, lab in self.files],
                           self.classes, channels, workers, lambda f: f.read_bytes())


class _TarSource:
    def __init__(self, archive: Path, split: str | None):
        self.archive = archive
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
        names = [m.name.split("/") for m in members]
        tops = {n[0] for n in names if len(n) > 1}
        strip = 1 if len(tops) == 1 and split is not None and \
            any(len(n) > 2 and n[1] == split for n in names) else 0
        prefix = ([split] if split else [])
        entries = []
        for m, parts in zip(members, names):
            parts = parts[strip:]
            if parts[:len(prefix)] != prefix or len(parts) != len(prefix) + 2:
                continue
            if Path(parts[-1]).suffix.lower() in _IMAGE_SUFFIXES:
                entries.append((parts[-2], parts[-1], m))
        if not entries:
            raise ValueError(f"archive {os.fspath(archive)!r} has no <class>/<image> files"
                             + (f" under {split!r}" if split else ""))
        self.classes = tuple(sorted({c for c, _, _ in entries}))
        index = {c: i for i, c in enumerate(self.classes)}
        entries.sort(key=lambda e: (index[e[0]], e[1]))
        self.members = [m for _, _, m in entries]
        self.labels = [index[c] for c, _, _ in entries]
        self.split = split

    def digest(self, channels: int) -> str:
        st = self.archive.stat()
        h = hashlib.sha256(f"tar/{_FORMAT}/{channels}/{self.archive.resolve()}/{self.split}/"
                           f"{st.st_size}/{st.st_mtime_ns}".encode())
        return h.hexdigest()[:32]

    def decode(self, channels: int, workers: int):
        with tarfile.open(self.archive) as tar:  # read sequentially, decode on threads
            blobs = [tar.extractfile(m).read() for m in self.members]
        return _decode_all(blobs, self.labels, self.classes, channels, workers, lambda b: b)


def _decode_all(items, labels, classes, channels: int, workers: int, read):
    from PIL import Image  # Pillow comes with torchvision

    mode = "RGB" if channels == 3 else "L"

    def decode(item):
        try:
            with Image.open(io.BytesIO(read(item))) as im:
                array = np.asarray(im.convert(mode), dtype=np.uint8)
        except Exception as e:  # noqa: BLE001 - any decoder failure names the file
            raise ValueError(f"cannot decode image {getattr(item, 'name', item)!s}: {e}") from None
        return array[:, :, None] if array.ndim == 2 else array

    with ThreadPoolExecutor(max(1, workers)) as pool:  # Pillow decodes without the GIL
        arrays = list(pool.map(decode, items, chunksize=256))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images have different sizes {sorted(shapes)[:4]}: resize them first "
                         "(DeviceLoader needs one size)")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64), tuple(classes)


def _save_cache(path: Path, data: ImageSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        torch.save({"format": _FORMAT, "images": data.images, "labels": data.labels,
                    "classes": list(data.classes)}, f)


def _load_cache(path: Path) -> ImageSet:
    try:
        doc = torch.load(path, weights_only=True, mmap=True)
        if doc.get("format") != _FORMAT:
            raise ValueError(f"format {doc.get('format')!r}")
        return ImageSet(doc["images"], doc["labels"], tuple(doc["classes"]))
    except Exception as e:  # noqa: BLE001 - a bad cache file is named, never half-used
        raise ValueError(f"image cache {os.fspath(path)!r} is unreadable ({e}); delete it to "
                         "decode the images again") from None
