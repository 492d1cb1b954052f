"""Conferrable adversarial example fingerprints (schemes/conferrable.py) on the shared extraction
zoo (issue 21): one key per victim, generated from the owner split and the public split only,
read on the victim, on every model stolen or derived from it and on every independent model.

    PYTHONPATH=python OMP_NUM_THREADS=1 python benchmarks/bench_conferrable.py \
        --zoo /work/zoo/fashion-mnist [--regenerate] [--out results.json]

A victim's key is written to ZOO/keys/conferrable-<victim>.key (the zoo harness reads it) and
reused on later runs unless --regenerate; its generation time (training the surrogate and
reference models, then the attack) is measured when it is made and kept beside it in
conferrable-<victim>.json. Prints markdown tables: every (victim, model) read at alpha 1e-6,
detections per attack, false detections of independent models and the goodness of fit of
their counts to Binomial(K, chance).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import mlguard
from mlguard.evaluation.calibration import binomial_fit
from mlguard.files.model import load_model_file, resolve_arch
from mlguard.keys import keyfile
from mlguard.schemes._owner_models import train_owner_models
from mlguard.schemes.conferrable import ConferrableKey

ALPHA = 1e-6
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the zoo's archs (zoo_archs.py)


def manifest(zoo: Path) -> tuple[dict, str]:
    for name in ("manifest.json", "manifest.partial.json"):
        if (zoo / name).exists():
            return json.loads((zoo / name).read_text()), name
    raise SystemExit(f"{zoo} has no manifest.json or manifest.partial.json yet")


def split_tensors(zoo: Path, dataset: str):
    """The owner split (images, labels) and the public split's images (uint8)."""
    from extraction_zoo import raw_sets

    split = json.loads((zoo / "split.json").read_text())
    sets = raw_sets(dataset)
    (train_x, train_y), (test_x, _) = sets["train"], sets["test"]
    a, b = split["owner"]
    p, q = split["public"]
    return train_x[a:b], train_y[a:b], test_x[p:q]


def make_key(victim, arch, owner_x, owner_y, public, mean, std, args) -> tuple:
    secret = keyfile.new_secret()
    c0, t0 = time.process_time(), time.perf_counter()
    models = train_owner_models(victim, arch, owner_x, owner_y, public=public,
                                surrogates=args.surrogates, references=args.references,
                                calibration=args.calibration, per_model=args.per_model,
                                epochs=args.epochs, mean=mean, std=std,
                                seed=keyfile.derive_seed(secret, "conferrable/models"),
                                surrogate_labels=args.surrogate_labels)
    t1 = time.perf_counter()
    key = ConferrableKey.generate(
        model=victim, images=owner_x, labels=owner_y, surrogate_models=models["surrogates"],
        reference_models=models["references"], calibration_models=models["calibration"],
        size=args.size, eps=args.eps, steps=args.steps, candidates=args.candidates,
        mean=mean, std=std, secret=secret)
    t2 = time.perf_counter()
    return key, {"train_s": round(t1 - t0, 1), "attack_s": round(t2 - t1, 1),
                 "total_s": round(t2 - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                 "load_average": os.getloadavg()[0],
                 "options": {k: getattr(args, k) for k in ("size", "eps", "steps",
                             "candidates", "surrogates", "references", "calibration",
                             "epochs", "per_model", "surrogate_labels")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, default=Path("/work/zoo/fashion-mnist"))
    p.add_argument("--regenerate", action="store_true", help="make new keys (overwrite)")
    p.add_argument("--only-keys", action="store_true", help="make missing keys, read nothing")
    p.add_argument("--victims", nargs="*", default=None, help="victim names (default all)")
    p.add_argument("--out", type=Path, default=None, help="write every read as JSON here")
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--candidates", type=int, default=600)
    p.add_argument("--surrogates", type=int, default=3)
    p.add_argument("--references", type=int, default=3)
    p.add_argument("--calibration", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--per-model", type=int, default=6000)
    p.add_argument("--surrogate-labels", choices=("hard", "soft"), default="hard")
    p.add_argument("--key-dir", type=Path, default=None,
                   help="where keys are read and written (default ZOO/keys)")
    args = p.parse_args()
    torch.set_num_threads(1)

    zoo = args.zoo
    doc, which = manifest(zoo)
    mean, std = doc["normalization"]["mean"], doc["normalization"]["std"]
    models = doc["models"]
    victims = [m for m in models if m["role"] == "victim"
               and (args.victims is None or m["name"] in args.victims)]
    owner_x, owner_y, public = split_tensors(zoo, doc["dataset"])
    key_dir = args.key_dir or zoo / "keys"
    key_dir.mkdir(exist_ok=True)
    print(f"zoo {zoo} ({which}): {len(models)} models, {len(victims)} victims; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    rows, gen = [], {}
    for v in victims:
        arch = resolve_arch(v["arch"], None)
        victim, _ = load_model_file(zoo / v["file"], v["arch"])
        path = key_dir / f"conferrable-{v['name']}.key"
        side = path.with_suffix(".json")
        if path.exists() and not args.regenerate:
            key = mlguard.load_key(path)
            gen[v["name"]] = json.loads(side.read_text()) if side.exists() else {}
        else:
            key, gen[v["name"]] = make_key(victim, arch, owner_x, owner_y, public, mean, std,
                                           args)
            key.with_label(f"conferrable {v['name']}").save(path, overwrite=args.regenerate)
            gen[v["name"]].update(chance=key.chance, calibration=key.reference["matches"],
                                  generation=key.generation)
            side.write_text(json.dumps(gen[v["name"]], indent=2) + "\n")
        print(f"{v['name']}: key {path.name} K={key.size} chance {key.chance:.3f} calibration "
              f"{key.reference['matches']} surrogates {key.generation['surrogate_matches']} "
              f"generation {gen[v['name']].get('total_s', '?')} s", flush=True)
        if args.only_keys:
            continue
        suspects = [v] + [m for m in models if m.get("victim") == v["name"]] + \
            [m for m in models if m["role"] == "independent"]
        for m in suspects:
            module, _ = load_model_file(zoo / m["file"], m["arch"])
            verdict = mlguard.verify(module, key, alpha=ALPHA)
            rows.append({"victim": v["name"], "model": m["name"], "role": m["role"],
                         "attack": m.get("attack", m["role"]), "seed": m.get("seed"),
                         "arch": m["arch"],
                         "test_accuracy": m.get("test_accuracy"),
                         "stealing_loss": m.get("stealing_loss"), "matches": verdict.matches,
                         "total": verdict.total, "chance": verdict.chance,
                         "log10_p": verdict.log_p_value / 2.302585092994046,
                         "detected": verdict.detected})
    if args.out is not None:
        args.out.write_text(json.dumps({"generation": gen, "reads": rows}, indent=1) + "\n")
    if rows:
        report(rows, gen)


def report(rows: list[dict], gen: dict) -> None:
    print("\n| victim | model | role | test acc | stealing loss | matches/K | chance | "
          "log10 p | detected |\n|---|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if r["role"] == "independent":
            continue
        acc = "" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.1f}%"
        loss = "" if r["stealing_loss"] is None else f"{100 * r['stealing_loss']:.1f}"
        print(f"| {r['victim']} | {r['model']} | {r['role']} | {acc} | {loss} | "
              f"{r['matches']}/{r['total']} | {r['chance']:.3f} | {r['log10_p']:.1f} | "
              f"{'**yes**' if r['detected'] else 'no'} |")
    print("\n**Detections at alpha 1e-6 per attack** (models detected / models)\n\n"
          "| attack | detected | seeds detected |\n|---|---:|---|")
    attacks = sorted({r["attack"] for r in rows if r["role"] != "independent"})
    for a in attacks:
        sel = [r for r in rows if r["attack"] == a and r["role"] != "independent"]
        seeds = ", ".join(f"{r['victim']}:{'y' if r['detected'] else 'n'}" for r in sel)
        print(f"| {a} | {sum(r['detected'] for r in sel)}/{len(sel)} | {seeds} |")
    print("\n**Independent models** (false detections at 1e-6; fit of their counts to "
          "Binomial(K, chance))\n\n| key | models | false detections | mean matches | "
          "max | K x chance | chi2 / dof | fit p | variance / binomial variance at their mean "
          "| generation s (train + attack) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for victim in sorted({r["victim"] for r in rows}):
        sel = [r for r in rows if r["victim"] == victim and r["role"] == "independent"]
        if len(sel) < 2:
            continue
        counts = [r["matches"] for r in sel]
        fit = binomial_fit(counts, sel[0]["total"], sel[0]["chance"])
        g = gen.get(victim, {})
        k, rate = sel[0]["total"], fit.mean / sel[0]["total"]
        dispersion = fit.variance / max(k * rate * (1 - rate), 1e-12)
        print(f"| {victim} | {len(sel)} | {sum(r['detected'] for r in sel)} | "
              f"{fit.mean:.1f} | {max(counts)} | {fit.expected_mean:.1f} | "
              f"{fit.chi2:.1f} / {fit.dof} | {fit.p_value:.2g} | {dispersion:.1f} | "
              f"{g.get('total_s', '?')} "
              f"({g.get('train_s', '?')} + {g.get('attack_s', '?')}) |")


    print("\n**Independent models by architecture** (matches of K, all keys)\n\n"
          "| arch | reads | mean | max |\n|---|---:|---:|---:|")
    for arch in sorted({r.get("arch", "?") for r in rows if r["role"] == "independent"}):
        counts = [r["matches"] for r in rows
                  if r["role"] == "independent" and r.get("arch", "?") == arch]
        print(f"| {arch} | {len(counts)} | {sum(counts) / len(counts):.1f} | {max(counts)} |")


if __name__ == "__main__":
    main()
