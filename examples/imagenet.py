"""Adi et al. (USENIX Security 2018) on an ImageFolder data set with ResNet-50: embed a
trigger-set watermark while training from scratch, then verify it.

    python examples/imagenet.py --data /data/imagenet --epochs 90 --device cuda

`--data` holds `train/<class>/<image>` and `val/<class>/<image>` (or `test/`), the layout
of torchvision's ImageFolder (ImageNet's validation set sorted into class folders).
Images are decoded by a torchvision DataLoader with worker processes: ImageNet does not fit
in memory as one tensor (for data sets that do, mlguard.data.image_folder + DeviceLoader is
the faster path). The only mlguard lines in the loop are the trigger mixer's. The key is
written to `--out` once and kept across runs (a key is a secret: never replaced); the model,
the verdict (JSON) and a summary are written beside it. Nothing is downloaded: the network
starts from random weights (weights=None).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision import transforms

import mlguard

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="folder with train/ and val/ (or test/)")
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", default="resnet50", help="a torchvision.models constructor")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate for batch 256 "
                   "(scaled linearly with --batch-size), divided by 10 at 1/3 and 2/3 of training")
    p.add_argument("--workers", type=int, default=8, help="DataLoader worker processes")
    p.add_argument("--triggers", type=int, default=100, help="trigger-set size (a new key)")
    p.add_argument("--per-batch", type=int, default=16, help="triggers appended to each batch")
    p.add_argument("--alpha", type=float, default=1e-6, help="significance level of the verdict")
    p.add_argument("--out", default="runs/imagenet", help="folder for the key, model and verdict")
    args = p.parse_args(argv)
    for name in ("epochs", "image_size", "batch_size", "triggers", "per_batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    return args


def split_folder(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise SystemExit(f"error: --data {root}: no {' or '.join(n + '/' for n in names)} folder "
                     "(expected ImageFolder layout: <data>/train/<class>/<image>)")


def loaders(root: Path, size: int, batch_size: int, workers: int, pin: bool):
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = torchvision.datasets.ImageFolder(split_folder(root, ("train",)), transforms.Compose([
        transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), normalize]))
    val = torchvision.datasets.ImageFolder(split_folder(root, ("val", "test")), transforms.Compose([
        transforms.Resize(size * 256 // 224), transforms.CenterCrop(size),
        transforms.ToTensor(), normalize]))
    if train.classes != val.classes:
        raise SystemExit(f"error: --data {root}: train/ has classes {train.classes[:5]}..., "
                         f"the validation folder {val.classes[:5]}...; they must be the same")
    kw = dict(batch_size=batch_size, num_workers=workers, pin_memory=pin,
              persistent_workers=workers > 0)
    return (torch.utils.data.DataLoader(train, shuffle=True, drop_last=True, **kw),
            torch.utils.data.DataLoader(val, shuffle=False, **kw), train.classes)


def owner_key(path: Path, num_classes: int, size: int, triggers: int) -> mlguard.TriggerKey:
    """The key in `path`, made there on the first run and kept afterwards."""
    shape = (3, size, size)
    if path.exists():
        key = mlguard.load_key(path)
        if not isinstance(key, mlguard.TriggerKey) or key.shape != shape or \
                key.num_classes != num_classes:
            raise SystemExit(f"error: {path} is a key for another setup (not a trigger key for "
                             f"{num_classes} classes of {shape} images); choose another --out")
        return key
    key = mlguard.TriggerKey.generate(num_classes=num_classes, size=triggers, shape=shape,
                                      mean=IMAGENET_MEAN, std=IMAGENET_STD)
    key.save(path)
    return key


@torch.inference_mode()
def accuracy(model: nn.Module, loader, device) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        correct += int((model(x).argmax(1).cpu() == y).sum())
        total += len(y)
    return correct / total


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    root, out = Path(args.data), Path(args.out)
    if not root.is_dir():
        raise SystemExit(f"error: --data {root} is not a folder")
    train_loader, val_loader, classes = loaders(root, args.image_size, args.batch_size,
                                                args.workers, device.type == "cuda")
    out.mkdir(parents=True, exist_ok=True)
    key = owner_key(out / "owner.key", len(classes), args.image_size, args.triggers)
    print(f"{len(train_loader.dataset)} training and {len(val_loader.dataset)} validation images, "
          f"{len(classes)} classes; {args.arch} on {device}; key {key.key_id} ({key.size} "
          f"triggers, {args.per_batch} per batch), commitment {key.commitment()}", flush=True)

    model = getattr(torchvision.models, args.arch)(weights=None, num_classes=len(classes))
    model = model.to(device, memory_format=torch.channels_last)
    lr = args.lr * args.batch_size / 256
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    steps = args.epochs * len(train_loader)
    schedule = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[max(1, steps // 3), max(2, 2 * steps // 3)], gamma=0.1)
    # Once per epoch the mixer reads the key as verify does and warns while it would not be
    # detected: a key that does not take shows up in epoch 1, not after the last one.
    mixer = mlguard.TriggerMixer(key, per_batch=args.per_batch, model=model,
                                 check_every=len(train_loader), alpha=args.alpha)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        seen, loss_sum = 0, 0.0
        for x, y in train_loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            x, y = mixer(x, y.to(device, non_blocking=True))  # the watermark: one line
            with autocast:
                loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seen, loss_sum = seen + 1, loss_sum + float(loss)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / max(seen, 1):.4f}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)

    top1 = accuracy(model, val_loader, device)
    verdict = mlguard.verify(model, key, alpha=args.alpha)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "verdict.json").write_text(verdict.to_json() + "\n")
    summary = {"arch": args.arch, "epochs": args.epochs, "image_size": args.image_size,
               "classes": len(classes), "train_images": len(train_loader.dataset),
               "val_top1": top1, "trigger_matches": verdict.matches,
               "triggers": verdict.total, "p_value": verdict.p_value,
               "detected": verdict.detected, "device": str(device),
               "seconds": round(time.perf_counter() - start, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"validation top-1 {100 * top1:.2f}%; trigger set {verdict.matches}/{verdict.total}")
    print(verdict)
    print(f"key, model, verdict and summary written to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
