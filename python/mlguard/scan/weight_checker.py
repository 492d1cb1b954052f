"""The scan's checker for weight keys: many models x many keys per batched projection.

Works from state_dicts alone (no architecture needed). Keys that share targets, reduction,
message length and read definition (projection) form a group; the group's weight vectors of
all models in the call are stacked and read with every key's seed in one exact
mlguard::keyed_projection_sums call (the legacy kernel for keys of projection 1).
"""

from __future__ import annotations

import torch

from ..keys.weight_key import SCHEME, WeightKey
from ..ops.keyed_projection import read_bits
from .checkers import CheckerOptions, Outcome, StateDictChecker, _as_outcome, register_checker


def check_weights(state_dicts: list[dict], keys: list[WeightKey], device: torch.device) -> list:
    answers: list[list] = [[None] * len(keys) for _ in state_dicts]
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault((key.targets, key.reduce, key.bits, key.projection), []).append(i)
    for (_targets, _reduce, bits, projection), members in groups.items():
        lead = keys[members[0]]
        vectors: dict[int, torch.Tensor] = {}
        for n, sd in enumerate(state_dicts):
            try:
                w = lead.gather(sd).detach()
            except ValueError as e:
                for i in members:
                    answers[n][i] = f"weight key: {e}"
                continue
            vectors[n] = w
        by_length: dict[int, list[int]] = {}
        for n, w in vectors.items():  # models whose targets differ in size cannot be stacked
            by_length.setdefault(w.numel(), []).append(n)
        seeds = torch.tensor([keys[i].seed for i in members], device=device)
        messages = torch.stack([keys[i].message_tensor(device) for i in members])
        for models in by_length.values():
            stacked = torch.stack([vectors[n].to(device).reshape(-1) for n in models])
            # One finite check (one host sync on a GPU) per stack, not one per model.
            finite = torch.isfinite(stacked).all(dim=1).tolist()
            for n, ok in zip(models, finite):
                if not ok:
                    for i in members:
                        answers[n][i] = "weight key: the target weights contain NaN or inf"
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
                    answers[n][i] = (m, bits, 0.5, {"bit_error_rate": 1 - m / bits})
    return answers


class WeightChecker(StateDictChecker):
    """check_weights, after aligning each model once to the scan's reference (if any):
    matching skips every tensor any of the keys reads (weights/align.py)."""

    fn = staticmethod(check_weights)
    models_per_call = 64

    def __init__(self, keys: list, device: torch.device, options: CheckerOptions):
        super().__init__(keys, device, options)
        self.reference = options.reference
        self.exclude = {t for k in keys for t in k.targets}

    def check(self, models):
        if self.reference is None:
            return self._mark(super().check(models), {"permutation_invariant": False})
        from ..weights.align import align  # weights imports verification, which scan uses
        out = []
        for model in models:  # each model aligned once for all keys
            try:
                state, record = align(model.state_dict, self.reference, self.exclude)
            except Exception as e:  # one model's failure must not fail the others
                out.append([Outcome.failed(f"weight key: alignment to the reference failed: "
                                           f"{type(e).__name__}: {e}"[:300])] * len(self.keys))
                continue
            state = {k: v.to(self.device) for k, v in state.items()}
            answers = [_as_outcome(a) for a in check_weights([state], self.keys, self.device)[0]]
            out.append(self._mark([answers], {"permutation_invariant": True,
                                              "alignment": record.to_dict()})[0])
        return out

    @staticmethod
    def _mark(outcomes, extra: dict):
        for per_model in outcomes:
            for o in per_model:
                if o.error is None:
                    o.extra.update(extra)
        return outcomes


register_checker(SCHEME, WeightChecker)
