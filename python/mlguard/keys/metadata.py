"""Key metadata: the human label and the file a key came from, kept off the key material.

Both key types carry `label` and `path` as dataclass fields excluded from equality; neither
is in the body, so neither changes the commitment. These helpers copy a key with other
metadata while keeping what it has already derived (decoded images, the commitment).
"""

from __future__ import annotations

import dataclasses
import os

from . import keyfile


def with_metadata(key, **changes):
    """A copy of `key` (a frozen key dataclass) with `label` and/or `path` replaced."""
    if "label" in changes:
        changes["label"] = keyfile.check_label(changes["label"])
    if changes.get("path") is not None:
        changes["path"] = os.path.abspath(os.fspath(changes["path"]))
    copy = dataclasses.replace(key, **changes)
    fields = {f.name for f in dataclasses.fields(key)}
    # cached_property values depend only on the key material, which is unchanged.
    copy.__dict__.update({k: v for k, v in key.__dict__.items() if k not in fields})
    return copy


def file_meta(key) -> dict | None:
    """The key file's metadata for `key` (None when it has no label: a version 1 file)."""
    return {"label": key.label} if key.label is not None else None


def display_name(label: str | None, path: str | None, key_id: str) -> str:
    """How a key is named to people: its label, else its file's stem, else its 16-hex id."""
    if label:
        return label
    if path:
        return os.path.splitext(os.path.basename(path))[0] or key_id
    return key_id
