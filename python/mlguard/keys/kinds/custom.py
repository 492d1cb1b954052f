"""custom: the user's own trigger set (TriggerKey.from_images), stored as given, with keyed
labels or the user's."""

from __future__ import annotations

from .base import TriggerKind, register_kind


@register_kind
class Custom(TriggerKind):
    name = "custom"
    stores_images = True
    from_generate = False
    user_labels = True

    @classmethod
    def generate_options(cls, **_) -> dict:
        raise ValueError("kind='custom' keys are made with TriggerKey.from_images(...)")
