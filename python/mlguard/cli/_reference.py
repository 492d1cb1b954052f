"""The --reference option that verify, scan and fingerprint identify share.

`--reference FILE` is the reference for every key; `--reference KEYFILE=FILE` (repeatable,
scan and verify) for one key, e.g. two owners' keys in one scan, each read against its own
model. A per-key reference overrides the all-keys one for its key."""

from __future__ import annotations

import os

HELP = ("the owner's reference model file (the watermarked model as trained; needs --arch): "
        "weight keys read the suspect after aligning it to it, so copies with permuted, "
        "rescaled or added hidden units are still found")
PER_KEY_HELP = (" FILE for every key, or KEYFILE=FILE for the key in KEYFILE only (repeatable: "
                "keys of several owners, each with its own reference)")


def add_argument(parser, per_key: bool = True) -> None:
    parser.add_argument("--reference", metavar="FILE" + (" or KEYFILE=FILE" if per_key else ""),
                        action="append" if per_key else None, default=None,
                        help=HELP + (PER_KEY_HELP if per_key else ""))


def parse(values) -> tuple[str | None, dict[str, str]]:
    """(the all-keys reference file or None, {key file: reference file}) from --reference
    values (a string or a list of them). An existing file is an all-keys reference even if
    its name holds '='; otherwise KEYFILE=FILE splits at the first '='."""
    if values is None:
        return None, {}
    everyone, per_key = None, {}
    for value in [values] if isinstance(values, str) else values:
        if os.path.isfile(value) or "=" not in value:
            if everyone is not None:
                raise ValueError(f"--reference: two references for all keys ('{everyone}', "
                                 f"'{value}'); name the key of each: --reference KEYFILE=FILE")
            everyone = value
            continue
        key_file, ref_file = value.split("=", 1)
        if not key_file or not ref_file:
            raise ValueError(f"--reference '{value}': expected FILE or KEYFILE=FILE")
        if not os.path.isfile(key_file):
            raise ValueError(f"--reference '{value}': no such key file: '{key_file}'")
        if key_file in per_key:
            raise ValueError(f"--reference: key file '{key_file}' is given two references")
        per_key[key_file] = ref_file
    return everyone, per_key


def load(args, arch_kwargs):
    """The prepared Reference for all keys, or None without --reference; needs --arch for
    the network. Refuses KEYFILE=FILE (for commands that read one set of keys)."""
    everyone, per_key = parse(getattr(args, "reference", None))
    if per_key:
        raise ValueError("--reference KEYFILE=FILE names a key, but this command reads one "
                         "set of keys: give --reference FILE")
    return None if everyone is None else _load_file(everyone, args, arch_kwargs)


def load_per_key(args, arch_kwargs, keys: list, key_files: dict[str, str] | None = None):
    """The scan's `reference`: None, one Reference for all `keys`, or {key commitment:
    Reference} when --reference KEYFILE=FILE is given (the all-keys one, if any, for the
    other keys). Each reference file is loaded once however many keys name it."""
    everyone, per_key = parse(getattr(args, "reference", None))
    if not per_key:
        return None if everyone is None else _load_file(everyone, args, arch_kwargs)
    from ..keys import load_key
    loaded: dict[str, object] = {}

    def reference(path):
        real = os.path.realpath(path)
        if real not in loaded:
            loaded[real] = _load_file(path, args, arch_kwargs)
        return loaded[real]

    commitments = {k.commitment() for k in keys}
    out = {}
    for key_file, ref_file in per_key.items():
        commitment = load_key(key_file).commitment()
        if commitment not in commitments:
            raise ValueError(f"--reference '{key_file}={ref_file}': the key in '{key_file}' is "
                             "not one of the keys read (--keys / --key)")
        if commitment in out:
            raise ValueError(f"--reference: the key in '{key_file}' is given two references")
        out[commitment] = reference(ref_file)
    if everyone is not None:
        for c in commitments - set(out):
            out[c] = reference(everyone)
    return out


def _load_file(path, args, arch_kwargs):
    if args.arch is None:
        raise ValueError("--reference needs --arch MODULE:FACTORY: a model file holds weights, "
                         "not the network whose units are aligned")
    if not os.path.isfile(path):
        raise ValueError(f"--reference: no such file: '{path}'")
    from ..weights.align import Reference
    return Reference.load(path, args.arch, arch_kwargs)
