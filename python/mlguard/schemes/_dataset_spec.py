"""Where `mlguard key new dataset-inference` finds the owner's private and public images: a
short spec naming a data set on this disk and a range of it.

    fashion-mnist:train[0:20000]    Debian's Fashion-MNIST (mlguard.data), split, [start:stop)
    fashion-mnist:test              a whole split
    cifar10=PATH:train[0:17000]     an ImageFolder-layout CIFAR-10 folder or archive
    FILE.npz[0:5000]                an .npz with 'images' (N, C, H, W) uint8 and 'labels' (N,)

Every problem is a ValueError that names the option and the spec it was given.
"""

from __future__ import annotations

import re

import torch

_RANGE = re.compile(r"^(?P<source>.+?)(?:\[(?P<start>\d*):(?P<stop>\d*)\])?$")


def load_spec(spec: str, option: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, C, H, W), labels int64 (N,)) that `spec` names (the module doc)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"{option} must name a data set (e.g. fashion-mnist:train[0:20000] or "
                         f"FILE.npz), got {spec!r}")
    match = _RANGE.match(spec)
    source = match["source"]
    images, labels = _load_source(source, spec, option)
    n = images.shape[0]
    start = int(match["start"]) if match["start"] else 0
    stop = int(match["stop"]) if match["stop"] else n
    if not 0 <= start < stop <= n:
        raise ValueError(f"{option} {spec!r}: range [{start}:{stop}] is empty or outside the "
                         f"{n} images of {source!r}")
    return images[start:stop], labels[start:stop]


def _load_source(source: str, spec: str, option: str) -> tuple[torch.Tensor, torch.Tensor]:
    from .. import data

    if source.startswith("fashion-mnist"):
        split = source.partition(":")[2] or "train"
        if split not in ("train", "test"):
            raise ValueError(f"{option} {spec!r}: Fashion-MNIST's split must be train or test, "
                             f"got {split!r}")
        try:
            return data.fashion_mnist(split)
        except FileNotFoundError as e:
            raise ValueError(f"{option} {spec!r}: {e}") from None
    if source.startswith("cifar10="):
        path, _, split = source.removeprefix("cifar10=").rpartition(":")
        if not path or split not in ("train", "test"):
            raise ValueError(f"{option} {spec!r}: write cifar10=PATH:train or cifar10=PATH:test")
        try:
            images = data.cifar10(path, split)
        except (OSError, ValueError) as e:
            raise ValueError(f"{option} {spec!r}: {e}") from None
        return images.images, images.labels
    if source.endswith(".npz"):
        return _npz(source, spec, option)
    raise ValueError(f"{option} {spec!r}: not a data set spec; use fashion-mnist:SPLIT[a:b], "
                     "cifar10=PATH:SPLIT[a:b] or FILE.npz[a:b]")


def _npz(path: str, spec: str, option: str) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:  # never unpickle
            images, labels = np.asarray(f["images"]), np.asarray(f["labels"])
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{option} {spec!r}: not an .npz with 'images' and 'labels' ({e})"
                         ) from None
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{option} {spec!r}: 'images' must be uint8 (N, C, H, W), got "
                         f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] \
            or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{option} {spec!r}: 'labels' must be integers of shape "
                         f"({images.shape[0]},), got {labels.dtype} {labels.shape}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
