"""How many bits the training-free weight embedding can carry, and what it costs the weights.

For M carrying weights and T = ratio * M bits, embeds random messages into random weights
(torch.nn.Linear's init) with margin `--strength` RMS and reports how often every bit reads
correctly with that margin (finite result), and ||change|| / ||weights||, for:

- mlguard.embed_weights' algorithm: the minimum-norm change (conjugate gradients on R R^T),
  run past embed_weights' capacity check so the limit itself can be seen;
- the classic spread-spectrum step w + alpha R^T (2b - 1) with alpha set by the worst bit,
  then Richardson corrections (mlguard's algorithm before issue 9), for comparison.

    python benchmarks/bench_embed_capacity.py                        # M = 256, 1024, 4096; 5 trials
    python benchmarks/bench_embed_capacity.py --sizes 64,256 --ratios 0.25,1,2 --trials 10
"""

from __future__ import annotations

import argparse
import math

import torch

import mlguard
from mlguard.ops import keyed_projection
from mlguard.weights import watermark

BACK = torch.ops.mlguard._keyed_projection_backward


def classic(w: torch.Tensor, key, strength: float) -> torch.Tensor:
    signs = key.message_tensor().float() * 2 - 1
    margin = strength * w.pow(2).mean().sqrt()
    y = keyed_projection(w, key.seed, key.bits)
    direction = BACK(signs, key.seed, w.numel())
    gain = signs * keyed_projection(direction, key.seed, key.bits)
    usable = gain > 0
    alpha = float(((margin - signs * y) / gain)[usable].clamp_min(0).max()) * 1.001 \
        if bool(usable.any()) else 0.0
    w = w + alpha * direction
    for _ in range(50):
        short = (margin - signs * keyed_projection(w, key.seed, key.bits)).clamp_min(0)
        if not bool((short > 0).any()):
            break
        w = w + BACK(signs * short * 1.01, key.seed, w.numel())
    return w


@torch.no_grad()
def minimum_norm(w: torch.Tensor, key, strength: float) -> torch.Tensor:
    param = torch.nn.Parameter(w.clone())
    try:
        watermark._embed([param], key, strength, [w])  # embed_weights without its checks
    except ValueError:
        pass  # judged below like the classic result
    return param.detach()


def judge(w0: torch.Tensor, w1: torch.Tensor, key, strength: float) -> tuple[bool, float]:
    signs = key.message_tensor().float() * 2 - 1
    y = keyed_projection(w1, key.seed, key.bits)
    ok = bool(w1.isfinite().all()) and bool(
        (signs * y >= strength * w0.pow(2).mean().sqrt() * (1 - 1e-4)).all())
    return ok, float((w1 - w0).norm() / w0.norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,1024,4096")
    ap.add_argument("--ratios", default="0.015625,0.0625,0.25,0.5,1,2")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--strength", type=float, default=1.0)
    args = ap.parse_args()
    print(f"limit in embed_weights: bits <= weights / {watermark.EMBED_WEIGHTS_PER_BIT}")
    print(f"{'M':>6} {'T':>6} {'T/M':>7} | {'min-norm ok':>11} {'change':>15} | "
          f"{'classic ok':>10} {'change':>15}")
    for m in (int(s) for s in args.sizes.split(",")):
        for t in sorted({max(1, round(m * float(r))) for r in args.ratios.split(",")}):
            results = {"min-norm": [], "classic": []}
            for trial in range(args.trials):
                torch.manual_seed(trial)
                w = torch.nn.Linear(m, 1, bias=False).weight.detach().reshape(-1)
                key = mlguard.WeightKey.generate(bits=t, targets=("weight",),
                                                 secret=bytes([trial]) * 32)
                results["min-norm"].append(judge(w, minimum_norm(w, key, args.strength), key,
                                                 args.strength))
                results["classic"].append(judge(w, classic(w, key, args.strength), key,
                                                args.strength))
            cells = []
            for name in ("min-norm", "classic"):
                changes = [c for ok, c in results[name] if ok and math.isfinite(c)]
                span = f"{min(changes):.3g}..{max(changes):.3g}" if changes else "-"
                oks = sum(ok for ok, _ in results[name])
                cells.append(f"{oks:>{len(name) + 3 - 6}}/{args.trials:<3} {span:>15}")
            print(f"{m:>6} {t:>6} {t / m:>7.4f} | {cells[0]} | {cells[1]}", flush=True)


if __name__ == "__main__":
    main()
