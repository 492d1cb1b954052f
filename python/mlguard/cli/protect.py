"""`mlguard` verbs that protect model files: encrypt, decrypt, sign, verify-signature,
stamp (the ownership verbs are cli/ownership.py). Each verb's parser is beside its handler;
secrets and exit codes as in cli/_common.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ._args import refuse_existing
from ._common import (FAILED, OK, add_signed_output_args, guard, load_identity, passphrase,
                      refuse_outputs, report, write_json_output)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Adds encrypt, decrypt, sign, verify-signature and stamp to the `mlguard` command's
    subparsers; each sets func(args) -> exit code."""
    for add in (_add_encrypt, _add_decrypt, _add_sign, _add_verify_signature, _add_stamp):
        add(subparsers)


# -- secrets of encrypted files ------------------------------------------------------------

def _read_key_file(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    text = raw.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(raw) == 32:
        return raw
    raise ValueError(f"--key-file {path!r} must hold 64 hex digits or 32 raw bytes "
                     f"(got {len(raw)} bytes)")


def _secret(args: argparse.Namespace, confirm: bool) -> dict:
    """passphrase= or key= for the protect functions, from the parsed arguments."""
    from ..protect import new_file_key
    if getattr(args, "new_key_file", None):
        if args.key_file or args.passphrase_env:
            raise ValueError("--new-key-file excludes --key-file and --passphrase-env")
        key = new_file_key()
        fd = os.open(args.new_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
        print(f"wrote a new key to {args.new_key_file} (mode 0600); keep it secret",
              file=sys.stderr)
        return {"key": key}
    if args.key_file:
        if args.passphrase_env:
            raise ValueError("give either --key-file or --passphrase-env, not both")
        return {"key": _read_key_file(args.key_file)}
    return {"passphrase": passphrase(args, "passphrase", confirm)}


def _add_secret_args(p: argparse.ArgumentParser, new_key: bool = False) -> None:
    p.add_argument("--key-file", help="file with a raw 32-byte key (64 hex digits)")
    if new_key:
        p.add_argument("--new-key-file", metavar="PATH",
                       help="generate a random key, write it to PATH (must not exist), use it")
    p.add_argument("--passphrase-env", metavar="NAME",
                   help="read the passphrase from environment variable NAME (default: prompt)")


# -- verbs ---------------------------------------------------------------------------------

def _add_encrypt(subparsers) -> None:
    p = subparsers.add_parser("encrypt", help="encrypt a model file (AES-256-GCM)")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--chunk-size", type=int, default=None, help=argparse.SUPPRESS)
    _add_secret_args(p, new_key=True)
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=_encrypt)


@guard
def _encrypt(args) -> int:
    from ..files.container import DEFAULT_CHUNK_SIZE
    from ..protect import encrypt_file
    refuse_existing(args.dst, args.force)
    size = encrypt_file(args.src, args.dst, chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
                        **_secret(args, True))
    print(f"encrypted {size} bytes: {args.src} -> {args.dst}")
    return OK


def _add_decrypt(subparsers) -> None:
    p = subparsers.add_parser("decrypt", help="decrypt to a plaintext file (prefer "
                              "mlguard.protect.load_encrypted, which never writes one)")
    p.add_argument("src")
    p.add_argument("dst")
    _add_secret_args(p)
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=_decrypt)


@guard
def _decrypt(args) -> int:
    from ..protect import decrypt_file
    refuse_existing(args.dst, args.force)
    size = decrypt_file(args.src, args.dst, **_secret(args, False))
    print(f"decrypted {size} bytes: {args.src} -> {args.dst}")
    print(f"warning: the decrypted model is in the clear in {args.dst} (mode 0600); "
          "load_encrypted() decrypts into memory only", file=sys.stderr)
    return OK


def _add_sign(subparsers) -> None:
    p = subparsers.add_parser("sign", help="sign a file (detached signature record)")
    p.add_argument("file")
    add_signed_output_args(p, "signature file (default FILE.mlguard-sig.json; - for stdout)")
    p.set_defaults(func=_sign)


@guard
def _sign(args) -> int:
    from ..protect import sign_file
    from ..protect.signing import SUFFIX
    out = args.out or args.file + SUFFIX
    refuse_outputs(args, out)
    write_json_output(out, sign_file(args.file, load_identity(args)), args.force)
    return OK


def _add_verify_signature(subparsers) -> None:
    p = subparsers.add_parser("verify-signature", help="check a file's detached signature")
    p.add_argument("file")
    p.add_argument("--signature", help="signature file (default FILE.mlguard-sig.json)")
    p.add_argument("--public-key", required=True,
                   help="the signer's public key: 64 hex digits, a PEM, or a file with one")
    p.set_defaults(func=_verify_signature)


@guard
def _verify_signature(args) -> int:
    from ..protect import file_signature_problems
    from ..protect.signing import SUFFIX
    problems = file_signature_problems(args.file, args.signature or args.file + SUFFIX,
                                       args.public_key)
    return report(problems, f"OK: {args.file} is signed by {args.public_key}")


def _add_stamp(subparsers) -> None:
    p = subparsers.add_parser("stamp", help="write (or, with no fields, show) owner/licence "
                              "metadata; stamp first, then sign and register",
                              description="Stamp first, then sign and register: stamping a "
                              "safetensors file rewrites its header, which breaks a signature "
                              "or registration of it (refused unless --resign or --force).")
    p.add_argument("file")
    p.add_argument("--owner")
    p.add_argument("--license")
    p.add_argument("--commitment", help="key commitment (64 hex digits)")
    p.add_argument("--key", help="key file whose commitment to stamp")
    p.add_argument("--signature", metavar="FILE",
                   help="the file's signature record (default FILE.mlguard-sig.json): a "
                        "stamp that would break it is refused")
    p.add_argument("--registration", action="append", metavar="RECORD",
                   help="a registration record of the file (mlguard register --out): a stamp "
                        "that would break it is refused (repeatable; records kept elsewhere "
                        "cannot be seen, so name them)")
    p.add_argument("--resign", action="store_true",
                   help="sign the stamped file again (replaces the signature record; needs "
                        "--identity, the key that signed it)")
    p.add_argument("--identity", help="identity file for --resign")
    p.add_argument("--passphrase-env", metavar="NAME",
                   help="environment variable holding the identity's passphrase "
                        "(default: prompt)")
    p.add_argument("--force", action="store_true",
                   help="stamp a signed or registered safetensors file anyway (breaks its "
                        "signature and registration: sign and register again)")
    p.set_defaults(func=_stamp)


@guard
def _stamp(args) -> int:
    from ..keys.keyfile import commitment as commit, read_key_file
    from ..protect import read_stamp, sign_file, stamp
    from ..protect.signing import SUFFIX
    from ..protect.stamp import stamp_changes_file
    commitment = args.commitment
    if args.key:
        if commitment:
            raise ValueError("give either --commitment or --key, not both")
        commitment = commit(read_key_file(args.key))
    if args.owner is None and args.license is None and commitment is None:
        if args.resign or args.registration:
            raise ValueError("--resign and --registration go with fields to stamp "
                             "(--owner, --license, --commitment or --key)")
        result = read_stamp(args.file)
        print(json.dumps(result, indent=2, sort_keys=True) if result else "no stamp")
        return OK if result else FAILED
    if args.resign != (args.identity is not None):
        raise ValueError("--resign needs --identity (the identity that signs the stamped "
                         "file), and --identity goes with --resign")
    signature = args.signature or args.file + SUFFIX
    breaks = stamp_changes_file(args.file)
    signed = breaks and os.path.exists(signature) and _covers(signature, "signature", args.file)
    registered = [r for r in args.registration or []
                  if breaks and _covers(r, "registration", args.file)]
    if (signed and not args.resign or registered) and not args.force:
        what = ([f"signed ('{signature}')"] if signed and not args.resign else []) + \
            [f"registered ('{r}')" for r in registered]
        raise ValueError(
            f"'{args.file}' is {' and '.join(what)}: stamping rewrites its header and would "
            "break that. Stamp first, then sign and register; --resign --identity ID signs "
            "the stamped file again, --force stamps anyway (then register again). A "
            "registration record kept elsewhere cannot be seen here: name it with "
            "--registration")
    identity = load_identity(args) if args.resign else None  # before anything is written
    if identity is not None and signed and not args.force:
        _refuse_other_signer(signature, identity)
    result = stamp(args.file, owner=args.owner, license=args.license, commitment=commitment)
    if identity is not None and breaks:
        write_json_output(signature, sign_file(args.file, identity), force=True)
    elif identity is not None:
        print(f"'{args.file}' is not rewritten by a stamp (sidecar): not signed again",
              file=sys.stderr)
    elif signed:
        print(f"warning: '{signature}' no longer matches the file: sign it again",
              file=sys.stderr)
    for r in registered:
        print(f"warning: '{r}' no longer matches the file: register it again",
              file=sys.stderr)
    print(json.dumps(result, indent=2, sort_keys=True))
    return OK


def _covers(record_path: str, kind: str, path: str) -> bool:
    """Whether a signature or registration record holds this file's current SHA-256 and
    size (a record of an older version of the file is broken already)."""
    from ..files.io import file_sha256, read_json
    doc = read_json(record_path, f"{kind} file")
    facts = doc.get("model") if isinstance(doc, dict) and kind == "registration" else doc
    if not isinstance(facts, dict) or not isinstance(facts.get("sha256"), str):
        raise ValueError(f"'{record_path}' is not an mlguard {kind} record (no sha256)")
    return facts.get("size") == os.path.getsize(path) and facts["sha256"] == file_sha256(path)


def _refuse_other_signer(signature: str, identity) -> None:
    """--resign replaces the signature: only one made by the same identity."""
    from ..files.io import read_json
    signer = (read_json(signature, "signature file").get("signer") or {}).get("public_key")
    if signer != identity.public_key_hex:
        raise ValueError(f"'{signature}' was signed by another key ({signer}); --resign "
                         "replaces only your own signature (--force replaces it anyway)")
