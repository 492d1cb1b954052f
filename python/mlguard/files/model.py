"""Loading a suspect model file into its architecture, as it leaked: `load_model`.

The file is read as checkpoint.py reads it (safe, unwrapped, prefixes removed) and loaded
strictly into the architecture, keeping each tensor's dtype from the file: an fp16 file
gives an fp16 model, so the model's state_dict, and so its weights hash, is the file's.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping

import torch

from .checkpoint import listing, read_checkpoint, strip_prefixes

__all__ = ["load_into", "load_model", "load_model_file", "resolve_arch"]

# Attribute names training wrappers keep the network under (a LightningModule's
# `self.model`): removed only when that makes every name match the architecture's, since
# a network may have a real submodule of that name.
WRAPPER_PREFIXES = ("model.",)


def resolve_arch(arch, arch_kwargs: Mapping | None = None) -> Callable[[], torch.nn.Module] | None:
    """A zero-argument factory from "package.module:factory" or a callable (plus kwargs)."""
    kwargs = dict(arch_kwargs or {})
    if arch is None:
        if kwargs:
            raise ValueError("arch_kwargs were given without arch")
        return None
    if isinstance(arch, torch.nn.Module):  # callable too, but calling it runs forward()
        raise TypeError(f"arch must be a factory that builds the network (a class, a function "
                        f"or 'package.module:factory'), got a {type(arch).__name__} instance")
    if isinstance(arch, str):
        module_name, sep, attr = arch.partition(":")
        if not sep or not module_name or not attr:
            raise ValueError(f"arch must look like 'package.module:factory', got {arch!r}")
        try:
            factory = importlib.import_module(module_name)
            for part in attr.split("."):
                factory = getattr(factory, part)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"arch {arch!r} cannot be imported: {e}") from None
    else:
        factory = arch
    if not callable(factory):
        raise TypeError(f"arch must name a callable, got {type(factory).__name__}")
    return lambda: factory(**kwargs)


def load_into(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
              what: str = "state_dict") -> torch.nn.Module:
    """Loads `state_dict` strictly into `module`, in place, giving each parameter and buffer
    the dtype it has in `state_dict` (tied weights stay tied). Names are matched as files
    are read, without DDP / torch.compile prefixes, so a wrapped `module` (or an architecture
    whose own names all start with "module.") takes an unwrapped file, and a "model."
    prefix on every name (a Lightning checkpoint) is removed when that makes every name
    match. Raises ValueError starting "wrong architecture:" that names a few missing and
    unexpected names, or the size mismatch."""
    own = module.state_dict()
    if set(state_dict) != set(own):
        plain_to_own = strip_prefixes({name: name for name in own}, f"{type(module).__name__}")
        for prefix in ("", *WRAPPER_PREFIXES):
            if all(name.startswith(prefix) for name in state_dict):
                inner = {name[len(prefix):]: t for name, t in state_dict.items()}
                if set(inner) == set(plain_to_own):
                    state_dict = {plain_to_own[name]: t for name, t in inner.items()}
                    break
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        parts = [f"{len(names)} {kind} ({listing(names)})"
                 for kind, names in (("missing", missing), ("unexpected", unexpected)) if names]
        raise ValueError(f"wrong architecture: {what} does not fit {type(module).__name__}: "
                         f"{' and '.join(parts)} names")
    with torch.no_grad():
        tensors = dict(module.named_parameters(remove_duplicate=False))
        tensors.update(module.named_buffers(remove_duplicate=False))
        for name, t in tensors.items():
            wanted = state_dict[name].dtype if name in state_dict else t.dtype
            if t.dtype != wanted:
                try:  # .data keeps the Parameter object, so weights tied to it follow
                    t.data = t.data.to(wanted)
                except RuntimeError as e:
                    raise ValueError(f"{what}: cannot give {name!r} the dtype {wanted} it has "
                                     f"in the file: {e}") from None
        try:
            module.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            detail = " ".join(ln.strip() for ln in str(e).splitlines()[1:] if ln.strip())
            if len(detail) > 300:
                detail = detail[:299] + "\u2026"
            raise ValueError(f"wrong architecture: {detail} (a copy whose hidden layers were "
                             "widened, e.g. with added units, is read against the owner's "
                             "reference model: reference= / --reference)") from None
    return module


def load_model(path: str | os.PathLike, arch, *, arch_kwargs: Mapping | None = None
               ) -> torch.nn.Module:
    """The model in file `path`, loaded into `arch`, in eval mode (on the device `arch` is
    on or builds it on, normally the CPU).

    `arch`: an nn.Module to load into (in place), a factory that builds one (a class or a
    function, called as ``arch(**arch_kwargs)``) or "package.module:factory". The file is
    loaded safely (torch.load with weights_only=True or safetensors; TorchScript refused),
    unwrapped from checkpoint dicts ("state_dict", "model_state_dict", "model", "module"),
    stripped of "module." (DDP) and "_orig_mod." (torch.compile) prefixes, and each tensor
    keeps its dtype from the file. Raises ValueError for an unusable file or a wrong
    architecture (naming a few missing and unexpected names).
    """
    return load_model_file(path, arch, arch_kwargs=arch_kwargs)[0]


def load_model_file(path: str | os.PathLike, arch, *, arch_kwargs: Mapping | None = None
                    ) -> tuple[torch.nn.Module, str]:
    """load_model, plus the SHA-256 of the file bytes the weights were read from."""
    if isinstance(arch, torch.nn.Module):
        if arch_kwargs:
            raise ValueError("arch_kwargs were given with an nn.Module instance as arch")
        module = arch
    else:
        factory = resolve_arch(arch, arch_kwargs)
        if factory is None:
            raise ValueError("arch is required: a model file does not say which network it "
                             "belongs to (pass a factory, an nn.Module or "
                             "'package.module:factory')")
        module = factory()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"arch must build a torch.nn.Module, got {type(module).__name__}")
    state, sha = read_checkpoint(path)
    load_into(module, state, f"model file {os.fspath(path)!r}")
    return module.eval(), sha
