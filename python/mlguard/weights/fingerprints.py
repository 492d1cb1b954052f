"""Customer fingerprints: one key per buyer, all derived from one master secret.

A shop that sells one base model to many customers gives each a copy fine-tuned briefly
with that customer's key; a leaked copy then names its buyer.
"""

from __future__ import annotations

import dataclasses
import difflib
import html
import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..keys import TriggerKey, WeightKey, keyfile
from ..verification import stats
from ..verification.verdict import Verdict
from ..verification.verify import verify, verify_weights_many

SCHEMES = {"weight": WeightKey, "trigger": TriggerKey}


@dataclass
class Identification:
    """The best-matching customer, or None when no key is significant after correction."""

    customer: str | None
    adjusted_p_value: float  # Bonferroni over the customers tried, capped at 1
    log_adjusted_p_value: float
    verdict: Verdict  # the best customer's own (uncorrected) verdict
    tried: int

    def __str__(self) -> str:
        """One headline, then the best-matching customer's verdict (as Verdict prints)."""
        who = ("no customer identified" if self.customer is None
               else f"IDENTIFIED  customer {self.customer!r}")
        adjusted = stats.format_p(self.log_adjusted_p_value)
        return (f"{who} among {self.tried} (Bonferroni-adjusted p = {adjusted})\n"
                f"best-matching key:\n{self.verdict}")

    def _repr_html_(self) -> str:
        """For Jupyter: who was identified, the corrected p-value, and the best verdict."""
        who = (f"customer <b>{html.escape(self.customer)}</b>" if self.customer is not None
               else "no customer")
        return (f"<div>{who} identified among {self.tried} (Bonferroni-adjusted p = "
                f"{self.adjusted_p_value:.3g})<br>{self.verdict._repr_html_()}</div>")


class Fingerprints:
    """``reg = Fingerprints(master_secret, scheme="weight", bits=..., targets=...)``.

    Keyword arguments are passed to WeightKey.generate or TriggerKey.generate for every
    customer. Keys are reproducible: the same master secret and customer id always give
    the same key (and the same commitment). Weight keys need `targets`: parameter names, or
    "auto" with `model=` (resolved here, once, to the model's largest weight matrix; the
    model itself is not kept). The arguments are checked here, not at the first key_for.
    Weight keys use the exact projection 2 read (docs/projection.md); a registry made
    before it (mlguard 0.1) re-derives its customers' keys, commitments included, with
    projection=1. Every customer key carries its customer id as its `label` (saved in its
    key file, shown by scans; metadata, not part of the commitment).

    `issued`: the customer ids keys were issued to. `key_for` adds to it; `identify` refuses
    an id not in it (a mistyped id would otherwise be tested as a customer who never got a
    key, and find no one) and tests all of it when `customers` is left out. A registry
    re-created from its master secret must be given the ids issued before.
    """

    def __init__(self, master_secret: bytes | str, scheme: str = "weight", *,
                 issued: Iterable[str] = (), **key_args):
        if isinstance(master_secret, str):
            master_secret = keyfile.secret_from_hex(master_secret)
        if not isinstance(master_secret, (bytes, bytearray)):
            raise TypeError(f"master_secret must be bytes or a hex str, got "
                            f"{type(master_secret).__name__}")
        if len(master_secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"master_secret must be {keyfile.SECRET_BYTES} bytes, "
                             f"got {len(master_secret)}")
        if not isinstance(scheme, str) or scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {tuple(SCHEMES)}, got {scheme!r}")
        if "label" in key_args:
            raise ValueError(f"label={key_args['label']!r}: every customer key is labelled "
                             "with its customer id; no label is given to all of them")
        if scheme == "weight":
            # One check key (a throwaway secret) resolves "auto" and validates every argument
            # against the model, if given; customers' keys then record the resolved names.
            model = key_args.pop("model", None)
            check = WeightKey.generate(secret=bytes(keyfile.SECRET_BYTES), model=model, **key_args)
            key_args["targets"] = check.targets
        self._master, self.scheme, self.key_args = bytes(master_secret), scheme, key_args
        if isinstance(issued, str):
            raise TypeError(f"issued must be a collection of customer ids, got the str "
                            f"{issued!r}")
        self.issued: set[str] = set()
        for customer_id in issued:
            _check_id(customer_id)
            self.issued.add(customer_id)

    def key_for(self, customer_id: str) -> WeightKey | TriggerKey:
        """The customer's key; records `customer_id` as issued."""
        key = self._derive(customer_id)
        self.issued.add(customer_id)
        return key

    def _derive(self, customer_id: str) -> WeightKey | TriggerKey:
        _check_id(customer_id)
        secret = keyfile.derive_key_bytes(self._master, f"fingerprint/{customer_id}")
        key = SCHEMES[self.scheme].generate(secret=secret, **self.key_args)
        # A derived nonce keeps each customer's commitment reproducible from the master.
        nonce = keyfile.derive_key_bytes(self._master, f"fingerprint-nonce/{customer_id}")
        return dataclasses.replace(key, nonce=nonce, label=_label(customer_id))

    def identify(self, model, customers: Iterable[str] | None = None,
                 alpha: float = 1e-6, reference=None) -> Identification:
        """Tests every customer's key (all issued ones by default); names the best if it
        survives Bonferroni correction. An id never issued is refused (see the class).

        `reference` (weight scheme): the shop's base or reference model; the suspect is
        aligned to it once (weights/align.py) before all customers' keys are read, so a
        buyer who permutes, rescales or widens their copy is still named."""
        if customers is None:
            if not self.issued:
                raise ValueError(
                    "no customer has been issued a key by this registry: derive their keys "
                    "with key_for(id), or give issued=[...] when re-creating the registry "
                    "from its master secret")
            customers = sorted(self.issued)
        if isinstance(customers, str):
            raise TypeError(f"customers must be a collection of ids, got the str {customers!r}")
        customers = list(customers)
        if not customers:
            raise ValueError("customers must not be empty")
        self.check_issued(customers)
        keys = [self._derive(cid) for cid in customers]
        if self.scheme == "weight":
            verdicts = verify_weights_many(model, keys, alpha, reference)  # one batched read
        else:
            verdicts = [verify(model, k, alpha=alpha) for k in keys]
        best_id, best = min(zip(customers, verdicts), key=lambda cv: cv[1].log_p_value)
        log_adj = min(0.0, best.log_p_value + math.log(len(customers)))
        return Identification(customer=best_id if log_adj < math.log(alpha) else None,
                              adjusted_p_value=math.exp(log_adj), log_adjusted_p_value=log_adj,
                              verdict=best, tried=len(customers))

    def check_issued(self, customers: Iterable[str]) -> None:
        """ValueError naming every id never issued a key, with the closest issued ids."""
        unknown = [c for c in customers if c not in self.issued]
        if not unknown:
            return
        issued = sorted(self.issued)
        lines = []
        for c in unknown:
            close = difflib.get_close_matches(c, issued, n=3, cutoff=0.6)
            if not close:  # case slips ("Acme" for "acme") score low on raw characters
                close = [i for i in issued if i.casefold() == c.casefold()]
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            lines.append(f"{c!r}{hint}")
        raise ValueError(
            f"customer id{'s' if len(unknown) > 1 else ''} never issued a key: "
            f"{'; '.join(lines)}. {len(issued)} customer{'s' if len(issued) != 1 else ''} "
            "issued; testing an id that never got a key finds no one")


def _check_id(customer_id) -> None:
    if not isinstance(customer_id, str) or not customer_id:
        raise ValueError(f"customer_id must be a non-empty str, got {customer_id!r}")


def _label(customer_id: str) -> str | None:
    """The customer id as a key label; None for an id a label cannot hold (over 200
    characters, line breaks): the key itself, derived from the id, is the same either way."""
    try:
        return keyfile.check_label(customer_id)
    except ValueError:
        return None
