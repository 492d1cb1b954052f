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
from types import SimpleNamespace

import torch


def manifest(zoo: Path) -> tuple[dict, str]:
    for name in ("manifest.json", "manifest.partial.json"):
        if (zoo / name).exists():
            return json.loads((zoo / name).read_text()), name
    raise SystemExit(f"{zoo}: no manifest.json nor manifest.partial.json yet")


def split_sets(zoo: Path, doc: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"owner": (uint8 images, labels), "public": ...} rebuilt from split.json (the zoo's own
    loader: CIFAR-10's ranges index a fixed shuffle)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from extraction_zoo import raw_sets

    split = json.loads((zoo / doc["split"]).read_text())
    raw = raw_sets(doc["dataset"])
    out = {}
    for name in ("owner", "public", "attacker"):
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
    p.add_argument("--arch-path", default=str(Path(__file__).resolve().parent),
                   help="folder holding the zoo's architecture module (zoo_archs.py; default "
                        "this file's folder)")
    p.add_argument("--victims", nargs="*", default=None, help="only these victims")
    p.add_argument("--keys-only", action="store_true",
                   help="make the victims' keys (those not yet made) and stop")
    p.add_argument("--null-check", action="store_true",
                   help="also read the victims and independents with a second key whose "
                        "public half is the attacker split (training-split images no "
                        "independent saw): private and public exchangeable for them")
    p.add_argument("--reuse-keys", action="store_true",
                   help="read the victims' key files already in --keys-out (not with "
                        "--null-check) instead of making them again")
    p.add_argument("--check", type=int, default=10,
                   help="read the first CHECK models also through mlguard.verify (the first "
                        "key) and count disagreements with the cached margins")
    p.add_argument("--resume", default=None, metavar="JSON",
                   help="a previous run's --json: its rows are kept, its models skipped "
                        "(same keys: use with --reuse-keys)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for folder in (str(args.zoo), args.arch_path):
        if folder not in sys.path:
            sys.path.insert(0, folder)

    import mlguard
    from mlguard import verify
    from mlguard.schemes.dataset_inference import NAME, DatasetInferenceKey, logit_margins
    from mlguard.verification.verdict import make_verdict

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
    keygen, keys = {}, []  # keys: (victim, kind, key, private pool indices, public pool)
    for victim in victims:
        path = keys_out / f"dataset-inference-{victim['name']}.key"
        if args.keys_only and path.exists():
            continue
        secret = hashlib.sha256(f"zoo/{doc['dataset']}/{victim['name']}/dataset-inference"
                                .encode()).digest()
        if args.reuse_keys and path.exists():
            key = mlguard.load_key(path)
            if key.secret != secret or key.pairs != args.pairs:
                raise SystemExit(f"{path}: not this benchmark's key (secret or --pairs differ)")
        else:
            t0 = time.perf_counter()
            key = DatasetInferenceKey.generate(
                model=load(args.zoo, victim), private_images=sets["owner"][0],
                private_labels=sets["owner"][1], public_images=sets["public"][0],
                public_labels=sets["public"][1], pairs=args.pairs, mean=mean, std=std,
                secret=secret,
                sources={"private": f"{doc['dataset']} owner split (split.json)",
                         "public": f"{doc['dataset']} public split (split.json)"},
                label=f"dataset-inference {victim['name']}")
            seconds = time.perf_counter() - t0
            key.save(path, overwrite=True)
            keygen[victim["name"]] = {"seconds": seconds, "owner_matches": key.owner_matches,
                                      "load": os.getloadavg()[0],
                                      "bytes": path.stat().st_size}
            print(f"key {path.name}: {seconds:.1f} s, owner model "
                  f"{key.owner_matches}/{key.pairs}, {path.stat().st_size / 1e6:.1f} MB",
                  flush=True)
        keys.append((victim, "key", key, *pair_indices(secret, sets, "public", args.pairs)))
        if args.null_check:
            # The same keyed draws with the attacker split as the public half: only the pairs
            # and the test are needed (the key object itself is never saved nor verified).
            null_key = SimpleNamespace(pairs=args.pairs, chance=0.5,
                                       commitment=lambda: "0" * 64)
            keys.append((victim, "null", null_key,
                         *pair_indices(secret, sets, "attacker", args.pairs)))
    if args.keys_only:
        return 0

    # Each model's margins on the pools are computed once and every key's pairs read from
    # them; the first key of each model is also read through mlguard.verify (the product's
    # path) and must give the same count.
    # Only the pool samples some key pairs are computed (their union over the keys).
    needed: dict[str, torch.Tensor] = {}
    for _, _, _, pick_private, public, pick_public in keys:
        for name, idx in (("owner", pick_private), (public, pick_public)):
            needed[name] = torch.cat([needed.get(name, idx), idx]).unique()
    rows, null_rows, mismatches, checked = [], [], 0, 0
    previous = json.loads(Path(args.resume).read_text()) if args.resume else None
    done = set()
    if previous:
        rows, null_rows = previous["rows"], previous["null_rows"]
        mismatches, checked = previous["summary"]["verify_mismatches"], previous["checked"]
        done = {r["model"] for r in rows}
    for entry in models:
        if entry["name"] in done:
            continue
        suspect = load(args.zoo, entry)
        is_null_model = entry["role"] in ("victim", "independent")
        margins = {}
        for name, idx in needed.items():
            if name == "attacker" and not is_null_model:
                continue  # stolen models trained on the attacker split: no null check there
            full = torch.full((sets[name][0].shape[0],), float("nan"), dtype=torch.float64)
            full[idx] = logit_margins(suspect, sets[name][0][idx].float() / 255,
                                      sets[name][1][idx], mean, std, doc["num_classes"])
            margins[name] = full
        line = f"  {entry['name']:<28} {entry['role']:<11}"
        for i, (victim, kind, key, pick_private, public, pick_public) in enumerate(keys):
            if kind == "null" and not is_null_model:
                continue
            matches = int((margins["owner"][pick_private]
                           > margins[public][pick_public]).sum())
            if i == 0 and checked < args.check:
                checked += 1
                mismatches += verify(suspect, key, alpha=args.alpha).matches != matches
            v = make_verdict(NAME, matches, key.pairs, key.chance, args.alpha, key.commitment(),
                             "0" * 64, "cpu")  # a count from cached margins: no file hash
            r = row(victim, entry, v)
            (null_rows if kind == "null" else rows).append(r)
            line += f" {'n' if kind == 'null' else 'k'}:{matches}{'*' if v.detected else ''}"
        print(line, flush=True)
    print(f"verify() and the cached margins disagreed on {mismatches} of {checked} models",
          flush=True)

    summary = summarize(rows, args.pairs, args.alpha)
    summary["verify_mismatches"] = mismatches
    if null_rows:
        summary["null_check"] = summarize(null_rows, args.pairs, args.alpha)
    print(json.dumps(summary, indent=1))
    print(markdown(rows, null_rows, args.pairs, args.alpha))
    if args.json:
        Path(args.json).write_text(json.dumps({"keygen": keygen, "rows": rows,
                                               "null_rows": null_rows, "checked": checked,
                                               "summary": summary, "pairs": args.pairs,
                                               "alpha": args.alpha, "manifest": which},
                                              indent=1))
    return 0


def pair_indices(secret: bytes, sets: dict, public: str, pairs: int):
    """(owner pool indices, public pool name, its indices) of a key's pairs: the keyed
    draws DatasetInferenceKey.generate makes (its module: the same derive_seed purposes)."""
    from mlguard.keys import keyfile
    from mlguard.keys.sampling import keyed_choice

    private = keyed_choice(keyfile.derive_seed(secret, "dataset-inference/private"),
                           sets["owner"][0].shape[0], pairs)
    other = keyed_choice(keyfile.derive_seed(secret, "dataset-inference/public"),
                         sets[public][0].shape[0], pairs)
    return private, public, other


def row(victim: dict, entry: dict, v) -> dict:
    """One read: positive ("own") for every model trained on the owner split or derived
    from a model that was (all victims share the owner split), negative for independents."""
    return {"key": victim["name"], "model": entry["name"], "role": entry["role"],
            "attack": entry.get("attack"), "seed": entry.get("seed"),
            "own": entry["role"] != "independent",
            "from_this_victim": entry["name"] == victim["name"]
            or entry.get("victim") == victim["name"],
            "arch": entry["arch"], "matches": v.matches, "total": v.total,
            "log10_p": v.log_p_value / math.log(10), "detected": v.detected,
            "test_accuracy": entry.get("test_accuracy"),
            "stealing_loss": entry.get("stealing_loss")}


def summarize(rows: list[dict], k: int, alpha: float) -> dict:
    """Detections per attack (each model read with its own victim's key, every seed), reads
    of other victims' keys (the same owner data), the independents' false detections and
    their fit to Binomial(k, 1/2): per key (the reads of one key share its pairs, so they are
    correlated: the key's draw shifts them together) and pooled."""
    by_attack: dict[str, dict] = {}
    for r in rows:
        if not r["own"] or not r["from_this_victim"]:
            continue
        name = "victim" if r["role"] == "victim" else r["model"].rsplit("-s", 1)[0]
        cell = by_attack.setdefault(name, {"detected": 0, "models": 0, "per_seed": {}})
        cell["models"] += 1
        cell["detected"] += r["detected"]
        cell["per_seed"][r["key"]] = f"{r['matches']}/{k} (log10 p {r['log10_p']:.1f})"
    cross = [r for r in rows if r["own"] and not r["from_this_victim"]]
    indep = [r for r in rows if r["role"] == "independent"]
    out = {"alpha": alpha, "by_attack": by_attack,
           "other_victims_keys_detected": f"{sum(r['detected'] for r in cross)}/{len(cross)}",
           "independent_false_detections": sum(r["detected"] for r in indep),
           "independent_reads": len(indep)}
    if indep:
        out["independent_fit_pooled"] = binomial_fit([r["matches"] for r in indep], k)
        out["independent_fit_per_key"] = {
            key: binomial_fit([r["matches"] for r in indep if r["key"] == key], k)
            for key in sorted({r["key"] for r in indep})}
    return out


def markdown(rows: list[dict], null_rows: list[dict], k: int, alpha: float) -> str:
    """The RESULTS.md tables: each victim-derived model read with its own victim's key
    (matches/K, log10 p, detected at alpha), then the independents' reads per key."""
    seeds = sorted({r["key"] for r in rows})
    attacks: dict[str, dict] = {}
    for r in rows:
        if r["own"] and r["from_this_victim"]:
            name = "victim" if r["role"] == "victim" else r["model"].rsplit("-s", 1)[0]
            attacks.setdefault(name, {})[r["key"]] = r
    out = [f"| model (K = {k}) | " + " | ".join(seeds) + f" | detected at {alpha:g} |",
           "|---|" + "---:|" * len(seeds) + "---:|"]
    for name, cells in attacks.items():
        got = [cells.get(s) for s in seeds]
        text = [f"{c['matches']} ({c['log10_p']:.1f})" if c else "-" for c in got]
        hits = sum(c["detected"] for c in got if c)
        out.append(f"| {name} | " + " | ".join(text) + f" | {hits}/{sum(1 for c in got if c)} |")
    out += ["", "| independents, key | reads | mean | min | max | false det. | z mean | "
            "z std | KS p (z vs N(0,1)) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, group in (("test-split public", rows), ("null check (attacker split)",
                                                         null_rows)):
        for key in seeds:
            counts = [r["matches"] for r in group if r["role"] == "independent"
                      and r["key"] == key]
            if not counts:
                continue
            fit = binomial_fit(counts, k)
            det = sum(r["detected"] for r in group if r["role"] == "independent"
                      and r["key"] == key)
            out.append(f"| {label}, {key} | {len(counts)} | {sum(counts) / len(counts):.1f} | "
                       f"{min(counts)} | {max(counts)} | {det} | {fit['z_mean']:.2f} | "
                       f"{fit['z_std']:.2f} | {fit['ks_p']:.2g} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
