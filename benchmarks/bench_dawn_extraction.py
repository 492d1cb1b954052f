"""DAWN against the extraction zoo's API attacks (issue 21): each victim served through a DAWN
wrapper (schemes/dawn.py), the thief's extraction run *through the wrapper*, and the DAWN key
holding the thief's record read on the copy, beside the victim's other keys; then the same
record-keys read on the zoo's independent models (the null, an exact bound of 1/(C-1)).

DAWN (Szyller et al., ACM MM 2021) answers a keyed fraction `--rate` of queries with keyed
wrong labels and records them; a copy that learns those answers repeats them. The attacks are
the zoo's that query an API: retraining on hard or soft labels, distillation (T = 4),
knockoff (the zoo's epochs) and cross-architecture retraining, at `--epochs` (the zoo's
wrt-cpu budget: 10; WRT's CIFAR-10 budget: 60). Transfer, fine-tuning and RTAL start from the victim's weights,
not its answers: DAWN has nothing to say about them.

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_dawn_extraction.py \
        --zoo /work/zoo/fashion-mnist --rate 0.01 --epochs 60 --json dawn.json \
        [--victims victim-s0] [--attacks retrain-hard distill]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction_zoo import accuracy, build, load_zoo, transfer_set  # noqa: E402

import mlguard  # noqa: E402
from mlguard import attacks  # noqa: E402
from mlguard.schemes.dawn import DawnKey, DawnWrapper  # noqa: E402

ALPHA = 1e-6


def steal(name: str, api, arch: str, xarch: str, attacker, transfer_x, epochs: int,
          knockoff_epochs: int, seed: int, retrain_lr: float | None = None):
    """The zoo's API attack `name` run on `api` (the students are fresh `arch` models: the
    wrapper itself is not a network to re-initialize); `retrain_lr` replaces the retraining
    attacks' SGD learning rate (0.1 diverges on CIFAR-10 hard labels: bench_hard_retrain.py)."""
    own = lambda: build(arch)  # noqa: E731
    lr = {} if retrain_lr is None else {"lr": retrain_lr}
    if name == "retrain-hard":
        return attacks.retrain(api, attacker, arch=own, labels="hard", epochs=epochs, seed=seed,
                               **lr)
    if name == "retrain-soft":
        return attacks.retrain(api, attacker, arch=own, labels="soft", epochs=epochs, seed=seed,
                               **lr)
    if name == "distill":
        return attacks.distill(api, attacker, student=own, epochs=epochs, temperature=4.0,
                               seed=seed)
    if name == "knockoff":
        unlabeled = (transfer_x, torch.zeros(len(transfer_x), dtype=torch.long))
        return attacks.knockoff(api, unlabeled, arch=own, epochs=knockoff_epochs,
                                seed=seed)
    if name == "retrain-xarch":
        return attacks.retrain(api, attacker, arch=lambda: build(xarch), labels="hard",
                               epochs=epochs, seed=seed, **lr)
    raise ValueError(f"unknown attack {name!r}")


ATTACKS = ("retrain-hard", "retrain-soft", "distill", "knockoff", "retrain-xarch")


def read(model, key) -> dict:
    v = mlguard.verify(model, key, alpha=ALPHA)
    return {"matches": v.matches, "total": v.total, "p_value": v.p_value,
            "detected": bool(v.detected)}


def other_keys(zoo_root: Path, victim: dict) -> list[Path]:
    """The victim's own keys in the zoo (Adi, Uchida) and its conferrable key, if made."""
    return [zoo_root / k for k in victim["keys"]] + sorted(
        (zoo_root / "keys").glob(f"conferrable-{victim['name']}.key"))


def read_keys(model, paths: list[Path]) -> dict:
    """Each key file read on `model` (by file name); a key that cannot be read on it (a weight
    key on another architecture) gets its error instead."""
    out = {}
    for path in paths:
        try:
            out[path.name] = read(model, mlguard.load_key(path))
        except ValueError as e:
            out[path.name] = {"error": str(e)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, required=True)
    p.add_argument("--rate", type=float, default=0.01,
                   help="DAWN's r (default 0.01: about 1 point for legitimate users; WRT's "
                        "configuration 0.05, the paper's range 0.005-0.05)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--victims", nargs="*", default=None, help="victim names (default all)")
    p.add_argument("--attacks", nargs="*", default=list(ATTACKS), choices=ATTACKS)
    p.add_argument("--xarch", default=None, help="the cross-architecture student "
                   "(default: the zoo's retrain-xarch architecture)")
    p.add_argument("--records", type=Path, default=Path("dawn-records"),
                   help="folder for the wrappers' records (one per victim and attack)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    zoo = load_zoo(args.zoo)
    attacker = zoo["tensors"]["attacker"]
    eval_x, eval_y = zoo["tensors"]["eval"]
    xarch = args.xarch or next((m["arch"] for m in zoo["models"]
                                if m.get("attack") == "retrain-xarch"), None)
    independents = [m for m in zoo["models"] if m["role"] == "independent"]
    transfer_x = transfer_set(zoo["dataset"], zoo["budget"]["transfer_images"]) \
        if "knockoff" in args.attacks else None
    args.records.mkdir(parents=True, exist_ok=True)
    rows = []
    for v in [m for m in zoo["models"] if m["role"] == "victim"
              and (args.victims is None or m["name"] in args.victims)]:
        keys = other_keys(args.zoo, v)
        for name in args.attacks:
            if name == "retrain-xarch" and xarch is None:
                raise SystemExit("the zoo has no retrain-xarch model: pass --xarch")
            # a fixed secret per victim and attack: a rerun serves the same answers
            secret = hashlib.sha256(f"dawn/{args.zoo.name}/{v['name']}/{name}".encode()).digest()
            key = DawnKey.generate(int(zoo["num_classes"]), args.rate, secret=secret)
            record = args.records / f"{v['name']}-{name}-r{args.rate}-e{args.epochs}.jsonl"
            record.unlink(missing_ok=True)
            api = DawnWrapper(v["model"], key, record)
            start = time.perf_counter()
            torch.manual_seed(v["seed"])
            copy = steal(name, api, v["arch"], xarch, attacker, transfer_x, args.epochs,
                         zoo["budget"]["knockoff"], v["seed"]).eval()
            seconds = time.perf_counter() - start
            held = key.with_records(record)
            acc = accuracy(copy, eval_x, eval_y)
            row = {"victim": v["name"], "attack": name, "rate": args.rate,
                   "epochs": args.epochs, "records": held.size, "served": api.served,
                   "test_accuracy": acc, "stealing_loss": v["test_accuracy"] - acc,
                   "api_accuracy": accuracy(DawnWrapper(v["model"], key), eval_x, eval_y),
                   "victim_accuracy": v["test_accuracy"], "seconds": round(seconds, 1),
                   "dawn": read(copy, held), "keys": read_keys(copy, keys)}
            # the null: this record read on every independent model
            null = [read(m["model"], held) for m in independents]
            counts = [r["matches"] for r in null]
            row["null"] = {"models": len(null), "max": max(counts, default=None),
                           "mean": sum(counts) / len(counts) if counts else None,
                           "false_detections": sum(r["detected"] for r in null)}
            rows.append(row)
            d = row["dawn"]
            print(f"{v['name']} {name:<14} acc {100 * acc:.2f}% (loss "
                  f"{100 * row['stealing_loss']:+.2f}) api {100 * row['api_accuracy']:.2f}% "
                  f"dawn {d['matches']}/{d['total']} p={d['p_value']:.2g} "
                  f"{'DETECTED' if d['detected'] else 'not detected'}; null max "
                  f"{row['null']['max']} of {d['total']}, "
                  f"{row['null']['false_detections']} false; {seconds:.0f} s", flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
