"""The --reference option that verify, scan and fingerprint identify share."""

from __future__ import annotations

import os

HELP = ("the owner's reference model file (the watermarked model as trained; needs --arch): "
        "weight keys read the suspect after aligning it to it, so copies with permuted, "
        "rescaled or added hidden units are still found")


def add_argument(parser) -> None:
    parser.add_argument("--reference", metavar="FILE", default=None, help=HELP)


def load(args, arch_kwargs):
    """The prepared Reference, or None without --reference; needs --arch for the network."""
    if getattr(args, "reference", None) is None:
        return None
    if args.arch is None:
        raise ValueError("--reference needs --arch MODULE:FACTORY: a model file holds weights, "
                         "not the network whose units are aligned")
    if not os.path.isfile(args.reference):
        raise ValueError(f"--reference: no such file: '{args.reference}'")
    from ..weights.align import Reference
    return Reference.load(args.reference, args.arch, arch_kwargs)
