"""`mlguard key new SCHEME [OUT] [options]`: make a key of any registered scheme.

The subcommands are the schemes: the built-in ones from schemes/catalog.py (torch-free, so
`mlguard key new --help` starts fast), and every registered one when the registry is loaded
already (a scheme registered in a user's script gets its own `mlguard key new <name>` when
that script calls mlguard.cli.main.main). A scheme's own options come from its
add_arguments / from_arguments (the Python API's, e.g. TriggerKey.generate / WeightKey.generate)
and are parsed when the command runs, so `mlguard key new <name> --help` imports the scheme.
Schemes' cli_aliases keep older verbs (`trigger` for trigger-set). The secret is always drawn fresh
(never from argv); an existing key file is never replaced without --force, since it may
hold the only copy of another secret.
"""

from __future__ import annotations

import argparse
import sys

from ..schemes.catalog import BUILTIN
from ._args import refuse_existing
from ._common import guard

_UNPARSED = "\x01"  # the stubs' prefix: every word after the scheme name reaches _new as is


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("key", help="make a watermark key")
    sub = p.add_subparsers(dest="action", required=True)

    schemes = _schemes()
    listing = "\n".join(f"  {' | '.join((name, *aliases))}: {summary}"
                        for name, (aliases, summary) in schemes.items())
    t = sub.add_parser("new", help="generate a new key file of a scheme",
                       description=f"schemes (mlguard key new SCHEME --help for its options):"
                                   f"\n{listing}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = t.add_subparsers(dest="scheme", required=True, metavar="SCHEME")
    for name, (aliases, summary) in schemes.items():
        q = kinds.add_parser(name, aliases=list(aliases), help=summary or f"a {name} key",
                             add_help=False, prefix_chars=_UNPARSED)
        q.add_argument("rest", nargs=argparse.REMAINDER)
        q.set_defaults(func=guard(_new), scheme_name=name)


def _schemes() -> dict[str, tuple[tuple[str, ...], str]]:
    """name -> (aliases, summary): the catalog's, and the registry's when it is loaded."""
    found = {name: (aliases, summary) for name, (_, aliases, summary) in BUILTIN.items()}
    base = sys.modules.get("mlguard.schemes.base")
    if base is not None:  # torch is imported already: list every registered scheme
        for scheme in base.SCHEMES.values():
            found.setdefault(scheme.name, (tuple(scheme.cli_aliases), scheme.summary))
    return found


def _scheme_parser(scheme, typed: str) -> argparse.ArgumentParser:
    q = argparse.ArgumentParser(prog=f"mlguard key new {typed}",
                                description=scheme.summary or None)
    scheme.add_arguments(q)
    _common(q)
    return q


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
        from ..keys.keyfile import check_label
        check_label(args.label)


def _new(args) -> int:
    from ..schemes import get_scheme

    scheme = get_scheme(args.scheme_name)
    args = _scheme_parser(scheme, args.scheme).parse_args(args.rest)  # --help exits here
    _check_output(args)
    try:
        key = scheme.from_arguments(args)
    except RuntimeError as e:  # torch's: e.g. 1-channel images into a 3-channel network
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"the key could not be made: {first} (do the architecture, the "
                         "data and its normalization fit each other?)") from e
    key = key.with_label(args.label)
    key.save(args.out, overwrite=args.force)
    named = f" labelled {key.label!r}" if key.label is not None else ""
    print(f"wrote {args.out}: key {key.commitment()[:16]}{named} "
          f"(commitment {key.commitment()})")
    print("keep this file secret: it holds the key's secret", file=sys.stderr)
    _warn_if_weak(scheme, key)
    return 0


def _warn_if_weak(scheme, key, alpha: float = 1e-6) -> None:
    """Says so when even a model matching every trial would not be detected at `alpha` (the
    verdicts' default): a key too small for its chance, e.g. a calibrated null near 1."""
    try:
        total, chance = scheme.expected_test(key.to_body())
    except (ValueError, NotImplementedError):  # not readable yet (a DAWN key before queries)
        return
    best = chance ** total  # P(all trials match) under the null: the smallest p possible
    if best > alpha:
        print(f"warning: even a model that matches all {total} trials gets p = {best:.2g} "
              f"(chance {chance:.3g} per trial), above alpha {alpha:g}: this key can never "
              f"give a detection at that level; make a larger key", file=sys.stderr)
