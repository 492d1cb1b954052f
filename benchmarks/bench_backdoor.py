"""Per-image vs pattern -> class trigger keys at the same training budget (issue 14).

For each setup a small CNN is trained three times with the same data, seed and budget:
without a key (the accuracy baseline), with a `content` key in mode="image" (every stored
image its own keyed label) and with a `content` key in mode="pattern" (16 keyed patches,
each -> its keyed class, stamped on the batch's own images). Both keys: 100 stored images,
per_batch 16, Adam lr 1e-3. Measured: clean test accuracy, retention (mlguard.retention:
image mode = triggers answered with their label, pattern mode = mean per-pattern success
rate on the key's carriers), the verdict (image: the key's triggers; pattern: 200 fresh test
images as carriers, votes of K = 16 patterns), and the same after FTAL fine-tuning
(mlguard.attacks.fine_tune, 2 epochs, on held-out test images).

    python benchmarks/bench_backdoor.py --cifar /tmp/cifar10      # folder with train/, test/
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import mlguard
import torch
from bench_retention import CIFAR_MEAN, CIFAR_STD, batches, cifar_cnn, cifar_subset
from mlguard import attacks, data
from mlguard.cli.demo import small_cnn
from mlguard.keys import TriggerKey
from mlguard.triggers.mixer import TriggerMixer


@torch.inference_mode()
def accuracy(model, images, labels, mean, std) -> float:
    model.eval()
    return sum(int((model(x).argmax(1) == y).sum())
               for x, y in batches(images, labels, 500, mean, std)) / len(images)


def train(make_model, key, images, labels, mean, std, epochs, batch_size, seed):
    torch.manual_seed(seed)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    mixer = TriggerMixer(key, 16) if key is not None else None
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for x, y in batches(images, labels, batch_size, mean, std, g):
            if mixer is not None:
                x, y = mixer(x, y)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


def judge(model, key, carriers) -> str:
    v = mlguard.verify(model, key, carriers=carriers) if key.mode == "pattern" \
        else mlguard.verify(model, key)
    return f"{v.matches}/{v.total} (p {v.p_value:.1e})"


def run(name, make_model, train_set, test_set, mean, std, epochs, batch_size, seed, log):
    (tx, ty), (vx, vy) = train_set, test_set
    shape = tuple(tx.shape[1:])
    rows = []
    base = train(make_model, None, tx, ty, mean, std, epochs, batch_size, seed)
    base_acc = accuracy(base, vx[:2000], vy[:2000], mean, std)
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    attacker = ((vx[2000:4000].float() / 255 - m) / s, vy[2000:4000])
    carriers = vx[4000:4200]
    for mode in ("image", "pattern"):
        t0 = time.time()
        key = TriggerKey.generate(10, 100, shape, "content", mean, std, bytes([seed + 1]) * 32,
                                  source=tx[:5000], mode=mode)
        model = train(make_model, key, tx, ty, mean, std, epochs, batch_size, seed)
        acc = accuracy(model, vx[:2000], vy[:2000], mean, std)
        tuned = attacks.fine_tune(model, attacker, "FTAL", epochs=2)
        row = {"setup": name, "mode": mode, "acc": acc, "cost": base_acc - acc,
               "retention": mlguard.retention(model, key), "verdict": judge(model, key, carriers),
               "ftal_retention": mlguard.retention(tuned, key),
               "ftal_verdict": judge(tuned, key, carriers), "seconds": time.time() - t0}
        log(row)
        rows.append(row)
    log(f"{name}: baseline accuracy {base_acc:.3f}")
    return base_acc, rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cifar", type=Path, required=True, help="CIFAR-10 (JPEG) folder")
    p.add_argument("--fmnist-train", type=int, default=10000)
    p.add_argument("--cifar-per-class", type=int, default=500)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda s: print(s, flush=True)
    out = []
    tx, ty = data.fashion_mnist("train")
    out.append(("fmnist-cnn", *run("fmnist-cnn", small_cnn, (tx[:args.fmnist_train],
                ty[:args.fmnist_train]), data.fashion_mnist("test"), data.FASHION_MNIST_MEAN,
                data.FASHION_MNIST_STD, args.epochs, 128, args.seed, log)))
    test = cifar_subset(args.cifar, "test", 500)
    order = torch.randperm(len(test[0]), generator=torch.Generator().manual_seed(0))
    test = (test[0][order], test[1][order])
    out.append(("cifar-cnn", *run("cifar-cnn", cifar_cnn,
                cifar_subset(args.cifar, "train", args.cifar_per_class), test, CIFAR_MEAN,
                CIFAR_STD, args.epochs, 64, args.seed, log)))
    print(f"\ndevice: cpu ({platform.machine()}), {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, epochs {args.epochs}")
    print("| setup | mode | test acc (baseline) | accuracy cost | retention | verdict | "
          "retention after FTAL | verdict after FTAL | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, base, rows in out:
        for r in rows:
            print(f"| {name} | {r['mode']} | {r['acc']:.3f} ({base:.3f}) | {r['cost']:+.3f} | "
                  f"{r['retention']:.2f} | {r['verdict']} | {r['ftal_retention']:.2f} | "
                  f"{r['ftal_verdict']} | {r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
