"""Training-step cost of trigger-set watermarking: plain vs mlguard's mixer vs the naive way.

ResNet-18 (CIFAR stem), SGD, channels_last, bf16 autocast on CUDA, batch already on the
device. Three steps per iteration are timed:
  plain   a training step on B + P data samples (the same total batch, no watermark)
  mixer   B data samples + P triggers appended by mlguard.TriggerMixer (one fused op)
  naive   B data samples + P triggers kept on the host, augmented there with torch ops,
          copied over and torch.cat'ed each step (what people write today)
Correctness is checked before timing. Prints a table and writes JSON (--json).

    python benchmarks/bench_trigger.py                       # CUDA if present
    python benchmarks/bench_trigger.py --device cpu --batch 64 --steps 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
import torchvision

import mlguard
from mlguard import reference


def resnet18_cifar(num_classes: int = 10) -> torch.nn.Module:
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


class NaiveMixer:
    """Triggers on the host; crop/flip with torch ops there; copy and cat every step."""

    def __init__(self, key: mlguard.TriggerKey, per_batch: int, pad: int = 4):
        self.images, self.labels = key.materialize("cpu")
        self.mean = torch.tensor(key.mean)[:, None, None]
        self.std = torch.tensor(key.std)[:, None, None]
        self.per_batch, self.pad, self.step = per_batch, pad, 0
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self, x, y):
        idx = (torch.arange(self.per_batch) + self.step * self.per_batch) % len(self.images)
        self.step += 1
        h, w = self.images.shape[2:]
        padded = F.pad(self.images[idx], (self.pad,) * 4)
        offsets = torch.randint(0, 2 * self.pad + 1, (self.per_batch, 2), generator=self.gen)
        crops = torch.stack([p[:, i:i + h, j:j + w] for p, (i, j) in zip(padded, offsets.tolist())])
        flip = torch.rand(self.per_batch, generator=self.gen) < 0.5
        crops[flip] = crops[flip].flip(-1)
        trig = ((crops - self.mean) / self.std).to(x.device, non_blocking=True)
        trig = trig.to(x.dtype).contiguous(memory_format=torch.channels_last)
        return torch.cat([x, trig]), torch.cat([y, self.labels[idx].to(y.device)])


def timer(device: torch.device):
    if device.type == "cuda":
        def measure(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
    else:
        def measure(fn):
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
    return measure


def check_correctness(key, per_batch, device):
    mixer = mlguard.TriggerMixer(key, per_batch=per_batch)
    x = torch.randn(4, *key.shape, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (4,), device=device)
    out, out_y = mixer(x, y)
    bank, labels = key.materialize("cpu")
    ref, ref_y = reference.mix_triggers(x.cpu(), y.cpu(), bank, labels, 0, per_batch,
                                        key.seed("augment"), mixer.pad, True, key.mean, key.std)
    assert torch.equal(out.cpu(), ref) and torch.equal(out_y.cpu(), ref_y), "mixer != reference"


def run(args) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    key = mlguard.TriggerKey.generate(num_classes=10, size=100, shape=(3, 32, 32),
                                      mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    check_correctness(key, args.per_batch, device)
    B, P = args.batch, args.per_batch
    amp = device.type == "cuda" and not args.no_amp
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else nullcontext
    model = resnet18_cifar().to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data_x = torch.randn(B + P, 3, 32, 32, device=device).contiguous(
        memory_format=torch.channels_last)
    data_y = torch.randint(0, 10, (B + P,), device=device)
    mixer, naive = mlguard.TriggerMixer(key, per_batch=P), NaiveMixer(key, P)

    def step(x, y):
        with autocast():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    variants = {
        "plain": lambda: step(data_x, data_y),
        "mixer": lambda: step(*mixer(data_x[:B], data_y[:B])),
        "naive": lambda: step(*naive(data_x[:B], data_y[:B])),
    }
    measure = timer(device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.warmup):
        for fn in variants.values():
            fn()
    for _ in range(args.steps):  # interleaved, so drifts (clocks, heat) hit all alike
        for name, fn in variants.items():
            times[name].append(measure(fn))
    med = {name: statistics.median(t) for name, t in times.items()}
    # The mixing alone (no training step), many calls per sample: small enough to need it.
    reps = 100
    mix_only_us = {
        name: 1e3 / reps * statistics.median(
            measure(lambda: [fn(data_x[:B], data_y[:B]) for _ in range(reps)])
            for _ in range(5))
        for name, fn in (("mixer", mixer), ("naive", naive))}
    spread = {name: (statistics.quantiles(t, n=4)[2] - statistics.quantiles(t, n=4)[0])
              if len(t) >= 4 else float("nan") for name, t in times.items()}
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "mlguard": mlguard.__version__,
        "batch": B, "per_batch": P, "bf16_autocast": amp, "channels_last": True,
        "steps": args.steps, "warmup": args.warmup,
        "median_ms": med, "iqr_ms": spread, "mix_only_us": mix_only_us,
        "mixer_overhead_pct": 100 * (med["mixer"] / med["plain"] - 1),
        "naive_overhead_pct": 100 * (med["naive"] / med["plain"] - 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=None, help="default 512 on CUDA, 64 on the CPU")
    p.add_argument("--per-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=None, help="default 50 on CUDA, 20 on the CPU")
    p.add_argument("--warmup", type=int, default=None, help="default 10 on CUDA, 2 on the CPU")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    args.batch = args.batch or (512 if cuda else 64)
    args.steps = args.steps or (50 if cuda else 20)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    r = run(args)
    print(f"ResNet-18 (CIFAR stem) training step, batch {r['batch']} + {r['per_batch']} triggers, "
          f"{r['device']}, bf16 autocast {r['bf16_autocast']}, channels_last, "
          f"median of {r['steps']} steps")
    print(f"{'variant':<8} {'median ms':>10} {'IQR ms':>8} {'vs plain':>9}")
    for name, ms in r["median_ms"].items():
        print(f"{name:<8} {ms:10.2f} {r['iqr_ms'][name]:8.2f} "
              f"{100 * (ms / r['median_ms']['plain'] - 1):+8.1f}%")
    print("mixing alone (no training step): " + ", ".join(
        f"{name} {us:.1f} us" for name, us in r["mix_only_us"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
