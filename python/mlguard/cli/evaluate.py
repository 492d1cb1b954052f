"""`mlguard evaluate`: attack a watermarked model file and tabulate what survives.

    mlguard evaluate model.pt --arch mlguard.cli.demo:small_cnn --keys owner.key \\
        --attacks "ftal,prune:0.5,quantize:4,distill" --out report.md --plot frontier.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


from . import _reference
from ._args import add_arch_arguments, add_progress_arguments, arch_kwargs

EPILOG = """attacks: comma-separated; a value after ':' sets the attack's main parameter
(prune:0.5 amount, quantize:4 bits, cast:bf16, noise:0.5 sigma, jpeg:50 quality, blur:1.0
sigma, ftal:3 / distill:5 epochs), further ':k=v' other ones (fine_prune:0.5:epochs=2).
'+' stacks attacks into one (rtal:2+distill: RTAL, then distillation of its result).
--list-attacks lists every attack with its aliases, main parameter and what it needs.
overwrite embeds a fresh attacker key of its own.

data: 'fashion-mnist' (the installed data set), or a folder with train/ and test/ in
ImageFolder layout (train/<class>/*.jpg), read at the key's shape. The attacker gets a fixed
third of the training set (--attacker-fraction), as the Watermark-Robustness-Toolbox does.

With --out, the command prints a summary (detections, and the attacks that removed a mark
with their accuracy cost) and the files it wrote; without, the whole table.

--config FILE --out FOLDER runs the whole protocol from a config file instead (owner models,
every scheme x attack x seed, the payoff matrix and Pareto plot), resumable after Ctrl-C:
see configs/smoke.toml and docs/guides/evaluation-protocol.md.

exit status: 0 report written, 1 (--config) some cells failed (each listed in results.md,
left out of the tables), 2 bad arguments or unusable inputs, 130 (--config) interrupted
(rerun to finish)."""

OUT_SUFFIXES = (".md", ".csv", ".json")


class _ListAttacks(argparse.Action):
    """--list-attacks: prints the registry and exits, like --help (no other argument needed)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(attack_table())
        parser.exit()


def attack_table() -> str:
    """One line per registered attack: name (aliases), main parameter, side, needs, summary."""
    from ..attacks.registry import ATTACKS, list_attacks
    lines = [f"{'name (aliases)':<34} {'main':<8} {'side':<6} {'needs':<19} what it does"]
    for name in list_attacks():
        a = ATTACKS[name]
        named = name + (f" ({', '.join(a.aliases)})" if a.aliases else "")
        fixed = ", ".join(f"{k}={v}" for k, v in a.fixed.items())
        what = a.summary if not fixed else f"{a.fn.__name__}({fixed}): {a.summary}"
        lines.append(f"{named:<34} {a.main_param:<8} {a.side:<6} "
                     f"{','.join(a.needs) or '-':<19} {what}")
    return "\n".join(lines)


def add_parser(subparsers) -> None:
    """Adds the `evaluate` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "evaluate", help="run removal attacks on a watermarked model; table of what survives",
        description="Run removal attacks on a watermarked model and verify every key on "
                    "each attacked model (never by swapping parts of the original back in).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", nargs="?", help="state_dict file (torch.save or "
                   "safetensors; loaded with weights_only, never unpickling code)")
    p.add_argument("--config", metavar="TOML", default=None,
                   help="run the whole protocol from a config file instead (owner models, "
                   "every scheme x attack x seed; resumable): needs --out FOLDER")
    add_arch_arguments(p, "builds the network")
    p.add_argument("--keys", nargs="+", metavar="KEY", help="the owner's key files")
    p.add_argument("--reference", metavar="FILE", default=None,
                   help="the owner's reference model file: each weight key gets a second row "
                   "read after aligning to it (see mlguard verify --reference)")
    p.add_argument("--attacks", metavar="LIST",
                   help='e.g. "ftal,prune:0.5,distill" (see below)')
    p.add_argument("--list-attacks", action=_ListAttacks,
                   help="list the attacks (name, aliases, main parameter, needs) and exit")
    p.add_argument("--data", default="fashion-mnist", metavar="DATA",
                   help="fashion-mnist (default) or an ImageFolder root with train/ and test/")
    p.add_argument("--attacker-fraction", type=float, default=1 / 3, metavar="F",
                   help="the attacker's share of the training set (default 1/3)")
    p.add_argument("--train-limit", type=int, default=None, metavar="N",
                   help="use only the first N training images (before the attacker's share)")
    p.add_argument("--test-limit", type=int, default=None, metavar="N",
                   help="measure accuracy on the first N test images")
    p.add_argument("--out", action="append", default=[], metavar="FILE",
                   help="write the table: report.md, report.csv or report.json (repeatable); "
                   "with --config, the output folder")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="write the accuracy vs -log10 p frontier (png, svg or pdf)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--alpha", type=float, default=1e-6, help="significance level (default 1e-6)")
    p.add_argument("--seed", type=int, default=0, help="the attacker's split and shuffles")
    add_progress_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Runs a parsed `evaluate` command; returns the exit status (see EPILOG)."""
    import torch

    from ..evaluation import evaluate, parse_cli
    from ..files.model import resolve_arch
    from ..files.state_dict import load_state_dict_file
    from ..keys import load_key
    from ..schemes.base import scheme_of

    if args.config is not None:
        return _run_config(args)
    missing = [f for f, v in (("MODEL", args.model), ("--arch", args.arch),
                              ("--keys", args.keys), ("--attacks", args.attacks)) if not v]
    if missing:
        return _usage(f"{', '.join(missing)} required (or --config FILE --out FOLDER)")
    for target in args.out:
        if not target.lower().endswith(OUT_SUFFIXES):
            return _usage(f"--out must end in .md, .csv or .json, got '{target}'")
    if args.plot is not None and not args.plot.lower().endswith((".png", ".svg", ".pdf")):
        return _usage(f"--plot must end in .png, .svg or .pdf, got '{args.plot}'")
    if not 0 < args.attacker_fraction <= 1:
        return _usage(f"--attacker-fraction must be in (0, 1], got {args.attacker_fraction}")
    for name in ("train_limit", "test_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return _usage(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not 0 < args.alpha < 1:
        return _usage(f"--alpha must be in (0, 1), got {args.alpha}")
    try:
        specs = parse_cli(args.attacks)
        kwargs = arch_kwargs(args.arch, args.arch_kwargs)
        keys = [load_key(k) for k in args.keys]
        factory = resolve_arch(args.arch, kwargs)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = factory()
        state = load_state_dict_file(args.model, map_location="cpu")
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{args.model} does not fit --arch {args.arch}: "
                             f"{str(e).splitlines()[0]}") from None
        model.to(device)
        # the keys that say how the model's inputs look (trigger keys: shape, normalization)
        norms = [n for n in (scheme_of(k).input_normalization(k) for k in keys) if n is not None]
        shapes = [s for s in (scheme_of(k).input_shape(k) for k in keys) if s is not None]
        attacker, test, described = _data(args, norms, shapes[0] if shapes else None)
        reference = _reference.load(args, kwargs)
    except (ValueError, TypeError, FileNotFoundError) as e:
        return _usage(str(e))
    try:
        report = evaluate(model, keys, specs, attacker, test, alpha=args.alpha,
                          attacker=described, progress=args.progress, seed=args.seed,
                          reference=reference)
    except (ValueError, TypeError) as e:  # e.g. an attack parameter out of range
        return _usage(str(e))
    for target in args.out:
        suffix = Path(target).suffix.lower()
        {".md": report.to_markdown, ".csv": report.to_csv, ".json": report.to_json}[suffix](
            target)
    if args.plot:
        report.plot(args.plot)
    if not args.out:
        print(report.to_markdown())
    else:  # the table went to files: say what it found and where it is
        print(summary(report))
    for target in [*args.out, *([args.plot] if args.plot else [])]:
        print(f"wrote {target}")
    return 0


def _run_config(args) -> int:
    """`evaluate --config F --out DIR`: the protocol, resumable; prints what it wrote."""
    from ..evaluation.config import load_config
    from ..evaluation.payoff import tables, write_all
    from ..evaluation.protocol import run_protocol

    given = [f for f, v in (("MODEL", args.model), ("--arch", args.arch), ("--keys", args.keys),
                            ("--attacks", args.attacks), ("--plot", args.plot)) if v]
    if given:
        return _usage(f"--config takes everything from the file; drop {', '.join(given)}")
    if len(args.out) != 1:
        return _usage("--config needs one --out FOLDER (it holds the models, keys, journal "
                      "and tables; rerun with the same folder to resume)")
    try:
        config = load_config(args.config)
        cells = run_protocol(config, args.out[0],
                             progress=print if args.progress is not False else lambda *_: None)
    except (ValueError, TypeError) as e:
        return _usage(str(e))
    except KeyboardInterrupt:
        print(f"\nmlguard evaluate: interrupted; every finished cell is in "
              f"{Path(args.out[0]) / 'cells.jsonl'}: rerun the same command to finish",
              file=sys.stderr)
        return 130
    max_loss, alpha = config.protocol["max_accuracy_loss"], config.protocol["alpha"]
    written = write_all(cells, args.out[0], max_loss, alpha)
    for best in tables(cells, max_loss, alpha)["best"]:
        print(f"{best['scheme']}: " + (f"removed by {best['attack']} in "
                                       f"{best['removed_share']:.0%} of seeds"
                                       if best["attack"] else "no attack removed it"))
    print("wrote " + ", ".join(str(p) for p in written))
    failed = [c for c in cells if "error" in c]
    if failed:
        print(f"mlguard evaluate: {len(failed)} cell(s) failed (listed in results.md); the "
              f"tables leave them out", file=sys.stderr)
        return 1
    return 0


def summary(report) -> str:
    """A few lines on a RobustnessReport: detections among the attacked rows and the attacks
    that removed a mark, with what removing it cost in test accuracy."""
    attacked = [r for r in report.rows if r.attack != "none"]
    removed = [r for r in attacked if not r.detected]
    lines = [f"unattacked test accuracy {100 * report.base_accuracy:.2f}%; "
             f"{len(attacked) - len(removed)} of {len(attacked)} attacked (model, key) rows "
             f"still detected (p < {report.alpha:g})"]
    if removed:
        lines.append("not detected after:")
        lines += [f"  {r.attack}{f' {r.params}' if r.params else ''}  key {r.key}: "
                  f"test accuracy {100 * r.accuracy:.2f}% ({100 * r.accuracy_change:+.2f})"
                  for r in removed]
    return "\n".join(lines)


def _data(args, stated: list, shape):
    """(attacker data, test data, description) as the model takes them. `stated`: the
    (mean, std) of every key that states its inputs' normalization; `shape`: the first
    such key's input shape (None: no key says)."""
    from torch.utils.data import Subset

    from ..data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, fashion_mnist

    norms = {tuple(None if v is None else tuple(v) for v in pair)  # lists are not hashable
             for pair in stated}
    if len(norms) > 1:
        raise ValueError("the trigger keys use different normalizations; evaluate them "
                         "separately")
    mean, std = next(iter(norms)) if norms else (None, None)
    if args.data == "fashion-mnist":
        if shape not in (None, (1, 28, 28)):
            raise ValueError(f"--data fashion-mnist is (1, 28, 28) images; the keys are {shape}")
        if mean is None and not stated:
            mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD
        (x, y), (tx, ty) = fashion_mnist("train"), fashion_mnist("test")
        x, y = x[:args.train_limit], y[:args.train_limit]
        tx, ty = tx[:args.test_limit], ty[:args.test_limit]
        pick = _share(len(x), args.attacker_fraction, args.seed)
        attacker = (_normalize(x[pick], mean, std), y[pick])
        test = (_normalize(tx, mean, std), ty)
        total = len(x)
    else:
        root = Path(args.data)
        if not (root / "train").is_dir() or not (root / "test").is_dir():
            raise ValueError(f"--data must be 'fashion-mnist' or a folder with train/ and "
                             f"test/ subfolders, got '{args.data}'")
        if shape is None:
            raise ValueError("--data FOLDER needs a trigger key to tell the image shape")
        train_set, test_set = (_image_folder(root / s, shape, mean, std) for s in ("train", "test"))
        if args.train_limit:
            train_set = Subset(train_set, range(min(args.train_limit, len(train_set))))
        if args.test_limit:
            test_set = Subset(test_set, range(min(args.test_limit, len(test_set))))
        pick = _share(len(train_set), args.attacker_fraction, args.seed)
        attacker, test, total = Subset(train_set, pick.tolist()), test_set, len(train_set)
    described = (f"{len(pick)} of {total} training images of {args.data} "
                 f"(fraction {args.attacker_fraction:.3g}, seed {args.seed}), with labels")
    return attacker, test, described


def _share(n: int, fraction: float, seed: int) -> torch.Tensor:
    """A fixed random `fraction` of n indices: the attacker's data."""
    import torch
    count = max(1, round(n * fraction))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]


def _normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    import torch
    x = images.float() / 255.0
    if mean is None:
        return x
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _image_folder(path: Path, shape, mean, std):
    from torchvision import datasets, transforms

    steps = [transforms.Resize(shape[1:])]
    if shape[0] == 1:
        steps.append(transforms.Grayscale(1))
    steps.append(transforms.ToTensor())
    if mean is not None:
        steps.append(transforms.Normalize(mean, std))
    return datasets.ImageFolder(str(path), transform=transforms.Compose(steps))


def _usage(message: str) -> int:
    print(f"mlguard evaluate: error: {message}", file=sys.stderr)
    return 2
