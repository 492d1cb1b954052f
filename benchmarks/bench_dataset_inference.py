"""Dataset inference (schemes/dataset_inference.py) on the extraction zoo (issue 21).

Per victim of the zoo (/work/zoo/<dataset>, format in ZOO / docs/extraction_zoo.md): a key
from the victim and K pairs drawn from the owner split (private) and the public split, saved
as <zoo>/keys/dataset-inference-<victim>.key; then every model of the zoo is verified against
it: the victim, its stolen / derived models, the other victims' models and every independent
model. Reports detections at alpha per seed and attack, the independents' false detections,
and the goodness-of-fit of the independents' counts to Binomial(K, 1/2) (the exact null the
verdict uses): their z-scores (m - K/2) / sqrt(K/4) should be N(0, 1).

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_dataset_inference.py \\
        --zoo /work/zoo/fashion-mnist --pairs 5000 --json /tmp/di21/bench.json

Models are rebuilt from safetensors with their arch string (never unpickled); --arch-path
adds the folder of the zoo's architecture module (zoo_archs.py) to sys.path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch


def manifest(zoo: Path) -> tuple[dict, str]:
    for name in ("manifest.json", "manifest.partial.json"):
        if (zoo / name).exists():
            return json.loads((zoo / name).read_text()), name
    raise SystemExit(f"{zoo}: no manifest.json nor manifest.partial.json yet")


def split_sets(zoo: Path, doc: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"owner": (uint8 images, labels), "public": ...} rebuilt from split.json."""
    from mlguard import data

    split = json.loads((zoo / doc["split"]).read_text())
    raw = {}
    for part in ("train", "test"):
        if doc["dataset"] == "fashion-mnist":
            raw[part] = data.fashion_mnist(part)
        else:
            ims = data.cifar10(split["loader"]["args"]["path"], part)
            raw[part] = (ims.images, ims.labels)
    out = {}
    for name in ("owner", "public"):
        lo, hi = split[name]
        if split.get("limit"):
            hi = min(hi, lo + split["limit"])
        x, y = raw[split["of"][name]]
        out[name] = (x[lo:hi], y[lo:hi])
    return out


def load(zoo: Path, entry: dict) -> torch.nn.Module:
    from safetensors.torch import load_file

    from mlguard.files.model import resolve_arch

    model = resolve_arch(entry["arch"])()
    model.load_state_dict(load_file(str(zoo / entry["file"])))
    return model.eval()


def binomial_fit(counts: list[int], k: int) -> dict:
    """The independents' counts against Binomial(k, 1/2): mean rate, z-scores' mean and
    standard deviation (0 and 1 under the null), the KS test of the z-scores against N(0, 1)
    and the chi-square test of their variance."""
    from scipy import stats

    z = [(m - k / 2) / math.sqrt(k / 4) for m in counts]
    n = len(z)
    mean = sum(z) / n
    var = sum((v - mean) ** 2 for v in z) / max(n - 1, 1)
    ks = stats.kstest(z, "norm")
    chi2 = sum(v * v for v in z)  # ~ chi2(n) under the null (mean 0, variance 1)
    return {"models": n, "mean_rate": sum(counts) / (n * k), "z_mean": mean,
            "z_std": math.sqrt(var), "z_max": max(z), "ks_p": float(ks.pvalue),
            "chi2_sum_z2": chi2, "chi2_p_upper": float(stats.chi2.sf(chi2, n))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", default="/work/zoo/fashion-mnist", type=Path)
    p.add_argument("--pairs", type=int, default=5000)
    p.add_argument("--alpha", type=float, default=1e-6)
    p.add_argument("--keys-out", type=Path, default=None,
                   help="where the keys go (default <zoo>/keys)")
    p.add_argument("--arch-path", default="/work/wt/zoo21/benchmarks",
                   help="folder holding the zoo's architecture module (zoo_archs.py)")
    p.add_argument("--victims", nargs="*", default=None, help="only these victims")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for folder in (str(args.zoo), args.arch_path):
        if folder not in sys.path:
            sys.path.insert(0, folder)

    from mlguard import verify
    from mlguard.schemes.dataset_inference import DatasetInferenceKey

    doc, which = manifest(args.zoo)
    mean, std = doc["normalization"]["mean"], doc["normalization"]["std"]
    sets = split_sets(args.zoo, doc)
    keys_out = args.keys_out or args.zoo / "keys"
    keys_out.mkdir(parents=True, exist_ok=True)
    models = doc["models"]
    victims = [m for m in models if m["role"] == "victim"
               and (args.victims is None or m["name"] in args.victims)]
    print(f"{args.zoo} ({which}): {len(models)} models, {len(victims)} victims; K={args.pairs}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    rows, keygen = [], {}
    for victim in victims:
        model = load(args.zoo, victim)
        secret = hashlib.sha256(f"zoo/{doc['dataset']}/{victim['name']}/dataset-inference"
                                .encode()).digest()
        t0 = time.perf_counter()
        key = DatasetInferenceKey.generate(
            model=model, private_images=sets["owner"][0], private_labels=sets["owner"][1],
            public_images=sets["public"][0], public_labels=sets["public"][1],
            pairs=args.pairs, mean=mean, std=std, secret=secret,
            sources={"private": f"{doc['dataset']} owner split (split.json)",
                     "public": f"{doc['dataset']} public split (split.json)"},
            label=f"dataset-inference {victim['name']}")
        seconds = time.perf_counter() - t0
        path = keys_out / f"dataset-inference-{victim['name']}.key"
        key.save(path, overwrite=True)
        keygen[victim["name"]] = {"seconds": seconds, "owner_matches": key.owner_matches,
                                  "load": os.getloadavg()[0], "bytes": path.stat().st_size}
        print(f"key {path.name}: {seconds:.1f} s, owner model {key.owner_matches}/{key.pairs}, "
              f"{path.stat().st_size / 1e6:.1f} MB", flush=True)
        for entry in models:
            suspect = load(args.zoo, entry)
            v = verify(suspect, key, alpha=args.alpha)
            mine = entry["name"] == victim["name"] or entry.get("victim") == victim["name"]
            rows.append({"key": victim["name"], "model": entry["name"], "role": entry["role"],
                         "attack": entry.get("attack"), "seed": entry.get("seed"),
                         "own": mine, "matches": v.matches, "total": v.total,
                         "log10_p": v.log_p_value / math.log(10), "detected": v.detected,
                         "test_accuracy": entry.get("test_accuracy"),
                         "stealing_loss": entry.get("stealing_loss")})
            r = rows[-1]
            print(f"  {entry['name']:<28} {entry['role']:<11} {'own' if mine else '   '} "
                  f"{v.matches:>5}/{v.total} log10 p {r['log10_p']:8.2f} "
                  f"{'DETECTED' if v.detected else '-'}", flush=True)

    summary = summarize(rows, args.pairs, args.alpha)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"keygen": keygen, "rows": rows,
                                               "summary": summary, "pairs": args.pairs,
                                               "alpha": args.alpha, "manifest": which},
                                              indent=1))
    return 0


def summarize(rows: list[dict], k: int, alpha: float) -> dict:
    own = [r for r in rows if r["own"] and r["role"] != "independent"]
    by_attack: dict[str, dict] = {}
    for r in own:
        name = r["model"].rsplit("-s", 1)[0] if r["role"] != "victim" else "victim"
        cell = by_attack.setdefault(name, {"detected": 0, "models": 0, "per_seed": {}})
        cell["models"] += 1
        cell["detected"] += r["detected"]
        cell["per_seed"][r["key"]] = f"{r['matches']}/{k} (log10 p {r['log10_p']:.1f})"
    indep = [r for r in rows if r["role"] == "independent"]
    others = [r for r in rows if not r["own"] and r["role"] != "independent"]
    out = {"alpha": alpha, "by_attack": by_attack,
           "independent_false_detections": sum(r["detected"] for r in indep),
           "independent_reads": len(indep),
           "other_victims_models_detected": f"{sum(r['detected'] for r in others)}/"
                                            f"{len(others)}"}
    if indep:
        out["independent_fit"] = binomial_fit([r["matches"] for r in indep], k)
    return out


if __name__ == "__main__":
    sys.exit(main())
