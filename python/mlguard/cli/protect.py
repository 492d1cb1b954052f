"""`mlguard` subcommands for evidence and file protection (wired in by cli/main.py).

Secrets never travel on the command line: passphrases come from an environment variable
named with --passphrase-env, or from an interactive prompt; raw encryption keys from a
--key-file. Exit codes: 0 success, 1 a check failed, 2 an error (bad input, wrong
passphrase, unreadable file).
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import os
import sys
from collections.abc import Callable

from ._args import refuse_existing

OK, FAILED, ERROR = 0, 1, 2


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turns expected errors into one line on stderr and exit code 2 (messages hold no
    secrets: the library never puts them in exceptions)."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (ValueError, TypeError, OSError, KeyError) as e:
            print(f"mlguard {getattr(args, 'command', '')}: error: {e}", file=sys.stderr)
            return ERROR
    return run


def _passphrase(args: argparse.Namespace, prompt: str, confirm: bool = False) -> str:
    if args.passphrase_env:
        value = os.environ.get(args.passphrase_env)
        if not value:
            raise ValueError(f"--passphrase-env: environment variable {args.passphrase_env} "
                             "is not set or empty")
        return value
    if not sys.stdin.isatty():
        raise ValueError("no passphrase: use --passphrase-env NAME, or run in a terminal to be "
                         "prompted")
    value = getpass.getpass(f"{prompt}: ")
    if confirm and getpass.getpass(f"{prompt} (again): ") != value:
        raise ValueError("the two passphrases differ")
    return value


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
    return {"passphrase": _passphrase(args, "passphrase", confirm)}


def _identity(args: argparse.Namespace):
    from ..ownership.identity import Identity
    return Identity.load(args.identity, _passphrase(args, f"passphrase for {args.identity}"))


def _add_secret_args(p: argparse.ArgumentParser, new_key: bool = False) -> None:
    p.add_argument("--key-file", help="file with a raw 32-byte key (64 hex digits)")
    if new_key:
        p.add_argument("--new-key-file", metavar="PATH",
                       help="generate a random key, write it to PATH (must not exist), use it")
    p.add_argument("--passphrase-env", metavar="NAME",
                   help="read the passphrase from environment variable NAME (default: prompt)")


def _add_identity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identity", required=True, help="identity file (mlguard identity new)")
    p.add_argument("--passphrase-env", metavar="NAME",
                   help="environment variable holding the identity's passphrase "
                        "(default: prompt)")


def _write_json(path: str | None, doc: dict, force: bool = False) -> None:
    if path is None or path == "-":
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        from ..files.io import write_json
        try:
            write_json(path, doc, overwrite=force)
        except FileExistsError:
            raise ValueError(f"'{path}' exists; refusing to overwrite it (use --force)") from None
        print(f"wrote {path}", file=sys.stderr)


def _refuse_outputs(args, *paths: str | None) -> None:
    """Checks every output before any work (a passphrase prompt, a signature, a scan)."""
    for path in paths:
        if path is not None and path != "-":
            refuse_existing(path, args.force)


def _report(problems: list[str], ok_message: str) -> int:
    if problems:
        for p in problems:
            print(f"FAILED: {p}")
        return FAILED
    print(ok_message)
    return OK


# -- commands ------------------------------------------------------------------------------

@_guard
def _encrypt(args) -> int:
    from ..protect import encrypt_file
    refuse_existing(args.dst, args.force)
    size = encrypt_file(args.src, args.dst, chunk_size=args.chunk_size, **_secret(args, True))
    print(f"encrypted {size} bytes: {args.src} -> {args.dst}")
    return OK


@_guard
def _decrypt(args) -> int:
    from ..protect import decrypt_file
    refuse_existing(args.dst, args.force)
    size = decrypt_file(args.src, args.dst, **_secret(args, False))
    print(f"decrypted {size} bytes: {args.src} -> {args.dst}")
    print(f"warning: the decrypted model is in the clear in {args.dst} (mode 0600); "
          "load_encrypted() decrypts into memory only", file=sys.stderr)
    return OK


@_guard
def _identity_new(args) -> int:
    from ..ownership.identity import Identity
    _refuse_outputs(args, args.out)
    identity = Identity.generate()
    identity.save(args.out, _passphrase(args, "new passphrase", confirm=True),
                  overwrite=args.force)
    print(identity.public_key_hex)
    return OK


@_guard
def _identity_public(args) -> int:
    from ..ownership.identity import load_public_key, public_key_hex
    print(public_key_hex(load_public_key(args.file)))
    return OK


@_guard
def _sign(args) -> int:
    from ..protect import sign_file
    from ..protect.signing import SUFFIX
    out = args.out or args.file + SUFFIX
    _refuse_outputs(args, out)
    _write_json(out, sign_file(args.file, _identity(args)), args.force)
    return OK


@_guard
def _verify_signature(args) -> int:
    from ..protect import file_signature_problems
    from ..protect.signing import SUFFIX
    problems = file_signature_problems(args.file, args.signature or args.file + SUFFIX,
                                       args.public_key)
    return _report(problems, f"OK: {args.file} is signed by {args.public_key}")


@_guard
def _stamp(args) -> int:
    from ..protect import read_stamp, stamp
    commitment = args.commitment
    if args.key:
        if commitment:
            raise ValueError("give either --commitment or --key, not both")
        from ..keys.keyfile import commitment as commit, read_key_file
        commitment = commit(read_key_file(args.key))
    if args.owner is None and args.license is None and commitment is None:
        if args.resign or args.registration:
            raise ValueError("--resign and --registration go with fields to stamp "
                             "(--owner, --license, --commitment or --key)")
        result = read_stamp(args.file)
        print(json.dumps(result, indent=2, sort_keys=True) if result else "no stamp")
        return OK if result else FAILED
    from ..protect.signing import SUFFIX
    from ..protect.stamp import stamp_changes_file
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
    identity = _identity(args) if args.resign else None  # before anything is written
    if identity is not None and signed and not args.force:
        _refuse_other_signer(signature, identity)
    result = stamp(args.file, owner=args.owner, license=args.license, commitment=commitment)
    if identity is not None and breaks:
        from ..protect import sign_file
        _write_json(signature, sign_file(args.file, identity), force=True)
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


def _key_bodies(paths: list[str]) -> list[dict]:
    from ..keys.keyfile import read_key_file
    return [read_key_file(p) for p in paths or []]


@_guard
def _register(args) -> int:
    from ..ownership import register
    keys = _key_bodies(args.key) + list(args.commitment or [])
    if not keys:
        raise ValueError("give at least one --key KEYFILE or --commitment HEX")
    _refuse_outputs(args, args.out)
    _write_json(args.out, register(args.model, keys, _identity(args)), args.force)
    return OK


def _load_verdicts(paths: list[str], suspect: str) -> list[dict]:
    from ..files.io import read_json
    out = []
    for path in paths:
        data = read_json(path, "verdict file")
        if isinstance(data, dict) and isinstance(data.get("rows"), list):
            out += _scan_verdicts(data, path, suspect)
            continue
        if isinstance(data, dict) and isinstance(data.get("verdicts"), list):
            data = data["verdicts"]
        out += data if isinstance(data, list) else [data]
    return out


def _scan_verdicts(results: dict, path: str, suspect: str) -> list[dict]:
    """The verdicts of a scan's JSON results (`mlguard scan --out results.json`) for the
    suspect file: its checked rows, each at the scan's Bonferroni level alpha / tests."""
    from ..files.io import file_sha256
    from ..scan import row_verdict
    sha = file_sha256(suspect)
    rows = [r for r in results["rows"] if isinstance(r, dict) and r.get("file_sha256") == sha
            and r.get("error") is None]
    if not rows:
        raise ValueError(f"scan results {path!r} have no checked row for the suspect file "
                         f"{suspect!r} (SHA-256 {sha})")
    return [row_verdict(r, alpha=results.get("alpha"), tests=results.get("tests")).to_dict()
            for r in rows]


@_guard
def _evidence_build(args) -> int:
    from ..ownership import evidence, evidence_html, reveal
    _refuse_outputs(args, args.out, args.html)
    openings = [reveal(b) for b in _key_bodies(args.reveal)]
    doc = evidence(_load_verdicts(args.verdict, args.suspect), args.suspect, opening=openings,
                   identity=_identity(args), command=args.command_line)
    _write_json(args.out, doc, args.force)
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(evidence_html(doc, args.suspect))
    return OK


@_guard
def _evidence_check(args) -> int:
    from ..ownership import check_evidence, check_registration, load_document
    doc = load_document(args.file)
    if doc.get("format") == "mlguard-registration":
        problems = check_registration(doc, args.suspect, public_key=args.public_key)
    else:
        problems = check_evidence(doc, args.suspect, public_key=args.public_key)
    signer = (doc.get("signer") or {}).get("public_key", "?")
    who = "the expected key" if args.public_key else f"key {signer} (pass --public-key to " \
        "check that it is the owner's)"
    return _report(problems, f"OK: {args.file} verifies; signed by {who}")


@_guard
def _evidence_html(args) -> int:
    from ..ownership import evidence_html, load_document
    _refuse_outputs(args, args.out)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(evidence_html(load_document(args.file), args.suspect,
                              public_key=args.public_key))
    print(f"wrote {args.out}", file=sys.stderr)
    return OK


# -- parsers -------------------------------------------------------------------------------

def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Adds encrypt, decrypt, identity, sign, verify-signature, stamp, register and evidence
    to the `mlguard` command's subparsers; each sets func(args) -> exit code."""
    from ..files.container import DEFAULT_CHUNK_SIZE

    p = subparsers.add_parser("encrypt", help="encrypt a model file (AES-256-GCM)")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help=argparse.SUPPRESS)
    _add_secret_args(p, new_key=True)
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=_encrypt)

    p = subparsers.add_parser("decrypt", help="decrypt to a plaintext file (prefer "
                              "mlguard.protect.load_encrypted, which never writes one)")
    p.add_argument("src")
    p.add_argument("dst")
    _add_secret_args(p)
    p.add_argument("--force", action="store_true", help="replace an existing DST")
    p.set_defaults(func=_decrypt)

    p = subparsers.add_parser("identity", help="create an owner identity or show its public key")
    sub = p.add_subparsers(dest="action", required=True)
    q = sub.add_parser("new", help="generate an Ed25519 identity, saved encrypted")
    q.add_argument("out")
    q.add_argument("--passphrase-env", metavar="NAME")
    q.add_argument("--force", action="store_true", help="replace an existing identity file "
                   "(its private key is lost)")
    q.set_defaults(func=_identity_new)
    q = sub.add_parser("public", help="print the public key of an identity or key file")
    q.add_argument("file")
    q.set_defaults(func=_identity_public)

    p = subparsers.add_parser("sign", help="sign a file (detached signature record)")
    p.add_argument("file")
    p.add_argument("--out", help="signature file (default FILE.mlguard-sig.json; - for stdout)")
    _add_identity_args(p)
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.set_defaults(func=_sign)

    p = subparsers.add_parser("verify-signature", help="check a file's detached signature")
    p.add_argument("file")
    p.add_argument("--signature", help="signature file (default FILE.mlguard-sig.json)")
    p.add_argument("--public-key", required=True,
                   help="the signer's public key: 64 hex digits, a PEM, or a file with one")
    p.set_defaults(func=_verify_signature)

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

    p = subparsers.add_parser("register", help="signed record of a released model and its keys")
    p.add_argument("model")
    p.add_argument("--key", action="append", help="key file (repeatable)")
    p.add_argument("--commitment", action="append", help="key commitment (repeatable)")
    p.add_argument("--out", help="record file (default: stdout)")
    _add_identity_args(p)
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.set_defaults(func=_register)

    p = subparsers.add_parser("evidence", help="build, check or render an evidence report")
    sub = p.add_subparsers(dest="action", required=True)
    q = sub.add_parser("build", help="signed report from verdict JSON files")
    q.add_argument("--verdict", action="append", required=True,
                   help="JSON file with a verdict, a list of them, {'verdicts': [...]}, or "
                        "scan results (mlguard scan --out results.json: the suspect's rows)")
    q.add_argument("--suspect", required=True, help="the suspect model file")
    q.add_argument("--reveal", action="append",
                   help="key file to open in the report (reveals the key; repeatable)")
    q.add_argument("--command", dest="command_line", required=True,
                   help="the exact command that re-runs the check")
    q.add_argument("--out", help="report JSON (default: stdout)")
    q.add_argument("--html", help="also write a readable HTML page here")
    _add_identity_args(q)
    q.add_argument("--force", action="store_true", help="replace existing output files")
    q.set_defaults(func=_evidence_build)
    q = sub.add_parser("check", help="verify a report or registration record")
    q.add_argument("file")
    q.add_argument("--suspect", help="the suspect (or registered) model file, to check hashes")
    q.add_argument("--public-key", help="the owner's public key, to check who signed")
    q.set_defaults(func=_evidence_check)
    q = sub.add_parser("html", help="render a report as HTML")
    q.add_argument("file")
    q.add_argument("--out", required=True)
    q.add_argument("--suspect")
    q.add_argument("--public-key", help="the owner's public key, to check who signed")
    q.add_argument("--force", action="store_true", help="replace existing output files")
    q.set_defaults(func=_evidence_html)
