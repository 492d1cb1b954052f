"""Glue for the training stacks the recipes in docs/recipes/ use, only where a recipe would
otherwise repeat code. Each module imports its stack lazily: mlguard does not depend on it.

- `huggingface`: transformers image classifiers read as mlguard reads any model (logits out,
  the names save_pretrained writes), for verify and scan of save_pretrained folders.
"""

from . import huggingface

__all__ = ["huggingface"]
