"""Hooking one named module's output: the activations DeepSigns embeds in and reads."""

from __future__ import annotations

import contextlib
import difflib

import torch


def find_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule `name` (also under a DataParallel/DDP "module." prefix); ValueError
    naming close module names when it is absent."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for candidate in (name, f"module.{name}"):
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            pass
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    raise ValueError(f"layer {name!r} is not a module of the model ({type(model).__name__})"
                     + (f"; similar names: {close}" if close else f"; its modules: {names[:20]}"))


@contextlib.contextmanager
def captured(module: torch.nn.Module):
    """Collects the module's outputs, flattened per example, while the block runs."""
    outputs: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"layer output must be a tensor to carry the watermark, got "
                             f"{type(output).__name__}")
        outputs.append(output.reshape(output.shape[0], -1))

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


def layer_activations(model: torch.nn.Module, layer: str, inputs: torch.Tensor,
                      batch_size: int | None = None) -> torch.Tensor:
    """(N, M) outputs of `layer` for `inputs` (differentiable when grad is on), computed in
    batches of `batch_size` (all at once when None)."""
    module = find_module(model, layer)
    chunks = [inputs] if batch_size is None else inputs.split(batch_size)
    with captured(module) as outputs:
        for chunk in chunks:
            model(chunk)
    if len(outputs) != len(chunks):
        raise ValueError(f"layer {layer!r} ran {len(outputs)} times for {len(chunks)} "
                         "forward passes: name a module that runs once per forward")
    return torch.cat(outputs)
