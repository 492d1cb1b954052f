"""unrelated: images from another data set, chosen once by the secret and stored as they
are (Zhang et al., AsiaCCS 2018)."""

from __future__ import annotations

from .base import TriggerKind, register_kind


@register_kind
class Unrelated(TriggerKind):
    name = "unrelated"
    stores_images = True
