"""Owner identity: an Ed25519 key pair that signs registrations, evidence and model files.

The identity file is JSON holding the public key in the clear (anyone may read it) and the
private key as PKCS8 DER inside mlguard's encrypted container (scrypt + AES-256-GCM, see
mlguard.files.container). PKCS8's own passphrase encryption in `cryptography` uses
PBKDF2 with 2048 iterations, far cheaper to brute-force than scrypt, hence the container.
`Identity.private_pem(passphrase)` still exports a standard encrypted PKCS8 PEM.

Signed documents: `sign_document` adds {"signer": {"algorithm", "public_key"}} and a hex
"signature" over b"mlguard-signed-document-v1\\0" + canonical_json(document without its
"signature" field). The prefix keeps these signatures from being valid for anything else.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..files import container
from ..files.io import read_json, write_json
from ..keys.keyfile import canonical_json

__all__ = ["Identity", "load_public_key", "verify_signature", "sign_document",
           "document_signature_problems"]

ALGORITHM = "Ed25519"
FORMAT = "mlguard-identity"
VERSION = 1
_DOC_PREFIX = b"mlguard-signed-document-v1\0"


class Identity:
    """An owner's Ed25519 signing key. Never printed: repr shows only the public key."""

    def __init__(self, private_key: Ed25519PrivateKey):
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError(f"private_key must be an Ed25519PrivateKey, got "
                            f"{type(private_key).__name__}")
        self._private = private_key
        self.public_key = private_key.public_key()

    @classmethod
    def generate(cls) -> Identity:
        """A new random identity."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_key_hex(self) -> str:
        """The raw 32-byte public key as hex: what others use to check your signatures."""
        return public_key_hex(self.public_key)

    @property
    def fingerprint(self) -> str:
        """A short id: the first 16 hex digits of SHA-256 of the raw public key."""
        return hashlib.sha256(bytes.fromhex(self.public_key_hex)).hexdigest()[:16]

    def public_key_pem(self) -> str:
        """The public key as a SubjectPublicKeyInfo PEM (openssl reads it)."""
        return self.public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo
                                            ).decode("ascii")

    def private_pem(self, passphrase: str | bytes) -> str:
        """Export as a standard encrypted PKCS8 PEM (weaker KDF than save(); see module doc)."""
        encryption = serialization.BestAvailableEncryption(container.passphrase_bytes(passphrase))
        return self._private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           encryption).decode("ascii")

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over `data`."""
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        return self._private.sign(bytes(data))

    def save(self, path: str | os.PathLike, passphrase: str | bytes, *,
             scrypt: tuple[int, int, int] | None = None, overwrite: bool = False) -> None:
        """Writes the identity file, private key encrypted under `passphrase`, mode 0600.

        `scrypt` = (log2 N, r, p) overrides the KDF cost (default (17, 8, 1)). An existing
        file is never replaced unless `overwrite=True` (FileExistsError).
        """
        der = self._private.private_bytes(serialization.Encoding.DER,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
        sealed = io.BytesIO()
        container.encrypt_stream(io.BytesIO(der), sealed, passphrase=passphrase,
                                 scrypt=scrypt or container.DEFAULT_SCRYPT)
        write_json(path, {"format": FORMAT, "version": VERSION, "algorithm": ALGORITHM,
                          "public_key": self.public_key_hex,
                          "private_key": base64.b64encode(sealed.getvalue()).decode("ascii")},
                   mode=0o600, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, passphrase: str | bytes) -> Identity:
        """Reads an identity file. A wrong passphrase or a modified file raises ValueError."""
        doc = read_identity_file(path)
        what = f"identity file {os.fspath(path)!r}"
        try:
            sealed = base64.b64decode(doc["private_key"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{what}: missing or malformed 'private_key' field") from None
        try:
            der = bytes(container.decrypt_all(sealed, passphrase=passphrase, what=what))
        except container.DecryptionError:
            raise ValueError(f"{what}: wrong passphrase, or the file has been modified") from None
        try:
            private = serialization.load_der_private_key(der, password=None)
        except ValueError:
            private = None
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{what}: the private key is not an Ed25519 PKCS8 key")
        identity = cls(private)
        if identity.public_key_hex != doc.get("public_key"):
            raise ValueError(f"{what}: public key does not match the private key; the file "
                             "has been modified")
        return identity

    def __repr__(self) -> str:
        return f"Identity(public_key={self.public_key_hex[:16]}...)"


def read_identity_file(path: str | os.PathLike) -> dict:
    """The identity file's JSON (checks format and version; does not decrypt)."""
    doc = read_json(path, "identity file")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"identity file {os.fspath(path)!r} is not an mlguard identity file")
    if doc.get("version") != VERSION or doc.get("algorithm") != ALGORITHM:
        raise ValueError(f"identity file {os.fspath(path)!r}: unsupported version "
                         f"{doc.get('version')!r} or algorithm {doc.get('algorithm')!r}")
    return doc


def public_key_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def load_public_key(value: Any) -> Ed25519PublicKey:
    """An Ed25519 public key from an Identity, a key object, 64 hex digits, a PEM string, or a
    path to a file holding hex, a PEM, or an mlguard identity file (its public part)."""
    if isinstance(value, Identity):
        return value.public_key
    if isinstance(value, Ed25519PublicKey):
        return value
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if isinstance(value, os.PathLike) or (isinstance(value, str) and os.path.isfile(value)):
        path = os.fspath(value)
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace").strip()
        if text.startswith("{"):
            return load_public_key(read_identity_file(path)["public_key"])
        return load_public_key(text)
    if not isinstance(value, str):
        raise TypeError(f"public_key must be hex, PEM, a path or an Identity, got "
                        f"{type(value).__name__}")
    text = value.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except ValueError as e:
            raise ValueError(f"public_key PEM cannot be parsed ({e})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"public_key must be Ed25519, got {type(key).__name__}")
        return key
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError("public_key must be 64 hex digits, a PEM, or a path to a file with one; "
                         f"got {_short(text)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(public_key: Any, data: bytes, signature: bytes) -> bool:
    """True if `signature` is a valid Ed25519 signature of `data` under `public_key`."""
    key = load_public_key(public_key)
    try:
        key.verify(bytes(signature), bytes(data))
    except InvalidSignature:
        return False
    return True


def _signed_bytes(doc: Mapping) -> bytes:
    return _DOC_PREFIX + canonical_json({k: v for k, v in doc.items() if k != "signature"})


def sign_document(doc: Mapping, identity: Identity) -> dict:
    """A copy of `doc` with "signer" and "signature" set (any old signature is replaced)."""
    if not isinstance(identity, Identity):
        raise TypeError(f"identity must be an mlguard.Identity, got {type(identity).__name__}")
    if not isinstance(doc, Mapping):
        raise TypeError(f"doc must be a mapping, got {type(doc).__name__}")
    out = {k: v for k, v in doc.items() if k != "signature"}
    out["signer"] = {"algorithm": ALGORITHM, "public_key": identity.public_key_hex}
    out["signature"] = identity.sign(_signed_bytes(out)).hex()
    return out


def document_signature_problems(doc: Mapping, public_key: Any = None) -> list[str]:
    """Problems with a signed document's signature (empty list: valid).

    Without `public_key` this shows only that the document is unchanged since the holder of
    the embedded key signed it; pass the owner's known public key to check who that was.
    """
    signer, signature = doc.get("signer"), doc.get("signature")
    if not isinstance(signer, dict) or signer.get("algorithm") != ALGORITHM:
        return [f"signer is missing or not {ALGORITHM}"]
    try:
        embedded = load_public_key(str(signer.get("public_key", "")))
    except ValueError:
        return ["signer public key is malformed"]
    problems = []
    if public_key is not None:
        expected = public_key_hex(load_public_key(public_key))
        if expected != public_key_hex(embedded):
            problems.append(f"signed by key {public_key_hex(embedded)[:16]}..., not by the "
                            f"expected key {expected[:16]}...")
    try:
        sig = bytes.fromhex(signature) if isinstance(signature, str) else b""
    except ValueError:
        sig = b""
    if len(sig) != 64:
        return problems + ["signature is missing or malformed (expected 128 hex digits)"]
    try:
        data = _signed_bytes(doc)
    except ValueError as e:
        return problems + [f"document cannot be canonicalized ({e})"]
    if not verify_signature(embedded, data, sig):
        problems.append("signature does not match the document: it was modified after signing")
    return problems


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")
