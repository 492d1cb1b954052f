"""Calibration of the false-positive rate (issue 11): models that never saw a key must give
match counts distributed exactly as the verdict's null, Binomial(n, 1/C) for trigger keys and
Binomial(T, 1/2) for weight keys, and no detection at alpha = 1e-6.

(a) `--models` small Fashion-MNIST CNNs, each with its own initialization and its own random
    training subset, verified against fresh keys of every trigger kind and weight keys;
(b) Pearson chi-square goodness of fit of the match counts to the binomial null (scipy);
(c) the same models fine-tuned (FTAL, one epoch on another subset): the architecture of a
    watermarked model but not its weights; also checked against the keys of one watermarked
    owner model (the owner's model must be detected, the others never).

    PYTHONPATH=python python benchmarks/bench_calibration.py --models 50 --out calib.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_models import (TRIGGER_KINDS, WEIGHT_TARGETS, cifar_gray,
                                fine_tuned, fresh_trigger_key, null_counts, owner_model,
                                secret_for, sources, train_clean)

from mlguard import WeightKey, data, verify
from mlguard.cli.demo import accuracy
from mlguard.evaluation.calibration import binomial_fit


def summarize(counts: dict[str, list]) -> dict:
    out = {}
    for scheme, rows in counts.items():
        n = rows[0][1]
        chance = 0.5 if scheme == "weight" else 0.1
        fit = binomial_fit([r[0] for r in rows], n, chance)
        out[scheme] = {"fit": fit.to_dict(), "detections": sum(bool(r[3]) for r in rows),
                       "min_p": math.exp(min(r[2] for r in rows))}
    return out


def table(title: str, summary: dict) -> str:
    lines = [f"**{title}**", "",
             ("| keys | verifications | n | mean (expected) | variance (expected) | "
              "chi-square / dof | goodness-of-fit p | smallest p | detections at 1e-6 |"),
             "|---|---:|---:|---|---|---|---:|---:|---:|"]
    for scheme, s in summary.items():
        f = s["fit"]
        lines.append(f"| {scheme} | {f['samples']} | {f['n']} | {f['mean']:.2f} "
                     f"({f['expected_mean']:.1f}) | {f['variance']:.2f} "
                     f"({f['expected_variance']:.2f}) | {f['chi2']:.1f} / {f['dof']} | "
                     f"{f['p_value']:.3f} | {s['min_p']:.2g} | {s['detections']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--subset", type=int, default=3000, help="training images per model")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--finetune-subset", type=int, default=2000)
    p.add_argument("--keys-per-kind", type=int, default=2, help="fresh keys per model and kind")
    p.add_argument("--triggers", type=int, default=100)
    p.add_argument("--bits", type=int, default=256)
    p.add_argument("--owner-subset", type=int, default=12000)
    p.add_argument("--owner-epochs", type=int, default=10)
    p.add_argument("--owner-triggers", type=int, default=50, help="triggers per owner key")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write all counts and fits as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    images, labels = data.fashion_mnist("train")
    test_x, test_y = data.fashion_mnist("test")
    source = sources(test_x[:2000], cifar_gray(2000))
    owner_keys = [fresh_trigger_key(kind, args.owner_triggers, secret_for(777, i),
                                    source.get(kind))
                  for i, kind in enumerate(TRIGGER_KINDS)
                  if kind == "abstract" or source.get(kind) is not None]
    owner_keys.append(WeightKey.generate(bits=args.bits, targets=WEIGHT_TARGETS[0],
                                         secret=secret_for(777, 99)))
    owner = owner_model(images, labels, owner_keys, epochs=args.owner_epochs,
                        subset=args.owner_subset)
    owner_verdicts = [verify(owner, k) for k in owner_keys]
    plain, tuned, against_owner, accs = {}, {}, {}, []
    for i in range(args.models):
        model = train_clean(i, images, labels, args.subset, args.epochs)
        accs.append(accuracy(model, test_x[:2000], test_y[:2000], "cpu"))
        for scheme, rows in null_counts(model, i, args.keys_per_kind, args.triggers, args.bits,
                                        source).items():
            plain.setdefault(scheme, []).extend(rows)
        ft = fine_tuned(model, i, images, labels, args.finetune_subset)
        for scheme, rows in null_counts(ft, 5000 + i, args.keys_per_kind, args.triggers,
                                        args.bits, source).items():
            tuned.setdefault(scheme, []).extend(rows)
        for key in owner_keys:
            v = verify(ft, key)
            name = "weight" if isinstance(key, WeightKey) else key.kind
            against_owner.setdefault(name, []).append((v.matches, v.total, v.log_p_value,
                                                       v.detected))
        print(f"model {i + 1}/{args.models}: accuracy {100 * accs[-1]:.1f}% "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    result = {
        "device": f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__},"
                  f" {args.threads} thread(s)",
        "args": vars(args), "seconds": time.perf_counter() - start,
        "clean_accuracy": {"mean": sum(accs) / len(accs), "min": min(accs), "max": max(accs)},
        "unrelated_source": "CIFAR-10 test images, grey 28x28" if source["unrelated"] is not None
        else "skipped: no CIFAR-10 archive",
        "owner": [{"key": "weight" if isinstance(k, WeightKey) else k.kind,
                   "matches": v.matches, "total": v.total, "log10_p": v.log_p_value / math.log(10),
                   "detected": v.detected} for k, v in zip(owner_keys, owner_verdicts)],
        "a_independent": summarize(plain), "c_fine_tuned_fresh_keys": summarize(tuned),
        "c_fine_tuned_vs_owner_keys": {
            name: {"detections": sum(bool(r[3]) for r in rows),
                   "max_matches": max(r[0] for r in rows), "total": rows[0][1],
                   "mean_matches": sum(r[0] for r in rows) / len(rows)}
            for name, rows in against_owner.items()},
    }
    print(table("(a) independent models, fresh keys", result["a_independent"]))
    print()
    print(table("(c) fine-tuned models, fresh keys", result["c_fine_tuned_fresh_keys"]))
    print()
    print("owner model:", json.dumps(result["owner"]))
    print("fine-tuned models vs the owner's keys:",
          json.dumps(result["c_fine_tuned_vs_owner_keys"]))
    print(f"clean accuracy {result['clean_accuracy']}; {result['seconds']:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
