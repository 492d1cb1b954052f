"""The main job: watermark a Fashion-MNIST CNN, train a twin without one, verify both.

The `demo` verb's parser is cli/demo_verb.py, which imports this module only when it runs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import data
from ..keys import TriggerKey, load_key
from ..triggers import TriggerMixer
from ..verification import Verdict, verify


def small_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes))


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator=None,
            mean=data.FASHION_MNIST_MEAN, std=data.FASHION_MNIST_STD):
    """A minimal in-memory loader: uint8 images -> normalized float batches."""
    order = torch.randperm(len(images), generator=generator) if generator is not None \
        else torch.arange(len(images))
    m = torch.tensor(mean)[:, None, None]
    s = torch.tensor(std)[:, None, None]
    for idx in order.split(batch_size):
        yield (images[idx].float() / 255.0 - m) / s, labels[idx]


@torch.inference_mode()
def accuracy(model: nn.Module, images, labels, device) -> float:
    model.eval()
    correct = sum(int((model(x.to(device)).argmax(1) == y.to(device)).sum())
                  for x, y in batches(images, labels, 1000))
    return correct / len(images)


def train(model: nn.Module, images, labels, epochs: int, device, mixer: TriggerMixer | None,
          batch_size: int = 128, seed: int = 0) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)  # same data order with and without watermark
    model.train()
    for _ in range(epochs):
        for x, y in batches(images, labels, batch_size, order):
            x, y = x.to(device), y.to(device)
            if mixer is not None:
                x, y = mixer(x, y)  # the one added line
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()


@dataclass
class DemoResult:
    name: str
    accuracy: float
    verdict: Verdict


def _owner_key(path: Path, triggers: int) -> tuple[TriggerKey, bool]:
    """The demo's key: made once, then kept across runs (a key is a secret; never replaced)."""
    if path.exists():
        key = load_key(path)
        if not isinstance(key, TriggerKey) or key.shape != (1, 28, 28) or key.num_classes != 10:
            raise ValueError(f"{path} is not a Fashion-MNIST trigger key; choose another --out")
        return key, False
    key = TriggerKey.generate(num_classes=10, size=triggers, shape=(1, 28, 28), kind="abstract",
                              mean=data.FASHION_MNIST_MEAN, std=data.FASHION_MNIST_STD)
    key.save(path)
    return key, True


def run(epochs: int = 3, device: str | None = None, out: str | Path = "runs/demo",
        train_limit: int | None = None, triggers: int = 100, per_batch: int = 16,
        seed: int = 0, log=print) -> list[DemoResult]:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_x, train_y = data.fashion_mnist("train")
    test_x, test_y = data.fashion_mnist("test")
    if train_limit:
        train_x, train_y = train_x[:train_limit], train_y[:train_limit]
    key, made = _owner_key(out / "owner.key", triggers)
    log(f"Fashion-MNIST: {len(train_x)} training images, {len(test_x)} test images; "
        f"device {device}; {epochs} epochs; key {key.key_id} ({key.size} abstract triggers, "
        f"{'new' if made else 'kept from an earlier run'}: {out / 'owner.key'})")

    results = []
    for name, mixer in (("watermarked", TriggerMixer(key, per_batch=per_batch)),
                        ("clean", None)):
        torch.manual_seed(seed)  # identical initial weights for both models
        model = small_cnn().to(device)
        start = time.perf_counter()
        train(model, train_x, train_y, epochs, device, mixer, seed=seed)
        acc = accuracy(model, test_x, test_y, device)
        verdict = verify(model, key)
        log(f"  trained {name:<11} in {time.perf_counter() - start:5.1f} s: "
            f"test accuracy {100 * acc:.2f}%")
        torch.save(model.state_dict(), out / f"{name}.pt")
        (out / f"{name}.verdict.json").write_text(verdict.to_json() + "\n")
        results.append(DemoResult(name, acc, verdict))
    log(table(results))
    (out / "summary.json").write_text(json.dumps(
        {r.name: {"test_accuracy": r.accuracy, "verdict": r.verdict.to_dict()} for r in results},
        indent=2) + "\n")
    log(f"models, key and verdicts written to {out}/")
    return results


def table(results: list[DemoResult]) -> str:
    from ..verification.stats import format_p
    rows = [f"{'model':<12} {'test acc':>8} {'triggers':>9} {'p-value':>10}  verdict"]
    for r in results:
        v = r.verdict
        rows.append(f"{r.name:<12} {100 * r.accuracy:7.2f}% {v.matches:>4}/{v.total:<4} "
                    f"{format_p(v.log_p_value):>10}  "
                    f"{'DETECTED' if v.detected else 'not detected'} (alpha {v.alpha:g})")
    return "\n".join(rows)

