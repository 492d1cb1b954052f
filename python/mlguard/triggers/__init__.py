"""Trigger-set watermarks: mixing a key's triggers into training batches, and embedding a
key into an already trained model by fine-tuning. The trigger images themselves come from
the key (mlguard.keys.TriggerKey.materialize) and the compiled ops."""

from .embed import EMBED_MIN_RETENTION, embed
from .mixer import DEFAULT_PER_BATCH, MixedLoader, TriggerMixer, mix
from .retention_check import RetentionCheck

__all__ = ["DEFAULT_PER_BATCH", "EMBED_MIN_RETENTION", "embed", "MixedLoader", "RetentionCheck",
           "TriggerMixer", "mix"]
