"""The margin-based watermark's null (schemes/margin.py) on the extraction zoo's independent
models (benchmarks/extraction_zoo.py, docs/extraction_zoo.md): margin keys made from the
zoo's owner split (a key is images + keyed labels: no victim is needed for the null) are
read with mlguard.verify on every independent model; false detections at alpha, the largest
match count, and the chi-square fit of the match counts against Binomial(size, 1/(C-1))
(evaluation/calibration.py binomial_fit), per key and over all (key, model) readings.

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_margin_null.py \
        --zoo /work/zoo/fashion-mnist --keys 3 --json margin_null.json

The verdict's bound 1/(C-1) is reached only by a model that is always wrong on the triggers;
a model with error rate e on them matches at e/(C-1), so the fit is expected to show a
mean below the binomial's (the bound is conservative), not to match it. Given the models'
answers, the total of all readings has an exactly known mean and variance over the keys'
labels: the script tests it too (the sharp check that the labels behave as the null says).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction_zoo import load_zoo, split_tensors  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", required=True, help="the zoo folder, e.g. /work/zoo/fashion-mnist")
    p.add_argument("--keys", type=int, default=3, help="margin keys (default 3)")
    p.add_argument("--size", type=int, default=100, help="triggers per key (default 100)")
    p.add_argument("--alpha", type=float, default=1e-6)
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    import mlguard
    from mlguard.evaluation.calibration import binomial_fit
    from mlguard.schemes.margin import MarginKey

    start = time.perf_counter()
    zoo = load_zoo(args.zoo)
    root = Path(args.zoo)
    split = json.loads((root / zoo["split"]).read_text())
    owner_u8, _, owner_y = split_tensors(zoo["dataset"], {"owner": split["owner"]},
                                         split.get("limit"))["owner"]
    norm = zoo["normalization"]
    keys = []
    for i in range(args.keys):  # fixed secrets: the figures can be reproduced
        secret = hashlib.sha256(f"bench-margin-null/{i}".encode()).digest()
        keys.append(MarginKey.generate(images=owner_u8, labels=owner_y,
                                       num_classes=zoo["num_classes"], size=args.size,
                                       mean=norm["mean"], std=norm["std"], secret=secret))
    made = time.perf_counter() - start
    independents = [m for m in zoo["models"] if m["role"] == "independent"]
    rows = []
    for m in independents:
        for k, key in enumerate(keys):
            v = mlguard.verify(m["model"], key, alpha=args.alpha)
            right = int(v.extra["true_class_answers"].split("/")[0])
            rows.append({"model": m["name"], "arch": m["arch"], "key": k, "matches": v.matches,
                         "total": v.total, "wrong": v.total - right, "p_value": v.p_value,
                         "detected": v.detected})
    chance = keys[0].chance
    out = {"zoo": str(root), "independents": len(independents), "keys": args.keys,
           "size": args.size, "alpha": args.alpha, "chance": chance, "per_key": [],
           "seconds": time.perf_counter() - start, "key_seconds": made,
           "load_average": os.getloadavg()}
    for k in range(args.keys):
        counts = [r["matches"] for r in rows if r["key"] == k]
        fit = binomial_fit(counts, args.size, chance)
        out["per_key"].append({
            "key": k, "key_id": keys[k].key_id,
            "false_detections": sum(r["detected"] for r in rows if r["key"] == k),
            "max_matches": max(counts), "mean_matches": float(np.mean(counts)),
            "fit": fit.to_dict()})
    counts = [r["matches"] for r in rows]
    out["all"] = {"false_detections": sum(r["detected"] for r in rows),
                  "readings": len(rows), "max_matches": max(counts),
                  "min_p": min(r["p_value"] for r in rows),
                  "fit": binomial_fit(counts, args.size, chance).to_dict()}
    # Given the models' answers, the only randomness is the keys' labels: trigger i's label is
    # uniform over the C-1 classes other than its true one, independently across triggers and
    # keys, so S_i (the models answering it) has a known mean and variance; many models share
    # each label, so the readings above are not independent, but the S_i are: their sum is a
    # sharp test (normal approximation) that the labels behave as the null says.
    from scipy.stats import norm as normal

    from mlguard.schemes._adversarial import predictions

    observed = expected = variance = 0.0
    for key in keys:
        x, labels = key.materialize()
        preds = torch.stack([predictions(m["model"], x, key.mean, key.std, key.num_classes)
                             for m in independents])  # (models, triggers)
        for i, (lab, true) in enumerate(zip(labels.tolist(), key.true_labels)):
            per_class = torch.bincount(preds[:, i], minlength=key.num_classes).double()
            others = per_class[[c for c in range(key.num_classes) if c != true]]
            observed += float(per_class[lab])
            expected += float(others.mean())
            variance += float((others ** 2).mean() - others.mean() ** 2)
    if observed != sum(counts):
        raise RuntimeError(f"the triggers' sum {observed} is not the readings' {sum(counts)}")
    z = (observed - expected) / max(variance, 1e-12) ** 0.5
    out["conditional"] = {"matches": observed, "expected": expected, "sd": variance ** 0.5,
                          "z": z, "p_two_sided": float(2 * normal.sf(abs(z)))}
    out["rows"] = rows
    print(f"{len(independents)} independent models x {args.keys} margin keys of "
          f"{args.size} (chance 1/{round(1 / chance)}), alpha {args.alpha:g}, "
          f"{out['seconds']:.0f} s (keys {made:.1f} s), load {out['load_average'][0]:.1f}")
    print("| key | false detections | max matches | mean | binomial mean | variance | "
          "binomial variance | chi2 (dof) | fit p |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for k, entry in enumerate(out["per_key"] + [out["all"]]):
        f = entry["fit"]
        name = f"{k} ({entry['key_id'][:8]})" if "key" in entry else "all"
        print(f"| {name} | {entry['false_detections']} | {entry['max_matches']} | "
              f"{f['mean']:.2f} | {f['expected_mean']:.2f} | {f['variance']:.2f} | "
              f"{f['expected_variance']:.2f} | {f['chi2']:.1f} ({f['dof']}) | "
              f"{f['p_value']:.2g} |")
    c = out["conditional"]
    print(f"given the models' answers: {c['matches']:.0f} matches in all readings, "
          f"{c['expected']:.1f} expected over the keys' labels (sd {c['sd']:.1f}), z = "
          f"{c['z']:.2f}, two-sided p = {c['p_two_sided']:.2g}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
