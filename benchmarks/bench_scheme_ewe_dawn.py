"""Entangled Watermarks and DAWN on Fashion-MNIST small_cnn (issue 19): embedding cost, the
owner's reads, extraction, and calibration on >= 50 clean independent models.

EWE (schemes/ewe.py):
  - an owner model trained with the EWE embedding and its clean twin (same seed, data and
    order): test accuracy of both (the embedding cost), the trigger reads and p-values;
  - extraction: an attacker labels its own images with the marked model and trains small_cnn;
  - calibration: `--models` clean models (bench_calibration's: own seed, own 3,000-image
    subset, 1 epoch) read against a fresh EWE key each (classes from the secret) and the
    owner's key; every key's conservative chance comes from `--references` reference models
    (other seeds and subsets than all of the above). The null is a bound: reported are the
    detections at 1e-6 (must be 0) and how the observed rates sit below the bounds.
DAWN (schemes/dawn.py):
  - the accuracy legitimate users see through the wrapper at rates r (the cost of r);
  - extraction: an attacker labels `--attacker-images` own images through the wrapper
    (r = `--rate`) and trains small_cnn; the owner verifies it with the record (1e-6);
  - calibration: the clean models against fresh DAWN keys, each with its own record (the
    owner's model serving 2,000 test images), and against the attacker's record: detections
    at 1e-6, and the mean match rate against the bound 1/(C-1) and against the exact
    per-model expectation (1 - agreement with the owner on the recorded queries)/(C-1).

    PYTHONPATH=python python benchmarks/bench_scheme_ewe_dawn.py --out ewe_dawn.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_models import secret_for, train_clean  # noqa: E402

from mlguard import data  # noqa: E402
from mlguard.cli.demo import accuracy, batches, small_cnn  # noqa: E402
from mlguard.schemes import ReadOptions, Suspect  # noqa: E402
from mlguard.schemes.dawn import Dawn, DawnKey, DawnWrapper  # noqa: E402
from mlguard.schemes.ewe import EWE, EWEKey, entanglement, predict  # noqa: E402
from mlguard.verification import stats  # noqa: E402

NORM = {"mean": data.FASHION_MNIST_MEAN, "std": data.FASHION_MNIST_STD}
ALPHA = 1e-6


def train(images, labels, epochs: int, seed: int, embedding=None) -> nn.Module:
    """small_cnn as cli/demo trains it (Adam 1e-3, batch 128, a seeded order), plus EWE's
    batches and loss when `embedding` is given."""
    torch.manual_seed(seed)
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for x, y in batches(images, labels, 128, order):
            if embedding is not None:
                x, y = embedding.batch(x, y)
            loss = nn.functional.cross_entropy(model(x), y)
            if embedding is not None:
                loss = loss + embedding.loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def normalized(images: torch.Tensor) -> torch.Tensor:
    return torch.cat([x for x, _ in batches(images, torch.zeros(len(images)), 1000)])


def fit_on(queries: torch.Tensor, answers: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    """The attacker's small_cnn trained on (normalized queries, the API's answers)."""
    torch.manual_seed(seed)
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(queries), generator=g).split(128):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(queries[idx]), answers[idx]).backward()
            opt.step()
    return model.eval()


def read(scheme, key, model) -> dict:
    r = scheme.read(key, Suspect(model, None), ReadOptions())
    log_p = stats.binomial_log_sf(r.matches, r.total, r.chance)
    return {"matches": r.matches, "total": r.total, "chance": r.chance,
            "log10_p": log_p / math.log(10), "detected": log_p < math.log(ALPHA)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=50, help="clean calibration models")
    p.add_argument("--subset", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--references", type=int, default=10, help="EWE reference models")
    p.add_argument("--owner-subset", type=int, default=10000)
    p.add_argument("--owner-epochs", type=int, default=3)
    p.add_argument("--triggers", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--factor", type=float, default=0.25)
    p.add_argument("--rate", type=float, default=0.05)
    p.add_argument("--attacker-images", type=int, default=10000)
    p.add_argument("--attacker-epochs", type=int, default=3)
    p.add_argument("--parts", default="ewe,dawn,calibration",
                   help="what to run, comma-separated: ewe, dawn, calibration")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts or parts - {"ewe", "dawn", "calibration"}:
        p.error(f"--parts takes ewe, dawn, calibration; got {args.parts!r}")
    torch.set_num_threads(1)
    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:.0f} s] {msg}", file=sys.stderr)  # noqa: E731
    images, labels = data.fashion_mnist("train")
    test_x, test_y = data.fashion_mnist("test")
    own_x, own_y = images[:args.owner_subset], labels[:args.owner_subset]
    # Disjoint slices: the attacker's images (after the owner's), the references' (after).
    att_lo = args.owner_subset
    att_x = images[att_lo:att_lo + args.attacker_images]
    ref_lo = att_lo + args.attacker_images
    result: dict = {"device": f"2-core shared CPU ({platform.machine()}), torch "
                              f"{torch.__version__}, 1 thread", "args": vars(args)}

    # -- EWE: references, the owner's key, marked model and clean twin ----------------------
    references = []
    for i in range(args.references):
        lo = ref_lo + (i * args.subset) % (len(images) - ref_lo - args.subset)
        references.append(train(images[lo:lo + args.subset], labels[lo:lo + args.subset],
                                args.epochs, seed=20_000 + i))
    log(f"{len(references)} EWE reference models")
    owner_key = EWEKey.generate(own_x, own_y, references, size=args.triggers,
                                secret=secret_for(31, 1), **NORM)
    emb = EWE.embedding(owner_key, images=own_x, labels=own_y, factor=args.factor,
                        temperature=args.temperature)
    marked = train(own_x, own_y, args.owner_epochs, seed=1, embedding=emb)
    twin = train(own_x, own_y, args.owner_epochs, seed=1)
    log("EWE owner and twin trained")
    target_images = own_x[own_y == owner_key.target_class][:args.triggers]
    ewe: dict = {"key": {"source_class": owner_key.source_class,
                         "target_class": owner_key.target_class,
                         "reference_matches": list(owner_key.reference_matches),
                         "chance": owner_key.chance}}
    for name, model in (("marked", marked), ("twin", twin)):
        ewe[name] = {"test_accuracy": accuracy(model, test_x, test_y, "cpu"),
                     "snnl": entanglement(model, owner_key, target_images, args.temperature),
                     **read(EWE, owner_key, model)}
    ewe["cost_points"] = 100 * (ewe["twin"]["test_accuracy"] - ewe["marked"]["test_accuracy"])
    att_q = normalized(att_x)
    stolen = fit_on(att_q, predict(marked, att_q), args.attacker_epochs, seed=2)
    ewe["extracted"] = {"test_accuracy": accuracy(stolen, test_x, test_y, "cpu"),
                        **read(EWE, owner_key, stolen)}
    log(f"EWE: {json.dumps(ewe)}")

    # -- DAWN: the cost of r, extraction through the wrapper --------------------------------
    dawn: dict = {"rate": args.rate, "legitimate_accuracy": {}}
    test_q = normalized(test_x)
    for r in (0.01, 0.05, 0.1):
        api = DawnWrapper(twin, DawnKey.generate(10, r, secret=secret_for(41, int(r * 100))),
                          None, output="labels")
        served = torch.cat([api(q) for q in test_q.split(1000)])
        dawn["legitimate_accuracy"][r] = float((served == test_y).float().mean())
    dawn["owner_accuracy"] = accuracy(twin, test_x, test_y, "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="dawn_bench_"))
    dawn_key = DawnKey.generate(10, args.rate, secret=secret_for(41, 0))
    api = DawnWrapper(twin, dawn_key, tmp / "attacker.jsonl", output="labels")
    answers = torch.cat([api(q) for q in att_q.split(1000)])
    verifying = dawn_key.with_records(tmp / "attacker.jsonl")
    stolen_d = fit_on(att_q, answers, args.attacker_epochs, seed=3)
    honest = fit_on(att_q, labels[att_lo:att_lo + args.attacker_images], args.attacker_epochs,
                    seed=3)
    dawn["records"] = verifying.size
    dawn["extracted"] = {"test_accuracy": accuracy(stolen_d, test_x, test_y, "cpu"),
                         **read(Dawn, verifying, stolen_d)}
    dawn["true_labels_same_queries"] = {"test_accuracy": accuracy(honest, test_x, test_y, "cpu"),
                                        **read(Dawn, verifying, honest)}
    dawn["owner_itself"] = read(Dawn, verifying, twin)
    log(f"DAWN: {json.dumps(dawn)}")

    # -- calibration: clean independent models ------------------------------------------------
    calib = {"ewe_fresh": [], "ewe_owner": [], "dawn_fresh": [], "dawn_attacker_record": []}
    cal_q = test_q[:2000]
    for i in range(args.models if "calibration" in parts else 0):
        model = train_clean(i, images, labels, args.subset, args.epochs)
        key = EWEKey.generate(images, labels, references, size=args.triggers,
                              secret=secret_for(i, 51), **NORM)
        calib["ewe_fresh"].append(read(EWE, key, model))
        calib["ewe_owner"].append(read(EWE, owner_key, model))
        fresh = DawnKey.generate(10, args.rate, secret=secret_for(i, 61))
        api = DawnWrapper(twin, fresh, tmp / f"calib{i}.jsonl", output="labels")
        api(cal_q)
        vk = fresh.with_records(tmp / f"calib{i}.jsonl")
        row = read(Dawn, vk, model)
        queries, recorded_answers, _ = vk._decoded
        agree = float((predict(model, queries) == recorded_answers).float().sum())
        row["expected_matches"] = (row["total"] - agree) / 9
        calib["dawn_fresh"].append(row)
        calib["dawn_attacker_record"].append(read(Dawn, verifying, model))
        if (i + 1) % 10 == 0:
            log(f"calibration model {i + 1}/{args.models}")
    summary = {}
    for name, rows in calib.items():
        if not rows:
            continue
        rates = [r["matches"] / r["total"] for r in rows]
        summary[name] = {
            "models": len(rows), "detections": sum(r["detected"] for r in rows),
            "min_p": 10 ** min(r["log10_p"] for r in rows),
            "mean_rate": sum(rates) / len(rates), "max_rate": max(rates),
            "chance_min": min(r["chance"] for r in rows),
            "chance_max": max(r["chance"] for r in rows),
            "rate_above_chance": sum(r["matches"] / r["total"] > r["chance"] for r in rows)}
        if name == "dawn_fresh":
            summary[name]["mean_matches"] = sum(r["matches"] for r in rows) / len(rows)
            summary[name]["mean_expected_matches"] = (sum(r["expected_matches"] for r in rows)
                                                      / len(rows))
    result.update(ewe=ewe, dawn=dawn, calibration=summary, seconds=time.perf_counter() - start)
    print(json.dumps({k: result[k] for k in ("ewe", "dawn", "calibration", "seconds")},
                     indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({**result, "rows": calib}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
