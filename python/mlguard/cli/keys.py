"""`mlguard key new SCHEME [OUT] [options]`: make a key of any registered scheme.

The subcommands come from the scheme registry (mlguard.schemes): each scheme's
add_arguments / from_arguments give its options (the Python API's, e.g. TriggerKey.generate
/ TriggerKey.from_images / WeightKey.generate), so a scheme registered in a user's script
gets its own `mlguard key new <name>` when that script calls mlguard.cli.main.main. Schemes'
cli_aliases keep older verbs (`trigger` for trigger-set). The secret is always drawn fresh
(never from argv); an existing key file is never replaced without --force, since it may
hold the only copy of another secret.
"""

from __future__ import annotations

import argparse
import sys

from ..keys.keyfile import check_label
from ..schemes.base import SCHEMES
from ._args import refuse_existing
from ._common import guard


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("key", help="make a watermark key")
    sub = p.add_subparsers(dest="action", required=True)

    listing = "\n".join(f"  {_verb(s)}: {s.summary}" for s in SCHEMES.values())
    t = sub.add_parser("new", help="generate a new key file of a scheme",
                       description=f"schemes:\n{listing}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = t.add_subparsers(dest="scheme", required=True, metavar="SCHEME")
    for scheme in SCHEMES.values():
        q = kinds.add_parser(scheme.name, aliases=list(scheme.cli_aliases),
                             help=scheme.summary or f"a {scheme.name} key",
                             description=scheme.summary or None)
        scheme.add_arguments(q)
        _common(q)
        q.set_defaults(func=guard(_new), scheme_class=scheme)


def _verb(scheme) -> str:
    return " | ".join((scheme.name, *scheme.cli_aliases))


def _common(q) -> None:
    q.add_argument("out_path", nargs="?", metavar="OUT", default=None,
                   help="the key file to write (0600); or --out")
    q.add_argument("--out", metavar="FILE", default=None, help="the key file to write (0600)")
    q.add_argument("--force", action="store_true", help="replace an existing key file")
    q.add_argument("--label", metavar="NAME", default=None,
                   help="a name for people (e.g. a customer id), saved in the key file and "
                        "shown by scan reports; not part of the commitment")


def _check_output(args) -> None:
    """Picks OUT / --out, refuses an existing one and a bad --label before any work (a
    --source may be large)."""
    if args.out is not None and args.out_path is not None and args.out != args.out_path:
        raise ValueError(f"give the key file once: OUT '{args.out_path}' or --out "
                         f"'{args.out}'")
    args.out = args.out if args.out is not None else args.out_path
    if args.out is None:
        raise ValueError("the key file to write is required: OUT or --out FILE")
    refuse_existing(args.out, args.force)
    if args.label is not None:
        check_label(args.label)


def _new(args) -> int:
    _check_output(args)
    key = args.scheme_class.from_arguments(args)
    key = key.with_label(args.label)
    key.save(args.out, overwrite=args.force)
    named = f" labelled {key.label!r}" if key.label is not None else ""
    print(f"wrote {args.out}: key {key.commitment()[:16]}{named} "
          f"(commitment {key.commitment()})")
    print("keep this file secret: it holds the key's secret", file=sys.stderr)
    return 0
