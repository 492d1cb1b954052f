"""`mlguard fingerprint new|key|issued|identify`: one key per customer from one master secret.

The master file (JSON, mode 0600: it holds the secret) records the scheme and the key
arguments, so every customer key derived from it, and every identification, uses the same
ones (mlguard.Fingerprints), and the ids of the customers given a key ("issued"), so that
`identify` refuses an id never issued (a typo would otherwise find no one) and tests all of
them by default. A master made before the record existed has no "issued" list: `identify`
and `key` refuse it until `fingerprint issued` records the ids issued so far. Nothing is
overwritten without --force.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os

from . import _reference
from ._args import arch_kwargs, build_arch
from ._common import guard as _guard

FORMAT = "mlguard-fingerprint-master"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("fingerprint", help="customer keys from one master secret; "
                              "identify a leaked copy's customer")
    sub = p.add_subparsers(dest="action", required=True)

    q = sub.add_parser("new", help="write a new master secret file (0600)")
    q.add_argument("--out", required=True, metavar="FILE")
    q.add_argument("--scheme", choices=("weight", "trigger"), default="weight")
    q.add_argument("--bits", type=int, default=256, help="weight: message bits (default 256)")
    q.add_argument("--targets", nargs="+", metavar="NAME",
                   help="weight: parameter names, or 'auto' with --arch")
    q.add_argument("--arch", metavar="MODULE:FACTORY", help="weight: resolves 'auto'")
    q.add_argument("--arch-kwargs", metavar="JSON")
    q.add_argument("--num-classes", type=int, help="trigger: classes of the model")
    q.add_argument("--size", type=int, default=100, help="trigger: triggers per key")
    q.add_argument("--shape", default="3,32,32", metavar="C,H,W", help="trigger: input shape")
    q.add_argument("--force", action="store_true", help="replace an existing file")
    q.set_defaults(func=_guard(_new))

    q = sub.add_parser("key", help="derive a customer's key file (records the id as issued)")
    q.add_argument("master")
    q.add_argument("--customer", required=True, help="the customer id (any string)")
    q.add_argument("--out", required=True, metavar="FILE")
    q.add_argument("--force", action="store_true", help="replace an existing key file")
    q.set_defaults(func=_guard(_key))

    q = sub.add_parser("issued", help="list the customer ids given a key; with IDs, record "
                       "them (for keys issued before the master kept a record)")
    q.add_argument("master")
    q.add_argument("ids", nargs="*", metavar="ID")
    q.set_defaults(func=_guard(_issued))

    q = sub.add_parser("identify", help="which customer's copy is this model file? "
                       "(exit 1 identified, 0 none, 2 error)")
    q.add_argument("master")
    q.add_argument("model")
    q.add_argument("--customers", nargs="+", metavar="ID",
                   help="the ids to test (default: every customer issued a key); an id "
                   "never issued is refused")
    q.add_argument("--arch", metavar="MODULE:FACTORY", help="trigger: the network")
    q.add_argument("--arch-kwargs", metavar="JSON")
    q.add_argument("--alpha", type=float, default=1e-6)
    _reference.add_argument(q, per_key=False)
    q.set_defaults(func=_guard(_identify))


def _arch_module(arch, text):
    return build_arch(arch, text)


def _new(args) -> int:
    from ..files.io import atomic_write
    from ..keys import keyfile
    from ..weights.fingerprints import Fingerprints
    if args.scheme == "weight":
        if not args.targets:
            raise ValueError("--targets is required for weight fingerprints")
        targets = "auto" if args.targets == ["auto"] else tuple(args.targets)
        kwargs = dict(bits=args.bits, targets=targets,
                      model=_arch_module(args.arch, args.arch_kwargs))
    else:
        if args.num_classes is None:
            raise ValueError("--num-classes is required for trigger fingerprints")
        shape = tuple(int(v) for v in args.shape.split(","))
        kwargs = dict(num_classes=args.num_classes, size=args.size, shape=shape)
    secret = keyfile.new_secret()
    registry = Fingerprints(secret, args.scheme, **kwargs)  # checks the arguments
    doc = {"format": FORMAT, "scheme": args.scheme, "secret": secret.hex(),
           "key_args": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in registry.key_args.items()},
           "issued": []}
    with atomic_write(args.out, mode=0o600, overwrite=args.force) as f:
        f.write(json.dumps(doc, indent=2).encode())
    print(f"wrote {args.out}: master secret for {args.scheme} fingerprints (keep it secret)")
    return 0


def _read(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"'{path}' is not a fingerprint master file: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"'{path}' is not a fingerprint master file (format {FORMAT!r})")
    issued = doc.get("issued")
    if issued is not None and (not isinstance(issued, list)
                               or not all(isinstance(i, str) and i for i in issued)):
        raise ValueError(f"'{path}': \"issued\" must be a list of customer ids, got {issued!r}")
    return doc


def _load(path: str) -> Fingerprints:
    """The registry; refuses a master with no record of the ids issued (see the module)."""
    from ..weights.fingerprints import Fingerprints
    doc = _read(path)
    if doc.get("issued") is None:
        raise ValueError(
            f"'{path}' has no record of the customers given a key (it was made before "
            "mlguard recorded them), so a mistyped id could not be told from a real one: "
            f"record every customer id issued so far with `mlguard fingerprint issued {path} "
            "ID [ID ...]`, then run this again")
    args = dict(doc["key_args"])
    for name in ("targets", "shape"):
        if name in args:
            args[name] = tuple(args[name])
    return Fingerprints(doc["secret"], doc["scheme"], issued=doc["issued"], **args)


@contextlib.contextmanager
def _locked(path: str):
    """Holds an exclusive lock on `path`.lock, so that two runs recording ids at once do
    not lose one (each rewrites the whole master file)."""
    _read(path)  # a master file, before a lock file is made beside it
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _record(path: str, ids: list[str]) -> list[str]:
    """Adds `ids` to the master's issued list (creating it); returns the ids new to it."""
    from ..files.io import atomic_write
    doc = _read(path)
    have = doc.get("issued") or []
    new = [i for i in dict.fromkeys(ids) if i not in have]
    if new or doc.get("issued") is None:
        doc["issued"] = sorted([*have, *new])
        with atomic_write(path, mode=0o600) as f:
            f.write(json.dumps(doc, indent=2).encode())
    return new


def _key(args) -> int:
    with _locked(args.master):
        key = _load(args.master).key_for(args.customer)
        if not args.force and os.path.lexists(args.out):
            key.save(args.out, overwrite=False)  # the usual "exists" error, nothing recorded
        # Recorded first: an id recorded without its key costs one test; a key whose id is
        # missing would be left out of every default identify.
        _record(args.master, [args.customer])
        key.save(args.out, overwrite=args.force)
    print(f"wrote {args.out}: customer {args.customer!r}, key {key.commitment()[:16]}")
    return 0


def _issued(args) -> int:
    if not args.ids:
        issued = _read(args.master).get("issued")
        if issued is None:
            print(f"{args.master}: no record of the customers given a key; record them with "
                  f"`mlguard fingerprint issued {args.master} ID [ID ...]`")
        else:
            print("\n".join(issued) if issued else f"{args.master}: no customer issued yet")
        return 0
    for customer_id in args.ids:
        if not customer_id:
            raise ValueError("customer ids must be non-empty")
    with _locked(args.master):
        new = _record(args.master, args.ids)
    print(f"{args.master}: recorded {len(new)} new customer id(s) as issued "
          f"({len(args.ids) - len(new)} already recorded)")
    return 0


def _identify(args) -> int:
    from ..files.model import load_model
    from ..verification import stats
    registry = _load(args.master)
    if not registry.issued:
        raise ValueError(f"'{args.master}' records no customer given a key yet: issue keys "
                         f"with `mlguard fingerprint key {args.master} --customer ID --out "
                         "FILE`, or record ids issued before with `mlguard fingerprint issued`")
    if args.customers is not None:
        registry.check_issued(args.customers)  # before loading the model: a typo fails fast
    model = args.model
    if registry.scheme == "trigger":
        if args.arch is None:
            raise ValueError("trigger fingerprints need --arch to load the model file")
        kwargs = arch_kwargs(args.arch, args.arch_kwargs)
        model = load_model(args.model, args.arch, arch_kwargs=kwargs)
    reference = _reference.load(args, arch_kwargs(args.arch, args.arch_kwargs))
    found = registry.identify(model, args.customers, alpha=args.alpha, reference=reference)
    p = stats.format_p(found.log_adjusted_p_value)
    if found.customer is None:
        print(f"no customer identified among {found.tried} (best adjusted p = {p})")
        return 0
    print(f"IDENTIFIED  customer {found.customer!r}  adjusted p = {p}  "
          f"({found.verdict.matches}/{found.verdict.total}, {found.tried} customers tried)")
    return 1
