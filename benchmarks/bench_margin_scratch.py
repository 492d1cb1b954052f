"""Margin-based watermarks (schemes/margin.py) closer to the paper's own setting than
`mlguard evaluate`'s protocol: the owner trains from scratch with the margin loss (the paper
trains 200 epochs from scratch, not a fine-tuning), the triggers are held-out images (the
paper's validation split: here Fashion-MNIST train[24000:30000], which neither the owner nor
the attacker holds), then the thief extracts on its own disjoint share, including the
paper's own extraction (soft labels, KL at T = 1: distill with temperature 1).

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_margin_scratch.py \
        --config configs/fashion_mnist_extraction.toml --seed 0 --epochs 10 --weight 0.1

The owner/attacker split, optimizer (Adam, lr 1e-3, batch 128) and test set are the
config's (evaluation/protocol.py load_task, _train); a clean model trained the same way
from the same initialization gives the accuracy cost.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/fashion_mnist_extraction.toml")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10, help="owner training from scratch")
    p.add_argument("--weight", type=float, default=0.1, help="the paper's v (default 0.1)")
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--attack-epochs", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from mlguard import attacks, data
    from mlguard.attacks._data import Batches
    from mlguard.evaluation import protocol as P
    from mlguard.evaluation.config import load_config
    from mlguard.evaluation.evaluate import accuracy
    from mlguard.files.model import resolve_arch
    from mlguard.schemes import get_scheme
    from mlguard.schemes.margin import MarginKey
    from mlguard.verification import verify

    cfg = load_config(args.config)
    task = P.load_task(cfg, args.seed)
    arch = resolve_arch(cfg.owner["arch"], cfg.owner["arch_kwargs"] or None)
    limit = cfg.data["train_limit"]
    x, y = data.fashion_mnist("train")
    held_out = slice(limit, limit + 6000)  # nobody trains on these
    key = MarginKey.generate(images=x[held_out], labels=y[held_out], num_classes=10,
                             size=args.size, mean=task.mean, std=task.std,
                             secret=hashlib.sha256(f"bench-margin-scratch/{args.seed}"
                                                   .encode()).digest())
    test = Batches(task.test, batch_size=1000, shuffle=False, name="test")
    owner = cfg.owner
    models, seconds = {}, {}
    for name, embeddings in (("clean", []), ("marked", [get_scheme("margin").embedding(
            key, weight=args.weight)])):
        torch.manual_seed(args.seed)
        model = arch()
        start = time.perf_counter()
        P._train(model, task.owner, args.epochs, owner["lr"], owner["batch_size"], args.seed,
                 embeddings)
        seconds[name] = time.perf_counter() - start
        models[name] = model.eval()
    marked_acc = accuracy(models["marked"], test)
    print(f"seed {args.seed}: from scratch {args.epochs} epochs, v = {args.weight}, "
          f"{args.size} held-out triggers; clean {accuracy(models['clean'], test):.2%} "
          f"({seconds['clean']:.0f} s), marked {marked_acc:.2%} ({seconds['marked']:.0f} s); "
          f"load {os.getloadavg()[0]:.1f}")
    e = args.attack_epochs
    runs = {
        "none (marked)": lambda m: m,
        "clean model": lambda m: models["clean"],
        f"retrain:{e}": lambda m: attacks.retrain(m, task.attacker, epochs=e),
        f"retrain:{e}:labels=soft": lambda m: attacks.retrain(m, task.attacker, epochs=e,
                                                              labels="soft"),
        f"distill:{e}": lambda m: attacks.distill(m, task.attacker, epochs=e),
        f"distill:{e}:temperature=1 (the paper's)": lambda m: attacks.distill(
            m, task.attacker, epochs=e, temperature=1.0),
    }
    print("| model | accuracy | stealing loss (points) | matches/K | p | detected | seconds |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for name, run in runs.items():
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        model = run(models["marked"]).eval()
        took = time.perf_counter() - start
        acc = accuracy(model, test)
        v = verify(model, key, alpha=cfg.protocol["alpha"])
        print(f"| {name} | {acc:.2%} | {100 * (marked_acc - acc):.2f} | {v.matches}/{v.total} "
              f"| {v.p_value:.2g} | {'**yes**' if v.detected else 'no'} | {took:.0f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
