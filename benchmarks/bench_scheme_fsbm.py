"""Frontier Stitching and BlackMarks (issue 19) on Fashion-MNIST small_cnn, CPU: embedding
cost, the marked model's read, and calibration of their reference-bounded nulls.

(a) The owner pre-trains small_cnn (--owner-epochs on --owner-subset images), makes one key
    per scheme from held-out images (train[50000:]) with --references reference models
    (1 epoch on 3,000 images each, their own seeds and subsets), then fine-tunes with each
    scheme's embedding until every trial matches (at most --max-epochs). The clean twin is
    the same pre-trained model fine-tuned as many epochs on the same data in the same order
    without the key: the embedding cost is twin accuracy - marked accuracy (10k test set).
(b) Calibration: --models clean models (1 epoch on 3,000 images of train[:50000], their own
    seeds and subsets, none of them a reference model) read against the owner's key and
    --fresh-keys more keys per scheme (other secrets, same owner model and references).
    The null is a stated upper bound (conservative_chance), so the check is: no detection at
    1e-6, and observed per-model rates below the key's chance.

    PYTHONPATH=python python benchmarks/bench_scheme_fsbm.py --models 50 --out fsbm.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_models import secret_for, train_clean  # noqa: E402

from mlguard import data  # noqa: E402
from mlguard.cli.demo import accuracy, batches  # noqa: E402
from mlguard.schemes import ReadOptions, Suspect, get_scheme  # noqa: E402
from mlguard.verification.verdict import make_verdict  # noqa: E402

SCHEMES = ("frontier-stitching", "blackmarks")
HELD = 50000  # train[HELD:] is the owner's key-generation data; clean models use train[:HELD]


def read(scheme, key, model):
    return get_scheme(scheme).read(key, Suspect(model, None), ReadOptions())


def p_value(reading) -> float:
    v = make_verdict("x", reading.matches, reading.total, reading.chance, 1e-6, "", "", "cpu")
    return math.exp(v.log_p_value)


def fine_tune(model, images, labels, epochs, embedding=None, stop=None):
    """Fine-tunes a copy (Adam 1e-3, batch 128, order seeded per epoch); with an embedding,
    stops after the first epoch at which stop(model) is true. Returns (model, epochs)."""
    model = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    done = 0
    for epoch in range(epochs):
        model.train()
        for x, y in batches(images, labels, 128, torch.Generator().manual_seed(epoch)):
            if embedding is not None:
                x, y = embedding.batch(x, y)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            if embedding is not None:
                loss = loss + embedding.loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        done += 1
        if stop is not None and stop(model.eval()):
            break
    return model.eval(), done


def make_key(scheme, owner, gx, gy, refs, secret, args):
    common = dict(model=owner, images=gx, labels=gy, reference_models=refs,
                  mean=data.FASHION_MNIST_MEAN, std=data.FASHION_MNIST_STD, secret=secret)
    if scheme == "frontier-stitching":
        return get_scheme(scheme).generate(size=args.fs_size, eps=args.fs_eps, **common)
    return get_scheme(scheme).generate(bits=args.bits, eps=args.bm_eps, **common)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--references", type=int, default=5)
    p.add_argument("--fresh-keys", type=int, default=2)
    p.add_argument("--fs-size", type=int, default=300, help="Frontier Stitching key inputs")
    p.add_argument("--bits", type=int, default=100, help="BlackMarks signature bits")
    p.add_argument("--fs-eps", type=float, default=0.1)
    p.add_argument("--bm-eps", type=float, default=0.1)
    p.add_argument("--owner-subset", type=int, default=12000)
    p.add_argument("--owner-epochs", type=int, default=3)
    p.add_argument("--finetune-subset", type=int, default=6000)
    p.add_argument("--max-epochs", type=int, default=8)
    p.add_argument("--per-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    images, labels = data.fashion_mnist("train")
    test_x, test_y = data.fashion_mnist("test")
    pool_x, pool_y = images[:HELD], labels[:HELD]
    gen_x, gen_y = images[HELD:HELD + 5000], labels[HELD:HELD + 5000]

    owner = train_clean(12345, pool_x, pool_y, args.owner_subset, args.owner_epochs)
    refs = [train_clean(1000 + i, pool_x, pool_y, 3000, 1) for i in range(args.references)]
    ft_x, ft_y = pool_x[:args.finetune_subset], pool_y[:args.finetune_subset]
    out: dict = {"args": vars(args), "owner_accuracy": accuracy(owner, test_x, test_y, "cpu"),
                 "schemes": {}}
    keys: dict = {}
    for scheme in SCHEMES:
        t = time.perf_counter()
        key = make_key(scheme, owner, gen_x, gen_y, refs, secret_for(7, 0, 0), args)
        gen_s = time.perf_counter() - t
        keys[scheme] = [key] + [make_key(scheme, owner, gen_x, gen_y, refs,
                                         secret_for(7, 1 + j, 0), args)
                                for j in range(args.fresh_keys)]
        emb = get_scheme(scheme).embedding(key, per_batch=args.per_batch)
        t = time.perf_counter()
        marked, epochs = fine_tune(owner, ft_x, ft_y, args.max_epochs, emb,
                                   stop=lambda m, k=key, s=scheme: (
                                       lambda r: r.matches == r.total)(read(s, k, m)))
        embed_s = time.perf_counter() - t
        twin, _ = fine_tune(owner, ft_x, ft_y, epochs)
        rm, rt, ro = read(scheme, key, marked), read(scheme, key, twin), read(scheme, key, owner)
        acc_m, acc_t = accuracy(marked, test_x, test_y, "cpu"), accuracy(twin, test_x, test_y,
                                                                         "cpu")
        out["schemes"][scheme] = {
            "chance": key.chance, "total": rm.total, "reference_matches": key.reference["matches"],
            "generate_s": round(gen_s, 2), "embed_s": round(embed_s, 2), "epochs": epochs,
            "marked": [rm.matches, rm.total, p_value(rm)], "twin": [rt.matches, rt.total,
                                                                    p_value(rt)],
            "owner_before": [ro.matches, ro.total], "accuracy_marked": acc_m,
            "accuracy_twin": acc_t, "cost_points": round(100 * (acc_t - acc_m), 2),
            "marked_extra": {k: v for k, v in rm.extra.items() if k != "null"},
            "null": rm.extra["null"]}
        print(scheme, json.dumps(out["schemes"][scheme]), flush=True)

    calib = {s: [] for s in SCHEMES}
    for i in range(args.models):
        model = train_clean(2000 + i, pool_x, pool_y, 3000, 1)
        for scheme in SCHEMES:
            for j, key in enumerate(keys[scheme]):
                r = read(scheme, key, model)
                calib[scheme].append({"model": i, "key": j, "matches": r.matches,
                                      "total": r.total, "chance": r.chance, "p": p_value(r)})
    for scheme, rows in calib.items():
        rates = [r["matches"] / r["total"] for r in rows]
        out["schemes"][scheme]["calibration"] = {
            "reads": len(rows), "detections_1e-6": sum(r["p"] < 1e-6 for r in rows),
            "mean_rate": sum(rates) / len(rates), "max_rate": max(rates),
            "above_chance": sum(r["matches"] / r["total"] > r["chance"] for r in rows),
            "min_p": min(r["p"] for r in rows),
            "chances": sorted({round(r["chance"], 4) for r in rows})}
        print(scheme, "calibration", json.dumps(out["schemes"][scheme]["calibration"]))
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["load_average"] = os.getloadavg()
    out["machine"] = platform.platform()
    out["calibration_rows"] = calib
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "calibration_rows"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
