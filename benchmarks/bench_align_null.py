"""Does aligning to the owner's reference bias the weight-key null? (issue 20)

Alignment picks, for an unrelated model, the unit order that makes it look most like the
watermarked reference; if that copied the reference's bits, verify(reference=...) would
accuse innocent models. This trains a watermarked small_cnn reference on Fashion-MNIST and
>= 50 models that never saw its key (independent: other seeds, data subsets and orders;
fine-tuned copies of one unrelated model), aligns each to the reference and reads the
owner's key and fresh keys. Reported per read mode (plain / aligned as verify does it,
matching without the key's targets / aligned matching on everything, for comparison):
detections at alpha = 1e-6 and the smallest p-value (of the verdict: with a reference, the
union bound over the plain and aligned reads), and goodness of fit of the match counts (of
the aligned read alone) against Binomial(T, 1/2) (chi-square over bins with expected count >= 5; for the owner key
also an exact binomial test of all its bits pooled). Fresh keys are drawn anew for each
model, so their counts are independent draws; the owner's key is one fixed key, whose
counts over models trained on the same data are not independent (a fixed projection reads
their shared structure alike), so its goodness of fit is indicative only: compare the
modes with each other.

    nice -n 10 python benchmarks/bench_align_null.py [--independent 40] [--finetuned 12]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from mlguard import WeightKey, WeightWatermark, data, verify
from mlguard.cli.demo import batches, small_cnn
from mlguard.weights.align import Reference

BITS, TARGETS, ALPHA = 128, ("7.weight",), 1e-6


def secret(*parts: int) -> bytes:
    return np.random.SeedSequence(list(parts)).generate_state(8, dtype=np.uint32).tobytes()


def train(model, images, labels, epochs: int, seed: int, lr: float = 1e-3, watermark=None):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for x, y in batches(images, labels, 128, order):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            if watermark is not None:
                loss = loss + watermark.loss(model)
            loss.backward()
            optimizer.step()
    return model.eval()


def subset(images, labels, n: int, seed: int):
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx], labels[idx]


def null_models(images, labels, independent: int, finetuned: int, n: int):
    """(description, model) for models that never saw the owner's key."""
    for i in range(independent):
        torch.manual_seed(1000 + i)
        x, y = subset(images, labels, n, 2000 + i)
        yield f"independent seed {1000 + i}", train(small_cnn(), x, y, 1, 3000 + i)
    if finetuned:
        torch.manual_seed(99)
        base = train(small_cnn(), *subset(images, labels, 2 * n, 99), 2, 99)
        for i in range(finetuned):
            copy = small_cnn()
            copy.load_state_dict(base.state_dict())
            x, y = subset(images, labels, n // 2, 4000 + i)
            yield f"fine-tuned copy {i}", train(copy, x, y, 1, 5000 + i, lr=3e-4)


def gof(counts: list[int], bits: int) -> dict:
    """Chi-square of the counts against Binomial(bits, 1/2), bins pooled to expected >= 5."""
    counts = np.asarray(counts)
    pmf = stats.binom.pmf(np.arange(bits + 1), bits, 0.5)
    observed = np.bincount(counts, minlength=bits + 1).astype(float)
    expected = pmf * len(counts)
    edges, obs, exp, acc_o, acc_e = [], [], [], 0.0, 0.0
    for k in range(bits + 1):  # pool adjacent bins until each expects >= 5
        acc_o += observed[k]
        acc_e += expected[k]
        if acc_e >= 5:
            obs.append(acc_o)
            exp.append(acc_e)
            acc_o = acc_e = 0.0
            edges.append(k)
    if acc_e > 0 and exp:
        obs[-1] += acc_o
        exp[-1] += acc_e
    if len(obs) < 2:
        return {"n": int(len(counts)), "mean": float(counts.mean()), "chi2_p": None, "bins": 1}
    exp = np.asarray(exp) * (sum(obs) / sum(exp))
    chi = stats.chisquare(obs, exp)
    return {"n": int(len(counts)), "mean": round(float(counts.mean()), 3),
            "expected_mean": bits / 2, "bins": len(obs), "chi2": round(float(chi.statistic), 3),
            "chi2_p": float(chi.pvalue)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--independent", type=int, default=40)
    parser.add_argument("--finetuned", type=int, default=12)
    parser.add_argument("--images", type=int, default=4000, help="training images per model")
    parser.add_argument("--fresh-keys", type=int, default=20)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    images, labels = data.fashion_mnist("train")
    owner = WeightKey.generate(bits=BITS, targets=TARGETS, secret=secret(1))
    torch.manual_seed(0)
    reference = train(small_cnn(), *subset(images, labels, 2 * args.images, 0), 2, 0,
                      watermark=WeightWatermark(owner, strength=0.01))
    ref = Reference(reference)
    own = verify(reference, owner)
    print(f"reference: owner key {own.matches}/{own.total} (p = {own.p_value:.2g})")
    modes = {"plain": dict(), "aligned": dict(reference=ref), "aligned, matching on all":
             dict(reference=ref, exclude_nothing=True)}
    counts = {m: {"owner": [], "fresh": []} for m in modes}
    p_min = {m: {"owner": 1.0, "fresh": 1.0} for m in modes}
    detections = {m: {"owner": 0, "fresh": 0} for m in modes}
    align_seconds, costs, n_models = [], [], 0
    for what, model in null_models(images, labels, args.independent, args.finetuned,
                                   args.images):
        n_models += 1
        # Fresh keys of their own for every model: counts of one fixed key over many models
        # are not independent (models trained on the same data share structure, so a fixed
        # projection reads them alike), which a goodness-of-fit test needs.
        fresh = [WeightKey.generate(bits=BITS, targets=TARGETS, secret=secret(2, n_models, i))
                 for i in range(args.fresh_keys)]
        for mode, how in modes.items():
            if how.get("exclude_nothing"):
                verdicts = _read_matching_all(model, [owner, *fresh], ref)
            else:
                t = time.perf_counter()
                verdicts = [verify(model, k, reference=how.get("reference")) for k in
                            [owner, *fresh]] if mode == "plain" else \
                    _read(model, [owner, *fresh], ref)
                if mode == "aligned":
                    align_seconds.append(time.perf_counter() - t)
                    costs.append(verdicts[0].extra["alignment"]["matching_cost"])
            for i, v in enumerate(verdicts):
                which = "owner" if i == 0 else "fresh"
                # with a reference verify reads twice and keeps the better count (reads=2):
                # the goodness of fit is of the aligned read alone, what alignment could bias;
                # detections and min_p are the verdict's (the doubled p of the better read)
                two = v.extra.get("two_reads")
                counts[mode][which].append(two["aligned"]["matches"] if two else v.matches)
                p_min[mode][which] = min(p_min[mode][which], v.p_value)
                detections[mode][which] += int(v.p_value < ALPHA)
        print(f"{what}: owner {counts['plain']['owner'][-1]} plain, "
              f"{counts['aligned']['owner'][-1]} aligned, "
              f"{counts['aligned, matching on all']['owner'][-1]} aligned on all", flush=True)
    result = {"models": n_models, "bits": BITS, "fresh_keys": args.fresh_keys, "alpha": ALPHA,
              "reference_owner_matches": own.matches,
              "median_matching_cost": float(np.median(costs)),
              "median_align_seconds_for_all_keys": float(np.median(align_seconds)),
              "seconds": round(time.perf_counter() - start, 1), "modes": {}}
    for mode in modes:
        owner_bits = sum(counts[mode]["owner"])
        pooled = stats.binomtest(owner_bits, n_models * BITS, 0.5)
        result["modes"][mode] = {
            "detections": detections[mode], "min_p": p_min[mode],
            "owner_gof": gof(counts[mode]["owner"], BITS),
            "owner_pooled_bits": f"{owner_bits}/{n_models * BITS}",
            "owner_pooled_binomtest_p": float(pooled.pvalue),
            "fresh_gof": gof(counts[mode]["fresh"], BITS)}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


def _read(model, keys, ref):
    """As verify(reference=...) does it for several keys at once: one alignment."""
    from mlguard.verification.verify import verify_weights_many
    return verify_weights_many(model, keys, ALPHA, reference=ref)


def _read_matching_all(model, keys, ref):
    """Alignment that also matches on the key's targets (not what verify does)."""
    from mlguard.verification.verify import verify_weights_many
    from mlguard.weights.align import align
    state, _ = align(model, ref, exclude=())
    return verify_weights_many(state, keys, ALPHA)


if __name__ == "__main__":
    main()
