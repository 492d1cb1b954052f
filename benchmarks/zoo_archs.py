"""The extraction zoo's other architectures (benchmarks/extraction_zoo.py): cross-architecture
stolen models and independent models that are not the victim's small_cnn. Named in the
zoo's manifest as "zoo_archs:<factory>"; load_zoo puts this folder on sys.path to build them."""

from __future__ import annotations

from torch import nn

from mlguard.evaluation.archs import fashion_mlp


def _cnn(channels: int, c1: int, c2: int, hidden: int, side: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * (side // 4) ** 2, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes))


def narrow_cnn(num_classes: int = 10) -> nn.Module:
    """small_cnn's layout at half the width (8/16 channels, 64 hidden), 1 x 28 x 28 input."""
    return _cnn(1, 8, 16, 64, 28, num_classes)


def wide_cnn(num_classes: int = 10) -> nn.Module:
    """small_cnn's layout at twice the width (32/64 channels, 256 hidden), 1 x 28 x 28 input."""
    return _cnn(1, 32, 64, 256, 28, num_classes)


def lenet(num_classes: int = 10) -> nn.Module:
    """LeNet-5's layout (5x5 convolutions, 6/16 channels, average pooling, tanh, 120-84
    hidden) on 1 x 28 x 28 input."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
        nn.Linear(84, num_classes))


mlp = fashion_mlp  # the zoo's manifest names it "zoo_archs:mlp"


def cifar_cnn(num_classes: int = 10) -> nn.Module:
    """The CIFAR-10 zoo's victim: small_cnn's layout on 3 x 32 x 32 (32/64 channels)."""
    return _cnn(3, 32, 64, 256, 32, num_classes)


def cifar_narrow_cnn(num_classes: int = 10) -> nn.Module:
    """cifar_cnn at half the width (16/32 channels, 128 hidden)."""
    return _cnn(3, 16, 32, 128, 32, num_classes)


def cifar_mlp(num_classes: int = 10) -> nn.Module:
    """A perceptron (3072-512-256) on 3 x 32 x 32 input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 512), nn.ReLU(),
                         nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, num_classes))


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's resnet18 (ImageNet stem) from scratch on 3 x 32 x 32, as
    bench_free_transforms.py trains it on a CIFAR-10 subset."""
    from torchvision.models import resnet18
    return resnet18(weights=None, num_classes=num_classes)
