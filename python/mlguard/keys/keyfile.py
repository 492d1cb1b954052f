"""Versioned key-file format and key-derived values, shared by all key types.

A key file is a JSON document::

    {"format": "mlguard-key", "version": 1,
     "body": {..., "secret": "<64 hex chars>", ...},
     "mac": "<hex HMAC-SHA256 of canonical_json(body)>"}

The body is scheme specific (trigger keys, weight keys, ...) but always holds
the 32-byte secret as hex.  The MAC is keyed with a value derived from that
secret, so it catches corruption, truncation and hand edits; it is not a
signature and cannot stop someone who holds the secret from rewriting the
file.  Key files are secrets: they are written with mode 0o600.

All randomness used by the watermarking ops is derived from the secret with
HKDF (``derive_seed``), one independent value per named purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..files.io import atomic_write

__all__ = [
    "FORMAT",
    "VERSION",
    "SECRET_BYTES",
    "new_secret",
    "new_nonce",
    "canonical_json",
    "secret_from_hex",
    "derive_key_bytes",
    "derive_seed",
    "commitment",
    "write_key_file",
    "read_key_file",
]

FORMAT = "mlguard-key"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
SECRET_BYTES = 32

_INFO_PREFIX = b"mlguard/v1/"
_COMMITMENT_PREFIX = b"mlguard-commitment-v1\0"
_MAC_PURPOSE = "key-file-mac"
_HEX_RE = re.compile(r"[0-9a-fA-F]*")


def new_secret() -> bytes:
    """A fresh 32-byte secret from the OS CSPRNG."""
    return secrets.token_bytes(SECRET_BYTES)


def new_nonce() -> bytes:
    """A fresh 32-byte random nonce (blinds the commitment)."""
    return secrets.token_bytes(32)


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON encoding: sorted keys, no whitespace, ASCII only.

    NaN and infinities are rejected because they are not JSON and would make
    the encoding (and so any hash or MAC over it) ambiguous.
    """
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"obj cannot be encoded as canonical JSON: {e}") from e
    return text.encode("ascii")


def _check_secret(secret: object) -> bytes:
    if not isinstance(secret, (bytes, bytearray)):
        raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)} bytes")
    return bytes(secret)


def secret_from_hex(s: str) -> bytes:
    """Parse a hex-encoded 32-byte secret; error messages never echo it."""
    if not isinstance(s, str):
        raise TypeError(f"secret must be a hex str, got {type(s).__name__}")
    # bytes.fromhex would accept whitespace; require exactly hex digits.
    if not _HEX_RE.fullmatch(s):
        raise ValueError("secret must contain only hex digits (0-9, a-f)")
    if len(s) != 2 * SECRET_BYTES:
        raise ValueError(
            f"secret must be {2 * SECRET_BYTES} hex digits ({SECRET_BYTES} bytes), "
            f"got {len(s)} hex digits"
        )
    return bytes.fromhex(s)


def _check_purpose(purpose: object) -> bytes:
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"purpose must be a non-empty str, got {purpose!r}")
    return purpose.encode("utf-8")


def derive_key_bytes(secret: bytes, purpose: str, length: int = 32) -> bytes:
    """HKDF-SHA256(secret, salt=None, info=b"mlguard/v1/" + purpose), `length` bytes.

    Distinct purposes give independent values, so one secret can key the
    trigger-set generator, the file MAC, etc. without reusing randomness.
    """
    secret = _check_secret(secret)
    info = _INFO_PREFIX + _check_purpose(purpose)
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 255 * 32:
        raise ValueError(f"length must be an int in [1, 8160], got {length!r}")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def derive_seed(secret: bytes, purpose: str) -> int:
    """A 64-bit seed for `purpose`, as a signed int64.

    The 8 HKDF output bytes are read as a big-endian uint64 and returned in
    two's complement, so the value fits a torch op ``int`` argument.  The C++
    side reinterprets it as uint64 and uses it as the Philox-4x32 key:
    low 32 bits = key word 0, high 32 bits = key word 1.
    """
    return int.from_bytes(derive_key_bytes(secret, purpose, 8), "big", signed=True)


def commitment(body: dict) -> str:
    """Hex SHA-256 of b"mlguard-commitment-v1\\0" + canonical_json(body).

    The body contains the secret and a random 32-byte nonce (both hex), so the
    commitment can be published (e.g. timestamped before release) without
    revealing anything about the key, and later opened by showing the body.
    """
    if not isinstance(body, dict):
        raise TypeError(f"body must be a dict, got {type(body).__name__}")
    for name in ("secret", "nonce"):
        if not isinstance(body.get(name), str):
            raise ValueError(f"body must contain a hex str field {name!r} for the commitment")
    return hashlib.sha256(_COMMITMENT_PREFIX + canonical_json(body)).hexdigest()


def _mac(secret: bytes, payload: bytes) -> hmac.HMAC:
    h = hmac.HMAC(derive_key_bytes(secret, _MAC_PURPOSE), hashes.SHA256())
    h.update(payload)
    return h


def write_key_file(path: str | os.PathLike, body: dict, *, overwrite: bool = False) -> None:
    """Write `body` as a MAC-protected key file, atomically, with mode 0o600.

    `body["secret"]` must be the 32-byte secret as hex. Readers never see a half-written
    key. An existing file is never replaced unless `overwrite=True` (FileExistsError): a
    key file holds a secret that nothing else can regenerate.
    """
    if not isinstance(body, dict):
        raise TypeError(f"body must be a dict, got {type(body).__name__}")
    if "secret" not in body:
        raise ValueError("body must contain the hex secret under 'secret'")
    secret = secret_from_hex(body["secret"])
    payload = canonical_json(body)
    doc = {"format": FORMAT, "version": VERSION, "body": body,
           "mac": _mac(secret, payload).finalize().hex()}
    data = (json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    with atomic_write(path, mode=0o600, overwrite=overwrite) as f:
        f.write(data)


def read_key_file(path: str | os.PathLike) -> dict:
    """Read and verify a key file; return its body.

    Raises ValueError naming the path and the problem if the file cannot be
    read, is not JSON (corrupted or truncated), has the wrong format or an
    unsupported version, lacks a field, holds a malformed secret, or fails the
    MAC check.  The secret is never part of an error message.
    """
    path = os.fspath(path)

    def fail(problem: str) -> ValueError:
        return ValueError(f"key file {path!r}: {problem}")

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise fail(f"cannot be read ({e.strerror or e})") from e
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise fail("is not valid JSON; the file is corrupted or truncated") from e

    if not isinstance(doc, dict):
        raise fail("is not an mlguard key file (top level is not a JSON object)")
    if doc.get("format") != FORMAT:
        raise fail(f"is not an mlguard key file (format is {_short(doc.get('format'))}, "
                   f"expected {FORMAT!r})")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise fail(f"has a missing or non-integer 'version' field ({_short(version)})")
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise fail(f"uses key-file version {version}, but this mlguard supports "
                   f"version {supported}; upgrade mlguard to read it")
    body, mac_hex = doc.get("body"), doc.get("mac")
    if not isinstance(body, dict):
        raise fail("has a missing or non-object 'body' field")
    if not isinstance(mac_hex, str) or len(mac_hex) != 64 or not _HEX_RE.fullmatch(mac_hex):
        raise fail("has a missing or malformed 'mac' field (expected 64 hex digits)")
    if "secret" not in body:
        raise fail("has no 'secret' field in its body")
    try:
        secret = secret_from_hex(body["secret"])
    except (TypeError, ValueError) as e:
        # Messages from secret_from_hex never contain the secret itself.
        raise fail(f"has a malformed secret: {e}; the file may have been modified "
                   "or corrupted") from None

    try:
        _mac(secret, canonical_json(body)).verify(bytes.fromhex(mac_hex))
    except InvalidSignature:
        raise fail("has been modified or corrupted (MAC check failed)") from None
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _short(value: object) -> str:
    """repr() of an untrusted value, capped so error messages stay readable."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
