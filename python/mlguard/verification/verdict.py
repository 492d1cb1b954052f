"""The result of a watermark verification, and the model fingerprint it cites.

A ``Verdict`` records everything needed to re-check or cite a detection: the
raw counts, the exact p-value (also as a natural log, because it is often far
below the double range), the significance level, the key commitment, the
weights hash of the checked model (``weights_sha256``, see ``state_dict_sha256``)
and, when the model came from a file, the SHA-256 of the file's bytes.

``weights_sha256`` was called ``model_sha256`` before; ``from_dict`` reads either.
``key_label`` (the key's human label, e.g. a customer id) is shown, never tested: it is
not part of the commitment, and ``to_dict`` leaves it out when the key has none.

``reads`` is the number of reads of the same suspect and key the counts were chosen from
(the one with the smallest p): the p-value is the union bound min(1, reads * binomial
tail), exact-conservative whatever the dependence between the reads. A weight key read with
a reference is read twice, plain and aligned (schemes/weight.py). ``to_dict`` leaves it out
when it is 1, and ``from_dict`` reads a verdict without it as one read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch

from .._checks import check_int, check_probability, check_real
from .._version import __version__
from . import stats

__all__ = ["Verdict", "make_verdict", "state_dict_sha256"]

_STR_FIELDS = ("scheme", "commitment", "weights_sha256", "device", "mlguard_version", "test")
_OPTIONAL_STR_FIELDS = ("file_sha256", "key_label")
_RENAMED = {"model_sha256": "weights_sha256"}  # old name -> new name, read by from_dict
_INT_FIELDS = ("matches", "total")
_FLOAT_FIELDS = ("p_value", "log_p_value", "alpha", "chance")
_DERIVED_KEYS = ("log10_p_value",)  # written by to_dict, recomputed on load


@dataclass
class Verdict:
    """Outcome of one verification run (see ``make_verdict``)."""

    scheme: str  # e.g. "trigger-set"
    matches: int  # trials that agreed with the key
    total: int  # trials run
    p_value: float  # P(>= matches | H0); may underflow to 0.0
    log_p_value: float  # natural log of the p-value; always exact
    alpha: float  # significance level
    detected: bool  # p_value < alpha
    chance: float  # per-trial success probability under H0
    commitment: str  # hex key commitment (keyfile.commitment)
    weights_sha256: str  # state_dict_sha256 of the checked weights, in their dtypes
    device: str  # where the check ran, e.g. "cuda:0"
    mlguard_version: str
    test: str  # e.g. "exact one-sided binomial test, H0: P(match)=1/10"
    file_sha256: str | None = None  # SHA-256 of the model file's bytes, if read from a file
    extra: dict = field(default_factory=dict)  # scheme-specific figures
    key_label: str | None = None  # the key's label (metadata, not evidence), if it has one
    reads: int = 1  # reads the p-value is corrected for: p = min(1, reads * binomial tail)

    @property
    def model_sha256(self) -> str:
        """The old name of ``weights_sha256``."""
        return self.weights_sha256

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of all fields plus ``log10_p_value``."""
        d = dataclasses.asdict(self)
        if d["key_label"] is None:  # as verdicts were written before labels existed
            del d["key_label"]
        if d["reads"] == 1:  # as verdicts were written before the union bound
            del d["reads"]
        d["log10_p_value"] = stats.log10_p(self.log_p_value)
        try:
            # Round-trip so the result is plain JSON data (tuples -> lists, ...).
            return json.loads(json.dumps(d, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"Verdict is not JSON-serializable (check extra={self.extra!r}): {e}"
            ) from e

    def to_json(self, indent: int | None = 2) -> str:
        """``to_dict()`` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        """Rebuild a Verdict from ``to_dict()`` output (e.g. a parsed JSON file), also as
        written by older versions (``model_sha256``, no ``file_sha256``)."""
        if not isinstance(d, Mapping):
            raise TypeError(f"d must be a mapping, got {type(d).__name__}")
        d = dict(d)
        for old, new in _RENAMED.items():
            if old in d:
                if new in d and d[new] != d[old]:
                    raise ValueError(f"d has both {new}={d[new]!r} and its old name "
                                     f"{old}={d[old]!r}, and they differ")
                d[new] = d.pop(old)
        names = [f.name for f in dataclasses.fields(cls)]
        optional = ("extra", "reads", *_OPTIONAL_STR_FIELDS)
        unknown = sorted(set(d) - set(names) - set(_DERIVED_KEYS))
        missing = [n for n in names if n not in optional and n not in d]
        if unknown or missing:
            raise ValueError(
                f"d is not a Verdict dict: missing fields {missing}, unknown fields {unknown}"
            )
        kwargs: dict[str, Any] = {}
        for name in _STR_FIELDS:
            kwargs[name] = _expect(name, d[name], str)
        for name in _OPTIONAL_STR_FIELDS:
            if d.get(name) is not None:
                kwargs[name] = _expect(name, d[name], str)
        for name in _INT_FIELDS:
            kwargs[name] = check_int(name, d[name])
        for name in _FLOAT_FIELDS:
            kwargs[name] = check_real(name, d[name], finite=False)
        kwargs["reads"] = _check_reads(d.get("reads", 1))
        kwargs["detected"] = _expect("detected", d["detected"], bool)
        kwargs["extra"] = dict(_expect("extra", d.get("extra", {}), dict))
        return cls(**kwargs)

    def _repr_html_(self) -> str:
        """The verdict as a small table, for Jupyter (every value escaped)."""
        status = "DETECTED" if self.detected else "NOT DETECTED"
        color = "#b00020" if self.detected else "#1b5e20"
        rows = [("test", self.test), ("matches", f"{self.matches}/{self.total}"),
                ("p-value", stats.format_p(self.log_p_value)), ("alpha", f"{self.alpha:g}"),
                *([("reads", str(self.reads))] if self.reads > 1 else []),
                *([("key", self.key_label)] if self.key_label is not None else []),
                ("key commitment", self.commitment), ("weights sha256", self.weights_sha256),
                ("file sha256", self.file_sha256 or "-"),
                ("run on", f"{self.device} with mlguard {self.mlguard_version}")]
        rows += [(str(k), str(v)) for k, v in sorted(self.extra.items())]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'><code>{html.escape(str(v))}</code></td></tr>"
                       for k, v in rows)
        return (f"<div><b style='color:{color}'>{status}</b> {html.escape(self.scheme)}"
                f"<table>{body}</table></div>")

    def __str__(self) -> str:
        status = "DETECTED" if self.detected else "NOT DETECTED"
        p = stats.format_p(self.log_p_value)
        lines = [
            f"{status}  {self.scheme}  {self.matches}/{self.total} matches  "
            f"p = {p} (alpha {self.alpha:g})  "
            f"key {_short_hex(self.commitment)}  weights {_short_hex(self.weights_sha256)}",
            f"  test:       {self.test}",
            f"  chance:     {self.chance:g} per trial "
            f"({self.chance * self.total:.4g} of {self.total} expected under H0)",
            f"  p-value:    {p} (log10 p = {stats.log10_p(self.log_p_value):.4f})",
            *([f"  reads:      {_reads_line(self.reads, self.total, self.extra)}"]
              if self.reads > 1 else []),
            *([f"  key label:  {self.key_label}"] if self.key_label is not None else []),
            f"  key commit: {self.commitment or '-'}",
            f"  weights:    sha256 {self.weights_sha256 or '-'}",
            f"  file:       sha256 {self.file_sha256 or '-'}",
            f"  run on:     {self.device or '-'} with mlguard {self.mlguard_version}",
        ]
        lines += [f"  {key}: {value}" for key, value in sorted(self.extra.items())
                  if not (key == "two_reads" and self.reads > 1)]  # on the reads line
        if not self.detected and self.extra.get("permutation_invariant") is False:
            # A weight read in the suspect's own coordinates: a copy whose hidden units were
            # permuted, rescaled or padded reads as noise, so say how to rule that out.
            lines.append("  note:       read without a reference model: a copy with permuted, "
                         "rescaled or added hidden units is not ruled out (verify with "
                         "reference=, or --reference FILE --arch M:F)")
        return "\n".join(lines)


def make_verdict(
    scheme: str,
    matches: int,
    total: int,
    chance: float,
    alpha: float,
    commitment: str,
    weights_sha256: str,
    device: str,
    extra: dict | None = None,
    file_sha256: str | None = None,
    key_label: str | None = None,
    reads: int = 1,
) -> Verdict:
    """Run the exact one-sided binomial test and package the result.

    H0: each of `total` trials matches the key independently with probability
    `chance` (e.g. 1/num_classes for a trigger set).  Detected means
    p < alpha, compared in log space so that tiny p-values stay exact.

    `reads` > 1: the counts are the most significant of that many reads of the same suspect
    and key; p = min(1, reads * binomial tail) (union bound, valid under any dependence).
    """
    if not isinstance(scheme, str) or not scheme:
        raise ValueError(f"scheme must be a non-empty str, got {scheme!r}")
    matches = check_int("matches", matches)
    total = check_int("total", total)
    if total <= 0:
        raise ValueError(f"total must be > 0, got {total!r}")
    if not 0 <= matches <= total:
        raise ValueError(f"matches must be in [0, total={total}], got {matches!r}")
    chance = check_probability("chance", chance)
    alpha = check_probability("alpha", alpha)
    _expect("commitment", commitment, str)
    _expect("weights_sha256", weights_sha256, str)
    _expect("device", device, str)
    if file_sha256 is not None:
        _expect("file_sha256", file_sha256, str)
    if key_label is not None:
        _expect("key_label", key_label, str)
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__} {extra!r}")
    reads = _check_reads(reads)

    log_p = stats.union_log_sf(matches, total, chance, reads)
    test = f"exact one-sided binomial test, H0: P(match)={_describe_chance(chance)}"
    if reads > 1:
        test += f"; {_describe_reads(reads)} (union bound)"
    return Verdict(
        scheme=scheme,
        matches=matches,
        total=total,
        p_value=math.exp(log_p),
        log_p_value=log_p,
        alpha=alpha,
        detected=log_p < math.log(alpha),
        chance=chance,
        commitment=commitment,
        weights_sha256=weights_sha256,
        device=device,
        mlguard_version=__version__,
        test=test,
        file_sha256=file_sha256,
        extra=dict(extra or {}),
        key_label=key_label,
        reads=reads,
    )


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """Hex SHA-256 of a state_dict's tensors, independent of device and dict order.

    Hashes, for each tensor entry in sorted name order, a length-prefixed
    header (name, dtype, shape, byte count) followed by the tensor's raw
    (little-endian) bytes.  Non-tensor entries such as ``_extra_state`` are
    skipped.  Tensors are copied to CPU one at a time.

    This is the verdicts' ``weights_sha256``: it identifies the weights as they are
    stored, so the dtype is part of it (an fp16 copy of a model hashes differently from the
    fp32 original). For a file it is taken over the file's unwrapped state_dict
    (files.checkpoint), which is also what ``load_model`` puts in the model: scan rows,
    ``verify`` on ``load_model(file)`` and evidence file records agree.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    bad = [k for k in state_dict if not isinstance(k, str)]
    if bad:
        raise TypeError(f"state_dict keys must be str, got {bad[:3]!r}")

    h = hashlib.sha256(b"mlguard-state-dict-v1\0")
    for name in sorted(state_dict):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach()
        if t.layout != torch.strided:
            raise TypeError(f"state_dict[{name!r}] has unsupported layout {t.layout}")
        if t.device.type == "meta":
            raise ValueError(f"state_dict[{name!r}] is on the meta device and has no data")
        shape = list(t.shape)
        # Materialize lazy conj/neg bits so equal values give equal bytes.
        flat = t.cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
        raw = flat.to(torch.uint8) if flat.dtype == torch.bool else flat.view(torch.uint8)
        data = raw.numpy()
        header = json.dumps([name, str(t.dtype), shape, data.nbytes], separators=(",", ":"))
        header = header.encode()
        h.update(len(header).to_bytes(8, "big"))
        h.update(header)
        h.update(memoryview(data))
    return h.hexdigest()


# --- helpers ----------------------------------------------------------------


def _expect(name: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _check_reads(reads: Any) -> int:
    if isinstance(reads, bool) or not isinstance(reads, int) or reads < 1:
        raise ValueError(f"reads must be an int >= 1 (the reads the p-value is corrected "
                         f"for), got {reads!r}")
    return reads


def _describe_reads(reads: int) -> str:
    """'two reads, p doubled' / '3 reads, p multiplied by 3'."""
    return "two reads, p doubled" if reads == 2 else f"{reads} reads, p multiplied by {reads}"


def _reads_line(reads: int, total: int, extra: dict) -> str:
    """E.g. 'two reads (plain, aligned), p doubled; used plain 96/96 (p 1.3e-29), aligned
    51/96 (p 0.31)' from a weight read's extra["two_reads"]; else the generic words."""
    generic = f"{_describe_reads(reads)}: the counts are the read with the smallest p"
    two = extra.get("two_reads")
    if not isinstance(two, dict) or not isinstance(two.get("test"), str):
        return generic
    parts = []
    try:  # a verdict loaded from a file: its extra is data, shown only if well formed
        for name in sorted((k for k, v in two.items() if isinstance(v, dict)),
                           key=lambda k: k != two.get("used")):
            r = two[name]
            got = (f"{r['matches']}/{total} (p "
                   f"{stats.format_p(float(r['log10_p_value']) * math.log(10))})"
                   if "matches" in r else f"failed: {r.get('error')}")
            parts.append(f"{'used ' if name == two.get('used') else ''}{name} {got}")
    except (KeyError, TypeError, ValueError):
        return generic
    return f"{two['test']}; {', '.join(parts)}"


def _describe_chance(chance: float) -> str:
    """'1/10' for chance 0.1 (reads naturally for 1/num_classes), else '0.37'."""
    frac = Fraction(chance).limit_denominator(10**6)
    if frac.numerator == 1 and abs(float(frac) - chance) <= 1e-12 * chance:
        return f"1/{frac.denominator}"
    return f"{chance:.6g}"


def _short_hex(value: str) -> str:
    return value[:4] + "\u2026" if value else "-"
