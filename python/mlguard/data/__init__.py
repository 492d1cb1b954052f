"""Data sets mlguard reads from the local disk (nothing is ever downloaded): a missing data
set is a clear error saying how to install it."""

from .fashion_mnist import (
                            FASHION_MNIST_CLASSES,
                            FASHION_MNIST_DIR,
                            FASHION_MNIST_MEAN,
                            FASHION_MNIST_STD,
                            fashion_mnist,
)

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "FASHION_MNIST_MEAN",
           "FASHION_MNIST_STD", "fashion_mnist"]
