"""Detached Ed25519 signatures for model files.

A signature is a small signed JSON record (see mlguard.ownership.identity.sign_document) holding the
file's SHA-256 and size, so any change to the file, or to the record, breaks it. The file
is hashed in 1 MiB blocks, so its size does not matter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._version import __version__
from ..files.io import file_sha256, read_json
from ..ownership import identity as _identity

FORMAT = "mlguard-file-signature"
VERSION = 1
SUFFIX = ".mlguard-sig.json"


def sign_file(path: str | os.PathLike, identity: _identity.Identity) -> dict:
    """A detached signature record for the file at `path`, signed by `identity`.

    Save it with json (e.g. next to the file as `<file>.mlguard-sig.json`).
    """
    path = os.fspath(path)
    record = {"format": FORMAT, "version": VERSION, "file": os.path.basename(path),
              "size": os.path.getsize(path), "sha256": file_sha256(path),
              "mlguard_version": __version__}
    return _identity.sign_document(record, identity)


def file_signature_problems(path: str | os.PathLike, signature: Mapping | str | os.PathLike,
                            public_key: Any) -> list[str]:
    """Why `signature` is not a valid signature of `path` by `public_key` (empty: valid).

    `signature` is the record from sign_file or the path of a JSON file holding it;
    `public_key` is the signer's key as you know it independently (hex, PEM, path, Identity).
    """
    if not isinstance(signature, Mapping):
        signature = read_json(signature, "signature file")
    if not isinstance(signature, Mapping):
        raise ValueError("signature is not an mlguard file signature (not a JSON object)")
    if signature.get("format") != FORMAT:
        raise ValueError(f"signature is not an mlguard file signature (format "
                         f"{signature.get('format')!r})")
    if signature.get("version") != VERSION:
        raise ValueError(f"signature has unsupported version {signature.get('version')!r}")
    problems = _identity.document_signature_problems(signature, public_key)
    path = os.fspath(path)
    if (os.path.getsize(path) != signature.get("size")
            or file_sha256(path) != signature.get("sha256")):
        problems.append(f"file {path!r} does not match the signed SHA-256 and size: it was "
                        "modified or is a different file")
    return problems


def verify_file(path: str | os.PathLike, signature: Mapping | str | os.PathLike,
                public_key: Any) -> bool:
    """True if `signature` (record or its JSON path) is `public_key`'s signature of `path`."""
    return not file_signature_problems(path, signature, public_key)
