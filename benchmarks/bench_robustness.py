"""The robustness table (issue 11): one Fashion-MNIST CNN carrying the owner's four trigger
keys (abstract, noise, content, unrelated) and a weight key, attacked by every attack in
mlguard.attacks; each attacked model is scored by verify on itself.

Budget (CPU): the owner trains on the first `--train` training images (`--owner-epochs`,
`--per-batch` triggers of each key per batch of 128, `--triggers` per key; weight watermark
of 256 bits, strength 0.01, on 7.weight); the attacker has
a fixed third of those images (the toolbox's protocol); accuracy is on `--test` test images.

    PYTHONPATH=python python benchmarks/bench_robustness.py --md robust.md --json robust.json \
        --plot robustness_frontier.png
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_models import (TRIGGER_KINDS, cifar_gray, fresh_trigger_key,
                                owner_model, secret_for, sources)

from mlguard import RobustnessReport, WeightKey, data, evaluate
from mlguard.cli.demo import batches

TITLE = "Fashion-MNIST CNN: accuracy vs evidence after each attack"


def attack_list(epochs: int, distill_epochs: int) -> list:
    return [
        ("ftll", {"epochs": epochs}), ("ftal", {"epochs": epochs}),
        ("rtll", {"epochs": epochs}), ("rtal", {"epochs": epochs}),
        ("prune", {"amount": [0.25, 0.5, 0.75, 0.9]}),
        ("fine_prune", {"amount": [0.5, 0.9], "epochs": epochs}),
        ("quantize", {"bits": [8, 4, 2]}),
        ("cast", {"dtype": ["float16", "bfloat16"]}),
        ("weight_noise", {"sigma": [0.1, 0.5, 1.0]}),
        ("distill", {"epochs": distill_epochs, "temperature": 4.0}),
        ("overwrite", {"epochs": epochs, "key": "trigger"}),
        ("overwrite", {"epochs": epochs, "key": "weight"}),
        ("jpeg", {"quality": [90, 50, 10]}),
        ("blur", {"sigma": [0.5, 1.0, 2.0]}),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=12000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2, help="attacker's epochs (fine-tuning etc.)")
    p.add_argument("--distill-epochs", type=int, default=5)
    p.add_argument("--triggers", type=int, default=50, help="triggers per key")
    p.add_argument("--owner-epochs", type=int, default=10)
    p.add_argument("--per-batch", type=int, default=16, help="owner's triggers per batch, per key")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--md", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    p.add_argument("--replot", default=None, metavar="JSON",
                   help="only draw --plot again from a saved --json (no training)")
    args = p.parse_args(argv)
    if args.replot:
        saved = RobustnessReport.from_dict(json.loads(Path(args.replot).read_text()))
        saved.plot(args.plot, title=TITLE)
        return 0
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    images, labels = data.fashion_mnist("train")
    images, labels = images[:args.train], labels[:args.train]
    test_x, test_y = data.fashion_mnist("test")
    source = sources(test_x[-2000:], cifar_gray(2000))  # trigger sources apart from the test
    keys = {kind: fresh_trigger_key(kind, args.triggers, secret_for(4242, i), source.get(kind))
            for i, kind in enumerate(TRIGGER_KINDS)
            if kind == "abstract" or source.get(kind) is not None}
    keys["weight"] = WeightKey.generate(bits=256, targets=("7.weight",),
                                        secret=secret_for(4242, 99))
    model = owner_model(images, labels, list(keys.values()), epochs=args.owner_epochs,
                        subset=args.train, per_batch=args.per_batch)
    owner_seconds = time.perf_counter() - start

    def tensors(x, y):
        return torch.cat([b for b, _ in batches(x, y, len(x))]), y

    third = torch.randperm(len(images), generator=torch.Generator().manual_seed(3))
    third = third[:len(images) // 3]
    attacker = tensors(images[third], labels[third])
    test = tensors(test_x[:args.test], test_y[:args.test])
    thief = {"trigger": fresh_trigger_key("abstract", args.triggers, secret_for(666, 0), None),
             "weight": WeightKey.generate(bits=256, targets=("7.weight",),
                                          secret=secret_for(666, 99))}
    specs = [(n, {**p, "key": thief[p["key"]]}) if n == "overwrite" else (n, p)
             for n, p in attack_list(args.epochs, args.distill_epochs)]
    report = evaluate(model, keys, specs, attacker, test, progress=False,
                      attacker=f"a fixed third of the owner's {args.train} training images "
                               f"({len(third)} images, labels included)")
    total = time.perf_counter() - start
    print(report.to_markdown(args.md))
    print(f"device: CPU ({platform.machine()}), torch {torch.__version__}, {args.threads} "
          f"thread(s); owner training {owner_seconds:.0f} s; total {total:.0f} s")
    if args.json:
        report.to_json(args.json)
    if args.plot:
        report.plot(args.plot, title=TITLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
