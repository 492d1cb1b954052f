"""Verification: run a key's triggers through a suspect model and test the matches."""

from __future__ import annotations

import torch

from .keys import TriggerKey
from .verdict import Verdict, make_verdict, state_dict_sha256


def model_device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def normalize(images: torch.Tensor, key: TriggerKey) -> torch.Tensor:
    """The key's normalization, computed exactly as the mixer's kernel does (float32)."""
    if key.mean is None:
        return images
    mean = torch.tensor(key.mean, dtype=torch.float32, device=images.device)[:, None, None]
    std = torch.tensor(key.std, dtype=torch.float32, device=images.device)[:, None, None]
    return (images - mean) / std


@torch.inference_mode()
def predict(model: torch.nn.Module, inputs: torch.Tensor, num_classes: int,
            batch_size: int) -> torch.Tensor:
    preds = []
    for batch in inputs.split(batch_size):
        logits = model(batch)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or \
                logits.shape[1] != num_classes:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise ValueError(f"model must output (batch, {num_classes}) logits to match the key's "
                             f"num_classes={num_classes}, got {shape}")
        preds.append(logits.argmax(dim=1))
    return torch.cat(preds)


def verify(model: torch.nn.Module, key: TriggerKey, alpha: float = 1e-6, batch_size: int = 256,
           source: torch.Tensor | None = None) -> Verdict:
    """Does `model` carry the watermark of `key`? An exact binomial test on trigger matches.

    The triggers run on the model's device in eval mode without gradients; the model's
    previous mode is restored. Under H0 (the model never saw the key) each trigger matches
    with probability exactly 1/num_classes, because the labels are uniform and secret.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(key, TriggerKey):
        raise TypeError(f"key must be a TriggerKey, got {type(key).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    device = model_device(model)
    inputs, labels = key.materialize(device, source)
    was_training = model.training
    model.eval()
    try:
        preds = predict(model, normalize(inputs, key), key.num_classes, batch_size)
    finally:
        model.train(was_training)
    matches = int((preds == labels).sum())
    return make_verdict("trigger-set", matches, key.size, 1.0 / key.num_classes, alpha,
                        key.commitment(), state_dict_sha256(model.state_dict()), str(device),
                        extra={"kind": key.kind})
