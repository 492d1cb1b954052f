"""Weight keys and customer fingerprints after permute / rescale / add_dummy_units (issue 20):
each attacked model read without and with the owner's reference, in one table; and the
time to align a ResNet-18 to its reference on this machine's CPU.

small_cnn on Fashion-MNIST: the owner's model carries a 128-bit weight key on 7.weight
(WeightWatermark, strength 0.01, trained in); a customer's copy of it is fine-tuned with
that customer's fingerprint key (64 bits on 7.weight) and identified among 20 customers,
with the owner's model as the reference.

    nice -n 10 python benchmarks/bench_free_transforms.py [--images 8000]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision

from mlguard import Fingerprints, WeightKey, WeightWatermark, attacks, data, verify
from mlguard.cli.demo import accuracy, small_cnn
from mlguard.weights.align import Reference, align

from bench_align_null import secret, subset, train

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    images, labels = data.fashion_mnist("train")
    test_x, test_y = data.fashion_mnist("test")
    owner_key = WeightKey.generate(bits=128, targets=("7.weight",), secret=secret(1))
    torch.manual_seed(0)
    owner = train(small_cnn(), *subset(images, labels, args.images, 0), 2, 0,
                  watermark=WeightWatermark(owner_key, strength=0.01))
    customers = [f"customer-{i:02d}" for i in range(20)]
    shop = Fingerprints(secret(7), bits=64, targets=("7.weight",), issued=customers)
    sold = small_cnn()
    sold.load_state_dict(owner.state_dict())
    sold = train(sold, *subset(images, labels, args.images // 4, 11), 1, 11, lr=3e-4,
                 watermark=WeightWatermark(shop.key_for("customer-07"), strength=0.01))
    ref = Reference(owner)
    rows = []
    for name, attack in ATTACKS.items():
        for what, model in (("owner's model", owner), ("customer-07's copy", sold)):
            attacked = attack(model).eval()
            acc = accuracy(attacked, test_x, test_y, "cpu")
            if what == "owner's model":
                plain, aligned = verify(attacked, owner_key), verify(attacked, owner_key,
                                                                     reference=ref)
                row = {"attack": name, "model": what, "test_accuracy": acc,
                       "without_reference": fmt(plain), "with_reference": fmt(aligned)}
            else:
                plain = shop.identify(attacked, customers)
                aligned = shop.identify(attacked, customers, reference=ref)
                row = {"attack": name, "model": what, "test_accuracy": acc,
                       "without_reference": who(plain), "with_reference": who(aligned)}
            rows.append(row)
            print(f"| {name} | {what} | {acc:.4f} | {row['without_reference']} | "
                  f"{row['with_reference']} |", flush=True)
    resnet = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    suspect = ATTACKS["all three stacked"](resnet)
    ref18 = Reference(resnet)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        _, record = align(suspect, ref18, exclude=["layer4.1.conv2.weight"])
        times.append(time.perf_counter() - start)
    result = {"rows": rows, "resnet18_align_seconds": sorted(times),
              "resnet18_units_permuted": record.permuted, "resnet18_dropped": record.dropped,
              "resnet18_matching_cost": record.matching_cost}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
