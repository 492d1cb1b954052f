"""Registration: a signed record, made at release time, of the model file's SHA-256 and the
key commitments. Its time is the signer's clock; for proof of priority also timestamp the
record with a trusted third party (e.g. RFC 3161).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._version import __version__
from .commitments import commitments_of
from .documents import VERSION, file_facts, file_problems, load_signed, now
from .identity import Identity, sign_document

REGISTRATION_FORMAT = "mlguard-registration"


def register(model_file: str | os.PathLike, keys: Any, identity: Identity, *,
             note: str | None = None) -> dict:
    """A signed record that `identity` released `model_file` carrying `keys`' watermarks.

    `keys`: a key, a key body, a commitment hex string, or a list of these. The record holds
    the file's SHA-256 and size, its state_dict hash when it loads safely, the commitments,
    the time (UTC) and the mlguard version.
    """
    path = os.fspath(model_file)
    record = {"format": REGISTRATION_FORMAT, "version": VERSION, "created": now(),
              "mlguard_version": __version__, "model": file_facts(path),
              "keys": commitments_of(keys)}
    if note is not None:
        record["note"] = str(note)
    return sign_document(record, identity)


def check_registration(record: Mapping | str | os.PathLike,
                       model_file: str | os.PathLike | None = None, *,
                       public_key: Any = None) -> list[str]:
    """Problems with a registration record (empty list: valid); with `model_file`, also
    checks that it is the registered file."""
    doc, problems = load_signed(record, REGISTRATION_FORMAT, "registration record", public_key)
    if doc is None:
        return problems
    if model_file is not None:
        problems += file_problems(doc.get("model"), os.fspath(model_file), "model file")
    return problems
