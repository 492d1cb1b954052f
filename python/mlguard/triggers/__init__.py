"""Trigger-set watermarks: mixing a key's triggers into training batches, and embedding a
key into an already trained model by fine-tuning. The trigger images themselves come from
the key (mlguard.keys.TriggerKey.materialize) and the compiled ops."""

from .embed import embed
from .mixer import MixedLoader, TriggerMixer, mix

__all__ = ["embed", "MixedLoader", "TriggerMixer", "mix"]
