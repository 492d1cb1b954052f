"""`mlguard fingerprint new|key|identify`: one key per customer from one master secret.

The master file (JSON, mode 0600: it holds the secret) records the scheme and the key
arguments, so every customer key derived from it, and every identification, uses the same
ones (mlguard.Fingerprints). Nothing is overwritten without --force.
"""

from __future__ import annotations

import json
import math

from ..files.io import atomic_write
from ..files.model import load_model, resolve_arch
from ..keys import keyfile
from ..weights.fingerprints import Fingerprints
from . import _reference
from .protect import _guard

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

    q = sub.add_parser("key", help="derive a customer's key file")
    q.add_argument("master")
    q.add_argument("--customer", required=True, help="the customer id (any string)")
    q.add_argument("--out", required=True, metavar="FILE")
    q.add_argument("--force", action="store_true", help="replace an existing key file")
    q.set_defaults(func=_guard(_key))

    q = sub.add_parser("identify", help="which customer's copy is this model file? "
                       "(exit 1 identified, 0 none, 2 error)")
    q.add_argument("master")
    q.add_argument("model")
    q.add_argument("--customers", nargs="+", required=True, metavar="ID")
    q.add_argument("--arch", metavar="MODULE:FACTORY", help="trigger: the network")
    q.add_argument("--arch-kwargs", metavar="JSON")
    q.add_argument("--alpha", type=float, default=1e-6)
    _reference.add_argument(q)
    q.set_defaults(func=_guard(_identify))


def _arch_module(arch, arch_kwargs):
    if arch is None:
        if arch_kwargs is not None:
            raise ValueError("--arch-kwargs needs --arch")
        return None
    return resolve_arch(arch, json.loads(arch_kwargs) if arch_kwargs else None)()


def _new(args) -> int:
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
                        for k, v in registry.key_args.items()}}
    with atomic_write(args.out, mode=0o600, overwrite=args.force) as f:
        f.write(json.dumps(doc, indent=2).encode())
    print(f"wrote {args.out}: master secret for {args.scheme} fingerprints (keep it secret)")
    return 0


def _load(path: str) -> Fingerprints:
    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"'{path}' is not a fingerprint master file: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"'{path}' is not a fingerprint master file (format {FORMAT!r})")
    args = dict(doc["key_args"])
    for name in ("targets", "shape"):
        if name in args:
            args[name] = tuple(args[name])
    return Fingerprints(doc["secret"], doc["scheme"], **args)


def _key(args) -> int:
    key = _load(args.master).key_for(args.customer)
    key.save(args.out, overwrite=args.force)
    print(f"wrote {args.out}: customer {args.customer!r}, key {key.commitment()[:16]}")
    return 0


def _identify(args) -> int:
    registry = _load(args.master)
    model = args.model
    if registry.scheme == "trigger":
        if args.arch is None:
            raise ValueError("trigger fingerprints need --arch to load the model file")
        kwargs = json.loads(args.arch_kwargs) if args.arch_kwargs else None
        model = load_model(args.model, args.arch, arch_kwargs=kwargs)
    reference = _reference.load(args, json.loads(args.arch_kwargs) if args.arch_kwargs else None)
    found = registry.identify(model, args.customers, alpha=args.alpha, reference=reference)
    p = f"{found.adjusted_p_value:.3g}" if found.adjusted_p_value > 0 else \
        f"1e{found.log_adjusted_p_value / math.log(10):.1f}"
    if found.customer is None:
        print(f"no customer identified among {found.tried} (best adjusted p = {p})")
        return 0
    print(f"IDENTIFIED  customer {found.customer!r}  adjusted p = {p}  "
          f"({found.verdict.matches}/{found.verdict.total}, {found.tried} customers tried)")
    return 1
