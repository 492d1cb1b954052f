"""Data on the local disk (nothing is ever downloaded) and a fast training data path.

- `fashion_mnist(split)`: Debian's dataset-fashion-mnist package.
- `image_folder(path, split)` / `cifar10(path, split)`: an ImageFolder-layout folder or
  archive decoded once into a uint8 tensor, cached on disk (image_cache.py).
- `DeviceLoader`: shuffled, augmented, normalized batches (with triggers appended) made on
  the training device from that tensor, with no worker processes (device_loader.py).
"""

from .device_loader import DeviceLoader
from .fashion_mnist import (FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FASHION_MNIST_MEAN,
                            FASHION_MNIST_STD, fashion_mnist)
from .image_cache import ImageSet, cifar10, default_cache_dir, image_folder

__all__ = ["DeviceLoader", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "FASHION_MNIST_MEAN",
           "FASHION_MNIST_STD", "fashion_mnist", "ImageSet", "cifar10", "default_cache_dir",
           "image_folder"]
