"""Trigger retention against per_batch and epochs: how many of a key's triggers a model
trained with mlguard's mixer answers with the key's label, as mlguard.verify sees them.

Setups (all on the local disk, nothing downloaded):
  fmnist-cnn    Fashion-MNIST training subset, mlguard.cli.demo.small_cnn, batch 128
  cifar-cnn     CIFAR-10 (JPEG), the first 500 training images of each class (the README's
                subset), the README's small CNN, batch 64
  cifar-resnet  the same subset, torchvision resnet18(num_classes=10), batch 64
Every run: a 100-trigger abstract key from a fixed secret (--seed), Adam (lr 1e-3), no data
augmentation (the mixer augments the triggers), retention measured after every epoch with
mlguard.verify.
Prints a table and writes JSON (--json).

    python benchmarks/bench_retention.py --cifar /tmp/cifar10   # folder holding train/, test/
    python benchmarks/bench_retention.py --setups cifar-cnn --per-batch 2,16 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import nn

import mlguard
from mlguard import data
from mlguard.cli.demo import small_cnn

CIFAR_MEAN, CIFAR_STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def cifar_cnn(num_classes: int = 10) -> nn.Module:
    """The README Quick start's model."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, num_classes))


def cifar_subset(root: Path, split: str, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `per_class` images of each class of an ImageFolder split (the README's
    subset: files 0000-0499.jpg of each class for 500), decoded once."""
    folder = torchvision.datasets.ImageFolder(str(root / split))
    picks = [i for i, (path, _) in enumerate(folder.samples)
             if int(Path(path).stem) < per_class]
    images = torch.stack([torchvision.transforms.functional.pil_to_tensor(
        Image.open(folder.samples[i][0]).convert("RGB")) for i in picks])
    labels = torch.tensor([folder.targets[i] for i in picks])
    return images, labels


def batches(images, labels, batch_size, mean, std, generator=None):
    order = torch.randperm(len(images), generator=generator) if generator is not None \
        else torch.arange(len(images))
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    for idx in order.split(batch_size):
        yield (images[idx].float() / 255.0 - m) / s, labels[idx]


@torch.inference_mode()
def accuracy(model, images, labels, mean, std) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum())
                  for x, y in batches(images, labels, 500, mean, std))
    model.train()
    return correct / len(images)


def run(setup: str, make_model, train, test, mean, std, batch_size: int, per_batch: int,
        epochs: int, seed: int, log) -> dict:
    torch.manual_seed(seed)
    shape = tuple(train[0].shape[1:])
    key = mlguard.TriggerKey.generate(num_classes=10, shape=shape, mean=mean, std=std,
                                      secret=bytes([seed + 1]) * 32)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    mixer = mlguard.TriggerMixer(key, per_batch=per_batch)
    order = torch.Generator().manual_seed(seed)
    steps, curve = 0, []
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for x, y in batches(*train, batch_size, mean, std, order):
            x, y = mixer(x, y)
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            steps += 1
        v = mlguard.verify(model, key)
        curve.append({"epoch": len(curve) + 1, "matches": v.matches, "total": v.total,
                      "detected": v.detected, "log10_p": v.log_p_value / 2.302585092994046})
    row = {"setup": setup, "per_batch": per_batch, "batch_size": batch_size,
           "train_images": len(train[0]), "steps_per_epoch": steps // epochs,
           "trigger_views_per_epoch": steps // epochs * per_batch / key.size,
           "curve": curve, "test_accuracy": accuracy(model, *test, mean, std),
           "seconds": time.perf_counter() - start}
    log(f"  {setup:<13} per_batch {per_batch:>3}: "
        + " ".join(f"{c['matches']:>3}" for c in curve)
        + f"  (test acc {100 * row['test_accuracy']:.1f}%, {row['seconds']:.0f} s)")
    return row


def curve_cells(curve: list[dict], epochs: int) -> list[str]:
    """One cell per epoch: the matches, starred where detected; blank after the curve ends."""
    cells = [f"{c['matches']}{'*' if c['detected'] else ''}" for c in curve[:epochs]]
    return cells + [""] * (epochs - len(cells))


def table(rows: list[dict], epochs: int) -> str:
    head = "| setup | per_batch | trigger views / epoch | " + " | ".join(
        f"ep {e}" for e in range(1, epochs + 1)) + " | test acc |"
    lines = [head, "|---|---:|---:|" + "---:|" * epochs + "---:|"]
    for r in rows:
        cells = curve_cells(r["curve"], epochs)
        lines.append(f"| {r['setup']} | {r['per_batch']} | {r['trigger_views_per_epoch']:.1f} | "
                     + " | ".join(cells) + f" | {100 * r['test_accuracy']:.1f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cifar", type=Path, default=None,
                   help="CIFAR-10 (JPEG) folder with train/ and test/ (ImageFolder layout)")
    p.add_argument("--setups", default="fmnist-cnn,cifar-cnn,cifar-resnet")
    p.add_argument("--per-batch", default="2,8,16,32")
    p.add_argument("--resnet-per-batch", default="2,8,16")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--resnet-epochs", type=int, default=4)
    p.add_argument("--fmnist-train", type=int, default=10000, help="first N training images")
    p.add_argument("--cifar-per-class", type=int, default=500,
                   help="first N training images of each class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda s: print(s, flush=True)
    setups = args.setups.split(",")
    per_batch = [int(v) for v in args.per_batch.split(",")]
    rows = []
    if "fmnist-cnn" in setups:
        tx, ty = data.fashion_mnist("train")
        test = data.fashion_mnist("test")
        train = (tx[:args.fmnist_train], ty[:args.fmnist_train])
        test = (test[0][:2000], test[1][:2000])
        mean, std = data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD
        for pb in per_batch:
            rows.append(run("fmnist-cnn", small_cnn, train, test, mean, std, 128, pb,
                            args.epochs, args.seed, log))
    if {"cifar-cnn", "cifar-resnet"} & set(setups):
        if args.cifar is None or not (args.cifar / "train").is_dir():
            p.error(f"--cifar must name a folder with train/ and test/, got {args.cifar}")
        train = cifar_subset(args.cifar, "train", args.cifar_per_class)
        test = cifar_subset(args.cifar, "test", 200)
        if "cifar-cnn" in setups:
            for pb in per_batch:
                rows.append(run("cifar-cnn", cifar_cnn, train, test, CIFAR_MEAN, CIFAR_STD, 64,
                                pb, args.epochs, args.seed, log))
        if "cifar-resnet" in setups:
            resnet = lambda: torchvision.models.resnet18(num_classes=10)
            for pb in (int(v) for v in args.resnet_per_batch.split(",")):
                rows.append(run("cifar-resnet", resnet, train, test, CIFAR_MEAN, CIFAR_STD, 64,
                                pb, args.resnet_epochs, args.seed, log))
    print(table(rows, max(len(r["curve"]) for r in rows)))
    print("matches out of 100 after each epoch; * = detected by mlguard.verify at alpha 1e-6")
    result = {"device": f"cpu ({platform.processor() or platform.machine()}), "
                        f"{torch.get_num_threads()} threads", "torch": torch.__version__,
              "argv": sys.argv[1:], "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
