"""DAWN: Szyller, Atli, Marchal and Asokan, "DAWN: Dynamic Adversarial Watermarking of Neural
Networks", ACM Multimedia 2021.

DAWN marks no model: it marks the *answers* of the owner's prediction API, so that a model
extracted through the API (trained on its answers) carries the mark. What the paper does, and
where this file follows it:

- **Which queries** (Sec. 4, "watermark selection"): a keyed function of the query decides,
  for a fraction `rate` (the paper's r) of all queries, that the answer is watermarked; the
  same query always gets the same decision (so repeating a query reveals nothing). Here:
  HMAC-SHA256 under an HKDF sub-key of the secret, over the query's dtype, shape and bytes,
  read as a 64-bit number and compared with rate * 2^64.
- **Which answer** (Sec. 4, "watermark labels"): a watermarked query gets a keyed *wrong*
  label instead of the model's. Here: keyed draws uniform over the C classes (HMAC under a
  second sub-key, over the query and a counter, by exact rejection sampling), the first one
  that differs from the owner model's answer.
- **The record** (Sec. 4): the API stores the watermarked (query, label) pairs; here an
  append-only JSON-lines file (`DawnRecord`, no pickle: base64 bytes with dtype and shape).
- **Verification** (Sec. 4/5): the suspect's answers on the recorded queries; a match is the
  keyed label. The paper compares the watermark accuracy with a threshold; here it is the
  exact binomial test below.

**The null, exact (a bound).** For a recorded query x with owner answer f(x), the label L is
uniform over the C - 1 classes other than f(x), drawn by HMAC from the secret, so it is
independent of any model g that was not trained on the API's answers (H0). Then
P(g(x) = L) = sum over c != f(x) of P(g(x) = c) / (C - 1) <= 1/(C - 1), with equality when g
never answers f(x). Distinct queries get independent draws (distinct HMAC inputs; the record
keeps one entry per query), so the matches of an independent model are at most
Binomial(n, 1/(C - 1)): ``chance = 1/(C - 1)``, exact as a bound, no calibration. The
selection uses another sub-key, so which queries are recorded says nothing about the labels.
What the verdict trusts: the record's owner answers f(x) (checked against the owner's model
with `DawnRecord.check_answers`); a changed answer can move a label only to the next keyed
draw, and every label is recomputed from the secret when a record is loaded.

`embedding()` adds nothing to training (the base Embedding): DAWN acts at serving time.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._checks import check_int, check_real
from ..keys import keyfile
from ..keys.base import Key
from .base import Embedding, Reading, ReadOptions, Scheme, Suspect, register_scheme

SCHEME = "dawn"
RECORD_FORMAT = "mlguard-dawn-record"
RECORD_VERSION = 1
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "uint8": torch.uint8, "int64": torch.int64}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_DRAWS = 256  # rejection rounds; needing more has probability below 2**-250 for C >= 2


def query_bytes(row: torch.Tensor) -> bytes:
    """The canonical bytes of one query: dtype, shape and little-endian contents (CPU)."""
    if row.dtype not in _NAMES:
        raise ValueError(f"queries must be one of {sorted(_DTYPES)}, got {row.dtype}")
    row = row.detach().cpu().contiguous()
    raw = (row.view(torch.int16) if row.dtype == torch.bfloat16 else row).numpy()
    head = json.dumps([_NAMES[row.dtype], list(row.shape)]).encode()
    return head + b"\0" + raw.astype(raw.dtype.newbyteorder("<"), copy=False).tobytes()


@dataclass(frozen=True)
class DawnKey(Key):
    """A DAWN key: the secret, the number of classes and the rate r. A key for verification
    also holds a snapshot of the record (`with_records`), which its commitment covers."""

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    num_classes: int
    rate: float
    records: dict | None = field(default=None, repr=False)  # _encode_records() form
    label: str | None = field(default=None, compare=False)
    path: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def generate(cls, num_classes: int, rate: float = 0.05, *,
                 secret: bytes | str | None = None, label: str | None = None) -> DawnKey:
        """A new serving key. `rate`: the fraction of queries answered with keyed labels
        (WRT's DAWN configuration uses 0.05; the paper studies 0.5% to 5%)."""
        return cls._checked(secret=keyfile.secret_or_new(secret), nonce=keyfile.new_nonce(),
                            num_classes=num_classes, rate=rate, records=None, label=label)

    @classmethod
    def _checked(cls, *, secret, nonce, num_classes, rate, records, label=None) -> DawnKey:
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        num_classes = check_int("num_classes", num_classes, low=3)  # 1/(C-1) < 1
        rate = check_real("rate", rate, low=0, high=1, low_open=True, high_open=True,
                          noun="a fraction")
        key = cls(secret=bytes(secret), nonce=bytes(nonce), num_classes=num_classes,
                  rate=rate, records=records, label=keyfile.check_label(label))
        if records is not None:
            key._decoded  # noqa: B018 -- checks the snapshot: shapes, labels from the secret
        return key

    def to_body(self) -> dict:
        body = {"scheme": SCHEME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "num_classes": self.num_classes, "rate": self.rate}
        if self.records is not None:
            body["records"] = self.records
        return body

    @classmethod
    def from_body(cls, body: dict) -> DawnKey:
        try:
            if body["scheme"] != SCHEME:
                raise ValueError(f"scheme must be {SCHEME!r}, got {body['scheme']!r}")
            unknown = set(body) - {"scheme", "secret", "nonce", "num_classes", "rate", "records"}
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            return cls._checked(secret=keyfile.secret_from_hex(body["secret"]),
                                nonce=bytes.fromhex(body["nonce"]),
                                num_classes=body["num_classes"], rate=body["rate"],
                                records=body.get("records"))
        except (KeyError, TypeError) as e:
            raise ValueError(f"DAWN key body is missing or has a bad field: {e!r}") from None

    # -- the keyed functions -----------------------------------------------------------------

    @cached_property
    def _select_key(self) -> bytes:
        return keyfile.derive_key_bytes(self.secret, "dawn/select")

    @cached_property
    def _label_key(self) -> bytes:
        return keyfile.derive_key_bytes(self.secret, "dawn/label")

    def selected(self, data: bytes) -> bool:
        """Whether the query with canonical bytes `data` gets a watermarked answer."""
        word = int.from_bytes(hmac.digest(self._select_key, data, "sha256")[:8], "big")
        return word < int(self.rate * 2.0**64)

    def keyed_label(self, data: bytes, answer: int) -> int:
        """The keyed wrong label for a query whose owner answer is `answer`: the first keyed
        draw uniform over the classes (exact rejection sampling) that is not `answer`."""
        c = self.num_classes
        limit = (1 << 64) - (1 << 64) % c
        for counter in range(_MAX_DRAWS):
            digest = hmac.digest(self._label_key, counter.to_bytes(4, "big") + data, "sha256")
            for i in range(0, 32, 8):
                word = int.from_bytes(digest[i:i + 8], "big")
                if word < limit and word % c != answer:
                    return word % c
        raise RuntimeError("keyed_label found no label (probability below 2**-250)")

    # -- the verification snapshot -----------------------------------------------------------

    def with_records(self, record, max_records: int | None = None) -> DawnKey:
        """This key holding the record's entries (a DawnRecord or its path; the first
        `max_records` distinct queries): the key to verify with. Every entry is checked
        against the secret (selected, label recomputed), so a record of another key or an
        edited one is refused."""
        if not isinstance(record, DawnRecord):
            record = DawnRecord(record)
        entries = record.entries()
        if max_records is not None:
            entries = entries[:check_int("max_records", max_records, low=1)]
        if not entries:
            raise ValueError(f"the record {record.path} has no entries: nothing to verify")
        return DawnKey._checked(secret=self.secret, nonce=self.nonce,
                                num_classes=self.num_classes, rate=self.rate,
                                records=_encode_records(entries), label=self.label)

    @cached_property
    def _decoded(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(queries (N, ...), owner answers (N,), keyed labels (N,)) of the snapshot."""
        if self.records is None:
            raise ValueError("this DAWN key holds no recorded queries: verify with "
                             "key.with_records(record) (the serving wrapper's record)")
        queries, answers, labels = _decode_records(self.records, self.num_classes)
        seen = set()
        for i in range(len(queries)):
            data = query_bytes(queries[i])
            digest = hashlib.sha256(data).digest()
            if digest in seen:
                raise ValueError(f"records: query {i} appears twice (one trial per query)")
            seen.add(digest)
            if not self.selected(data):
                raise ValueError(f"records: query {i} is not one this key watermarks (a "
                                 "record of another key, or an edited query)")
            if self.keyed_label(data, int(answers[i])) != int(labels[i]):
                raise ValueError(f"records: query {i}'s label is not the keyed label (an "
                                 "edited record, or one of another key)")
        return queries, answers, labels

    @property
    def size(self) -> int:
        return 0 if self.records is None else len(self.records["labels"])


def _encode_records(entries: list[tuple[torch.Tensor, int, int]]) -> dict:
    shapes = {(e[0].dtype, tuple(e[0].shape)) for e in entries}
    if len(shapes) != 1:
        raise ValueError(f"records: queries of several dtypes/shapes {sorted(map(str, shapes))}"
                         "; verify one model's queries (one input shape) at a time")
    stacked = torch.stack([e[0] for e in entries]).contiguous()
    return {"dtype": _NAMES[stacked.dtype], "shape": list(stacked.shape),
            "data": base64.b64encode(zlib.compress(query_bytes_raw(stacked), 9)).decode(),
            "answers": [int(e[1]) for e in entries], "labels": [int(e[2]) for e in entries]}


def query_bytes_raw(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    arr = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _from_raw(raw: bytes, dtype_name: str, shape) -> torch.Tensor:
    if dtype_name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype_name!r}")
    if not (isinstance(shape, list) and all(isinstance(s, int) and not isinstance(s, bool)
                                            and s >= 0 for s in shape)):
        raise ValueError(f"shape must be a list of ints >= 0, got {shape!r}")
    dtype = _DTYPES[dtype_name]
    np_dtype = np.dtype("<i2") if dtype == torch.bfloat16 else \
        np.dtype(torch.empty(0, dtype=dtype).numpy().dtype).newbyteorder("<")
    count = int(np.prod(shape)) if shape else 1
    if len(raw) != count * np_dtype.itemsize:
        raise ValueError(f"data holds {len(raw)} bytes, shape {shape} of {dtype_name} needs "
                         f"{count * np_dtype.itemsize}")
    arr = np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("="))
    out = torch.from_numpy(arr.copy()).reshape(shape)
    return out.view(torch.bfloat16) if dtype == torch.bfloat16 else out


def _class_list(name: str, values, count: int, num_classes: int) -> torch.Tensor:
    if not isinstance(values, list) or len(values) != count:
        raise ValueError(f"records: {name} must be a list of {count} ints")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < num_classes:
            raise ValueError(f"records: {name} must be classes in [0, {num_classes}), got {v!r}")
    return torch.tensor(values, dtype=torch.int64)


def _decode_records(doc, num_classes: int):
    if not isinstance(doc, dict) or set(doc) != {"dtype", "shape", "data", "answers", "labels"}:
        raise ValueError("records must be an object with dtype, shape, data, answers, labels")
    if not isinstance(doc["data"], str):
        raise ValueError("records: data must be base64 text")
    try:
        raw = zlib.decompress(base64.b64decode(doc["data"], validate=True))
    except (ValueError, zlib.error) as e:
        raise ValueError(f"records: data is not base64 zlib: {e}") from None
    queries = _from_raw(raw, doc["dtype"], doc["shape"])
    if queries.dim() < 2 or queries.shape[0] < 1:
        raise ValueError(f"records: shape must be (N >= 1, ...), got {doc['shape']}")
    n = queries.shape[0]
    return (queries, _class_list("answers", doc["answers"], n, num_classes),
            _class_list("labels", doc["labels"], n, num_classes))


class DawnRecord:
    """The append-only file of watermarked queries (JSON lines; no pickle). The first line
    says the format and the key id; each further line is one query: its dtype, shape, base64
    bytes, SHA-256, the owner model's answer and the keyed label served."""

    def __init__(self, path: str | os.PathLike, key: DawnKey | None = None):
        self.path = Path(path)
        self._seen: set[str] | None = None
        if key is not None and not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "x", encoding="ascii") as f:
                f.write(json.dumps({"format": RECORD_FORMAT, "version": RECORD_VERSION,
                                    "key_id": key.key_id}) + "\n")
        elif not self.path.exists():
            raise FileNotFoundError(f"DAWN record {self.path} does not exist")
        header = self._header()
        if key is not None and header["key_id"] != key.key_id:
            raise ValueError(f"DAWN record {self.path} belongs to key {header['key_id']}, "
                             f"not {key.key_id}")

    def _lines(self) -> Iterable[tuple[int, dict]]:
        with open(self.path, encoding="ascii") as f:
            for number, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    raise ValueError(f"DAWN record {self.path}: line {number} is incomplete "
                                     "(an interrupted write?)")
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"DAWN record {self.path}: line {number} is not JSON: "
                                     f"{e}") from None
                if not isinstance(doc, dict):
                    raise ValueError(f"DAWN record {self.path}: line {number} is not an object")
                yield number, doc

    def _header(self) -> dict:
        for _, doc in self._lines():
            if doc.get("format") != RECORD_FORMAT or doc.get("version") != RECORD_VERSION \
                    or not isinstance(doc.get("key_id"), str):
                raise ValueError(f"{self.path} is not a DAWN record (version "
                                 f"{RECORD_VERSION})")
            return doc
        raise ValueError(f"{self.path} is empty, not a DAWN record")

    def entries(self) -> list[tuple[torch.Tensor, int, int]]:
        """(query, owner answer, keyed label) per distinct query, in the order recorded."""
        out, seen = [], set()
        for number, doc in self._lines():
            if number == 1:
                continue
            try:
                raw = base64.b64decode(doc["data"], validate=True)
                query = _from_raw(raw, doc["dtype"], doc["shape"])
                if hashlib.sha256(query_bytes(query)).hexdigest() != doc["sha256"]:
                    raise ValueError("its sha256 does not match its data")
                answer, label = doc["answer"], doc["label"]
                if not all(isinstance(v, int) and not isinstance(v, bool)
                           for v in (answer, label)):
                    raise ValueError("answer and label must be ints")
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"DAWN record {self.path}: line {number}: {e}") from None
            if doc["sha256"] not in seen:
                seen.add(doc["sha256"])
                out.append((query, answer, label))
        return out

    def append(self, queries: torch.Tensor, answers: torch.Tensor, labels: torch.Tensor) -> int:
        """Appends the queries not recorded yet (one line each, flushed); returns how many."""
        if self._seen is None:
            self._seen = {doc.get("sha256") for n, doc in self._lines() if n > 1}
        lines = []
        for q, a, y in zip(queries, answers.tolist(), labels.tolist()):
            data = query_bytes(q)
            digest = hashlib.sha256(data).hexdigest()
            if digest in self._seen:
                continue
            self._seen.add(digest)
            lines.append(json.dumps({
                "sha256": digest, "dtype": _NAMES[q.dtype], "shape": list(q.shape),
                "data": base64.b64encode(query_bytes_raw(q)).decode(), "answer": int(a),
                "label": int(y)}) + "\n")
        if lines:
            with open(self.path, "a", encoding="ascii") as f:
                f.write("".join(lines))
                f.flush()
        return len(lines)

    def __len__(self) -> int:
        return len(self.entries())

    def check_answers(self, model: nn.Module, batch_size: int = 256) -> int:
        """How many recorded owner answers differ from `model`'s (the owner's): 0 for a
        record that `model` served."""
        entries = self.entries()
        if not entries:
            return 0
        from .ewe import predict

        got = predict(model, torch.stack([e[0] for e in entries]), batch_size)
        return int((got != torch.tensor([e[1] for e in entries])).sum())


class DawnWrapper(nn.Module):
    """The owner's model behind DAWN: ``wrapper(x)`` answers like the model, except that the
    keyed fraction `rate` of queries (by their bytes) get the keyed wrong label, recorded in
    `record` (a DawnRecord or a path; None records nothing). `output`: "logits" (the model's,
    with the keyed label's logit swapped with the top one, so the argmax is the keyed label)
    or "labels" (int64 classes)."""

    is_api = True  # answers, not a network: extraction attacks need the student's architecture

    def __init__(self, model: nn.Module, key: DawnKey, record=None, output: str = "logits"):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(key, DawnKey):
            raise TypeError(f"key must be a DawnKey, got {type(key).__name__}")
        if output not in ("logits", "labels"):
            raise ValueError(f"output must be 'logits' or 'labels', got {output!r}")
        self.model, self.key, self.output = model, key, output
        self.record = record if record is None or isinstance(record, DawnRecord) \
            else DawnRecord(record, key)
        self.served = 0
        self.watermarked = 0

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError(f"x must be a batch of queries (N, ...), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        logits = self.model(x)
        if logits.dim() != 2 or logits.shape[1] != self.key.num_classes:
            raise ValueError(f"the model gives {tuple(logits.shape)} outputs, the key is for "
                             f"{self.key.num_classes} classes")
        answers = logits.argmax(1).cpu()
        served = answers.clone()
        marked = []
        queries = x.detach().cpu()  # one copy, not one per query
        for i in range(len(queries)):
            data = query_bytes(queries[i])
            if self.key.selected(data):
                served[i] = self.key.keyed_label(data, int(answers[i]))
                marked.append(i)
        self.served += len(x)
        self.watermarked += len(marked)
        if marked and self.record is not None:
            idx = torch.tensor(marked)
            self.record.append(queries[idx], answers[idx], served[idx])
        if self.output == "labels":
            return served.to(logits.device)
        out = logits.clone()
        if marked:
            rows = torch.tensor(marked, device=out.device)
            top, wrong = answers[marked].to(out.device), served[marked].to(out.device)
            a, b = out[rows, top].clone(), out[rows, wrong].clone()
            out[rows, top], out[rows, wrong] = b, a
        return out


@register_scheme
class Dawn(Scheme):
    """DAWN (Szyller et al., ACM MM 2021); see the module docstring."""

    name = SCHEME
    key_type = DawnKey
    summary = ("DAWN (Szyller et al., ACM MM 2021): the serving API answers a keyed fraction "
               "of queries with keyed wrong labels; exact null 1/(C-1)")

    @classmethod
    def generate(cls, *, secret=None, **options) -> DawnKey:
        return DawnKey.generate(secret=secret, **options)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--num-classes", type=int, required=True)
        parser.add_argument("--rate", type=float, default=0.05,
                            help="fraction of queries answered with keyed labels (0.05)")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> DawnKey:
        return DawnKey.generate(args.num_classes, args.rate)

    @classmethod
    def embedding(cls, key, **options) -> Embedding:
        """Nothing: DAWN marks the API's answers (DawnWrapper), not the training."""
        if not isinstance(key, DawnKey):
            raise TypeError(f"key must be a DawnKey, got {type(key).__name__}")
        if options:
            raise ValueError(f"DAWN's embedding takes no options, got {sorted(options)}")
        return Embedding()

    @classmethod
    def read(cls, key: DawnKey, suspect: Suspect, options: ReadOptions) -> Reading:
        if suspect.module is None:
            raise ValueError("DAWN reads a model's answers: the suspect needs its module")
        queries, _, labels = key._decoded
        from .ewe import predict

        answers = predict(suspect.module, queries, options.batch_size)
        chance = 1.0 / (key.num_classes - 1)
        return Reading(int((answers == labels).sum()), len(labels), chance, extra={
            "null": (f"exact bound: each recorded query's label is keyed (HMAC of the secret "
                     f"and the query), uniform over the {key.num_classes - 1} classes other "
                     "than the owner model's answer, so a model not trained on the API's "
                     f"answers matches it with probability <= 1/{key.num_classes - 1}"),
            "rate": key.rate})

    @classmethod
    def attacker_key(cls, key: DawnKey) -> DawnKey:
        """A fresh serving key like `key` (another secret, no record)."""
        return DawnKey.generate(key.num_classes, key.rate)

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        key = DawnKey.from_body(body)
        if key.records is None:
            raise ValueError("a DAWN key without recorded queries cannot be verified")
        return key.size, 1.0 / (key.num_classes - 1)
