"""Fashion-MNIST from Debian's package (dataset-fashion-mnist), read from its idx files.

Nothing is downloaded: a missing data set is a clear error saying how to install it.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's dataset-fashion-mnist package installs the data set."""
FASHION_MNIST_MEAN = (0.2860,)
"""The training set's per-channel mean (of pixels scaled to [0, 1])."""
FASHION_MNIST_STD = (0.3530,)
"""The training set's per-channel standard deviation."""
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
"""The class names, in label order."""
_IDX_MAGIC = {1: 2049, 3: 2051}  # labels, images


def _read_idx(path: Path, dims: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != _IDX_MAGIC[dims]:
        raise ValueError(f"{path}: not an idx{dims} file (magic {magic})")
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated, expected {shape} values, found {body.size}")
    return body.reshape(shape)


def fashion_mnist(split: str = "train", root: str | os.PathLike = FASHION_MNIST_DIR
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 1, 28, 28), labels int64 (N,)) for split "train" (60k) or "test" (10k)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    root = Path(root)
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    if not images_path.exists():
        raise FileNotFoundError(
            f"Fashion-MNIST not found at {root}: install Debian's package "
            "(apt-get install dataset-fashion-mnist) or pass root=")
    images = _read_idx(images_path, 3)
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", 1)
    return (torch.from_numpy(images.copy()).unsqueeze(1),
            torch.from_numpy(labels.astype(np.int64)))
