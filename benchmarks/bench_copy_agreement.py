"""Does a stolen copy behave like its own victim more than like other models? (issue 21)

For each victim of an extraction zoo, on the eval split: every other model's agreement with
the victim's answers, and how often it gives the victim's *wrong* label where the victim is
wrong (the behaviour particular to one model: a copy that learnt from the victim repeats its
mistakes). Other victims' stolen copies are the null of the same architecture and recipe;
`--extra` adds models of the victims' architecture from a folder (e.g. the thief-alone copies
of bench_thief_without_victim.py); the independents give their maximum and mean. No key, no
test: a measurement of whether any trace of the victim is left to prove.

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_copy_agreement.py \\
        --zoo /work/zoo/cifar10-resnet18 --extra /work/runs/alone --json agreement.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction_zoo import load_model, manifest_of_zoo_argument, split_tensors  # noqa: E402


def answers(model, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", type=Path, required=True)
    p.add_argument("--extra", type=Path, help="a folder of more *.safetensors models (the "
                                              "victims' architecture) to read beside them")
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    zoo = manifest_of_zoo_argument(p, args.zoo)
    if args.extra is not None and not args.extra.is_dir():
        p.error(f"--extra: {args.extra} is not a folder")
    split = json.loads((args.zoo / zoo["split"]).read_text())
    _, x, y = split_tensors(zoo["dataset"], {"eval": split["eval"]}, split.get("limit"))["eval"]
    models = [(m["name"], m["role"], m["arch"], args.zoo / m["file"]) for m in zoo["models"]]
    victims = [m for m in models if m[1] == "victim"]
    if args.extra is not None:
        models += [(f.stem, "extra", victims[0][2], f)
                   for f in sorted(args.extra.glob("*.safetensors"))]
    said = {}
    for name, _role, arch, file in models:
        said[name] = answers(load_model(arch, file), x)
    rows = []
    for victim, *_ in victims:
        wrong = said[victim] != y
        reads = {name: {"role": role,
                        "agreement": float((said[name] == said[victim]).float().mean()),
                        "same_mistakes": float((said[name][wrong] == said[victim][wrong])
                                               .float().mean())}
                 for name, role, *_ in models if name != victim}
        null = [r["same_mistakes"] for r in reads.values() if r["role"] == "independent"]
        rows.append({"victim": victim, "mistakes": int(wrong.sum()), "reads": reads,
                     "independents": {"count": len(null), "max": max(null, default=None),
                                      "mean": sum(null) / len(null) if null else None}})
        print(f"\n{victim}: {int(wrong.sum())} mistakes of {len(y)}; the same wrong label "
              "(agreement overall):")
        for name, r in sorted(reads.items(), key=lambda kv: -kv[1]["same_mistakes"]):
            if r["role"] != "independent":
                print(f"  {name:<34} {r['same_mistakes']:.3f} ({r['agreement']:.3f})")
        if null:
            print(f"  {len(null)} independents: max {max(null):.3f}, mean "
                  f"{sum(null) / len(null):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"zoo": str(args.zoo), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
