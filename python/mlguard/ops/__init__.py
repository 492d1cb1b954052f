"""Typed wrappers of the compiled ops in torch.ops.mlguard, one module per op."""

from .. import _extension  # noqa: F401  (loads the compiled ops first; I001: must stay first)
from .abstract_triggers import abstract_triggers
from .augment_batch import augment_batch
from .keyed_projection import (keyed_projection, keyed_projection_batched, keyed_projection_sums,
                               read_bits)
from .keyed_words import keyed_words
from .mix_triggers import mix_triggers

__all__ = ["abstract_triggers", "augment_batch", "keyed_projection", "keyed_projection_batched",
           "keyed_projection_sums", "keyed_words", "mix_triggers", "read_bits"]
