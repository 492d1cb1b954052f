"""Versioned key-file format and key-derived values, shared by all key types.

A key file is a JSON document::

    {"format": "mlguard-key", "version": 1,
     "body": {..., "secret": "<64 hex chars>", ...},
     "mac": "<hex HMAC-SHA256 of canonical_json(body)>"}

or, for a key that carries metadata (a human label such as a customer id), version 2::

    {"format": "mlguard-key", "version": 2, "body": {...}, "meta": {"label": "acme-corp"},
     "mac": "<hex HMAC-SHA256 of canonical_json({"body": body, "meta": meta})>"}

The commitment is over the body only, so a label never changes a key's commitment (the
owner's published evidence). The MAC covers the metadata too: a label edited, swapped
with another file's or removed fails the check. Keys without metadata are still written
as version 1, readable by every mlguard; an older mlguard refuses a version 2 file clearly
("upgrade mlguard") instead of misreading it.

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
    "secret_or_new",
    "new_nonce",
    "canonical_json",
    "secret_from_hex",
    "derive_key_bytes",
    "derive_seed",
    "commitment",
    "write_key_file",
    "read_key_file",
    "read_key_file_meta",
    "check_label",
]

FORMAT = "mlguard-key"
VERSION = 1
META_VERSION = 2  # a file with a "meta" object (label), covered by the MAC
SUPPORTED_VERSIONS = (1, 2)
MAX_LABEL_CHARS = 200
SECRET_BYTES = 32

_INFO_PREFIX = b"mlguard/v1/"
_COMMITMENT_PREFIX = b"mlguard-commitment-v1\0"
_MAC_PURPOSE = "key-file-mac"
_HEX_RE = re.compile(r"[0-9a-fA-F]*")


def new_secret() -> bytes:
    """A fresh 32-byte secret from the OS CSPRNG."""
    return secrets.token_bytes(SECRET_BYTES)


def secret_or_new(secret: bytes | str | None) -> bytes:
    """A key's secret as given (bytes, or hex as in a key file), or a fresh one for None; the
    length and content are checked where the key is built (_check_secret)."""
    if secret is None:
        return new_secret()
    if isinstance(secret, str):
        return secret_from_hex(secret)
    if isinstance(secret, (bytes, bytearray)):
        return bytes(secret)
    raise TypeError(f"secret must be bytes or a hex str, got {type(secret).__name__}")


def check_body_fields(body: object, scheme: str, fields) -> None:
    """Refuses a key body that is not a dict of exactly `fields` naming `scheme`: a key file
    with a field missing, added or renamed is never half-read."""
    if not isinstance(body, dict) or set(body) != set(fields) or body.get("scheme") != scheme:
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise ValueError(f"a {scheme} key body has exactly the fields {sorted(fields)}, got "
                         f"{got}")


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


def check_label(label: object) -> str | None:
    """A key label as stored: None, or a str of 1 to 200 printable characters (no line
    breaks or other control characters: it is shown in tables, CSV cells and file names)."""
    if label is None:
        return None
    if not isinstance(label, str):
        raise TypeError(f"label must be a str or None, got {type(label).__name__} {label!r}")
    if not label.strip() or len(label) > MAX_LABEL_CHARS or not label.isprintable():
        raise ValueError(f"label must be 1 to {MAX_LABEL_CHARS} printable characters (no "
                         f"line breaks or control characters), got {_short(label)}")
    return label


def _check_meta(meta: object) -> dict:
    if not isinstance(meta, dict) or set(meta) - {"label"}:
        raise ValueError(f"meta must be a dict with at most a 'label', got {_short(meta)}")
    return {"label": check_label(meta["label"])} if meta.get("label") is not None else {}


def _mac_payload(body: dict, meta: dict) -> bytes:
    # Version 1 (no metadata) MACs the body alone, as every existing file does; version 2
    # MACs body and metadata together. The two payloads cannot coincide: a body always
    # has a top-level "secret", the version 2 payload never does.
    return canonical_json({"body": body, "meta": meta}) if meta else canonical_json(body)


def write_key_file(path: str | os.PathLike, body: dict, *, overwrite: bool = False,
                   meta: dict | None = None) -> None:
    """Write `body` as a MAC-protected key file, atomically, with mode 0o600.

    `body["secret"]` must be the 32-byte secret as hex. `meta` ({"label": str}) is
    metadata outside the body and its commitment, covered by the MAC (version 2); without
    it the file is version 1. Readers never see a half-written key. An existing file is
    never replaced unless `overwrite=True` (FileExistsError): a key file holds a secret
    that nothing else can regenerate.
    """
    if not isinstance(body, dict):
        raise TypeError(f"body must be a dict, got {type(body).__name__}")
    if "secret" not in body:
        raise ValueError("body must contain the hex secret under 'secret'")
    secret = secret_from_hex(body["secret"])
    meta = _check_meta({} if meta is None else meta)
    doc = {"format": FORMAT, "version": META_VERSION if meta else VERSION, "body": body,
           "mac": _mac(secret, _mac_payload(body, meta)).finalize().hex()}
    if meta:
        doc["meta"] = meta
    data = (json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    with atomic_write(path, mode=0o600, overwrite=overwrite) as f:
        f.write(data)


def read_key_file(path: str | os.PathLike) -> dict:
    """Read and verify a key file; return its body (``read_key_file_meta`` also gives the
    metadata)."""
    return read_key_file_meta(path)[0]


def read_key_file_meta(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read and verify a key file; return (body, meta), meta {} or {"label": str}.

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
        if raw[:1] != b"{" and (raw[:2] == b"PK" or raw[8:9] == b"{"):  # torch.save, safetensors
            raise fail("is a model file (torch.save or safetensors), not a key file") from e
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
                   f"versions {supported}; upgrade mlguard to read it")
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

    if version == VERSION and "meta" in doc:
        raise fail("has a 'meta' field, which version 1 does not protect; the file may "
                   "have been modified")
    try:
        meta = _check_meta(doc.get("meta", {}))
    except (TypeError, ValueError) as e:
        raise fail(f"has a malformed 'meta' field: {e}") from None
    if version == META_VERSION and not meta:
        raise fail("is version 2 but has no 'meta' label; the file may have been modified")
    try:
        _mac(secret, _mac_payload(body, meta)).verify(bytes.fromhex(mac_hex))
    except InvalidSignature:
        raise fail("has been modified or corrupted (MAC check failed)") from None
    return body, meta


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _short(value: object) -> str:
    """repr() of an untrusted value, capped so error messages stay readable."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
