"""Verification: a key's scheme reads a suspect model, and the reading is tested.

The trigger-set helpers below (normalize, predict, trigger_predictions, pattern votes) are
shared by that scheme (schemes/trigger_set.py), retention and the mixer's checks."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..files.checkpoint import read_checkpoint, strip_prefixes, unwrap
from ..files.model import load_model_file
from ..keys import TriggerKey
from ..schemes.base import Reading, ReadOptions, Suspect, scheme_of
from .verdict import Verdict, make_verdict, state_dict_sha256


def model_device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype inputs must have: that of the first floating-point parameter (or buffer)."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def weights_sha256(model: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """The verdicts' weights hash: of the state_dict, with DDP / torch.compile prefixes
    removed as from a file (so a compiled model hashes as its saved weights do)."""
    return state_dict_sha256(_weights_of(model))


def normalize(images: torch.Tensor, key: TriggerKey) -> torch.Tensor:
    """The key's normalization, computed exactly as the mixer's kernel does (float32)."""
    return key.normalize(images)


def logits_of(output):
    """A model's class scores: the output itself, or the `logits` tensor of an output object
    that carries one (a Hugging Face `ImageClassifierOutput`); anything else is returned as
    it is, for the caller's shape check to refuse."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else output


@torch.inference_mode()
def predict(model: torch.nn.Module, inputs: torch.Tensor, num_classes: int,
            batch_size: int) -> torch.Tensor:
    preds = []
    for batch in inputs.split(batch_size):
        logits = logits_of(model(batch))
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or \
                logits.shape[1] != num_classes:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise ValueError(f"model must output (batch, {num_classes}) logits to match the key's "
                             f"num_classes={num_classes}, got {shape}")
        if not bool(torch.isfinite(logits).all()):
            # argmax of NaN logits is an arbitrary class: a count of them is no evidence.
            raise ValueError("the model outputs NaN or inf logits for the triggers; its answers "
                             "cannot be counted (a broken or badly converted model?)")
        preds.append(logits.argmax(dim=1))
    return torch.cat(preds)


def verify(model: torch.nn.Module | str | os.PathLike, key, alpha: float = 1e-6,
           batch_size: int = 256, *, arch=None, arch_kwargs: Mapping | None = None,
           carriers: torch.Tensor | None = None, reference=None) -> Verdict:
    """Does `model` carry the watermark of `key` (a key of any registered scheme)? An exact
    (or stated-conservative) one-sided binomial test of the scheme's reading.

    The key's scheme (``mlguard.schemes.scheme_of``) reads the model: schemes that need the
    network (trigger-set) get the module, the others (weight) its state_dict, with the names
    a file of it would give. The Reading's (matches, total, chance, reads) go into make_verdict.

    `reference` (schemes with aligns_to_reference, e.g. weight keys): the owner's reference
    model (an nn.Module or a mlguard.weights.align.Reference). The suspect is first aligned to
    it (weights/align.py), so permuted, rescaled or widened copies read as the original; the
    verdict's extra records the alignment and the reference's hash. Without it the weights
    are read where they are, and extra["permutation_invariant"] is False. Trigger keys ignore
    it: the model's answers do not depend on how its units are ordered.

    Trigger keys: matches are triggers answered with the key's label; weight keys: message
    bits read correctly (see verify_weights).

    `model` may be a model file: it is loaded with ``load_model(model, arch)`` when the scheme
    needs the network or `arch` is given (trigger keys need `arch`), else its state_dict is
    read (weight keys); the verdict records the file's SHA-256. A Hugging Face
    `save_pretrained` folder is read from its model.safetensors (or pytorch_model.bin). A model
    may return its logits or an object holding them as `.logits` (transformers' image
    classifiers). The triggers run on the model's device and in its dtype (normalized in
    float32, then cast), in eval mode without gradients; the model's previous mode is
    restored. Under H0 (the model never saw the key) each trigger matches with probability
    exactly 1/num_classes, because the labels are uniform and secret.

    Pattern-mode keys (pattern -> class backdoors): every carrier image (the key's stored
    ones, or `carriers`, (N, *shape) in [0, 1] or uint8) is stamped with each of the K
    patterns; the model's majority answer is pattern k's vote (ties: the smallest class).
    matches = patterns whose vote is their keyed target, total = K: under H0 each vote is
    fixed by the model and pattern alone and the target is uniform, secret and independent,
    so matches ~ Binomial(K, 1/num_classes) exactly. The extra records the votes and each
    pattern's success rate (its carriers answered with its target).
    """
    scheme = scheme_of(key)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    file_sha = None
    module = None
    if isinstance(model, (str, os.PathLike)):
        if not scheme.needs_module and arch is None and arch_kwargs is None:
            state, file_sha = read_checkpoint(model)  # the file's state_dict is enough
        else:
            module, file_sha = load_model_file(model, arch, arch_kwargs=arch_kwargs)
            state = _weights_of(module)
    else:
        if arch is not None or arch_kwargs is not None:
            raise ValueError("arch and arch_kwargs are only for a model given as a file path, "
                             f"got a {type(model).__name__} and arch={arch!r}")
        if scheme.needs_module and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or a model file path, got "
                            f"{type(model).__name__}")
        if not isinstance(model, (torch.nn.Module, Mapping)):
            raise TypeError(f"model must be a torch.nn.Module, a state_dict or a model file "
                            f"path, got {type(model).__name__}")
        module = model if isinstance(model, torch.nn.Module) else None
        state = _weights_of(model)
    if reference is not None and scheme.aligns_to_reference:
        from ..weights.align import as_reference  # weights imports this module
        reference = as_reference(reference)
    suspect = Suspect(module, state, _suspect_device(module, state))
    options = ReadOptions(batch_size=batch_size, carriers=carriers,
                          reference=reference if scheme.aligns_to_reference else None)
    reading = scheme.read(key, suspect, options)
    return _verdict(scheme, key, reading, alpha, state_dict_sha256(state), suspect.device,
                    file_sha)


def _verdict(scheme, key, reading: Reading, alpha: float, weights_sha: str, device,
             file_sha: str | None) -> Verdict:
    return make_verdict(scheme.name, reading.matches, reading.total, reading.chance, alpha,
                        key.commitment(), weights_sha, str(device), extra=reading.extra,
                        file_sha256=file_sha, key_label=getattr(key, "label", None),
                        reads=reading.reads)


def _suspect_device(module: torch.nn.Module | None, state: Mapping) -> torch.device:
    """Where the suspect lives: its module's device, else its first tensor's."""
    if module is not None:
        return model_device(module)
    for t in state.values():
        return t.device
    return torch.device("cpu")


def pattern_votes(preds: torch.Tensor, key: TriggerKey) -> tuple[torch.Tensor, torch.Tensor]:
    """(votes, rates) of a pattern-mode key from predictions on pattern_inputs (pattern-major,
    K rows of N carriers): pattern k's vote is its most frequent answer (ties: the smallest
    class, as argmax returns the first maximum); its rate is the fraction of its carriers
    answered with its target."""
    answers = preds.reshape(key.patterns, -1).cpu()
    counts = torch.zeros(key.patterns, key.num_classes, dtype=torch.int64)
    counts.scatter_add_(1, answers, torch.ones_like(answers))
    votes = counts.argmax(dim=1)
    rates = (answers == key.targets[:, None]).double().mean(dim=1)
    return votes, rates


def pattern_extra(votes: torch.Tensor, rates: torch.Tensor, carriers: int) -> dict:
    """What a pattern-mode verdict records beside its counts (votes, per-pattern rates)."""
    return {"patterns": int(votes.numel()), "carriers": int(carriers),
            "votes": [int(v) for v in votes], "trigger_accuracy": float(rates.mean()),
            "pattern_rates": [round(float(r), 6) for r in rates]}


def trigger_predictions(model: torch.nn.Module, key: TriggerKey, batch_size: int = 256,
                        carriers: torch.Tensor | None = None):
    """(predictions, labels, device, dtype): the model's answers to the key's triggers, on its
    device and in its dtype (normalized in float32, then cast), in eval mode without
    gradients; the model's previous mode is restored. verify and retention both use it.
    Pattern-mode keys: the triggers are key.pattern_inputs(carriers) (pattern-major) and the
    labels each row's pattern target."""
    device, dtype = model_device(model), model_dtype(model)
    if key.mode == "pattern":
        inputs, which = key.pattern_inputs(carriers, device)
        labels = key.targets.to(device)[which]
    else:
        inputs, labels = key.materialize(device)
    was_training = model.training
    model.eval()
    try:
        preds = predict(model, normalize(inputs, key).to(dtype), key.num_classes, batch_size)
    finally:
        model.train(was_training)
    return preds, labels, device, dtype


def trigger_extra(key: TriggerKey, dtype: torch.dtype) -> dict:
    """What a trigger-set verdict records beside its counts."""
    extra = {"kind": key.kind, "dtype": dtype_name(dtype)}
    if key.mode == "pattern":
        extra["mode"] = "pattern"
    if key.labels_given:
        extra["labels"] = ("given by the key's owner: the test assumes they were drawn "
                           "uniformly at random and kept secret")
    return extra


def dtype_name(dtype: torch.dtype) -> str:
    """'float16' for torch.float16: how verdicts and scan rows name a dtype."""
    return str(dtype).removeprefix("torch.")


@torch.no_grad()
def verify_weights(model: torch.nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike,
                   key, alpha: float = 1e-6, reference=None) -> Verdict:
    """Reads the key's message from the model's weights: a module, a state_dict (also a
    checkpoint dict or DDP / torch.compile names, unwrapped as from a file) or a model file
    (its SHA-256 goes into the verdict).

    Under H0 (weights independent of the secret projection) each bit reads correctly with
    probability 1/2, so the test is exact binomial with p = 1/2; the bit error rate is in
    the verdict's extra. Any key of a scheme that reads state_dicts (needs_module False).
    """
    return verify_weights_many(model, [key], alpha, reference)[0]


@torch.no_grad()
def verify_weights_many(model: torch.nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike,
                        keys: list, alpha: float = 1e-6, reference=None) -> list[Verdict]:
    """verify_weights for many keys at once: each scheme's read_many reads all its keys
    (weight keys that share targets, reduction and length with one batched projection), and
    the model is hashed once (and, with a `reference`, aligned once, matching on what none
    of the keys reads). Each weight key's bits are read by the definition it names
    (WeightKey.projection), the same on every device."""
    if isinstance(model, (str, os.PathLike)):
        state, file_sha = read_checkpoint(model)
    elif isinstance(model, (torch.nn.Module, Mapping)):
        state, file_sha = _weights_of(model), None
    else:
        raise TypeError(f"model must be a torch.nn.Module, a state_dict or a model file path, "
                        f"got {type(model).__name__}")
    by_scheme: dict = {}
    for i, key in enumerate(keys):
        try:
            scheme = scheme_of(key)
        except TypeError as e:
            raise TypeError(f"keys[{i}]: {e}") from None
        if scheme.needs_module:
            raise TypeError(f"keys[{i}] must be a key read from weights alone (a WeightKey), "
                            f"got a {scheme.name} key: use verify(model, key)")
        by_scheme.setdefault(scheme, []).append(i)
    if reference is not None:
        from ..weights.align import as_reference  # weights imports this module
        reference = as_reference(reference)
    weights_sha = state_dict_sha256(state)  # of the suspect as given, before any alignment
    suspect = Suspect(None, state, _suspect_device(None, state))
    verdicts: list[Verdict | None] = [None] * len(keys)
    for scheme, members in by_scheme.items():
        options = ReadOptions(reference=reference if scheme.aligns_to_reference else None)
        if len(members) == 1:
            readings = [scheme.read(keys[members[0]], suspect, options)]
        else:
            readings = scheme.read_many([keys[i] for i in members], [suspect], options)[0]
        for i, reading in zip(members, readings):
            if isinstance(reading, Exception):
                raise reading
            verdicts[i] = _verdict(scheme, keys[i], reading, alpha, weights_sha, suspect.device,
                                   file_sha)
    return verdicts  # type: ignore[return-value]


def _weights_of(model: torch.nn.Module | Mapping) -> dict[str, torch.Tensor]:
    """A module's or a state_dict's tensors under the names a file of them would give."""
    if isinstance(model, torch.nn.Module):
        return strip_prefixes(model.state_dict(), "the model")
    return unwrap(model, "the model")
