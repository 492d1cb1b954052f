"""Hugging Face `transformers` image classifiers as mlguard reads models.

mlguard reads a save_pretrained folder's model.safetensors itself (never running code from
it), but transformers 5 writes some models' weights under other names than the model's own
(`save_original_format=True`, the default, reverts its weight conversions: ViT's
"vit.layers.0.attention.q_proj" is saved as "vit.encoder.layer.0.attention.attention.query").
`PretrainedClassifier` wraps a model built from its config so that its state_dict uses the
file's names and its forward returns the logits tensor, so it serves as `arch` for
`mlguard.verify`, `mlguard.scan` and the CLI's `--arch`.
"""

from __future__ import annotations

import copy
import os
import tempfile

import torch
from torch import nn


class PretrainedClassifier(nn.Module):
    """``PretrainedClassifier(ViTForImageClassification(config))``: forward(x) is the model's
    `.logits` for pixel values x, and state_dict / load_state_dict use the names that
    `save_pretrained` writes (found once, by saving a probe copy of the model; see
    `saved_names`). Meant as the outermost module, for reading weights and running
    triggers, not for training (train the transformers model itself)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model, "save_pretrained"):
            raise TypeError(f"model must be a transformers PreTrainedModel, got "
                            f"{type(model).__name__}")
        self.model = model
        self._own_to_file = {own: file for file, own in saved_names(model).items()}
        self._file_to_own = {file: own for own, file in self._own_to_file.items()}

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).logits

    def state_dict(self, *args, **kwargs):
        own = self.model.state_dict(*args, **kwargs)
        return {self._own_to_file.get(name, name): t for name, t in own.items()}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        renamed = {self._file_to_own.get(name, name): t for name, t in state_dict.items()}
        return self.model.load_state_dict(renamed, strict=strict, assign=assign)


def saved_names(model: nn.Module) -> dict[str, str]:
    """{name in model.safetensors: name in model.state_dict()} for what `save_pretrained`
    writes for this model. Found by saving a float32 copy whose every floating tensor is
    filled with its own index, so only renamings (not conversions that merge or split
    tensors) can be mapped back: those raise ValueError naming the tensor."""
    from safetensors.torch import load_file

    probe = copy.deepcopy(model).float()
    own = probe.state_dict()
    names = list(own)
    with torch.no_grad():
        for i, name in enumerate(names):
            if own[name].is_floating_point():
                own[name].fill_(i + 1)
    with tempfile.TemporaryDirectory() as folder:
        probe.save_pretrained(folder, max_shard_size="1000GB")
        saved = load_file(os.path.join(folder, "model.safetensors"))
    mapping = {}
    for file_name, t in saved.items():
        if not t.is_floating_point():
            if file_name not in own:
                raise ValueError(f"save_pretrained writes {file_name!r}, which {type(model).__name__}"
                                 " does not have; mlguard cannot map it back")
            mapping[file_name] = file_name
            continue
        index = int(t.flatten()[0]) - 1 if t.numel() else -1
        if not 0 <= index < len(names) or not bool((t == index + 1).all()):
            raise ValueError(
                f"transformers converts {type(model).__name__}'s weights when saving "
                f"({file_name!r} is not one of its tensors renamed); mlguard cannot read this "
                "format: save with model.save_pretrained(folder, save_original_format=False)")
        mapping[file_name] = names[index]
    return mapping
