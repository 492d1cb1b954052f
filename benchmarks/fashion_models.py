"""Shared by bench_calibration.py, bench_robustness.py and the calibration test: small
Fashion-MNIST models that never saw a key, fresh keys of every kind, the match counts they
give, and an owner model that carries several keys."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlguard import TriggerKey, TriggerMixer, WeightKey, WeightWatermark, attacks, data, verify
from mlguard.cli.demo import batches, small_cnn, train

TRIGGER_KINDS = ("abstract", "noise", "content", "unrelated")
WEIGHT_TARGETS = (("7.weight",), ("3.weight",))
CIFAR_ARCHIVES = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" /
                  "cifar10-jpeg.tar.gz", Path("/work/shared/data/cifar10-jpeg.tar.gz"))


def cifar_gray(count: int) -> torch.Tensor | None:
    """The first `count` CIFAR-10 test images, grey and 28x28, as uint8 (N, 1, 28, 28): the
    'unrelated' trigger source for Fashion-MNIST (another domain, as in Adi et al.)."""
    archive = next((p for p in CIFAR_ARCHIVES if p.exists()), None)
    if archive is None:
        return None
    out = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg") and "/test/" in member.name:
                image = Image.open(io.BytesIO(tar.extractfile(member).read()))
                out.append(np.asarray(image.convert("L").resize((28, 28), Image.BILINEAR)))
                if len(out) == count:
                    break
    return torch.from_numpy(np.stack(out))[:, None]


def sources(test_images: torch.Tensor, unrelated: torch.Tensor | None) -> dict:
    return {"noise": test_images, "content": test_images, "unrelated": unrelated}


def fresh_trigger_key(kind: str, size: int, secret: bytes, source) -> TriggerKey:
    # Per-image content/noise keys, as when the calibration and robustness tables in
    # RESULTS.md were measured; pattern -> class keys have their own (bench_backdoor.py).
    mode = {"mode": "image"} if kind in ("noise", "content") else {}
    return TriggerKey.generate(num_classes=10, size=size, shape=(1, 28, 28), kind=kind,
                               mean=data.FASHION_MNIST_MEAN, std=data.FASHION_MNIST_STD,
                               secret=secret, source=source if kind != "abstract" else None,
                               **mode)


def secret_for(*parts: int) -> bytes:
    """A distinct fixed secret per (model, kind, key index): reproducible runs."""
    seed = np.random.SeedSequence(list(parts)).generate_state(8, dtype=np.uint32)
    return seed.tobytes()


def train_clean(index: int, images, labels, subset: int, epochs: int) -> torch.nn.Module:
    """Model `index`: its own initialization and its own random `subset` of the images."""
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(index))[:subset]
    torch.manual_seed(index)
    model = small_cnn()
    train(model, images[pick], labels[pick], epochs, "cpu", None, seed=index)
    return model.eval()


def fine_tuned(model, index: int, images, labels, subset: int) -> torch.nn.Module:
    """Model `index` fine-tuned (FTAL, 1 epoch) on another random subset."""
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(10_000 + index))
    pick = pick[:subset]
    x = torch.cat([b for b, _ in batches(images[pick], labels[pick], len(pick))])
    return attacks.fine_tune(model, (x, labels[pick]), "FTAL", epochs=1, lr=1e-3, seed=index)


def null_counts(model, index: int, keys_per_kind: int, triggers: int, bits: int,
                source: dict, alpha: float = 1e-6) -> dict[str, list[tuple[int, int, float]]]:
    """(matches, total, log10 p) of `model` against fresh keys it never saw: per trigger
    kind, and 'weight' for weight keys (targets alternating over WEIGHT_TARGETS)."""
    out: dict[str, list] = {}
    for k_index, kind in enumerate(TRIGGER_KINDS):
        if kind != "abstract" and source.get(kind) is None:
            continue
        for j in range(keys_per_kind):
            key = fresh_trigger_key(kind, triggers, secret_for(index, k_index, j), source.get(kind))
            v = verify(model, key, alpha=alpha)
            out.setdefault(kind, []).append((v.matches, v.total, v.log_p_value, v.detected))
    for j in range(keys_per_kind):
        key = WeightKey.generate(bits=bits, targets=WEIGHT_TARGETS[j % len(WEIGHT_TARGETS)],
                                 secret=secret_for(index, 99, j))
        v = verify(model, key, alpha=alpha)
        out.setdefault("weight", []).append((v.matches, v.total, v.log_p_value, v.detected))
    return out


def owner_model(images, labels, keys, epochs: int, subset: int, per_batch: int = 16):
    """One model carrying all the owner's keys (every trigger kind and a weight key)."""
    torch.manual_seed(12345)
    model = small_cnn()
    mixers = [TriggerMixer(k, per_batch=per_batch) for k in keys if not isinstance(k, WeightKey)]
    marks = [WeightWatermark(k, strength=0.01) for k in keys if isinstance(k, WeightKey)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.Generator().manual_seed(1)  # the same order every epoch (as measured)
        for x, y in batches(images[:subset], labels[:subset], 128, order):
            for mixer in mixers:
                x, y = mixer(x, y)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss = loss + sum(m.loss(model) for m in marks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()
