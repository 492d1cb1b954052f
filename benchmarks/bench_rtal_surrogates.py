"""Conferrable fingerprints whose surrogates simulate a thief who holds the weights (issue 21):
can a key made for it prove "RTAL, then distillation"?

The zoo's conferrable keys train their surrogates on the victim's answers (retraining), and no
such key proved a copy that was fine-tuned with a new head (RTAL) and then distilled into a
fresh network. This makes, for one victim of an extraction zoo, keys whose surrogates are

- "rtal":  the victim itself after RTAL (mlguard.attacks.fine_tune: new last layer, every layer
           trained with Adam 1e-3) on the owner's images and true labels, 5 epochs (WRT's);
- "chain": a fresh network trained 3 epochs on the hard answers of each of those (the thief's
           whole chain, RTAL then a student, as the owner can simulate it);
- "mixed": the "rtal" surrogates and the usual retrained ones together;

all with the same references and calibration models (mlguard.schemes._owner_models, the zoo's
conferrable defaults: 3 + 4 independent models, 3 epochs, 200 examples at eps 0.1). The keys
are written as <out>/conferrable-<kind>-<victim>.key; read them with
bench_extraction_evidence.py --keys (the null: the zoo's independents).

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_rtal_surrogates.py \
        --zoo /work/zoo/cifar10-resnet18 --victim victim-s0 --out /work/runs/rtal
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
from extraction_zoo import (accuracy, build, load_model,  # noqa: E402
                            manifest_of_zoo_argument, split_tensors)

from mlguard import attacks  # noqa: E402
from mlguard.schemes import _adversarial as adv  # noqa: E402
from mlguard.schemes import _owner_models as om  # noqa: E402
from mlguard.schemes.conferrable import ConferrableKey  # noqa: E402

KINDS = ("rtal", "chain", "mixed")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, required=True)
    p.add_argument("--victim", default="victim-s0")
    p.add_argument("--out", type=Path, required=True, help="folder for the keys")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--rtal-epochs", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3, help="every other owner model's epochs")
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--candidates", type=int, default=600)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    zoo = manifest_of_zoo_argument(p, args.zoo)
    entry = next((m for m in zoo["models"] if m["name"] == args.victim), None)
    if entry is None or entry["role"] != "victim":
        p.error(f"--victim {args.victim!r} is not a victim of {args.zoo}")
    # only the victim and the owner and eval splits: not the zoo's other models
    victim, seed = load_model(entry["arch"], args.zoo / entry["file"]), entry["seed"]
    mean, std = zoo["normalization"]["mean"], zoo["normalization"]["std"]
    split = json.loads((args.zoo / zoo["split"]).read_text())
    sets = split_tensors(zoo["dataset"], {k: split[k] for k in ("owner", "eval")},
                         split.get("limit"))
    u8, x, y = sets["owner"]
    _, eval_x, eval_y = sets["eval"]
    arch = lambda: build(entry["arch"])  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    # the retrained surrogates serve only "mixed" (the groups' seeds do not depend on counts)
    base = om.train_owner_models(victim, arch, u8, y,
                                 surrogates=3 if "mixed" in args.kinds else 1, references=3,
                                 calibration=4, per_model=6000, epochs=args.epochs,
                                 mean=mean, std=std, seed=seed)
    rtal = [attacks.fine_tune(victim, (x, y), "RTAL", epochs=args.rtal_epochs,
                              seed=1000 + i).eval() for i in range(3)]
    chain = [om.fit(arch, u8, adv.predictions(r, u8.float() / 255, mean, std, 10, 256),
                    mean, std, args.epochs, 7000 + 10 * seed + i) for i, r in enumerate(rtal)
             if "chain" in args.kinds]
    print(f"owner models in {time.perf_counter() - t:.0f} s; eval accuracy: rtal "
          f"{[round(accuracy(m, eval_x, eval_y), 4) for m in rtal]}, chain "
          f"{[round(accuracy(m, eval_x, eval_y), 4) for m in chain]}", flush=True)
    surrogates = {"rtal": rtal, "chain": chain, "mixed": rtal + base["surrogates"]}
    for kind in args.kinds:
        t = time.perf_counter()
        key = ConferrableKey.generate(
            model=victim, images=u8, labels=y, surrogate_models=surrogates[kind],
            reference_models=base["references"], calibration_models=base["calibration"],
            size=args.size, eps=0.1, steps=20, candidates=args.candidates, mean=mean, std=std,
            # the secret RESULTS.md's keys were made with
            secret=hashlib.sha256(f"proto-rtal-{kind}-s{seed}".encode()).digest())
        path = args.out / f"conferrable-{kind}-{args.victim}.key"
        key.with_label(f"conferrable ({kind} surrogates) {args.victim}").save(path,
                                                                              overwrite=True)
        print(f"{path.name}: {time.perf_counter() - t:.0f} s; calibration reads "
              f"{key.reference['matches']}, surrogates {key.generation['surrogate_matches']}, "
              f"chance bound {key.chance:.3f}", flush=True)


if __name__ == "__main__":
    main()
