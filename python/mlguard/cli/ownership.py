"""`mlguard` verbs for ownership evidence: identity, register, evidence (the file-protection
verbs are cli/protect.py). Each verb's parser is beside its handler; secrets and exit codes
as in cli/_common.py.
"""

from __future__ import annotations

import argparse
import sys

from ._common import (OK, add_signed_output_args, guard, load_identity, passphrase,
                      refuse_outputs, report, write_json_output)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Adds identity, register and evidence to the `mlguard` command's subparsers; each
    sets func(args) -> exit code."""
    for add in (_add_identity, _add_register, _add_evidence):
        add(subparsers)


def _add_identity(subparsers) -> None:
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


@guard
def _identity_new(args) -> int:
    from ..ownership.identity import Identity
    refuse_outputs(args, args.out)
    identity = Identity.generate()
    identity.save(args.out, passphrase(args, "new passphrase", confirm=True),
                  overwrite=args.force)
    print(identity.public_key_hex)
    return OK


@guard
def _identity_public(args) -> int:
    from ..ownership.identity import load_public_key, public_key_hex
    print(public_key_hex(load_public_key(args.file)))
    return OK


def _key_bodies(paths: list[str]) -> list[dict]:
    from ..keys.keyfile import read_key_file
    return [read_key_file(p) for p in paths or []]


def _add_register(subparsers) -> None:
    p = subparsers.add_parser("register", help="signed record of a released model and its keys")
    p.add_argument("model")
    p.add_argument("--key", action="append", help="key file (repeatable)")
    p.add_argument("--commitment", action="append", help="key commitment (repeatable)")
    add_signed_output_args(p, "record file (default: stdout)")
    p.set_defaults(func=_register)


@guard
def _register(args) -> int:
    from ..ownership import register
    keys = _key_bodies(args.key) + list(args.commitment or [])
    if not keys:
        raise ValueError("give at least one --key KEYFILE or --commitment HEX")
    refuse_outputs(args, args.out)
    write_json_output(args.out, register(args.model, keys, load_identity(args)), args.force)
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


def _add_evidence(subparsers) -> None:
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
    q.add_argument("--html", help="also write a readable HTML page here")
    add_signed_output_args(q, "report JSON (default: stdout)")
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


@guard
def _evidence_build(args) -> int:
    from ..ownership import evidence, evidence_html, reveal
    refuse_outputs(args, args.out, args.html)
    openings = [reveal(b) for b in _key_bodies(args.reveal)]
    doc = evidence(_load_verdicts(args.verdict, args.suspect), args.suspect, opening=openings,
                   identity=load_identity(args), command=args.command_line)
    write_json_output(args.out, doc, args.force)
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(evidence_html(doc, args.suspect))
    return OK


@guard
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
    return report(problems, f"OK: {args.file} verifies; signed by {who}")


@guard
def _evidence_html(args) -> int:
    from ..ownership import evidence_html, load_document
    refuse_outputs(args, args.out)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(evidence_html(load_document(args.file), args.suspect,
                              public_key=args.public_key))
    print(f"wrote {args.out}", file=sys.stderr)
    return OK
