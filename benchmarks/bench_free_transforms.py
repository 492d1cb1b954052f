"""Weight keys and customer fingerprints after permute / rescale / add_dummy_units (issue 20):
each attacked model read without and with the owner's reference, in one table; and the
time to align a ResNet-18 to its reference on this machine's CPU.

small_cnn on Fashion-MNIST (default): the owner's model carries a 128-bit weight key on
7.weight (WeightWatermark, strength 0.01, trained in); a customer's copy of it is fine-tuned
with that customer's fingerprint key (64 bits on 7.weight) and identified among 20
customers, with the owner's model as the reference.

`--data cifar10`: torchvision resnet18 (num_classes=10, 32 x 32 input) trained on a CIFAR-10
JPEG subset, the weight key and the fingerprints on a convolution inside a residual block
(layer3.0.conv1.weight, whose input channels are the residual stream of layer2); the
alignment of each attacked resnet18 is timed.

    nice -n 10 python benchmarks/bench_free_transforms.py [--images 8000]
    nice -n 10 python benchmarks/bench_free_transforms.py --data cifar10 [--images 5000]
        [--test-images 2000] [--models DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torchvision

import torch.nn.functional as F

from mlguard import Fingerprints, WeightKey, WeightWatermark, attacks, data, verify
from mlguard.cli.demo import batches, small_cnn
from mlguard.verification.verify import verify_weights_many
from mlguard.weights.align import MAX_ITERATIONS, Reference, align

from bench_align_null import secret, subset

CIFAR10 = "/work/shared/data/cifar10-jpeg.tar.gz"
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

ATTACKS = {
    "none": lambda m: m,
    "permute": lambda m: attacks.permute(m, seed=1),
    "rescale": lambda m: attacks.rescale(m, seed=1),
    "dummy (8 per layer)": lambda m: attacks.add_dummy_units(m, n=8, seed=1),
    "all three stacked": lambda m: attacks.add_dummy_units(
        attacks.rescale(attacks.permute(m, seed=2), seed=2), n=8, seed=2),
}


def fmt(v) -> str:
    p = f"{v.p_value:.1e}" if v.p_value > 0 else f"1e{v.log_p_value / 2.302585:.0f}"
    return f"{v.matches}/{v.total} p={p} {'DETECTED' if v.detected else 'not detected'}"


def who(found) -> str:
    return (f"{found.customer} (adj. p={found.adjusted_p_value:.1e})" if found.customer
            else f"nobody (adj. p={found.adjusted_p_value:.2g})")


def train(model, images, labels, epochs: int, seed: int, norm, lr: float = 1e-3,
          watermark=None):
    """Adam, batch 128, in the given data order seed; `norm` = (mean, std) per channel."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for x, y in batches(images, labels, 128, order, *norm):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            if watermark is not None:
                loss = loss + watermark.loss(model)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.inference_mode()
def accuracy(model, images, labels, norm) -> float:
    model.eval()
    return sum(int((model(x).argmax(1) == y).sum())
               for x, y in batches(images, labels, 500, None, *norm)) / len(images)


def setup(name: str, images: int, epochs: int) -> dict:
    """The data, architecture and key target of the run."""
    if name == "fashion":
        x, y = data.fashion_mnist("train")
        tx, ty = data.fashion_mnist("test")
        return {"train": (x, y), "test": (tx, ty), "arch": small_cnn, "target": "7.weight",
                "norm": (data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD),
                "images": images or 8000, "epochs": epochs or 2,
                "customer": ((images or 8000) // 4, 1)}
    train_set, test_set = data.cifar10(CIFAR10, "train"), data.cifar10(CIFAR10, "test")
    return {"train": (train_set.images, train_set.labels),
            "test": (test_set.images, test_set.labels),
            "arch": lambda: torchvision.models.resnet18(weights=None, num_classes=10),
            "target": "layer3.0.conv1.weight", "norm": (CIFAR10_MEAN, CIFAR10_STD),
            "images": images or 5000, "epochs": epochs or 3,
            # 1 epoch on a quarter (10 steps) embedded a resnet18 fingerprint only partly
            # (identified by no one, adj. p = 0.006, before any attack)
            "customer": ((images or 5000) // 2, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("fashion", "cifar10"), default="fashion")
    parser.add_argument("--images", type=int, default=None,
                        help="owner's training images (default 8000 fashion, 5000 cifar10)")
    parser.add_argument("--epochs", type=int, default=None, help="default 2 fashion, 3 cifar10")
    parser.add_argument("--test-images", type=int, default=None,
                        help="the first N test images for accuracy (default all)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--models", default=None, metavar="DIR",
                        help="keep the trained models here and reuse them on the next run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = setup(args.data, args.images, args.epochs)
    images, labels = run["train"]
    test_x, test_y = (t[:args.test_images] for t in run["test"])
    target, norm, n = run["target"], run["norm"], run["images"]
    owner_key = WeightKey.generate(bits=128, targets=(target,), secret=secret(1))
    customers = [f"customer-{i:02d}" for i in range(20)]
    shop = Fingerprints(secret(7), bits=64, targets=(target,), issued=customers)
    owner, sold = run["arch"](), run["arch"]()
    sale = run["customer"]  # (training images, epochs) of the customer's fingerprinting
    stem = os.path.join(args.models, f"{args.data}-{n}-{run['epochs']}") if args.models else None
    start = time.perf_counter()
    if stem and os.path.exists(f"{stem}-owner.pt"):  # this script's own earlier output
        owner.load_state_dict(torch.load(f"{stem}-owner.pt", weights_only=True))
        print(f"owner's model loaded from {stem}-owner.pt", flush=True)
    else:
        torch.manual_seed(0)
        owner = train(owner, *subset(images, labels, n, 0), run["epochs"], 0, norm,
                      watermark=WeightWatermark(owner_key, strength=0.01))
        if stem:
            os.makedirs(args.models, exist_ok=True)
            torch.save(owner.state_dict(), f"{stem}-owner.pt")
    owner.eval()
    sold_file = f"{stem}-sold-{sale[0]}-{sale[1]}.pt" if stem else None
    if sold_file and os.path.exists(sold_file):
        sold.load_state_dict(torch.load(sold_file, weights_only=True))
    else:
        sold.load_state_dict(owner.state_dict())
        sold = train(sold, *subset(images, labels, sale[0], 11), sale[1], 11, norm, lr=3e-4,
                     watermark=WeightWatermark(shop.key_for("customer-07"), strength=0.01))
        if sold_file:
            torch.save(sold.state_dict(), sold_file)
    sold.eval()
    print(f"models ready in {time.perf_counter() - start:.0f} s", flush=True)
    train_seconds = time.perf_counter() - start
    ref = Reference(owner)
    rows, align_times = [], {}
    for name, attack in ATTACKS.items():
        for what, model in (("owner's model", owner), ("customer-07's copy", sold)):
            attacked = attack(model).eval()
            acc = accuracy(attacked, test_x, test_y, norm)
            if what == "owner's model":
                plain, aligned = verify(attacked, owner_key), verify(attacked, owner_key,
                                                                     reference=ref)
                row = {"attack": name, "model": what, "test_accuracy": acc,
                       "without_reference": fmt(plain), "with_reference": fmt(aligned),
                       "alignment": {k: v for k, v in aligned.extra["alignment"].items()
                                     if k != "spaces"}}
                if args.data == "cifar10":  # the first pass alone against the iterated one
                    t = time.perf_counter()
                    state, _ = align(attacked, ref, exclude=[target], max_iterations=0)
                    first_pass = round(time.perf_counter() - t, 2)
                    t = time.perf_counter()
                    verify(attacked, owner_key, reference=ref)
                    align_times[name] = {"first pass only": first_pass,
                                         f"up to {MAX_ITERATIONS} sweeps (verify)":
                                         round(time.perf_counter() - t, 2)}
                    one_pass, = verify_weights_many(state, [owner_key], 1e-6)
                    row["with_reference_first_pass_only"] = fmt(one_pass)
            else:
                plain = shop.identify(attacked, customers)
                aligned = shop.identify(attacked, customers, reference=ref)
                row = {"attack": name, "model": what, "test_accuracy": acc,
                       "without_reference": who(plain), "with_reference": who(aligned)}
            rows.append(row)
            print(f"| {name} | {what} | {acc:.4f} | {row['without_reference']} | "
                  f"{row['with_reference']} | {row.get('with_reference_first_pass_only', '')} "
                  f"| {row.get('alignment', '')}", flush=True)
    result = {"data": args.data, "images": n, "epochs": run["epochs"], "customer": sale,
              "train_seconds": round(train_seconds, 1), "rows": rows}
    if args.data == "cifar10":
        result["resnet18_align_seconds_per_attack"] = align_times
    else:  # the alignment cost of an untrained resnet18 (the cifar10 run times trained ones)
        resnet = torchvision.models.resnet18(weights=None, num_classes=10).eval()
        suspect = ATTACKS["all three stacked"](resnet)
        ref18 = Reference(resnet)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            _, record = align(suspect, ref18, exclude=["layer4.1.conv2.weight"])
            times.append(time.perf_counter() - start)
        result.update({"resnet18_align_seconds": sorted(times),
                       "resnet18_units_permuted": record.permuted,
                       "resnet18_dropped": record.dropped,
                       "resnet18_matching_cost": record.matching_cost})
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
