"""Encrypted model files: encrypt, decrypt to a file, or load straight into memory.

The container format is described in mlguard.files.container. `load_encrypted` never
writes plaintext anywhere: chunks are authenticated and decrypted into the tensors' own
memory as torch.load (weights_only=True) or the safetensors parser reads them.
"""

from __future__ import annotations

import os
from typing import Any

from ..files import container, state_dict
from ..files.container import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_SCRYPT,
    DecryptingReader,
    DecryptionError,
)
from ..files.io import atomic_write


def _path(name: str, value) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    return os.fspath(value)


def _what(path: str) -> str:
    return f"encrypted file {path!r}"


def encrypt_file(src: str | os.PathLike, dst: str | os.PathLike, *,
                 passphrase: str | bytes | None = None, key: bytes | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE,
                 scrypt: tuple[int, int, int] = DEFAULT_SCRYPT) -> int:
    """Encrypts file `src` to `dst` with AES-256-GCM; returns the plaintext size in bytes.

    Exactly one secret: `passphrase` (stretched with scrypt; `scrypt` = (log2 N, r, p),
    default (17, 8, 1)) or `key` (32 random bytes, e.g. from new_file_key()). `dst` is
    replaced atomically and must not be `src`.
    """
    src, dst = _path("src", src), _path("dst", dst)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise ValueError(f"dst must differ from src, got {dst!r} for both")
    with open(src, "rb") as fin, atomic_write(dst) as fout:
        return container.encrypt_stream(fin, fout, passphrase=passphrase, key=key,
                                        chunk_size=chunk_size, scrypt=scrypt)


def decrypt_file(src: str | os.PathLike, dst: str | os.PathLike, *,
                 passphrase: str | bytes | None = None, key: bytes | None = None) -> int:
    """Decrypts `src` to the plaintext file `dst` (mode 0600); returns its size in bytes.

    This writes the model in the clear; prefer load_encrypted. `dst` appears only after
    every chunk has been authenticated; on any failure nothing is left behind.
    """
    src, dst = _path("src", src), _path("dst", dst)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise ValueError(f"dst must differ from src, got {dst!r} for both")
    with DecryptingReader(src, passphrase, key, _what(src)) as reader, \
            atomic_write(dst, mode=0o600) as fout:
        buf = bytearray(reader.chunk_size)
        view = memoryview(buf)
        while n := reader.readinto(buf):
            fout.write(view[:n])
        reader.verify_all()
        return reader.length


def decrypt_bytes(src: str | os.PathLike | bytes, *, passphrase: str | bytes | None = None,
                  key: bytes | None = None) -> bytes:
    """The authenticated plaintext of an encrypted file (or of its bytes), in memory."""
    what = "encrypted data" if isinstance(src, (bytes, bytearray)) else _what(os.fspath(src))
    return bytes(container.decrypt_all(src, passphrase, key, what))


def load_encrypted(path: str | os.PathLike, *, passphrase: str | bytes | None = None,
                   key: bytes | None = None, format: str = "auto",
                   map_location: Any = None) -> dict:
    """Decrypts an encrypted checkpoint into memory and returns its state_dict.

    No plaintext is written to disk and no temporary file is created. `format` is "auto"
    (sniffed), "torch" (torch.save; loaded with weights_only=True) or "safetensors".
    Raises container.DecryptionError (a ValueError) for a wrong passphrase or key or a
    modified file, with the same message for all three.
    """
    path = _path("path", path)
    with DecryptingReader(path, passphrase, key, _what(path)) as reader:
        try:
            state = state_dict.load_state_dict(reader, _what(path), format, map_location)
        except Exception:
            if reader.failed:  # whatever the loader made of it, the cause is authentication
                raise DecryptionError(_what(path)) from None
            raise
        reader.verify_all()  # bytes the loader skipped must be authentic too
    return state
