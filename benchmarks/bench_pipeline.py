"""The training data path: mlguard.data.DeviceLoader against the torchvision DataLoader way.

Both produce the same thing per CIFAR-10 epoch: shuffled batches, random crop with 4-pixel
zero padding, horizontal flip, normalization, in float32 (bf16 on CUDA), on the training
device. Timed:
  loader     images/s of the loader alone (every batch moved to the device), for
             torchvision DataLoader(num_workers=W) over the decoded images held in memory
             (the torchvision.datasets.CIFAR10 way: PIL transforms per image), over the JPEG
             files (ImageFolder, --jpeg), and for DeviceLoader with and without triggers
  epoch      (CUDA only, or --train on the CPU) one training epoch of ResNet-18 (CIFAR stem,
             channels_last, SGD): DataLoader, DeviceLoader, DeviceLoader + TriggerMixer
Correctness is checked first: DeviceLoader without augmentation equals the torchvision
transform of the same images. Prints a table and writes JSON (--json).

    python benchmarks/bench_pipeline.py --data ../shared/data/cifar10-jpeg.tar.gz
    python benchmarks/bench_pipeline.py --data ... --device cuda --workers 8 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torchvision
from PIL import Image
from torchvision import transforms

import mlguard
from mlguard.data import DeviceLoader, cifar10

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class InMemoryCIFAR(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10's way: uint8 HWC arrays in memory, PIL per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.data = images.permute(0, 2, 3, 1).numpy()
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def train_transform():
    return transforms.Compose([transforms.RandomCrop(32, padding=4),
                               transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                               transforms.Normalize(MEAN, STD)])


def check_correctness(data) -> None:
    """Without augmentation DeviceLoader must give torchvision's ToTensor + Normalize."""
    n = 64
    loader = DeviceLoader(data.images[:n], data.labels[:n], n, shuffle=False, augment=False,
                          mean=MEAN, std=STD)
    x, y = next(iter(loader))
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    ref = torch.stack([tf(Image.fromarray(a)) for a in data.images[:n].permute(0, 2, 3, 1).numpy()])
    err = (x - ref).abs().max().item()
    assert err < 1e-5 and torch.equal(y, data.labels[:n]), f"mismatch {err}"
    # With augmentation: every output is a (possibly flipped) crop of the zero-padded image.
    loader = DeviceLoader(data.images[:n], data.labels[:n], n, shuffle=False, mean=MEAN, std=STD)
    x, _ = next(iter(loader))
    for i in range(n):
        crops = [_crop(data.images[i], dy, dx, tf) for dy in range(9) for dx in range(9)]
        assert any(torch.allclose(x[i], c, atol=1e-5) or torch.allclose(x[i].flip(-1), c, atol=1e-5)
                   for c in crops), f"image {i} is not a crop/flip of its source"


def _crop(image, dy, dx, tf):
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    crop = padded[:, dy:dy + 32, dx:dx + 32]
    return tf(Image.fromarray(crop.permute(1, 2, 0).numpy()))


def images_per_second(loader, device, epochs: int) -> float:
    rates = []
    for _ in range(epochs):
        n, start = 0, time.perf_counter()
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            n += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def resnet18_cifar():
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


def epoch_seconds(loader, device, dtype, limit: int | None) -> float:
    torch.manual_seed(0)
    model = resnet18_cifar().to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else \
        torch.autocast(device.type, enabled=False)
    times = []
    for _ in range(2):  # the first epoch warms up cuDNN and the allocator
        start = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            if limit is not None and i >= limit:
                break
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(x), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                  "shared", "data", "cifar10-jpeg.tar.gz"))
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--workers", type=int, nargs="+", default=[2])
    p.add_argument("--epochs", type=int, default=3, help="loader epochs (median)")
    p.add_argument("--limit", type=int, default=None, help="images per loader epoch")
    p.add_argument("--jpeg", action="store_true", help="also time ImageFolder over JPEG files")
    p.add_argument("--train", action="store_true", help="time training epochs on the CPU too")
    p.add_argument("--train-batches", type=int, default=None)
    p.add_argument("--per-batch", type=int, default=16, help="triggers per batch")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True

    data = cifar10(args.data, "train", cache_dir=args.cache_dir)
    check_correctness(data)
    if args.limit:
        data = mlguard.data.ImageSet(data.images[:args.limit], data.labels[:args.limit],
                                     data.classes)
    key = mlguard.TriggerKey.generate(num_classes=10, shape=(3, 32, 32), mean=MEAN, std=STD)
    mixer = mlguard.TriggerMixer(key, per_batch=args.per_batch)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    results = {"device": str(torch.cuda.get_device_name(device) if device.type == "cuda"
                             else "cpu"), "cpus": os.cpu_count(), "images": len(data),
               "batch": args.batch, "torch": torch.__version__, "loader_images_per_s": {}}
    rates = results["loader_images_per_s"]
    for w in args.workers:
        dl = torch.utils.data.DataLoader(InMemoryCIFAR(data.images, data.labels,
                                                       train_transform()),
                                         batch_size=args.batch, shuffle=True, num_workers=w,
                                         pin_memory=device.type == "cuda",
                                         persistent_workers=w > 0)
        rates[f"DataLoader(num_workers={w}), in memory"] = images_per_second(dl, device,
                                                                             args.epochs)
    if args.jpeg:
        with tempfile.TemporaryDirectory() as tmp:
            import tarfile
            with tarfile.open(args.data) as tar:
                tar.extractall(tmp, filter="data")
            folder = next(os.path.join(r, "train") for r, d, _ in os.walk(tmp) if "train" in d)
            ds = torchvision.datasets.ImageFolder(folder, train_transform())
            if args.limit:
                ds = torch.utils.data.Subset(ds, range(0, len(ds), len(ds) // args.limit))
            for w in args.workers:
                dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True,
                                                 num_workers=w, persistent_workers=w > 0)
                rates[f"DataLoader(num_workers={w}), JPEG files"] = images_per_second(
                    dl, device, args.epochs)
    ours = DeviceLoader(data, batch_size=args.batch, device=device, mean=MEAN, std=STD,
                        dtype=dtype)
    rates["mlguard DeviceLoader"] = images_per_second(ours, device, args.epochs)
    ours_wm = DeviceLoader(data, batch_size=args.batch, device=device, mean=MEAN, std=STD,
                           dtype=dtype, triggers=mixer)
    rates[f"mlguard DeviceLoader + {args.per_batch} triggers"] = images_per_second(
        ours_wm, device, args.epochs)
    base = rates[f"DataLoader(num_workers={args.workers[0]}), in memory"]
    print(f"\nloader alone, {len(data)} CIFAR-10 images, batch {args.batch}, {results['device']}")
    for name, r in rates.items():
        print(f"  {name:<48} {r:>10,.0f} images/s  {r / base:5.2f}x")

    if device.type == "cuda" or args.train:
        results["epoch_s"] = ep = {}
        dl = torch.utils.data.DataLoader(InMemoryCIFAR(data.images, data.labels,
                                                       train_transform()),
                                         batch_size=args.batch, shuffle=True,
                                         num_workers=args.workers[-1], pin_memory=True,
                                         persistent_workers=True)
        ep[f"DataLoader(num_workers={args.workers[-1]})"] = epoch_seconds(
            dl, device, dtype, args.train_batches)
        ep["DeviceLoader"] = epoch_seconds(ours, device, dtype, args.train_batches)
        ep["DeviceLoader + TriggerMixer"] = epoch_seconds(ours_wm, device, dtype,
                                                          args.train_batches)
        print(f"\ntraining epoch, ResNet-18, {dtype}")
        for name, s in ep.items():
            print(f"  {name:<48} {s:8.2f} s  {s / ep['DeviceLoader']:5.3f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
