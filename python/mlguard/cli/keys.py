"""`mlguard key new trigger|weight ... --out FILE`: make a key from the command line.

The options are the Python API's (TriggerKey.generate / TriggerKey.from_images /
WeightKey.generate). The secret is always drawn fresh (never from argv); an existing key file
is never replaced without --force, since it may hold the only copy of another secret.
"""

from __future__ import annotations

import sys

from ._args import add_arch_arguments, build_arch, one_of, refuse_existing
from ._common import guard


def _kinds() -> tuple[str, ...]:
    """The registered kinds TriggerKey.generate makes (keys/kinds/)."""
    from ..keys.kinds import names_where
    return names_where("from_generate")


def _resize_modes() -> tuple[str, ...]:
    from ..keys.images import RESIZE_MODES
    return RESIZE_MODES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("key", help="make a watermark key")
    sub = p.add_subparsers(dest="action", required=True)

    t = sub.add_parser("new", help="generate a new key file (trigger-set or weight-space)")
    kinds = t.add_subparsers(dest="scheme", required=True)

    q = kinds.add_parser("trigger", help="trigger-set key (TriggerKey.generate / from_images)")
    q.add_argument("--num-classes", type=int, required=True)
    q.add_argument("--size", type=int, default=100, help="number of triggers (default 100)")
    q.add_argument("--shape", default="3,32,32", metavar="C,H,W",
                   help="input shape of the model (default 3,32,32)")
    q.add_argument("--kind", type=one_of(_kinds, "kind"), default="abstract", metavar="KIND",
                   help="abstract (default), noise, content or unrelated; the last three "
                        "choose their triggers from --source images")
    q.add_argument("--source", metavar="FOLDER",
                   help="images to choose the triggers from (noise, content, unrelated)")
    q.add_argument("--noise-amplitude", type=float, default=0.25, help="noise kind (default 0.25)")
    q.add_argument("--patch-size", type=int, default=None, help="content kind: patch side")
    q.add_argument("--mode", choices=("pattern", "image"), default=None,
                   help="noise and content kinds: pattern (default; K keyed patterns, each "
                        "with a secret target class) or image (each stored image its own label)")
    q.add_argument("--patterns", type=int, default=16,
                   help="pattern mode: number of keyed patterns K (default 16)")
    q.add_argument("--images", metavar="FOLDER",
                   help="use your own trigger images (TriggerKey.from_images) instead")
    q.add_argument("--labels", metavar="FILE",
                   help="with --images: one class per line (default: secret random labels)")
    q.add_argument("--resize", type=one_of(_resize_modes, "resize mode"), default="center_crop",
                   metavar="MODE", help="how image files are fitted to --shape: center_crop "
                                        "(default), resize or none")
    q.add_argument("--mean", metavar="M[,M,M]", help="training normalization mean per channel")
    q.add_argument("--std", metavar="S[,S,S]", help="training normalization std per channel")
    _common(q)
    q.set_defaults(func=guard(_new_trigger))

    q = kinds.add_parser("weight", help="weight-space key (WeightKey.generate)")
    q.add_argument("--bits", type=int, default=256, help="message bits (default 256)")
    q.add_argument("--targets", nargs="+", required=True, metavar="NAME",
                   help="parameter names that carry the message, or 'auto' with --arch for "
                        "the model's largest weight matrix")
    q.add_argument("--reduce", default="none", help="reduction of the targets (default none)")
    add_arch_arguments(q, "the model, to resolve 'auto' and check the targets now")
    _common(q)
    q.set_defaults(func=guard(_new_weight))


def _common(q) -> None:
    q.add_argument("--out", required=True, metavar="FILE", help="the key file to write (0600)")
    q.add_argument("--force", action="store_true", help="replace an existing key file")
    q.add_argument("--label", metavar="NAME", default=None,
                   help="a name for people (e.g. a customer id), saved in the key file and "
                        "shown by scan reports; not part of the commitment")


def _floats(name: str, text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None


def _shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise ValueError(f"--shape must be C,H,W (three integers), got {text!r}")
    return shape


def _check_output(args) -> None:
    """Refuses an existing --out and a bad --label before any work (a --source may be large)."""
    refuse_existing(args.out, args.force)
    if args.label is not None:
        from ..keys.keyfile import check_label
        check_label(args.label)


def _new_trigger(args) -> int:
    from ..keys import TriggerKey
    from ..keys.images import image_paths, read_images
    _check_output(args)
    shape = _shape(args.shape)
    mean, std = _floats("--mean", args.mean), _floats("--std", args.std)
    if args.images is not None:
        if args.source is not None or args.kind != "abstract":
            raise ValueError("--images makes a key of your own images: drop --kind/--source")
        key = TriggerKey.from_images(args.images, args.labels, num_classes=args.num_classes,
                                     shape=shape, resize=args.resize, mean=mean, std=std)
    else:
        if args.labels is not None:
            raise ValueError("--labels goes with --images")
        source = None
        if args.source is not None:
            source = read_images(image_paths(args.source), shape, args.resize)
        key = TriggerKey.generate(args.num_classes, args.size, shape, args.kind, mean, std,
                                  source=source, noise_amplitude=args.noise_amplitude,
                                  patch_size=args.patch_size, mode=args.mode,
                                  patterns=args.patterns)
    return _save(key, args)


def _new_weight(args) -> int:
    from ..keys import WeightKey
    _check_output(args)
    model = build_arch(args.arch, args.arch_kwargs)
    targets = "auto" if args.targets == ["auto"] else tuple(args.targets)
    key = WeightKey.generate(args.bits, targets, args.reduce, model=model)
    return _save(key, args)


def _save(key, args) -> int:
    key = key.with_label(args.label)
    key.save(args.out, overwrite=args.force)
    named = f" labelled {key.label!r}" if key.label is not None else ""
    print(f"wrote {args.out}: key {key.commitment()[:16]}{named} "
          f"(commitment {key.commitment()})")
    print("keep this file secret: it holds the key's secret", file=sys.stderr)
    return 0
