"""The owner's marked small_cnn fine-tuned by the attacker, then permuted, rescaled and
widened with dummy units (issue 20): is the weight key still detected with the reference?

The owner's model is bench_free_transforms.py's (Fashion-MNIST, 8,000 images, 2 epochs,
128-bit WeightKey on 7.weight, WeightWatermark strength 0.01). The attacker holds 4,000
other training images (disjoint from the owner's) and fine-tunes with
mlguard.attacks.fine_tune (Adi et al. 2018, Sec. 5): FTAL (all layers, Adam 1e-4) and RTAL
(last layer re-initialized, all layers, Adam 1e-3), 5 and 20 epochs; then applies permute,
rescale and add_dummy_units stacked. Each model is read without the reference, with it
aligned by the first pass only (max_iterations=0) and as verify does it (the first pass
then Re-Basin sweeps, weights/align.py); the matching cost and sweeps are recorded.

    nice -n 10 python benchmarks/bench_finetune_then_permute.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mlguard import WeightKey, WeightWatermark, attacks, data, verify
from mlguard.cli.demo import small_cnn
from mlguard.verification.verify import verify_weights_many
from mlguard.weights.align import Reference, align

from bench_align_null import secret
from bench_free_transforms import accuracy, fmt, train

TARGET = "7.weight"
NORM = (data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD)


def stacked(model):
    return attacks.add_dummy_units(attacks.rescale(attacks.permute(model, seed=2), seed=2),
                                   n=8, seed=2)


def normalized(images):
    mean, std = torch.tensor(NORM[0])[:, None, None], torch.tensor(NORM[1])[:, None, None]
    return (images.float() / 255 - mean) / std


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8000, help="the owner's training images")
    parser.add_argument("--attacker-images", type=int, default=4000)
    parser.add_argument("--epochs", default="5,20", help="fine-tuning epochs, comma-separated")
    parser.add_argument("--modes", default="FTAL,RTAL")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, labels = data.fashion_mnist("train")
    test_x, test_y = data.fashion_mnist("test")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    own, theirs = order[:args.images], order[-args.attacker_images:]  # disjoint
    key = WeightKey.generate(bits=128, targets=(TARGET,), secret=secret(1))
    torch.manual_seed(0)
    owner = train(small_cnn(), images[own], labels[own], 2, 0, NORM,
                  watermark=WeightWatermark(key, strength=0.01))
    ref = Reference(owner)
    attacker_data = (normalized(images[theirs]), labels[theirs])
    rows = []
    cases = [("none", 0)] + [(m, int(e)) for m in args.modes.split(",")
                             for e in args.epochs.split(",")]
    for mode, epochs in cases:
        t = time.perf_counter()
        tuned = owner if mode == "none" else attacks.fine_tune(
            owner, attacker_data, mode=mode, epochs=epochs, seed=5)
        tune_seconds = time.perf_counter() - t
        for then in ("", "+ permute, rescale, dummy"):
            suspect = (stacked(tuned) if then else tuned).eval()
            plain = verify(suspect, key)
            state, _ = align(suspect, ref, exclude=[TARGET], max_iterations=0)
            first, = verify_weights_many(state, [key], 1e-6)
            t = time.perf_counter()
            full = verify(suspect, key, reference=ref)
            seconds = time.perf_counter() - t
            a = full.extra["alignment"]
            row = {"fine-tuning": f"{mode} {epochs} epochs" if epochs else "none",
                   "then": then or "nothing", "test_accuracy": accuracy(suspect, test_x,
                                                                        test_y, NORM),
                   "without_reference": fmt(plain), "first_pass_only": fmt(first),
                   "with_reference": fmt(full), "matching_cost": a["matching_cost"],
                   "sweeps": a["iterations"], "converged": a["converged"],
                   "units_moved_by_sweeps": a["units_moved_by_iterations"],
                   "verify_seconds": round(seconds, 2), "fine_tune_seconds": round(tune_seconds)}
            rows.append(row)
            print("| " + " | ".join(str(v) for v in row.values()) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "attacker_images": args.attacker_images}, f, indent=2)


if __name__ == "__main__":
    main()
