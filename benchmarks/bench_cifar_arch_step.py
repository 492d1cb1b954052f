"""Seconds per Adam step (batch 128) of the protocol's CIFAR-10 architectures on this CPU,
one thread, extrapolated to an epoch of the owner's 33,333 images (configs/cifar10.toml).

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_cifar_arch_step.py
"""

import os
import time

import torch
import torch.nn.functional as F

from mlguard.evaluation.archs import cifar_cnn, resnet18_cifar


def step(model, optimizer, x, y) -> None:
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def main() -> None:
    torch.set_num_threads(1)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    for make, steps in ((cifar_cnn, 20), (resnet18_cifar, 3)):
        torch.manual_seed(0)
        model = make().train()
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        step(model, optimizer, x, y)  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            step(model, optimizer, x, y)
        per = (time.perf_counter() - start) / steps
        print(f"{make.__name__}: {per:.3f} s/step of 128 -> {per * 33333 / 128 / 60:.1f} min "
              f"per 33,333-image epoch; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
