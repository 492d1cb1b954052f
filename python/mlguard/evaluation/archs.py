"""Architectures the protocol's configs name as "module:function" (owner.arch, or an
extraction attack's arch= for cross-architecture retraining).

- fashion_mlp: a two-hidden-layer perceptron for 1 x 28 x 28 inputs (no convolutions), the
  Fashion-MNIST config's other architecture for the thief.

- cifar_cnn: a small VGG-style CNN (4 conv layers, 2 dense) that trains on a CPU in minutes
  per epoch; about 1.1M parameters.
- resnet18_cifar: torchvision's ResNet-18 with the usual CIFAR stem (a 3x3 stride-1 first
  convolution, no max-pool), the GPU option (11M parameters).
"""

from __future__ import annotations

from torch import nn


def fashion_mlp(num_classes: int = 10) -> nn.Module:
    """A perceptron (784-256-128, ReLU) on 1 x 28 x 28 inputs: no convolutions."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 256), nn.ReLU(),
                         nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, num_classes))


def cifar_cnn(num_classes: int = 10) -> nn.Module:
    """A small CNN for 3 x 32 x 32 inputs: two blocks of two 3x3 convolutions (32, 64
    channels) with ReLU and 2x2 max-pooling, then 256 hidden units and the head."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, num_classes))


def resnet18_cifar(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 for 32 x 32 inputs: the first convolution 3x3 with stride 1
    and no max-pool (the ImageNet stem would shrink a CIFAR image to 8 x 8 at once)."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
