"""What registrations and evidence reports share: loading signed documents, the facts
recorded about a model file, and the environment a check ran in."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Mapping
from typing import Any

import torch

from .._version import __version__
from ..files.checkpoint import read_checkpoint
from ..files.io import file_sha256, read_json
from ..files.state_dict import load_state_dict_file
from ..verification.verdict import state_dict_sha256
from .identity import document_signature_problems

VERSION = 1


def environment() -> dict:
    """Where this ran: Python, platform, torch and CUDA versions, devices, mlguard build."""
    devices = [f"cpu: {_cpu_name()}"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}: {torch.cuda.get_device_name(i)}"
                    for i in range(torch.cuda.device_count())]
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "torch": torch.__version__, "cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(), "devices": devices,
           "mlguard": __version__}
    try:
        from .._extension import build_info
        info = build_info()
        env["mlguard_build"] = {k: v if isinstance(v, (str, int, float, bool, type(None)))
                                else str(v) for k, v in info.items()}
    except Exception as e:  # evidence must still be producible if the extension is missing
        env["mlguard_build"] = {"error": f"{type(e).__name__}: {e}"}
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def file_facts(path: str) -> dict:
    """Size, SHA-256 of the bytes, and, when the file loads safely, the weights hash that
    verdicts cite (``weights_sha256``: of the unwrapped state_dict, see files.checkpoint),
    both from one read of the file."""
    try:
        state, sha = read_checkpoint(path)
        weights = state_dict_sha256(state)
    except (ValueError, TypeError):
        sha, weights = file_sha256(path), None
    return {"file": os.path.basename(path), "size": os.path.getsize(path),
            "sha256": sha, "weights_sha256": weights}


def legacy_state_dict_sha256(path: str) -> str | None:
    """The hash documents written before ``weights_sha256`` recorded as
    ``state_dict_sha256``: of the file's top-level tensors, nothing unwrapped."""
    try:
        state = load_state_dict_file(path)
        return state_dict_sha256(state) if isinstance(state, Mapping) and all(
            isinstance(k, str) for k in state) else None
    except (ValueError, TypeError):
        return None


def load_document(doc_or_path: Mapping | str | os.PathLike) -> dict:
    """A signed mlguard document, given as a dict or a JSON file path."""
    if isinstance(doc_or_path, Mapping):
        return dict(doc_or_path)
    doc = read_json(doc_or_path, "document")
    if not isinstance(doc, dict):
        raise ValueError(f"document {os.fspath(doc_or_path)!r} is not a JSON object")
    return doc


def load_signed(doc_or_path, fmt: str, what: str, public_key) -> tuple[dict | None, list[str]]:
    """Loads a signed document of format `fmt`: (doc, signature problems), or (None, why not)."""
    try:
        doc = load_document(doc_or_path)
    except ValueError as e:
        return None, [str(e)]
    if doc.get("format") != fmt or doc.get("version") != VERSION:
        return None, [f"not an mlguard {what} (format {doc.get('format')!r}, "
                      f"version {doc.get('version')!r})"]
    return doc, document_signature_problems(doc, public_key)


def file_problems(facts: Any, path: str, name: str) -> list[str]:
    if not isinstance(facts, Mapping):
        return [f"the document has no {name} record"]
    if not os.path.isfile(path):
        return [f"{name} {path!r} does not exist"]
    problems = []
    actual = file_sha256(path)
    if actual != facts.get("sha256"):
        problems.append(f"{name} {path!r} has SHA-256 {actual}, the document says "
                        f"{facts.get('sha256')}")
    if facts.get("weights_sha256") is not None:
        recomputed = file_facts(path)["weights_sha256"]
        if recomputed != facts["weights_sha256"]:
            problems.append(f"{name} {path!r} has weights hash {recomputed}, the document "
                            f"says {facts['weights_sha256']}")
    elif facts.get("state_dict_sha256") is not None:  # a document from an older mlguard
        recomputed = legacy_state_dict_sha256(path)
        if recomputed != facts["state_dict_sha256"]:
            problems.append(f"{name} {path!r} has state_dict hash {recomputed}, the document "
                            f"says {facts['state_dict_sha256']}")
    return problems
