"""The main job: watermark a Fashion-MNIST CNN, train a twin without one, verify both.

The `demo` verb's parser is cli/demo_verb.py, which imports this module only when it runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import data
from ..keys import TriggerKey, load_key
from ..triggers import TriggerMixer
from ..triggers.retention_check import needed_matches
from ..verification import Verdict, verify
from ..verification.retention import retention
from .demo_verb import BATCH_SIZE, EPOCHS, PER_BATCH


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
          batch_size: int = 128, seed: int = 0,
          on_epoch: Callable[[int, float], None] | None = None) -> None:
    """Adam on the fast data path: a DeviceLoader makes the normalized batches on `device`
    from the uint8 images in one op per batch and appends the mixer's triggers (mlguard.data);
    `on_epoch(epoch, mean training loss)` runs after each epoch (the demo's progress line)."""
    loader = data.DeviceLoader(images, labels, batch_size, device=device, augment=False,
                               mean=data.FASHION_MNIST_MEAN, std=data.FASHION_MNIST_STD,
                               channels_last=False, triggers=mixer,
                               seed=seed)  # the same data order with and without watermark
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        model.train()
        total, count = torch.zeros((), device=device), 0
        for x, y in loader:  # with a mixer, each batch already holds its triggers
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(y)
            count += len(y)
        if on_epoch is not None:
            on_epoch(epoch, float(total) / max(count, 1))


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


# Sizing (README "Sizing per_batch and epochs", benchmarks/RESULTS.md bench_retention): on
# all 60,000 images a CNN needs about 150 views per trigger (epochs x steps x per_batch / key
# size) to reach 80% retention; 2 epochs x 469 steps x 16 / 100 triggers = 150, and both
# models train in under 3 minutes on 2 idle CPU cores (benchmarks/RESULTS.md, issue 24).
TRIGGERS = 100


def run(epochs: int = EPOCHS, device: str | None = None, out: str | Path = "runs/demo",
        train_limit: int | None = None, triggers: int = TRIGGERS, per_batch: int = PER_BATCH,
        seed: int = 0, log=print) -> list[DemoResult]:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_x, train_y = data.fashion_mnist("train")
    test_x, test_y = data.fashion_mnist("test")
    if train_limit:
        train_x, train_y = train_x[:train_limit], train_y[:train_limit]
    key, made = _owner_key(out / "owner.key", triggers)
    steps = -(-len(train_x) // BATCH_SIZE)
    log(f"Fashion-MNIST: {len(train_x)} training images, {len(test_x)} test images; "
        f"device {device}; {epochs} epochs of {steps} steps; key {key.key_id} ({key.size} "
        f"abstract triggers, {'new' if made else 'kept from an earlier run'}: "
        f"{out / 'owner.key'}); {per_batch} triggers per batch, each seen "
        f"{epochs * steps * per_batch / key.size:.0f} times")
    needed = needed_matches(key.size, 1 / key.num_classes, 1e-6)  # verify's default alpha

    results = []
    started = time.perf_counter()
    for name, mixer in (("watermarked", TriggerMixer(key, per_batch=per_batch)),
                        ("clean", None)):
        torch.manual_seed(seed)  # identical initial weights for both models
        model = small_cnn().to(device)
        start = time.perf_counter()

        tested = {}  # epoch -> test accuracy (the last one is the model's)

        def progress(epoch: int, loss: float) -> None:
            kept = retention(model, key)
            tested[epoch] = accuracy(model, test_x, test_y, device)
            log(f"  {name:<11} epoch {epoch + 1}/{epochs}: loss {loss:.3f}, test accuracy "
                f"{100 * tested[epoch]:.2f}%, retention "
                f"{100 * kept:.0f}% ({round(kept * key.size)}/{key.size} triggers; detection "
                f"needs {needed}), {time.perf_counter() - start:.1f} s")

        train(model, train_x, train_y, epochs, device, mixer, batch_size=BATCH_SIZE,
              seed=seed, on_epoch=progress)
        acc = tested[epochs - 1] if epochs else accuracy(model, test_x, test_y, device)
        verdict = verify(model, key)
        log(f"  trained {name:<11} in {time.perf_counter() - start:5.1f} s: "
            f"test accuracy {100 * acc:.2f}%")
        torch.save(model.state_dict(), out / f"{name}.pt")
        (out / f"{name}.verdict.json").write_text(verdict.to_json() + "\n")
        results.append(DemoResult(name, acc, verdict))
    log(f"both models trained and verified in {time.perf_counter() - started:.1f} s")
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

