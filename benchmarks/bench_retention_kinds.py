"""Trigger retention per trigger kind, under a constant and an annealed learning rate: how
many of a key's triggers a CIFAR-10 CNN trained with mlguard's mixer answers with the key's
label after each epoch, as mlguard.verify sees them (issue 18, item 4).

Setup (all on the local disk, nothing downloaded): CIFAR-10 (JPEG), the first 800 training
images of each class (8,000), a small CNN with BatchNorm, batch 128 (63 steps per epoch), SGD
lr 0.05 with momentum 0.9, no data augmentation on the training images (the mixer's keyed
crops/flips on the triggers only), 1 thread. Schedules: `constant` (lr 0.05 throughout) and
`onecycle` (torch OneCycleLR, max_lr 0.05, over all the run's steps). Keys of 100 triggers,
10 classes, each from a fixed secret:
  photos     100 CIFAR-10 test JPEGs (files 0990-0999 of each class) read from a folder with
             TriggerKey.from_images(folder), labels drawn by the key (the user's own photos)
  abstract   the default kind (procedural images from the key)
  noise      in-distribution images (CIFAR-10 test) plus keyed noise, mode="image"
  content    in-distribution images stamped with a keyed patch, mode="image"
  unrelated  another data set: Fashion-MNIST test images, padded to 32x32, grey in 3 channels
Views per trigger after e epochs = e x 63 x per_batch / 100. Test accuracy on 2,000 CIFAR-10
test images (500-699 of each class; disjoint from the triggers and their sources).
Prints a table and writes JSON (--json), rewritten after every run so a stopped run keeps
what it measured.

    python benchmarks/bench_retention_kinds.py --cifar /work/shared/data/cifar10-jpeg.tar.gz
    python benchmarks/bench_retention_kinds.py --cifar ... --kinds photos --per-batch 16 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench_retention import curve_cells

import mlguard
from mlguard import data

CIFAR_MEAN, CIFAR_STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
KINDS = ("photos", "abstract", "noise", "content", "unrelated")
SCHEDULES = ("constant", "onecycle")
LR, MOMENTUM, BATCH = 0.05, 0.9, 128


def bn_cnn(num_classes: int = 10) -> nn.Module:
    """The README Quick start's CNN with BatchNorm after each convolution."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, num_classes))


def within_class(labels: torch.Tensor) -> torch.Tensor:
    """Each image's index among the images of its class (the file order of ImageFolder)."""
    index = torch.empty_like(labels)
    for c in labels.unique():
        where = (labels == c).nonzero().flatten()
        index[where] = torch.arange(len(where))
    return index


def photo_folder(archive: Path, out: Path) -> Path:
    """Copies test files 0990-0999.jpg of each class out of the archive into `out` (the
    'own photos' a user would keep in a folder), unchanged bytes."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and "test" in parts and parts[-1][:3] == "099":
                (out / f"{parts[-2]}_{parts[-1]}").write_bytes(tar.extractfile(member).read())
    if len(list(out.iterdir())) != 100:
        raise RuntimeError(f"expected 100 photos from {archive}, got {len(list(out.iterdir()))}")
    return out


def unrelated_source(count: int) -> torch.Tensor:
    """Fashion-MNIST test images as uint8 (N, 3, 32, 32): zero-padded, grey in 3 channels."""
    images, _ = data.fashion_mnist("test")
    images = nn.functional.pad(images[:count], (2, 2, 2, 2))
    return images.expand(-1, 3, -1, -1).contiguous()


def make_key(kind: str, photos: Path, source: torch.Tensor, unrelated: torch.Tensor,
             secret: bytes) -> mlguard.TriggerKey:
    common = {"num_classes": 10, "mean": CIFAR_MEAN, "std": CIFAR_STD, "secret": secret}
    if kind == "photos":
        return mlguard.TriggerKey.from_images(photos, shape=(3, 32, 32), **common)
    if kind == "abstract":
        return mlguard.TriggerKey.generate(size=100, shape=(3, 32, 32), **common)
    if kind == "unrelated":
        return mlguard.TriggerKey.generate(size=100, shape=(3, 32, 32), kind=kind,
                                           source=unrelated, **common)
    return mlguard.TriggerKey.generate(size=100, shape=(3, 32, 32), kind=kind, mode="image",
                                       source=source, **common)


def batches(images, labels, generator=None):
    order = torch.randperm(len(images), generator=generator) if generator is not None \
        else torch.arange(len(images))
    m, s = torch.tensor(CIFAR_MEAN)[:, None, None], torch.tensor(CIFAR_STD)[:, None, None]
    for idx in order.split(BATCH):
        yield (images[idx].float() / 255.0 - m) / s, labels[idx]


@torch.inference_mode()
def accuracy(model, images, labels) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches(images, labels))
    model.train()
    return correct / len(images)


def run(kind: str, key, schedule: str, per_batch: int, epochs: int, train, test, seed: int,
        log) -> dict:
    torch.manual_seed(seed)
    model = bn_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    steps_per_epoch = -(-len(train[0]) // BATCH)
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR,
                                                     total_steps=epochs * steps_per_epoch)
                 if schedule == "onecycle" else None)
    mixer = mlguard.TriggerMixer(key, per_batch=per_batch)
    order = torch.Generator().manual_seed(seed)
    curve = []
    start = time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        for x, y in batches(*train, order):
            x, y = mixer(x, y)
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        v = mlguard.verify(model, key)
        curve.append({"epoch": epoch, "views": epoch * steps_per_epoch * per_batch / key.size,
                      "matches": v.matches, "total": v.total, "detected": v.detected})
    row = {"kind": kind, "schedule": schedule, "per_batch": per_batch,
           "steps_per_epoch": steps_per_epoch, "curve": curve,
           "test_accuracy": accuracy(model, *test), "seconds": time.perf_counter() - start}
    log(f"  {kind:<9} {schedule:<8} per_batch {per_batch:>3}: "
        + " ".join(f"{c['matches']:>3}" for c in curve)
        + f"  (test acc {100 * row['test_accuracy']:.1f}%, {row['seconds']:.0f} s)")
    return row


def table(rows: list[dict], epochs: int) -> str:
    head = ("| kind | schedule | per_batch | views / epoch | "
            + " | ".join(f"ep {e}" for e in range(1, epochs + 1)) + " | test acc |")
    lines = [head, "|---|---|---:|---:|" + "---:|" * epochs + "---:|"]
    for r in rows:
        cells = curve_cells(r["curve"], epochs)
        views = r["steps_per_epoch"] * r["per_batch"] / r["curve"][0]["total"]
        lines.append(f"| {r['kind']} | {r['schedule']} | {r['per_batch']} | {views:.1f} | "
                     + " | ".join(cells) + f" | {100 * r['test_accuracy']:.1f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cifar", type=Path, required=True,
                   help="the CIFAR-10 (JPEG) archive (.tar.gz of cifar10/{train,test}/<class>)")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--schedules", default=",".join(SCHEDULES))
    p.add_argument("--per-batch", default="16,32")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--per-class", type=int, default=800, help="training images per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    kinds, schedules = args.kinds.split(","), args.schedules.split(",")
    for name, values, allowed in (("--kinds", kinds, KINDS), ("--schedules", schedules, SCHEDULES)):
        if not set(values) <= set(allowed):
            p.error(f"{name} must be a comma-separated subset of {allowed}, got {values}")
    if not args.cifar.is_file():
        p.error(f"--cifar must name the CIFAR-10 (JPEG) .tar.gz, got {args.cifar}")
    torch.set_num_threads(args.threads)
    log = lambda s: print(s, flush=True)
    train_set, test_set = data.cifar10(args.cifar, "train"), data.cifar10(args.cifar, "test")
    pick = within_class(train_set.labels) < args.per_class
    train = (train_set.images[pick], train_set.labels[pick])
    index = within_class(test_set.labels)
    eval_pick = (index >= 500) & (index < 700)
    test = (test_set.images[eval_pick], test_set.labels[eval_pick])
    source = test_set.images[(index < 500) & (index % 5 == 0)]  # 1,000, all classes
    unrelated = unrelated_source(1000)
    rows: list[dict] = []
    result = {"device": f"cpu ({platform.processor() or platform.machine()}), "
                        f"{torch.get_num_threads()} threads", "torch": torch.__version__,
              "argv": sys.argv[1:], "train_images": len(train[0]), "rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        photos = photo_folder(args.cifar, Path(tmp))
        for kind in kinds:
            secret = bytes([KINDS.index(kind) + 1]) * 32  # a fixed secret per kind
            key = make_key(kind, photos, source, unrelated, secret)
            for schedule in schedules:
                for pb in (int(v) for v in args.per_batch.split(",")):
                    rows.append(run(kind, key, schedule, pb, args.epochs, train, test,
                                    args.seed, log))
                    if args.json:
                        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows, args.epochs))
    print("matches out of 100 after each epoch; * = detected by mlguard.verify at alpha 1e-6 "
          "(28 of 100)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
