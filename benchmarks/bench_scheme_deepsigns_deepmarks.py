"""DeepSigns and DeepMarks (schemes/deepsigns.py, schemes/deepmarks.py) on Fashion-MNIST
small_cnn, CPU: embedding cost, reads of marked models, DeepMarks' collusion resistance
(averaged customers' models) and calibration of both verdicts on clean models.

(1) DeepSigns: a model trained with the embedding loss vs. a clean twin (same seed, data
    and order); the read of both (matches/total, p).
(2) DeepMarks: one clean base model; each customer's copy fine-tuned one epoch with its code
    vs. a twin fine-tuned the same way without it; every user of the master tested on each
    copy and on averages of 2 and 3 copies (named after Bonferroni at alpha, and by the
    AND-ACC decoding).
(3) Calibration: `--models` clean models (own seed, own random subset, 1 epoch) read with
    fresh keys of both schemes (counts against Binomial(n, 1/2), detections at 1e-6) and
    with the owner's keys (no model may be detected or name a user).

    PYTHONPATH=python python benchmarks/bench_scheme_deepsigns_deepmarks.py --out dsdm.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_models import secret_for, train_clean

from mlguard import data
from mlguard.cli.demo import accuracy, batches, small_cnn
from mlguard.evaluation.calibration import binomial_fit
from mlguard.schemes import ReadOptions, Suspect
from mlguard.schemes.deepmarks import DeepMarks, DeepMarksKey, identify
from mlguard.schemes.deepsigns import DeepSigns, DeepSignsKey
from mlguard.verification import stats

ALPHA = 1e-6


def log10_p(reading) -> float:
    return stats.binomial_log_sf(reading.matches, reading.total, reading.chance) / math.log(10)


def fit(model, images, labels, epochs, seed, embedding=None, lr=1e-3):
    """Adam, batch 128, the same data order with and without the embedding."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.Generator().manual_seed(seed)
        for x, y in batches(images, labels, 128, order):
            loss = F.cross_entropy(model(x), y)
            if embedding is not None:
                loss = loss + embedding.loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def deepsigns_key(images, labels, secret, bits):
    return DeepSignsKey.generate(images, labels, layer="8", num_classes=10, bits=bits,
                                 count=50, mean=data.FASHION_MNIST_MEAN,
                                 std=data.FASHION_MNIST_STD, secret=secret)


def average(models):
    out = copy.deepcopy(models[0])
    out.load_state_dict({k: sum(m.state_dict()[k] for m in models) / len(models)
                         for k in out.state_dict()})
    return out.eval()


def compare_fingerprints(base, ft_x, ft_y, acc, args) -> dict:
    """The same customers' copies with mlguard's existing Fingerprints (an independent
    weight key per customer, WeightWatermark at its default strength), averaged the same
    way: which customers' keys detect the average?"""
    from mlguard import WeightWatermark, verify
    from mlguard.weights.fingerprints import Fingerprints

    shop = Fingerprints(secret_for(777, 3), bits=args.fp_bits, targets=("7.weight",))
    ids = [f"customer-{u}" for u in range(args.customers)]
    copies = []
    for cid in ids:
        mark = WeightWatermark(shop.key_for(cid))
        emb = type("Regularizer", (), {"loss": lambda self, m, x, y: mark.loss(m)})()
        copies.append(fit(copy.deepcopy(base), ft_x, ft_y, 1, 3, emb))
    rows = {"bits": args.fp_bits, "copies_accuracy": [acc(m) for m in copies], "averages": []}
    for n in range(2, args.customers + 1):
        avg = average(copies[:n])
        verdicts = [verify(avg, shop.key_for(cid)) for cid in ids]
        rows["averages"].append({
            "group": list(range(n)), "accuracy": acc(avg),
            "detected": [cid for cid, v in zip(ids, verdicts) if v.detected],
            "matches": [v.matches for v in verdicts],
            "identify_names": shop.identify(avg).customer})
        print(f"fingerprints average {n}: {rows['averages'][-1]}", file=sys.stderr, flush=True)
    return rows


def deepmarks_part(images, labels, master, acc, args, start) -> dict:
    torch.manual_seed(4321)
    base = fit(small_cnn(), images[:args.owner_subset], labels[:args.owner_subset],
               args.owner_epochs, 2)
    ft_x, ft_y = images[30000:33000], labels[30000:33000]
    twin = fit(copy.deepcopy(base), ft_x, ft_y, 1, 3)
    copies, dm = [], {"base_accuracy": acc(base), "twin_accuracy": acc(twin), "copies": []}
    for u in range(args.customers):
        model = fit(copy.deepcopy(base), ft_x, ft_y, 1, 3, DeepMarks.embedding(master.for_user(u)))
        copies.append(model)
        found = identify(model, master, ALPHA)
        r = found.readings[u]
        dm["copies"].append({"user": u, "accuracy": acc(model), "matches": r.matches,
                             "total": r.total, "log10_p": log10_p(r), "named": found.named,
                             "decoded": found.decoded})
        print(f"deepmarks copy {u}: {dm['copies'][-1]} ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr, flush=True)
    dm["cost_points"] = 100 * (dm["twin_accuracy"]
                               - sum(c["accuracy"] for c in dm["copies"]) / len(copies))
    dm["averages"] = []
    # every pair of the first three, then the first 3, 4, ... copies together
    groups = [g for g in ((0, 1), (0, 2), (1, 2)) if max(g) < args.customers]
    groups += [tuple(range(n)) for n in range(3, args.customers + 1)]
    for group in groups:
        avg = average([copies[u] for u in group])
        found = identify(avg, master, ALPHA)
        innocent = [u for u in range(master.users) if u not in group]
        dm["averages"].append({
            "group": list(group), "accuracy": acc(avg), "named": found.named,
            "decoded": found.decoded,
            "colluders": {u: [found.readings[u].matches, found.readings[u].total,
                              found.log_p_values[u] / math.log(10)] for u in group},
            "max_innocent_matches": max(found.readings[u].matches for u in innocent),
            "min_innocent_log10_p": min(found.log_p_values[u] for u in innocent) / math.log(10)})
        print(f"deepmarks average {group}: {dm['averages'][-1]}", file=sys.stderr, flush=True)
    if args.compare_fingerprints:
        dm["fingerprints_weight_keys"] = compare_fingerprints(base, ft_x, ft_y, acc, args)
    found = identify(twin, master, ALPHA)
    dm["twin"] = {"named": found.named, "decoded": found.decoded,
                  "min_log10_p": min(found.log_p_values) / math.log(10)}
    return dm


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--subset", type=int, default=3000)
    p.add_argument("--owner-subset", type=int, default=6000)
    p.add_argument("--owner-epochs", type=int, default=3)
    p.add_argument("--ds-bits", type=int, default=32)
    p.add_argument("--ds-strength", type=float, nargs="+", default=[0.3],
                   help="embedding strengths (the first is 'marked', others extra rows)")
    p.add_argument("--customers", type=int, default=3, help=">= 2 fingerprinted copies")
    p.add_argument("--compare-fingerprints", action="store_true",
                   help="also average copies marked with mlguard's existing Fingerprints")
    p.add_argument("--fp-bits", type=int, default=256)
    p.add_argument("--skip-deepsigns", action="store_true", help="part (1) left out")
    p.add_argument("--skip-deepmarks", action="store_true", help="part (2) left out")
    p.add_argument("--test", type=int, default=10000, help="test images for accuracy")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.models == 1 or args.models < 0:
        p.error("--models must be 0 (no calibration) or at least 2 (a goodness of fit)")
    torch.set_num_threads(1)
    start = time.perf_counter()
    images, labels = data.fashion_mnist("train")
    test_x, test_y = data.fashion_mnist("test")
    test_x, test_y = test_x[:args.test], test_y[:args.test]
    acc = lambda m: accuracy(m, test_x, test_y, "cpu")  # noqa: E731
    opts = ReadOptions()
    out: dict = {"args": vars(args)}

    # (1) DeepSigns: marked vs. clean twin
    x_own, y_own = images[:args.owner_subset], labels[:args.owner_subset]
    ds_key = deepsigns_key(x_own, y_own, secret_for(777, 1), args.ds_bits)
    runs = {}
    variants = [("clean", None)] + [
        ("marked" if i == 0 else f"marked_strength_{s}", DeepSigns.embedding(ds_key, strength=s))
        for i, s in enumerate(args.ds_strength)]
    for name, emb in ([] if args.skip_deepsigns else variants):
        torch.manual_seed(12345)
        model = fit(small_cnn(), x_own, y_own, args.owner_epochs, 1, emb)
        r = DeepSigns.read(ds_key, Suspect(model, None), opts)
        runs[name] = {"accuracy": acc(model), "matches": r.matches, "total": r.total,
                      "log10_p": log10_p(r)}
        print(f"deepsigns {name}: {runs[name]} ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr, flush=True)
    if runs:
        for name in [n for n in runs if n.startswith("marked")]:
            runs[name]["cost_points"] = 100 * (runs["clean"]["accuracy"] - runs[name]["accuracy"])
        out["deepsigns"] = {"target_class": ds_key.target_class, **runs}

    # (2) DeepMarks: customers' copies of one base, and averages
    master = DeepMarksKey.generate(targets=("7.weight",), user=0, secret=secret_for(777, 2))
    if not args.skip_deepmarks:
        out["deepmarks"] = deepmarks_part(images, labels, master, acc, args, start)

    # (3) calibration on clean models (--models 0: skipped)
    base = fit(small_cnn(), images[:args.owner_subset], labels[:args.owner_subset],
               args.owner_epochs, 2)

    # (3) calibration on clean models (--models 0: skipped)
    if args.models == 0:
        out["seconds"] = time.perf_counter() - start
        print(json.dumps(out, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        return 0
    rows = {"deepsigns_fresh": [], "deepmarks_fresh": [], "deepsigns_owner": [],
            "deepmarks_owner_min_log10_p": [], "deepmarks_owner_named": 0, "accuracy": []}
    for i in range(args.models):
        model = train_clean(i, images, labels, args.subset, 1)
        rows["accuracy"].append(acc(model))
        for j in range(2):
            key = deepsigns_key(images[:10000], labels[:10000], secret_for(i, 50, j), args.ds_bits)
            r = DeepSigns.read(key, Suspect(model, None), opts)
            rows["deepsigns_fresh"].append((r.matches, r.total, log10_p(r)))
            key = DeepMarksKey.generate(targets=("7.weight",), user=(2 * i + j) % 57,
                                        secret=secret_for(i, 51, j))
            r = DeepMarks.read(key, Suspect(None, model.state_dict()), opts)
            rows["deepmarks_fresh"].append((r.matches, r.total, log10_p(r)))
        r = DeepSigns.read(ds_key, Suspect(model, None), opts)
        rows["deepsigns_owner"].append((r.matches, r.total, log10_p(r)))
        found = identify(model, master, ALPHA)
        rows["deepmarks_owner_min_log10_p"].append(min(found.log_p_values) / math.log(10))
        rows["deepmarks_owner_named"] += len(found.named) + len(found.decoded)
        print(f"clean model {i + 1}/{args.models} ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr, flush=True)
    calib = {}
    for name in ("deepsigns_fresh", "deepmarks_fresh", "deepsigns_owner"):
        counts = [m for m, _, _ in rows[name]]
        f = binomial_fit(counts, rows[name][0][1], 0.5)
        calib[name] = {"fit": f.to_dict(), "min_log10_p": min(lp for _, _, lp in rows[name]),
                       "detections": sum(lp < math.log10(ALPHA) for _, _, lp in rows[name])}
    calib["deepmarks_owner"] = {"users_named_or_decoded": rows["deepmarks_owner_named"],
                                "min_log10_p": min(rows["deepmarks_owner_min_log10_p"])}
    calib["clean_accuracy"] = {"mean": sum(rows["accuracy"]) / len(rows["accuracy"]),
                               "min": min(rows["accuracy"]), "max": max(rows["accuracy"])}
    out["calibration"] = calib
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
