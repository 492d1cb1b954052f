"""Verification: run a key's triggers through a suspect model and test the matches."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..keys import TriggerKey, WeightKey
from ..ops.keyed_projection import read_bits
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


def verify(model: torch.nn.Module, key: TriggerKey | WeightKey, alpha: float = 1e-6, batch_size: int = 256,
           source: torch.Tensor | None = None) -> Verdict:
    """Does `model` carry the watermark of `key`? An exact binomial test.

    Trigger keys: matches are triggers answered with the key's label; weight keys: message
    bits read correctly (see verify_weights).

    The triggers run on the model's device in eval mode without gradients; the model's
    previous mode is restored. Under H0 (the model never saw the key) each trigger matches
    with probability exactly 1/num_classes, because the labels are uniform and secret.
    """
    if isinstance(key, WeightKey):
        return verify_weights(model, key, alpha)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(key, TriggerKey):
        raise TypeError(f"key must be a TriggerKey or a WeightKey, got {type(key).__name__}")
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


@torch.no_grad()
def verify_weights(model: torch.nn.Module | Mapping[str, torch.Tensor], key: WeightKey,
                   alpha: float = 1e-6) -> Verdict:
    """Reads the key's message from the model's weights (a module or a state_dict).

    Under H0 (weights independent of the secret projection) each bit reads correctly with
    probability 1/2, so the test is exact binomial with p = 1/2; the bit error rate is in
    the verdict's extra.
    """
    return verify_weights_many(model, [key], alpha)[0]


@torch.no_grad()
def verify_weights_many(model: torch.nn.Module | Mapping[str, torch.Tensor],
                        keys: list[WeightKey], alpha: float = 1e-6) -> list[Verdict]:
    """verify_weights for many keys at once: keys that share targets, reduction and length
    are read with one batched projection, and the model is hashed once. Each key's bits are
    read by the definition it names (WeightKey.projection), the same on every device."""
    if not isinstance(model, (torch.nn.Module, Mapping)):
        raise TypeError(f"model must be a torch.nn.Module or a state_dict, got {type(model).__name__}")
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    model_sha = state_dict_sha256(state)
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        if not isinstance(key, WeightKey):
            raise TypeError(f"keys[{i}] must be a WeightKey, got {type(key).__name__}")
        groups.setdefault((key.targets, key.reduce, key.bits, key.projection), []).append(i)
    verdicts: list[Verdict | None] = [None] * len(keys)
    for (targets, reduce, bits, projection), members in groups.items():
        w = keys[members[0]].gather(model).detach()
        seeds = torch.tensor([keys[i].seed for i in members], device=w.device)
        read = read_bits(w.reshape(1, -1), seeds, bits, projection)[0]
        for row, i in zip(read, members):
            matches = int((row.long() == keys[i].message_tensor(w.device)).sum())
            verdicts[i] = make_verdict(
                "weight", matches, bits, 0.5, alpha, keys[i].commitment(), model_sha,
                str(w.device), extra={"bit_error_rate": 1 - matches / bits,
                                      "targets": list(targets), "reduce": reduce})
    return verdicts  # type: ignore[return-value]
