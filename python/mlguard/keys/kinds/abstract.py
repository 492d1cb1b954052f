"""abstract: procedural images made from the secret alone (Adi et al. 2018); the key stays
tiny and stores no image."""

from __future__ import annotations

import torch

from ...ops import abstract_triggers
from .base import TriggerKind, register_kind


@register_kind
class Abstract(TriggerKind):
    name = "abstract"

    @classmethod
    def images(cls, key, device: torch.device) -> torch.Tensor:
        return abstract_triggers(torch.arange(key.size, device=device), key.seed("abstract"),
                                 key.shape)
