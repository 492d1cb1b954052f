"""The victim's own mistakes as a fingerprint (issue 21), measured on the extraction zoo.

A conferrable fingerprint (schemes/conferrable.py) at radius zero: no adversarial search, the
inputs are the victim's *training* images it misclassifies, ranked by the paper's
conferrability score (Lukas et al., ICLR 2021) and kept with the victim's wrong label, as
SAC-w (Guan et al., NeurIPS 2022) picks its samples. The idea: those mistakes are shaped by
the victim's private data, a thief copies them through the answers, and a model trained on
other data does not share them. The surrogate, reference and calibration models train on
labelled images no victim saw (the data set's test set; the surrogates on the victim's
answers to them), so none has seen a candidate. Verdict: the conferrable scheme's test, the
exact binomial at the worst calibration model's one-sided 99.9% Clopper-Pearson bound
(schemes.base.conservative_chance), read on every zoo model.

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_natural_mistakes.py \
        --zoo /work/zoo/fashion-mnist [--json natural.json]

Prints bench_conferrable's tables (every stolen model's read, detections per attack, the
independent models' false detections and fit, the null by architecture).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from scipy.stats import binom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_conferrable import report  # noqa: E402
from extraction_zoo import load_zoo, raw_sets, split_tensors  # noqa: E402

from mlguard.files.model import resolve_arch  # noqa: E402
from mlguard.schemes._adversarial import normalize, predictions  # noqa: E402
from mlguard.schemes._owner_models import train_owner_models  # noqa: E402
from mlguard.schemes.base import conservative_chance  # noqa: E402
from mlguard.schemes.conferrable import conferrability  # noqa: E402

ALPHA = 1e-6


@torch.inference_mode()
def matches(model, x, t, mean, std) -> int | None:
    """Matches of the fingerprint; None for a model whose logits are not finite (a diverged
    attack: its argmax would count as answers)."""
    logits = model(normalize(x, mean, std))
    return int((logits.argmax(1) == t).sum()) if torch.isfinite(logits).all() else None


def fingerprint(victim, arch, owner_u8, owner_y, reference, mean, std, args, seed,
                classes: int):
    """(inputs in [0, 1], the victim's labels, calibration reads, seconds) for one victim."""
    t0 = time.perf_counter()
    models = train_owner_models(victim, arch, *reference, surrogates=args.surrogates,
                                references=args.references, calibration=args.calibration,
                                per_model=args.per_model, epochs=args.epochs, mean=mean,
                                std=std, seed=seed)
    x = owner_u8.float() / 255
    said = predictions(victim, x, mean, std, classes)
    wrong = said != owner_y
    x, t = x[wrong], said[wrong]
    score = conferrability(models["surrogates"], models["references"], x, t, mean, std)
    keep = score.argsort(descending=True, stable=True)[:args.size]
    x, t = x[keep], t[keep]
    calibration = [matches(m, x, t, mean, std) for m in models["calibration"]]
    return x, t, calibration, {"candidates": int(wrong.sum()),
                               "surrogates": [matches(m, x, t, mean, std)
                                              for m in models["surrogates"]],
                               "total_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, default=Path("/work/zoo/fashion-mnist"))
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--surrogates", type=int, default=3)
    p.add_argument("--references", type=int, default=6)
    p.add_argument("--calibration", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--per-model", type=int, default=6000)
    p.add_argument("--json", type=Path, default=None, help="write every read here")
    p.add_argument("--victims", nargs="*", default=None, help="victim names (default all)")
    p.add_argument("--partial", action="store_true",
                   help="read manifest.partial.json (a zoo still being built)")
    args = p.parse_args()
    torch.set_num_threads(1)

    zoo = load_zoo(args.zoo, partial=args.partial)
    mean, std = zoo["normalization"]["mean"], zoo["normalization"]["std"]
    split = json.loads((args.zoo / zoo["split"]).read_text())
    owner_u8, _, owner_y = split_tensors(zoo["dataset"], {"owner": split["owner"]})["owner"]
    reference = raw_sets(zoo["dataset"])["test"]
    print(f"zoo {args.zoo}: {len(zoo['models'])} models; reference data: the test set "
          f"({len(reference[1])} images); load {os.getloadavg()[0]:.1f}", flush=True)
    rows, gen = [], {}
    for v in [m for m in zoo["models"] if m["role"] == "victim"
              and (args.victims is None or m["name"] in args.victims)]:
        x, t, calibration, info = fingerprint(
            v["model"], resolve_arch(v["arch"], None), owner_u8, owner_y, reference, mean,
            std, args, seed=1000 + v["seed"], classes=zoo["num_classes"])
        chance = conservative_chance(calibration, [len(t)] * len(calibration))
        gen[v["name"]] = {**info, "calibration": calibration, "chance": chance}
        print(f"{v['name']}: K={len(t)} of {info['candidates']} misclassified, calibration "
              f"{calibration}, chance {chance:.3f}, surrogates {info['surrogates']}, "
              f"{info['total_s']} s", flush=True)
        suspects = [v] + [m for m in zoo["models"] if m.get("victim") == v["name"]] + \
            [m for m in zoo["models"] if m["role"] == "independent"]
        for m in suspects:
            k = matches(m["model"], x, t, mean, std)
            if k is None:
                print(f"{m['name']}: left out, its logits are not finite", flush=True)
                continue
            log_p = float(binom.logsf(k - 1, len(t), chance))
            rows.append({"victim": v["name"], "model": m["name"], "role": m["role"],
                         "attack": m.get("attack", m["role"]), "seed": m.get("seed"),
                         "arch": m["arch"], "test_accuracy": m.get("test_accuracy"),
                         "stealing_loss": m.get("stealing_loss"), "matches": k,
                         "total": len(t), "chance": chance, "log10_p": log_p / math.log(10),
                         "detected": log_p <= math.log(ALPHA)})
    if args.json is not None:
        args.json.write_text(json.dumps({"options": vars(args) | {"zoo": str(args.zoo),
                                                                  "json": str(args.json)},
                                         "generation": gen, "reads": rows}, indent=1) + "\n")
    report(rows, {k: {"total_s": g["total_s"], "train_s": "-", "attack_s": "-"}
                  for k, g in gen.items()})


if __name__ == "__main__":
    main()
