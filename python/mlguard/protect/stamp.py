"""Copyright and licence stamps: who owns a model file, under which licence, and which key
commitment it carries.

safetensors files get the stamp in their header metadata (`__metadata__`, str -> str, keys
prefixed "mlguard."); only the header is rewritten, every tensor byte is copied unchanged.
Other formats get a sidecar `<file>.mlguard-stamp.json` that records the file's SHA-256, so
`read_stamp` can tell whether the file changed since. A stamp is a label, not a proof:
anyone can edit it. Sign the stamped file (sign_file) to make it verifiable.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import struct

from .._version import __version__
from ..files.io import atomic_write, file_sha256, read_json, write_json

PREFIX = "mlguard."
SIDECAR_SUFFIX = ".mlguard-stamp.json"
SIDECAR_FORMAT = "mlguard-stamp"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_HEADER = 100 << 20


def _safetensors_header(path: str) -> tuple[dict, int] | None:
    """(header dict, header length) if `path` is a safetensors file, else None."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(9)
        if len(head) < 9 or head[8:9] != b"{":
            return None
        (n,) = struct.unpack("<Q", head[:8])
        if n > min(size - 8, _MAX_HEADER):
            return None
        f.seek(8)
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"model file {path!r} looks like safetensors but its header is "
                             "not valid JSON") from None
    if not isinstance(header, dict):
        raise ValueError(f"model file {path!r}: safetensors header is not a JSON object")
    return header, n


def stamp_changes_file(path: str | os.PathLike) -> bool:
    """True when stamp(path) rewrites the file itself (safetensors: its header), which
    breaks any signature or registration of its bytes; other formats get a sidecar."""
    return _safetensors_header(os.fspath(path)) is not None


def _fields(owner, license, commitment, extra) -> dict[str, str]:
    fields = {"owner": owner, "license": license, "commitment": commitment, **(extra or {})}
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        raise ValueError("give at least one of owner=, license=, commitment= or extra=")
    for name, value in fields.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"stamp field {name!r} must be a str (safetensors metadata is "
                            f"str -> str), got {type(value).__name__}")
    if "commitment" in fields and not _HEX64.fullmatch(fields["commitment"]):
        raise ValueError("commitment must be 64 lowercase hex digits (key.commitment()), "
                         f"got {fields['commitment'][:70]!r}")
    fields["stamped"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    fields["mlguard_version"] = __version__
    return fields


def stamp(path: str | os.PathLike, *, owner: str | None = None, license: str | None = None,
          commitment: str | None = None, extra: dict[str, str] | None = None) -> dict:
    """Writes a stamp into `path` (safetensors) or its sidecar; returns read_stamp(path).

    A new stamp replaces any earlier mlguard stamp; other metadata is kept.
    """
    path = os.fspath(path)
    fields = _fields(owner, license, commitment, extra)
    found = _safetensors_header(path)
    if found is None:
        write_json(path + SIDECAR_SUFFIX, {
            "format": SIDECAR_FORMAT, "version": 1, "file": os.path.basename(path),
            "sha256": file_sha256(path), "size": os.path.getsize(path), "stamp": fields})
        return read_stamp(path)
    header, old_len = found
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items()
            if not k.startswith(PREFIX)}
    meta.update({PREFIX + k: v for k, v in fields.items()})
    header["__metadata__"] = meta
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned, as safetensors does
    mode = os.stat(path).st_mode & 0o777
    with open(path, "rb") as src, atomic_write(path, mode=mode) as dst:
        dst.write(struct.pack("<Q", len(raw)) + raw)
        src.seek(8 + old_len)
        shutil.copyfileobj(src, dst, 1 << 20)  # the tensor data, byte for byte
    return read_stamp(path)


def read_stamp(path: str | os.PathLike) -> dict | None:
    """The stamp of `path`, or None if it has none.

    Keys: the stamped fields (owner, license, commitment, stamped, mlguard_version, ...) and
    "source" ("safetensors-metadata" or "sidecar"); a sidecar stamp also has
    "file_matches" (False if the file changed since it was stamped).
    """
    path = os.fspath(path)
    found = _safetensors_header(path)
    if found is not None:
        meta = found[0].get("__metadata__") or {}
        fields = {k[len(PREFIX):]: v for k, v in meta.items() if k.startswith(PREFIX)}
        if fields:
            return {**fields, "source": "safetensors-metadata"}
    sidecar = path + SIDECAR_SUFFIX
    if not os.path.exists(sidecar):
        return None
    doc = read_json(sidecar, "stamp file")
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT \
            or not isinstance(doc.get("stamp"), dict):
        raise ValueError(f"stamp file {sidecar!r} is not an mlguard stamp")
    matches = (os.path.getsize(path) == doc.get("size") and file_sha256(path) == doc.get("sha256"))
    return {**doc["stamp"], "source": "sidecar", "file_matches": matches}
