"""Ownership evidence: key commitments and their openings, signed registration records, and
signed evidence reports that anyone can re-check.

- `key.commitment()` is published when a model is released; it binds the key and hides it.
  `reveal(key)` gives the opening (the key body: parameters, secret and nonce) and
  `check_opening(commitment, opening)` recomputes the commitment from it. Revealing a key
  burns it: whoever holds the opening can regenerate the triggers, so show it only to the
  expert or court that must check the claim.
- `register(model_file, keys, identity)`: a signed record, made at release time, of the
  model file's SHA-256 and the key commitments. Its time is the signer's clock; for proof of
  priority also timestamp the record with a trusted third party (e.g. RFC 3161).
- `evidence(verdicts, suspect_file, ...)`: a signed report of a detection; `check_evidence`
  verifies the signature and recomputes everything that can be recomputed from the files
  at hand (p-values and decisions, commitments, the suspect's hashes).
"""

from __future__ import annotations

import datetime
import hmac
import html
import json
import math
import os
import platform
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from . import keyfile, stats
from ._version import __version__
from .identity import Identity, document_signature_problems, sign_document
from .protect._io import file_sha256, read_json
from .protect.formats import load_state_dict_file
from .verdict import Verdict, make_verdict, state_dict_sha256

__all__ = ["reveal", "check_opening", "register", "check_registration", "evidence",
           "check_evidence", "evidence_html", "environment", "load_document"]

EVIDENCE_FORMAT = "mlguard-evidence"
REGISTRATION_FORMAT = "mlguard-registration"
VERSION = 1
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_REL_TOL = 1e-9  # recomputed p-values may differ in the last digits across lgamma versions


# -- commit and reveal ---------------------------------------------------------------------

def reveal(key: Any) -> dict:
    """The opening of `key`'s commitment: a copy of its body (scheme, parameters, secret,
    nonce). Works for any key with `to_body()` (trigger keys, weight keys) or a body dict.

    The opening contains the secret; see the module docstring before sharing it.
    """
    body = key.to_body() if hasattr(key, "to_body") else key
    if not isinstance(body, Mapping):
        raise TypeError(f"key must have to_body() or be a key body dict, got "
                        f"{type(key).__name__}")
    _check_body(body, "key")
    # A JSON round trip gives a deep, plain-data copy (and rejects what cannot be committed).
    return json.loads(keyfile.canonical_json(dict(body)))


def _check_body(body: Mapping, name: str) -> None:
    missing = [f for f in ("scheme", "secret", "nonce") if not isinstance(body.get(f), str)]
    if missing:
        raise ValueError(f"{name} must be a key body with str fields 'scheme', 'secret' and "
                         f"'nonce'; missing or not str: {missing}")


def check_opening(commitment: str, opening: Mapping) -> bool:
    """True if `opening` (from reveal) is the key that `commitment` was made from."""
    if not isinstance(commitment, str) or not _HEX64.fullmatch(commitment):
        raise ValueError(f"commitment must be 64 hex digits, got {str(commitment)[:70]!r}")
    if not isinstance(opening, Mapping):
        raise TypeError(f"opening must be a dict (from reveal), got {type(opening).__name__}")
    _check_body(opening, "opening")
    recomputed = keyfile.commitment(dict(opening))
    return hmac.compare_digest(recomputed, commitment.lower())


# The trial count and per-trial chance that a verdict for an opened key must use.
_EXPECTED_TEST = {
    "trigger-set": lambda body: (body["size"], 1.0 / body["num_classes"]),
    "weight": lambda body: (body["bits"], 0.5),
}


# -- environment and helpers ---------------------------------------------------------------

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
        from ._extension import build_info
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


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _file_facts(path: str) -> dict:
    """Size, SHA-256 of the bytes, and the state_dict hash when the file loads safely."""
    try:
        state = load_state_dict_file(path)
        sd_hash = state_dict_sha256(state) if isinstance(state, Mapping) and all(
            isinstance(k, str) for k in state) else None
    except (ValueError, TypeError):
        sd_hash = None
    return {"file": os.path.basename(path), "size": os.path.getsize(path),
            "sha256": file_sha256(path), "state_dict_sha256": sd_hash}


def load_document(doc_or_path: Mapping | str | os.PathLike) -> dict:
    """A signed mlguard document, given as a dict or a JSON file path."""
    if isinstance(doc_or_path, Mapping):
        return dict(doc_or_path)
    doc = read_json(doc_or_path, "document")
    if not isinstance(doc, dict):
        raise ValueError(f"document {os.fspath(doc_or_path)!r} is not a JSON object")
    return doc


def _commitments_of(keys: Any) -> list[dict]:
    if isinstance(keys, (str, Mapping)) or hasattr(keys, "commitment"):
        keys = [keys]
    out = []
    for k in keys:
        if isinstance(k, str):
            if not _HEX64.fullmatch(k):
                raise ValueError(f"keys: commitment must be 64 hex digits, got {k[:70]!r}")
            out.append({"scheme": None, "commitment": k.lower()})
        elif hasattr(k, "commitment") and hasattr(k, "to_body"):
            out.append({"scheme": k.to_body().get("scheme"), "commitment": k.commitment()})
        elif isinstance(k, Mapping):
            _check_body(k, "keys")
            out.append({"scheme": k["scheme"], "commitment": keyfile.commitment(dict(k))})
        else:
            raise TypeError(f"keys must hold keys, key bodies or commitment strings, got "
                            f"{type(k).__name__}")
    if not out:
        raise ValueError("keys must not be empty")
    return out


# -- registration --------------------------------------------------------------------------

def register(model_file: str | os.PathLike, keys: Any, identity: Identity, *,
             note: str | None = None) -> dict:
    """A signed record that `identity` released `model_file` carrying `keys`' watermarks.

    `keys`: a key, a key body, a commitment hex string, or a list of these. The record holds
    the file's SHA-256 and size, its state_dict hash when it loads safely, the commitments,
    the time (UTC) and the mlguard version.
    """
    path = os.fspath(model_file)
    record = {"format": REGISTRATION_FORMAT, "version": VERSION, "created": _now(),
              "mlguard_version": __version__, "model": _file_facts(path),
              "keys": _commitments_of(keys)}
    if note is not None:
        record["note"] = str(note)
    return sign_document(record, identity)


def _load_signed(doc_or_path, fmt: str, what: str, public_key) -> tuple[dict | None, list[str]]:
    """Loads a signed document of format `fmt`: (doc, signature problems), or (None, why not)."""
    try:
        doc = load_document(doc_or_path)
    except ValueError as e:
        return None, [str(e)]
    if doc.get("format") != fmt or doc.get("version") != VERSION:
        return None, [f"not an mlguard {what} (format {doc.get('format')!r}, "
                      f"version {doc.get('version')!r})"]
    return doc, document_signature_problems(doc, public_key)


def check_registration(record: Mapping | str | os.PathLike,
                       model_file: str | os.PathLike | None = None, *,
                       public_key: Any = None) -> list[str]:
    """Problems with a registration record (empty list: valid); with `model_file`, also
    checks that it is the registered file."""
    doc, problems = _load_signed(record, REGISTRATION_FORMAT, "registration record", public_key)
    if doc is None:
        return problems
    if model_file is not None:
        problems += _file_problems(doc.get("model"), os.fspath(model_file), "model file")
    return problems


def _file_problems(facts: Any, path: str, name: str) -> list[str]:
    if not isinstance(facts, Mapping):
        return [f"the document has no {name} record"]
    if not os.path.isfile(path):
        return [f"{name} {path!r} does not exist"]
    problems = []
    actual = file_sha256(path)
    if actual != facts.get("sha256"):
        problems.append(f"{name} {path!r} has SHA-256 {actual}, the document says "
                        f"{facts.get('sha256')}")
    if facts.get("state_dict_sha256") is not None:
        recomputed = _file_facts(path)["state_dict_sha256"]
        if recomputed != facts["state_dict_sha256"]:
            problems.append(f"{name} {path!r} has state_dict hash {recomputed}, the document "
                            f"says {facts['state_dict_sha256']}")
    return problems


# -- evidence ------------------------------------------------------------------------------

def _verdict_problems(d: Any, label: str) -> list[str]:
    """Recomputes one verdict's test from its counts; lists every disagreement."""
    try:
        v = Verdict.from_dict(d)
        ref = make_verdict(v.scheme, v.matches, v.total, v.chance, v.alpha, v.commitment,
                           v.model_sha256, v.device, v.extra)
    except (TypeError, ValueError) as e:
        return [f"{label}: not a valid verdict ({e})"]
    problems = []
    if not math.isclose(v.log_p_value, ref.log_p_value, rel_tol=_REL_TOL):
        problems.append(f"{label}: log p-value is {v.log_p_value!r}, recomputed "
                        f"{ref.log_p_value!r} from {v.matches}/{v.total} at chance {v.chance:g}")
    if not math.isclose(v.p_value, ref.p_value, rel_tol=_REL_TOL):
        problems.append(f"{label}: p-value is {v.p_value!r}, recomputed {ref.p_value!r} from "
                        f"{v.matches}/{v.total} at chance {v.chance:g}")
    log10 = d.get("log10_p_value", stats.log10_p(ref.log_p_value))
    if not isinstance(log10, (int, float)) or not math.isclose(
            log10, stats.log10_p(ref.log_p_value), rel_tol=_REL_TOL):
        problems.append(f"{label}: log10 p-value is {d['log10_p_value']!r}, recomputed "
                        f"{stats.log10_p(ref.log_p_value)!r}")
    if v.detected != ref.detected:
        problems.append(f"{label}: detected is {v.detected}, but p = "
                        f"{stats.format_p(ref.log_p_value)} vs alpha {v.alpha:g} gives "
                        f"{ref.detected}")
    if v.test != ref.test:
        problems.append(f"{label}: test is {v.test!r}, expected {ref.test!r}")
    if not _HEX64.fullmatch(v.commitment):
        problems.append(f"{label}: commitment is not 64 hex digits")
    return problems


def _opening_problems(openings: Any, verdicts: list[dict]) -> list[str]:
    if not isinstance(openings, list):
        return ["openings must be a list"]
    problems = []
    for i, opening in enumerate(openings):
        label = f"opening {i}"
        try:
            matched = [v for v in verdicts if isinstance(v, Mapping)
                       and _HEX64.fullmatch(str(v.get("commitment")))
                       and check_opening(v["commitment"], opening)]
        except (TypeError, ValueError) as e:
            problems.append(f"{label}: {e}")
            continue
        if not matched:
            problems.append(f"{label}: opens none of the verdicts' commitments")
            continue
        expected = _EXPECTED_TEST.get(opening.get("scheme"))
        if expected is None:
            continue
        try:
            total, chance = expected(opening)
        except (KeyError, TypeError, ZeroDivisionError):
            problems.append(f"{label}: {opening.get('scheme')} key body lacks its parameters")
            continue
        for v in matched:
            used = v.get("chance")
            if v.get("total") != total or not isinstance(used, (int, float)) \
                    or not math.isclose(used, chance, rel_tol=1e-12):
                problems.append(f"{label}: the key implies {total} trials at chance {chance:g}, "
                                f"the verdict used {v.get('total')} at {v.get('chance')}")
    return problems


def evidence(verdicts: Iterable[Verdict | Mapping], suspect_file: str | os.PathLike,
             opening: Mapping | list[Mapping] | None = None, identity: Identity | None = None,
             *, command: str | None = None, note: str | None = None) -> dict:
    """A signed evidence report that `suspect_file` carries the watermarks in `verdicts`.

    `opening`: reveal(key) output (or a list), included so the expert can check the key
    against its published commitment. `command`: the exact command that re-runs the check
    (default: this process's command line). Raises ValueError if the report would not pass
    check_evidence (an inconsistent verdict, an opening for another key, verdicts about a
    model whose weights differ from the suspect file's).
    """
    if not isinstance(identity, Identity):
        raise TypeError(f"identity must be an mlguard.Identity to sign the report, got "
                        f"{type(identity).__name__}")
    vds = [v.to_dict() if isinstance(v, Verdict) else dict(v) for v in verdicts]
    if not vds:
        raise ValueError("verdicts must not be empty")
    openings = [] if opening is None else [opening] if isinstance(opening, Mapping) \
        else list(opening)
    openings = [reveal(o) for o in openings]  # validates and copies
    suspect = _file_facts(os.fspath(suspect_file))
    if command is None:
        command = shlex.join([sys.executable] + sys.argv)
    doc = {"format": EVIDENCE_FORMAT, "version": VERSION, "created": _now(),
           "mlguard_version": __version__, "suspect": suspect, "verdicts": vds,
           "commitments": sorted({str(v.get("commitment")) for v in vds}),
           "openings": openings, "environment": environment(),
           "rerun": {"command": str(command), "cwd": os.getcwd()},
           "summary": {"detected": any(v.get("detected") is True for v in vds),
                       "verdicts": len(vds)}}
    if note is not None:
        doc["note"] = str(note)
    problems = _content_problems(doc)
    if problems:
        raise ValueError("evidence would not verify: " + "; ".join(problems))
    return sign_document(doc, identity)


def _content_problems(doc: Mapping) -> list[str]:
    """Everything checkable without the signature or the files."""
    verdicts = doc.get("verdicts")
    if not isinstance(verdicts, list) or not verdicts:
        return ["the document has no verdicts"]
    problems = []
    for i, v in enumerate(verdicts):
        problems += _verdict_problems(v, f"verdict {i}")
    listed = sorted({str(v.get("commitment")) for v in verdicts if isinstance(v, Mapping)})
    if doc.get("commitments") != listed:
        problems.append(f"commitments {doc.get('commitments')!r} differ from the verdicts' "
                        f"{listed!r}")
    problems += _opening_problems(doc.get("openings", []), verdicts)
    suspect = doc.get("suspect")
    if not isinstance(suspect, Mapping) or not _HEX64.fullmatch(str(suspect.get("sha256"))):
        problems.append("the suspect record is missing or has no SHA-256")
    elif suspect.get("state_dict_sha256") is not None:
        for i, v in enumerate(verdicts):
            if isinstance(v, Mapping) and v.get("model_sha256") != suspect["state_dict_sha256"]:
                problems.append(f"verdict {i}: checked a model with weights hash "
                                f"{v.get('model_sha256')}, but the suspect file's is "
                                f"{suspect['state_dict_sha256']}")
    summary = doc.get("summary", {})
    if isinstance(summary, Mapping) and summary.get("detected") != any(
            isinstance(v, Mapping) and v.get("detected") is True for v in verdicts):
        problems.append("summary.detected disagrees with the verdicts")
    return problems


def check_evidence(doc_or_path: Mapping | str | os.PathLike,
                   suspect_file: str | os.PathLike | None = None, *,
                   public_key: Any = None) -> list[str]:
    """Problems with an evidence report (empty list: everything checks).

    Verifies the signature (and, with `public_key`, that the owner signed it); recomputes
    each verdict's p-value and decision from its counts, chance and alpha; checks the listed
    commitments and every included opening; and with `suspect_file`, the file's SHA-256 and
    weights hash. What cannot be recomputed from these files (the model's answers to the
    triggers) is re-run with the command in doc["rerun"].
    """
    doc, problems = _load_signed(doc_or_path, EVIDENCE_FORMAT, "evidence report", public_key)
    if doc is None:
        return problems
    problems += _content_problems(doc)
    if suspect_file is not None:
        problems += _file_problems(doc.get("suspect"), os.fspath(suspect_file), "suspect file")
    return problems


# -- HTML ----------------------------------------------------------------------------------

def evidence_html(doc: Mapping, suspect_file: str | os.PathLike | None = None) -> str:
    """A self-contained, readable HTML page for an evidence report (all text escaped).

    The page shows the result of check_evidence at the time it was written.
    """
    e = html.escape
    problems = check_evidence(doc, suspect_file)
    status = ("<p class=ok>Signature and recomputation: all checks pass.</p>" if not problems
              else "<p class=bad>Problems found:</p><ul>" +
              "".join(f"<li>{e(p)}</li>" for p in problems) + "</ul>")
    rows = []
    for v in doc.get("verdicts", []):
        try:
            p = stats.format_p(float(v.get("log_p_value")))
        except (TypeError, ValueError):
            p = "?"
        rows.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in (
            v.get("scheme"), "DETECTED" if v.get("detected") else "not detected",
            f"{v.get('matches')}/{v.get('total')}", v.get("chance"), p, v.get("alpha"),
            v.get("test"), v.get("commitment"), v.get("device"))) + "</tr>")
    suspect = doc.get("suspect", {})
    signer = doc.get("signer", {})
    env = doc.get("environment", {})
    opened = ", ".join(str(o.get("scheme")) for o in doc.get("openings", [])) or "none"
    head = ("scheme", "result", "matches", "chance", "p-value", "alpha (threshold)", "test",
            "key commitment", "device")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mlguard evidence report</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}
td,th{{border:1px solid #ccc;padding:.3em;font-size:.9em;word-break:break-all}}
table{{border-collapse:collapse}} .ok{{color:#060}} .bad{{color:#a00}}
pre{{background:#f4f4f4;padding:.5em;white-space:pre-wrap}}</style></head><body>
<h1>mlguard evidence report</h1>
{status}
<h2>Suspect model file</h2>
<p>{e(str(suspect.get('file')))} &mdash; {e(str(suspect.get('size')))} bytes<br>
SHA-256 <code>{e(str(suspect.get('sha256')))}</code><br>
weights hash <code>{e(str(suspect.get('state_dict_sha256')))}</code></p>
<h2>Verdicts</h2>
<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>
{''.join(rows)}</table>
<p>Key openings included: {e(opened)}</p>
<h2>Re-run the check</h2>
<pre>{e(str(doc.get('rerun', {}).get('command')))}</pre>
<p>in <code>{e(str(doc.get('rerun', {}).get('cwd')))}</code>. Verify this report with
<code>mlguard evidence check REPORT.json --suspect SUSPECT_FILE --public-key OWNER_KEY</code>.</p>
<h2>Environment</h2>
<ul>{''.join(f'<li>{e(str(k))}: {e(str(v))}</li>' for k, v in sorted(env.items()))}</ul>
<h2>Signature</h2>
<p>Created {e(str(doc.get('created')))} with mlguard {e(str(doc.get('mlguard_version')))}.
Signed ({e(str(signer.get('algorithm')))}) by public key
<code>{e(str(signer.get('public_key')))}</code>.</p>
</body></html>
"""
