"""`mlguard verify MODEL --key K --arch ... --out verdict.json`: one model, one key.

Exit status: 0 not detected, 1 detected, 2 bad arguments or a model/key that cannot be
checked (the message names it). The verdict JSON goes to `mlguard evidence build --verdict`.
"""

from __future__ import annotations

import os

from . import _reference
from ._args import add_arch_arguments, arch_kwargs, refuse_existing
from ._common import guard

EPILOG = "exit status: 0 not detected, 1 detected, 2 bad arguments or a file that cannot be checked"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("verify", help="test one model file against one key (a verdict)",
                              epilog=EPILOG)
    p.add_argument("model", help="the suspect model file (.safetensors, .pt, ...)")
    p.add_argument("--key", required=True, help="the key file")
    add_arch_arguments(p, "the network of a state_dict file (needed for keys of schemes that "
                          "run the model, e.g. trigger-set)")
    p.add_argument("--alpha", type=float, default=1e-6, help="significance level (default 1e-6)")
    p.add_argument("--out", metavar="FILE", help="write the verdict as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    _reference.add_argument(p)
    p.set_defaults(func=guard(run))


def run(args) -> int:
    from ..files.checkpoint import pretrained_weights_file
    from ..keys import load_key
    from ..schemes.base import scheme_of
    from ..verification import verify

    if args.out is not None:
        refuse_existing(args.out, args.force)
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder):
            raise ValueError(f"--out '{args.out}': folder '{folder}' does not exist")
    kwargs = arch_kwargs(args.arch, args.arch_kwargs)
    if os.path.isdir(args.model):  # a save_pretrained folder: its one weights file
        args.model = pretrained_weights_file(args.model)
    elif not os.path.isfile(args.model):
        raise ValueError(f"model: no such file: '{args.model}'")
    key = load_key(args.key)
    scheme = scheme_of(key)
    if args.arch is None and scheme.needs_module:
        raise ValueError(f"--arch MODULE:FACTORY is required with a {scheme.name} key (a model "
                         "file holds weights, not the network that runs the model)")
    reference = _reference.load_per_key(args, kwargs, [key])
    if isinstance(reference, dict):  # --reference KEYFILE=FILE naming --key's key
        reference = reference.get(key.commitment())
    if reference is not None and scheme.aligns_to_reference:
        # the suspect is read as a state_dict: a widened copy does not fit --arch's network
        verdict = verify(args.model, key, args.alpha, reference=reference)
    else:
        verdict = verify(args.model, key, args.alpha, arch=args.arch, arch_kwargs=kwargs)
    if args.out is not None:
        with open(args.out, "w") as f:
            f.write(verdict.to_json())
    print(verdict)
    return 1 if verdict.detected else 0
