"""What did the victim give the thief? The zoo's "RTAL, then distillation" recipe run with a
freshly initialized network in place of the victim (issue 21).

A thief who owns labelled images can fine-tune the stolen weights with them (RTAL) and distil
the result into a fresh network. When the copy ends *more* accurate than the victim, how much
of it came from the victim? This runs the same recipe (extraction_zoo.rtal_then_distill: the
same attacker images, budget and seeds) from a network that never saw the owner's data, for
each victim of an extraction zoo, and prints both chains side by side: teacher (after RTAL)
and copy accuracy. The difference is what the victim contributed; a copy that gains nothing
from the victim holds nothing of it to prove. The models are written to <out> so that the
evidence benchmarks can read them as "the thief on their own".

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_thief_without_victim.py \\
        --zoo /work/zoo/cifar10-resnet18 --out /work/runs/thief-alone --json thief-alone.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction_zoo import (accuracy, build, load_model,  # noqa: E402
                            manifest_of_zoo_argument, rtal_teacher, rtal_then_distill,
                            split_tensors)
from safetensors.torch import save_file  # noqa: E402

FRESH_SEED = 900  # + the victim's seed: the stand-in's initialization


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for the models")
    p.add_argument("--seeds", type=int, nargs="+", help="victims' seeds (default: every one)")
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    zoo = manifest_of_zoo_argument(p, args.zoo)
    by_name = {m["name"]: m for m in zoo["models"]}
    victims = [m for m in zoo["models"] if m["role"] == "victim"
               and (args.seeds is None or m["seed"] in args.seeds)]
    if not victims:
        p.error(f"--seeds {args.seeds}: no such victim in {args.zoo}")
    budget = zoo["budget"]
    split = json.loads((args.zoo / zoo["split"]).read_text())
    sets = split_tensors(zoo["dataset"], {k: split[k] for k in ("attacker", "eval")},
                         split.get("limit"))
    n = budget["attacker_images"] or len(sets["attacker"][2])
    attacker = (sets["attacker"][1][:n], sets["attacker"][2][:n])
    ev = sets["eval"][1], sets["eval"][2]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for v in victims:
        seed, t = v["seed"], time.perf_counter()
        victim = load_model(v["arch"], args.zoo / v["file"])
        torch.manual_seed(FRESH_SEED + seed)
        fresh = build(v["arch"])
        row = {"victim": v["name"], "seed": seed, "victim_accuracy": v["test_accuracy"]}
        for who, start in (("from_victim", victim), ("from_scratch", fresh)):
            torch.manual_seed(seed)  # as the zoo did before each theft
            stolen = by_name.get(f"stolen-rtal-distill-s{seed}")
            if who == "from_victim" and stolen is not None:  # the zoo's copy; its teacher
                teacher = rtal_teacher(start, attacker, budget, seed)
                copy_accuracy = stolen["test_accuracy"]
            else:
                teacher, copy = rtal_then_distill(start, attacker, budget, seed)
                copy_accuracy = accuracy(copy.eval(), *ev)
            if who == "from_scratch":
                save_file(copy.state_dict(),
                          args.out / f"thief-alone-rtal-distill-s{seed}.safetensors")
            row[who] = {"teacher": accuracy(teacher.eval(), *ev), "copy": copy_accuracy}
        row["victim_gave_copy"] = row["from_victim"]["copy"] - row["from_scratch"]["copy"]
        row["seconds"] = time.perf_counter() - t
        rows.append(row)
        print(f"{v['name']} ({v['test_accuracy']:.2%}): RTAL teacher / copy from the victim "
              f"{row['from_victim']['teacher']:.2%} / {row['from_victim']['copy']:.2%}, from a "
              f"fresh network {row['from_scratch']['teacher']:.2%} / "
              f"{row['from_scratch']['copy']:.2%}: the victim gave the copy "
              f"{100 * row['victim_gave_copy']:+.1f} points ({row['seconds']:.0f} s)",
              flush=True)
        if args.json:
            args.json.write_text(json.dumps({"zoo": str(args.zoo), "budget": budget,
                                             "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
