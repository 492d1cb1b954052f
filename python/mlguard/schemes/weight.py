"""weight: a message in keyed random projections of chosen weights (white-box).

Uchida et al., "Embedding watermarks into deep neural networks", ICMR 2017: a regularizer
(Sec. 3.2, Eq. 3-4) drives sigmoid(X w) towards the message bits, w the (reduced) target
weights and X a secret projection; the message is read as sign(X w) (Sec. 3.3). mlguard
draws X from the key's secret (keyed_projection, docs/projection.md) and reads it from the
state_dict alone, optionally after aligning a permuted, rescaled or widened copy to the
owner's reference model (weights/align.py).

The null is exact: the message bits are uniform and secret (derived from the key's secret),
and a model whose weights are independent of the secret reads each bit correctly with
probability 1/2, so matches ~ Binomial(bits, 1/2).

Key: keys/weight_key.py (WeightKey). Training: weights/watermark.py (WeightWatermark).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from ..keys.weight_key import SCHEME, WeightKey
from ..ops.keyed_projection import read_bits
from ..weights.watermark import WeightWatermark
from .base import Embedding, Reading, ReadOptions, Scheme, Suspect, register_scheme


class RegularizerEmbedding(Embedding):
    """A WeightWatermark as an Embedding: ``loss`` adds its regularizer."""

    def __init__(self, watermark: WeightWatermark):
        self.watermark = watermark

    def loss(self, model, x, y):
        return self.watermark.loss(model)


@register_scheme
class WeightScheme(Scheme):
    name = SCHEME
    key_type = WeightKey
    summary = ("weight-space: message bits in keyed projections of chosen weights (Uchida "
               "et al., ICMR 2017); read from the state_dict alone")
    needs_module = False
    models_per_call = 64  # one batched projection for many models
    aligns_to_reference = True

    # -- keys -------------------------------------------------------------------------------

    @classmethod
    def generate(cls, *, secret=None, **options) -> WeightKey:
        return WeightKey.generate(secret=secret, **options)

    @classmethod
    def add_arguments(cls, q: argparse.ArgumentParser) -> None:
        from ..cli._args import add_arch_arguments  # the CLI's shared --arch options

        q.add_argument("--bits", type=int, default=256, help="message bits (default 256)")
        q.add_argument("--targets", nargs="+", required=True, metavar="NAME",
                       help="parameter names that carry the message, or 'auto' with --arch for "
                            "the model's largest weight matrix")
        q.add_argument("--reduce", default="none", help="reduction of the targets (default none)")
        add_arch_arguments(q, "the model, to resolve 'auto' and check the targets now")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> WeightKey:
        from ..cli._args import build_arch

        model = build_arch(args.arch, args.arch_kwargs)
        targets = "auto" if args.targets == ["auto"] else tuple(args.targets)
        return WeightKey.generate(args.bits, targets, args.reduce, model=model)

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def embedding(cls, key: WeightKey, strength: float = 0.01) -> RegularizerEmbedding:
        """WeightWatermark(key, strength): Uchida's regularizer added to the loss."""
        return RegularizerEmbedding(WeightWatermark(key, strength))

    # -- reading ----------------------------------------------------------------------------

    @classmethod
    def read(cls, key: WeightKey, suspect: Suspect, options: ReadOptions) -> Reading:
        reading = _read([key], [suspect], options, prefix="")[0][0]
        if isinstance(reading, Exception):
            raise reading
        return reading

    @classmethod
    def read_many(cls, keys: Sequence[WeightKey], suspects: Sequence[Suspect],
                  options: ReadOptions) -> list[list[Reading | Exception]]:
        """Keys that share targets, reduction, length and read definition (projection) form
        a group; its weight vectors of all suspects are stacked and read with every key's
        seed in one batched projection. With ``options.reference`` each suspect is first
        aligned once for all keys, matching on what none of the keys reads."""
        return _read(keys, suspects, options, prefix="weight key: ")

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        return body["bits"], 0.5

    # -- names and attacks ------------------------------------------------------------------

    @classmethod
    def attacker_key(cls, key: WeightKey) -> WeightKey:
        """A fresh key on the owner's targets."""
        return WeightKey.generate(bits=key.bits, targets=key.targets, reduce=key.reduce)


def _read(keys, suspects, options: ReadOptions, prefix: str) -> list[list[Reading | Exception]]:
    for i, key in enumerate(keys):
        if not isinstance(key, WeightKey):
            raise TypeError(f"keys[{i}] must be a WeightKey, got {type(key).__name__}")
    invariance: list[dict] = []
    states: list = []
    for suspect in suspects:
        state = suspect.state_dict
        if state is None:
            raise ValueError("weight keys read the suspect's state_dict; none was given")
        record: dict = {"permutation_invariant": False}
        if options.reference is not None:
            from ..weights.align import align  # weights imports verification, which uses us
            try:
                state, alignment = align(state, options.reference,
                                         exclude={t for k in keys for t in k.targets})
                record = {"permutation_invariant": True, "alignment": alignment.to_dict()}
            except Exception as e:  # one model's failure must not fail the others
                if len(suspects) == 1 and not prefix:
                    raise
                state = ValueError(f"{prefix}alignment to the reference failed: "
                                   f"{type(e).__name__}: {e}"[:300])
        states.append(state)
        invariance.append(record)
    device = suspects[0].device if suspects else torch.device("cpu")
    good = [n for n, s in enumerate(states) if not isinstance(s, Exception)]
    answers = read_stacked([states[n] for n in good], keys, device)
    out: list[list[Reading | Exception]] = [[states[n]] * len(keys)
                                            if isinstance(states[n], Exception) else []
                                            for n in range(len(states))]
    for n, row in zip(good, answers):
        for key, answer in zip(keys, row):
            if isinstance(answer, Exception):
                out[n].append(type(answer)(f"{prefix}{answer}"))
            else:
                matches, bits = answer
                out[n].append(Reading(matches, bits, 0.5, {
                    "bit_error_rate": 1 - matches / bits, "targets": list(key.targets),
                    "reduce": key.reduce, **invariance[n]}))
    return out


def read_stacked(state_dicts: list, keys: list[WeightKey],
                 device: torch.device) -> list[list[tuple[int, int] | Exception]]:
    """(matches, bits) per model and key, or the pair's ValueError: one read_bits call per
    (targets, reduce, bits, projection) group and per target size over all models, one
    finite check per stack (one host synchronization on a GPU, not one per model)."""
    answers: list[list] = [[None] * len(keys) for _ in state_dicts]
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault((key.targets, key.reduce, key.bits, key.projection), []).append(i)
    for (_targets, _reduce, bits, projection), members in groups.items():
        lead = keys[members[0]]
        vectors: dict[int, torch.Tensor] = {}
        for n, sd in enumerate(state_dicts):
            try:
                vectors[n] = lead.gather(sd).detach()
            except ValueError as e:
                for i in members:
                    answers[n][i] = ValueError(str(e))
        by_length: dict[int, list[int]] = {}
        for n, w in vectors.items():  # models whose targets differ in size cannot be stacked
            by_length.setdefault(w.numel(), []).append(n)
        seeds = torch.tensor([keys[i].seed for i in members], device=device)
        messages = torch.stack([keys[i].message_tensor(device) for i in members])
        for models in by_length.values():
            stacked = torch.stack([vectors[n].to(device).reshape(-1) for n in models])
            finite = torch.isfinite(stacked).all(dim=1).tolist()
            for n, ok in zip(models, finite):
                if not ok:
                    for i in members:
                        answers[n][i] = ValueError("the target weights contain NaN or inf")
            if not all(finite):
                keep = [j for j, ok in enumerate(finite) if ok]
                models = [models[j] for j in keep]
                if not models:
                    continue
                stacked = stacked[keep]
            read = read_bits(stacked, seeds, bits, projection).long()  # (N, K, T)
            matches = (read == messages).sum(dim=2).tolist()
            for row, n in zip(matches, models):
                for i, m in zip(members, row):
                    answers[n][i] = (m, bits)
    return answers


def check_weights(state_dicts: list[dict], keys: list[WeightKey], device: torch.device) -> list:
    """read_stacked in the form of scan.register_state_dict_checker's functions:
    (matches, bits, 0.5, extra) or an error string per model and key."""
    return [[f"weight key: {a}" if isinstance(a, Exception)
             else (a[0], a[1], 0.5, {"bit_error_rate": 1 - a[0] / a[1]}) for a in row]
            for row in read_stacked(state_dicts, keys, device)]
