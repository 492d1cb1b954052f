"""mlguard's encrypted container: chunked AES-256-GCM behind an authenticated header.

Layout (integers big-endian)::

    header, 52 bytes (version 1)
        magic       8   b"\\x89MLGENC\\n"
        version     2   1
        kdf         1   1 = scrypt(passphrase), 2 = raw 32-byte key
        log2_n      1   scrypt cost N = 2**log2_n   (0 for a raw key)
        r           4   scrypt block size           (0 for a raw key)
        p           4   scrypt parallelism          (0 for a raw key)
        salt       16   random, per file
        base_nonce 12   random, per file
        chunk_size  4   plaintext bytes per chunk; the last chunk may be shorter
    chunks: AES-256-GCM(plaintext chunk) || 16-byte tag, at least one (an empty
            plaintext is one empty chunk)

Keys: file_key = HKDF-SHA256(master, salt, "mlguard/v1/file-encryption") where master is
scrypt(passphrase, salt) or the raw key, so every file has its own AES key even when one
raw key protects many files, and the random base nonces never need to be unique across
files. Chunk i is sealed with nonce = base_nonce XOR i and associated data
header || u64 i || u8 final, where final is 1 only for the last chunk. So any change to
the header, a bit flip, reordering or dropping chunks, truncation at any point (a cut at a
chunk boundary leaves a last chunk that was sealed as not final) and appended data all
fail authentication. Every primitive comes from the `cryptography` package.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"\x89MLGENC\n"
VERSION = 1
KDF_SCRYPT, KDF_RAW = 1, 2
KEY_BYTES = 32
TAG = 16
DEFAULT_CHUNK_SIZE = 1 << 20  # 1 MiB: AES-GCM runs at full speed and the buffer stays in cache
MAX_CHUNK_SIZE = 1 << 26
DEFAULT_SCRYPT = (17, 8, 1)  # log2 N, r, p: 128 MiB and ~0.4 s per derivation
_MAX_SCRYPT_BYTES = 1 << 30  # refuse headers that ask for more memory (hostile files)

_HEADER = struct.Struct(">8sHBBII16s12sI")
HEADER_SIZE = _HEADER.size
_CHUNK_AD = struct.Struct(">QB")
_HKDF_INFO = b"mlguard/v1/file-encryption"


class DecryptionError(ValueError):
    """Authentication failed. Deliberately does not say why: a wrong passphrase or key and a
    modified, truncated or extended file are indistinguishable to AES-GCM, and a message that
    told them apart would help an attacker."""

    def __init__(self, what: str):
        super().__init__(f"{what}: cannot decrypt: wrong passphrase or key, or the file has "
                         "been modified or truncated")


@dataclass(frozen=True)
class Header:
    kdf: int
    log2_n: int
    r: int
    p: int
    salt: bytes
    base_nonce: bytes
    chunk_size: int

    def pack(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, self.kdf, self.log2_n, self.r, self.p, self.salt,
                            self.base_nonce, self.chunk_size)

    @classmethod
    def unpack(cls, raw: bytes, what: str) -> Header:
        if len(raw) < len(MAGIC) or raw[:len(MAGIC)] != MAGIC:
            if MAGIC.startswith(raw):  # a cut inside the magic: the file was truncated
                raise DecryptionError(what)
            raise ValueError(f"{what}: not an mlguard encrypted file (bad magic bytes)")
        if len(raw) < HEADER_SIZE:
            raise DecryptionError(what)
        _, version, kdf, log2_n, r, p, salt, nonce, chunk = _HEADER.unpack(raw[:HEADER_SIZE])
        if version != VERSION:
            raise ValueError(f"{what}: encrypted with container version {version}; this mlguard "
                             f"reads version {VERSION} (upgrade mlguard)")
        header = cls(kdf, log2_n, r, p, salt, nonce, chunk)
        problem = header.problem()
        if problem:
            raise ValueError(f"{what}: corrupted header ({problem})")
        return header

    def problem(self) -> str | None:
        """Why these parameters are unacceptable, or None."""
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            return f"chunk size {self.chunk_size} not in [1, {MAX_CHUNK_SIZE}]"
        if self.kdf == KDF_RAW:
            return None if (self.log2_n, self.r, self.p) == (0, 0, 0) else "KDF fields not zero"
        if self.kdf != KDF_SCRYPT:
            return f"unknown KDF id {self.kdf}"
        if not (1 <= self.log2_n <= 30 and 1 <= self.r <= 64 and 1 <= self.p <= 16):
            return f"scrypt parameters out of range (log2 N={self.log2_n}, r={self.r}, p={self.p})"
        if 128 * self.r * (1 << self.log2_n) > _MAX_SCRYPT_BYTES:
            return f"scrypt needs more than {_MAX_SCRYPT_BYTES >> 20} MiB"
        return None


def passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        # NFC so that the same typed passphrase gives the same bytes on every platform.
        passphrase = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    if not isinstance(passphrase, (bytes, bytearray)):
        raise TypeError(f"passphrase must be str or bytes, got {type(passphrase).__name__}")
    if not passphrase:
        raise ValueError("passphrase must not be empty")
    return bytes(passphrase)


def _raw_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"key must be {KEY_BYTES} bytes, got {type(key).__name__}")
    if len(key) != KEY_BYTES:
        raise ValueError(f"key must be {KEY_BYTES} bytes, got {len(key)} bytes")
    return bytes(key)


def _one_secret(passphrase, key) -> tuple[bytes | None, bytes | None]:
    if (passphrase is None) == (key is None):
        raise ValueError("give exactly one of passphrase= or key=")
    return (None if passphrase is None else passphrase_bytes(passphrase),
            None if key is None else _raw_key(key))


def new_file_key() -> bytes:
    """A fresh random 32-byte key for key= (keep it as secret as a passphrase)."""
    return secrets.token_bytes(KEY_BYTES)


def file_key(header: Header, passphrase: bytes | None, key: bytes | None, what: str) -> bytes:
    """The per-file AES-256 key for this header and secret (checked by _one_secret)."""
    if header.kdf == KDF_SCRYPT:
        if passphrase is None:
            raise ValueError(f"{what}: was encrypted with a passphrase; pass passphrase=, not key=")
        master = Scrypt(salt=header.salt, length=KEY_BYTES, n=1 << header.log2_n, r=header.r,
                        p=header.p).derive(passphrase)
    else:
        if key is None:
            raise ValueError(f"{what}: was encrypted with a raw key; pass key=, not passphrase=")
        master = key
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=header.salt,
                info=_HKDF_INFO).derive(master)


class _Sealer:
    """Nonce and associated data per chunk, shared by encryption and decryption."""

    def __init__(self, header: Header, key: bytes):
        self.header_bytes = header.pack()
        self.base = int.from_bytes(header.base_nonce, "big")
        self.aead = AESGCM(key)

    def nonce(self, index: int) -> bytes:
        return (self.base ^ index).to_bytes(12, "big")

    def ad(self, index: int, final: bool) -> bytes:
        return self.header_bytes + _CHUNK_AD.pack(index, final)


def new_header(passphrase: bytes | None, chunk_size: int, scrypt: tuple[int, int, int]
               ) -> Header:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
    log2_n, r, p = scrypt if passphrase is not None else (0, 0, 0)
    header = Header(KDF_SCRYPT if passphrase is not None else KDF_RAW, log2_n, r, p,
                    secrets.token_bytes(16), secrets.token_bytes(12), chunk_size)
    problem = header.problem()
    if problem:
        raise ValueError(f"bad encryption parameters: {problem}")
    return header


def _read_into(f, buf: bytearray) -> int:
    """Fills `buf` from binary stream `f`; fewer bytes only at end of stream (pipes and
    sockets may return short reads)."""
    view, done = memoryview(buf), 0
    while done < len(buf):
        n = f.readinto(view[done:])
        if not n:
            break
        done += n
    return done


def _write_all(f, data: memoryview) -> None:
    """Raw (unbuffered) files may write only part of a buffer; keep going."""
    while data:
        n = f.write(data)
        if not n:  # None: a non-blocking stream that would block
            raise OSError("could not write the encrypted data (the stream accepted nothing)")
        data = data[n:]


def encrypt_stream(src, dst, passphrase: str | bytes | None = None, key: bytes | None = None,
                   chunk_size: int = DEFAULT_CHUNK_SIZE,
                   scrypt: tuple[int, int, int] = DEFAULT_SCRYPT) -> int:
    """Encrypts binary stream `src` (with readinto) into `dst`; returns the plaintext length."""
    pw, raw = _one_secret(passphrase, key)
    header = new_header(pw, chunk_size, scrypt)
    sealer = _Sealer(header, file_key(header, pw, raw, "encryption"))
    dst.write(sealer.header_bytes)
    # Reused buffers: a fresh 1 MiB object per chunk would be a fresh mmap (and page faults).
    current, following = bytearray(chunk_size), bytearray(chunk_size)
    sealed = bytearray(chunk_size + TAG)
    index, total = 0, 0
    n = _read_into(src, current)
    while True:
        # Read one chunk ahead: the last chunk must be sealed with final=1.
        n_next = _read_into(src, following) if n == chunk_size else 0
        final = n_next == 0
        out = memoryview(sealed)[:n + TAG]
        sealer.aead.encrypt_into(sealer.nonce(index), memoryview(current)[:n],
                                 sealer.ad(index, final), out)
        _write_all(dst, out)
        total += n
        if final:
            return total
        current, following, n, index = following, current, n_next, index + 1


# -- decryption ----------------------------------------------------------------------------

class _Source:
    """Random-access ciphertext: a file (read with pread, never mmap: a file truncated under
    an mmap would kill the process with SIGBUS) or bytes."""

    def __init__(self, data: str | os.PathLike | bytes):
        if isinstance(data, (bytes, bytearray, memoryview)):
            self._mem, self._file = memoryview(data).cast("B"), None
            self.size = len(self._mem)
        else:
            self._mem, self._file = None, open(data, "rb", buffering=0)
            self.size = os.fstat(self._file.fileno()).st_size

    def read_at(self, offset: int, out: memoryview) -> int:
        if self._mem is not None:
            got = self._mem[offset:offset + len(out)]
            out[:len(got)] = got
            return len(got)
        done = 0
        while done < len(out):
            if hasattr(os, "preadv"):  # one syscall, no shared file position
                n = os.preadv(self._file.fileno(), [out[done:]], offset + done)
            else:  # Windows
                self._file.seek(offset + done)
                n = self._file.readinto(out[done:])
            if not n:
                break
            done += n
        return done

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class DecryptingReader(io.RawIOBase):
    """A seekable, read-only binary file over the plaintext of an encrypted container.

    Each chunk is authenticated before any of its bytes are handed out, and reads that cover
    whole chunks decrypt straight into the caller's buffer (no extra copy). Bytes that were
    never read are not yet authenticated: call `verify_all()` before trusting the whole file.
    """

    def __init__(self, source, passphrase: str | bytes | None = None, key: bytes | None = None,
                 what: str = "data"):
        super().__init__()
        pw, raw = _one_secret(passphrase, key)
        self.what = what
        self._src = _Source(source)
        try:
            head = bytearray(HEADER_SIZE)
            got = self._src.read_at(0, memoryview(head))
            header = Header.unpack(bytes(head[:got]), what)
            self._sealer = _Sealer(header, file_key(header, pw, raw, what))
            cs = self._cs = self.chunk_size = header.chunk_size
            body = self._src.size - HEADER_SIZE
            self._chunks = max(1, -(-body // (cs + TAG)))
            self._last_len = body - (self._chunks - 1) * (cs + TAG)  # ciphertext + tag
            if self._last_len < TAG:
                raise DecryptionError(what)
            self.length = body - TAG * self._chunks  # plaintext bytes
        except BaseException:
            self._src.close()
            raise
        self.failed = False
        self._pos = 0
        self._cbuf = bytearray(cs + TAG)
        self._scratch = bytearray(cs)
        self._cached = -1  # index of the chunk held in _scratch
        self._verified = bytearray(self._chunks)

    def _decrypt(self, index: int, out: memoryview) -> None:
        final = index == self._chunks - 1
        clen = self._last_len if final else self._cs + TAG
        ct = memoryview(self._cbuf)[:clen]
        try:
            if self._src.read_at(HEADER_SIZE + index * (self._cs + TAG), ct) != clen:
                raise InvalidTag  # the file shrank while we read it
            self._sealer.aead.decrypt_into(self._sealer.nonce(index), ct,
                                           self._sealer.ad(index, final), out[:clen - TAG])
        except InvalidTag:
            # Remembered because loaders (torch's C++ reader) may re-wrap the exception.
            self.failed = True
            raise DecryptionError(self.what) from None
        self._verified[index] = 1

    def readinto(self, b) -> int:
        dest = memoryview(b).cast("B")
        done = 0
        while done < len(dest) and self._pos < self.length:
            index, within = divmod(self._pos, self._cs)
            plen = min(self._cs, self.length - index * self._cs)
            take = min(plen - within, len(dest) - done)
            if within == 0 and take == plen and index != self._cached:
                self._decrypt(index, dest[done:done + plen])
            else:
                if index != self._cached:
                    self._cached = -1  # in case authentication fails half way
                    self._decrypt(index, memoryview(self._scratch))
                    self._cached = index
                dest[done:done + take] = memoryview(self._scratch)[within:within + take]
            done += take
            self._pos += take
        return done

    def verify_all(self) -> None:
        """Authenticates every chunk not yet read; raises DecryptionError on any failure."""
        for index in range(self._chunks):
            if not self._verified[index]:
                self._cached = -1
                self._decrypt(index, memoryview(self._scratch))
                self._cached = index

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.length}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._src.close()
        super().close()


def decrypt_all(source, passphrase: str | bytes | None = None, key: bytes | None = None,
                what: str = "data") -> bytearray:
    """The whole authenticated plaintext of an encrypted container (file path or bytes)."""
    with DecryptingReader(source, passphrase, key, what) as reader:
        out = bytearray(reader.length)
        reader.readinto(out)
        reader.verify_all()
        return out
