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
import math
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
    """Each (suspect, key) read plainly; with ``options.reference`` also after alignment,
    and the Reading is the read with the smaller p, corrected for both (reads=2)."""
    for i, key in enumerate(keys):
        if not isinstance(key, WeightKey):
            raise TypeError(f"keys[{i}] must be a WeightKey, got {type(key).__name__}")
    invariance: list[dict] = []
    states: list = []
    aligned: list = []
    for suspect in suspects:
        state = suspect.state_dict
        if state is None:
            raise ValueError("weight keys read the suspect's state_dict; none was given")
        states.append(state)
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
            aligned.append(state)
        invariance.append(record)
    device = suspects[0].device if suspects else torch.device("cpu")
    plain = _answers(states, keys, device)
    if options.reference is None:
        return [[_reading(a, key, invariance[n], prefix) for key, a in zip(keys, row)]
                for n, row in enumerate(plain)]
    # A copy whose key layer's units can be matched only on what the attacker re-trained (RTAL
    # on the next layer) misaligns while its plain read still holds the key: read both ways.
    both = _answers(aligned, keys, device)
    return [[aligned[n]] * len(keys) if isinstance(aligned[n], Exception)
            else [_best_of_two(p, a, key, invariance[n], prefix)
                  for key, p, a in zip(keys, plain[n], both[n])]
            for n in range(len(states))]


def _answers(states: list, keys, device) -> list[list]:
    """read_stacked over the states that are not errors (those get their error per key)."""
    good = [n for n, s in enumerate(states) if not isinstance(s, Exception)]
    answers = read_stacked([states[n] for n in good], keys, device)
    out: list[list] = [[s] * len(keys) if isinstance(s, Exception) else [] for s in states]
    for n, row in zip(good, answers):
        out[n] = row
    return out


def _reading(answer, key: WeightKey, record: dict, prefix: str,
             reads: int = 1) -> Reading | Exception:
    if isinstance(answer, Exception):
        return type(answer)(f"{prefix}{answer}")
    matches, bits = answer
    return Reading(matches, bits, 0.5, {"bit_error_rate": 1 - matches / bits,
                                        "targets": list(key.targets), "reduce": key.reduce,
                                        **record}, reads=reads)


def _best_of_two(plain, aligned, key: WeightKey, record: dict,
                 prefix: str) -> Reading | Exception:
    """The read with the smaller p, reads=2: p = min(1, 2 min(p_plain, p_aligned)), an exact
    union bound whatever the dependence between the two reads (ties: the aligned read). A
    read that cannot be made (the plain read of a widened copy: other target shapes) is
    recorded and the other one used, still doubled: the bound holds for the reads planned."""
    from ..verification import stats  # verification imports the schemes

    answers = {"plain": plain, "aligned": aligned}
    done = {name: a for name, a in answers.items() if not isinstance(a, Exception)}
    if not done:
        return _reading(aligned, key, record, prefix)
    logs = {name: stats.binomial_log_sf(m, bits, 0.5) for name, (m, bits) in done.items()}
    used = min(logs, key=lambda name: (logs[name], name != "aligned"))
    two_reads = {"test": "two reads (plain, aligned), p doubled", "used": used}
    for name, answer in answers.items():
        two_reads[name] = {"error": f"{answer}"[:300]} if name not in done else {
            "matches": answer[0], "p_value": math.exp(logs[name]),
            "log10_p_value": stats.log10_p(logs[name])}
    return _reading(done[used], key, {**record, "two_reads": two_reads}, prefix, reads=2)


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
