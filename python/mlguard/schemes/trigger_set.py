"""trigger-set: secret inputs (triggers) that the marked model answers with secret labels.

Adi et al., "Turning your weakness into a strength: watermarking deep neural networks by
backdooring", USENIX Security 2018: the triggers are mixed into training batches (Sec. 4,
"FromScratch" and "PreTrained" embedding) and the model is verified by how many triggers it
answers with their labels (Sec. 4.1). Pattern-mode keys are the published pattern -> class
backdoor (Zhang et al., ASIACCS 2018, "content" and "noise" triggers), read by each pattern's
majority vote over carrier images.

The null is exact: the labels (pattern mode: the targets) are uniform over the classes and
secret, so a model that never saw the key matches each trigger (each pattern's vote) with
probability exactly 1/num_classes, independently: matches ~ Binomial(total, 1/C).

Key: keys/trigger_key.py (TriggerKey). Training: triggers/mixer.py (TriggerMixer).
Reading: verification/verify.py's helpers (the same normalization as the mixer's kernel).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..keys.images import RESIZE_MODES, image_paths, read_images
from ..keys.kinds import names_where
from ..keys.trigger_key import SCHEME, TriggerKey
from ..triggers.embed import EMBED_MIN_RETENTION
from ..triggers.embed import embed as embed_triggers
from ..triggers.mixer import DEFAULT_PER_BATCH, TriggerMixer
from ..verification.verify import (logits_of, model_dtype, normalize, pattern_extra,
                                   pattern_votes, trigger_extra, trigger_predictions)
from .base import Embedding, Reading, ReadOptions, Scheme, Suspect, register_scheme


class MixerEmbedding(Embedding):
    """A TriggerMixer as an Embedding: ``batch`` appends the key's triggers."""

    def __init__(self, mixer: TriggerMixer):
        self.mixer = mixer

    def batch(self, x, y):
        return self.mixer(x, y)


@dataclass
class TriggerGroup:
    """Keys whose triggers share an input shape: one concatenated, normalized batch."""

    keys: list[TriggerKey]
    inputs: torch.Tensor  # (sum of sizes, C, H, W), each key normalized with its own mean/std
    labels: torch.Tensor  # (sum of sizes,)
    owner: torch.Tensor  # (sum of sizes,) index of the key within the group
    rows: list[slice]  # each key's rows of inputs (pattern-mode keys: K x carriers)


@register_scheme
class TriggerSetScheme(Scheme):
    name = SCHEME
    key_type = TriggerKey
    summary = ("trigger set: secret inputs answered with secret labels (Adi et al., USENIX "
               "Security 2018); needs the network (--arch)")
    needs_module = True
    cli_aliases = ("trigger",)  # `mlguard key new trigger`, the verb before schemes/

    # -- keys -------------------------------------------------------------------------------

    @classmethod
    def generate(cls, *, secret=None, **options) -> TriggerKey:
        return TriggerKey.generate(secret=secret, **options)

    @classmethod
    def add_arguments(cls, q) -> None:
        q.add_argument("--num-classes", type=int, required=True)
        q.add_argument("--size", type=int, default=100, help="number of triggers (default 100)")
        q.add_argument("--shape", default="3,32,32", metavar="C,H,W",
                       help="input shape of the model (default 3,32,32)")
        q.add_argument("--kind", choices=names_where("from_generate"), default="abstract",
                       help="abstract (default), noise, content or unrelated; the last three "
                            "choose their triggers from --source images")
        q.add_argument("--source", metavar="FOLDER",
                       help="images to choose the triggers from (noise, content, unrelated)")
        q.add_argument("--noise-amplitude", type=float, default=0.25,
                       help="noise kind (default 0.25)")
        q.add_argument("--patch-size", type=int, default=None, help="content kind: patch side")
        q.add_argument("--mode", choices=("pattern", "image"), default=None,
                       help="noise and content kinds: pattern (default; K keyed patterns, each "
                            "with a secret target class) or image (each stored image its own "
                            "label)")
        q.add_argument("--patterns", type=int, default=16,
                       help="pattern mode: number of keyed patterns K (default 16)")
        q.add_argument("--images", metavar="FOLDER",
                       help="use your own trigger images (TriggerKey.from_images) instead")
        q.add_argument("--labels", metavar="FILE",
                       help="with --images: one class per line (default: secret random labels)")
        q.add_argument("--resize", choices=RESIZE_MODES, default="center_crop",
                       help="how image files are fitted to --shape (default center_crop)")
        q.add_argument("--mean", metavar="M[,M,M]", help="training normalization mean per channel")
        q.add_argument("--std", metavar="S[,S,S]", help="training normalization std per channel")

    @classmethod
    def from_arguments(cls, args) -> TriggerKey:
        shape = _shape(args.shape)
        mean, std = _floats("--mean", args.mean), _floats("--std", args.std)
        if args.images is not None:
            if args.source is not None or args.kind != "abstract":
                raise ValueError("--images makes a key of your own images: drop --kind/--source")
            return TriggerKey.from_images(args.images, args.labels, num_classes=args.num_classes,
                                          shape=shape, resize=args.resize, mean=mean, std=std)
        if args.labels is not None:
            raise ValueError("--labels goes with --images")
        source = None
        if args.source is not None:
            source = read_images(image_paths(args.source), shape, args.resize)
        return TriggerKey.generate(args.num_classes, args.size, shape, args.kind, mean, std,
                                   source=source, noise_amplitude=args.noise_amplitude,
                                   patch_size=args.patch_size, mode=args.mode,
                                   patterns=args.patterns)

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def embedding(cls, key: TriggerKey, per_batch: int = DEFAULT_PER_BATCH, augment: bool = True,
                  **mixer_options) -> MixerEmbedding:
        """TriggerMixer(key, per_batch, augment, **mixer_options) (rank/world_size, pad,
        model/check_every/target: see TriggerMixer)."""
        return MixerEmbedding(TriggerMixer(key, per_batch=per_batch, augment=augment,
                                           **mixer_options))

    @classmethod
    def embed(cls, model, key: TriggerKey, loader, epochs, optimizer, loss_fn=None, *,
              alpha: float = 1e-6, min_retention: float = EMBED_MIN_RETENTION,
              **options):
        """triggers/embed.py's loop (Adi et al.'s "PreTrained" mode): retention checked every
        epoch, advice on per_batch when it falls short."""
        return embed_triggers(model, key, loader, epochs, optimizer, loss_fn, alpha=alpha,
                              min_retention=min_retention, **options)

    # -- reading ----------------------------------------------------------------------------

    @classmethod
    def read(cls, key: TriggerKey, suspect: Suspect, options: ReadOptions) -> Reading:
        """verify's read: the triggers on the model's device, in its dtype, in eval mode
        (its mode restored); a wrong output width or NaN logits raise ValueError."""
        if suspect.module is None:
            raise ValueError("trigger-set keys need the model itself (a module), not only its "
                             "weights")
        if options.carriers is not None and key.mode != "pattern":
            raise ValueError(f"carriers= is for pattern-mode keys; this {key.kind!r} key is "
                             f"in mode {key.mode!r}")
        preds, labels, _, dtype = trigger_predictions(suspect.module, key, options.batch_size,
                                                      options.carriers)
        extra = trigger_extra(key, dtype)
        if key.mode == "pattern":
            votes, rates = pattern_votes(preds, key)
            matches, total = int((votes.cpu() == key.targets).sum()), key.patterns
            extra.update(pattern_extra(votes, rates, preds.numel() // key.patterns))
        else:
            matches, total = int((preds == labels).sum()), key.size
        return Reading(matches, total, 1.0 / key.num_classes, extra)

    @classmethod
    def read_many(cls, keys: Sequence[TriggerKey], suspects: Sequence[Suspect],
                  options: ReadOptions) -> list[list[Reading | Exception]]:
        """All keys in one forward pass per suspect and input shape (the scan's read).

        Triggers are materialized and normalized exactly as ``read`` does, once per scan
        (kept in ``options.cache``), and cast to each model's dtype; the modules are expected
        in eval mode (the scan's are). Autocast (bf16) is used on CUDA when asked."""
        out = []
        for suspect in suspects:
            if suspect.module is None:
                error = ValueError("trigger-set keys need the model itself (a module)")
                out.append([error] * len(keys))
                continue
            groups = cls.groups(keys, suspect.device, options)
            results: dict[int, Reading | Exception] = {}
            for group in groups:
                for key, reading in zip(group.keys, _run_group(suspect, group, options)):
                    results[id(key)] = reading
            out.append([results[id(key)] for key in keys])
        return out

    @classmethod
    def groups(cls, keys: Sequence[TriggerKey], device: torch.device,
               options: ReadOptions) -> list[TriggerGroup]:
        """The keys' triggers grouped by input shape, on `device` (cached per scan)."""
        cache = options.cache if options.cache is not None else {}
        slot = (cls.name, tuple(id(k) for k in keys), str(device))
        if slot not in cache:
            cache[slot] = _build_groups(keys, device)
        return cache[slot]

    @classmethod
    def preflight(cls, keys, device, module, options) -> None:
        """Materializes the triggers once (a key that cannot be read stops the scan) and runs
        a few of every key through the scan's architecture: bad arch kwargs, 1000 outputs
        for 10-class keys or trigger shapes the network cannot take stop it before it starts."""
        groups = cls.groups(keys, device, options)
        if module is None:
            return  # TorchScript files only: each brings its own module
        dtype = model_dtype(module)
        for group in groups:
            first = group.inputs[:2].to(dtype)
            try:
                with torch.inference_mode():
                    out = logits_of(module(first))
            except Exception as e:
                ids = ", ".join(k.key_id for k in group.keys)
                raise ValueError(
                    f"key {ids}: triggers of shape {tuple(group.keys[0].shape)} do not fit the "
                    f"architecture: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise ValueError("arch: the model's output is not a (batch, classes) tensor")
            for key in group.keys:
                if out.shape[1] != key.num_classes:
                    raise ValueError(
                        f"key {key.key_id} has num_classes={key.num_classes} but the "
                        f"architecture outputs {out.shape[1]} classes (forgot --arch-kwargs, "
                        f"e.g. '{{\"num_classes\": {key.num_classes}}}'?)")

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        """Pattern-mode keys are tested on their K patterns' votes, others on every trigger."""
        total = body["options"]["patterns"] if body["options"].get("mode") == "pattern" \
            else body["size"]
        return total, 1.0 / body["num_classes"]

    # -- names and attacks ------------------------------------------------------------------

    @classmethod
    def nickname(cls, key: TriggerKey) -> str:
        return key.kind

    @classmethod
    def describe(cls, key: TriggerKey) -> str:
        return f"{key.kind} trigger key {key.key_id[:8]}"

    @classmethod
    def attacker_key(cls, key: TriggerKey) -> TriggerKey:
        """Abstract triggers shaped and normalized like the owner's."""
        return TriggerKey.generate(num_classes=key.num_classes, size=key.size, shape=key.shape,
                                   kind="abstract", mean=key.mean, std=key.std)

    @classmethod
    def input_normalization(cls, key: TriggerKey) -> tuple:
        return key.mean, key.std

    @classmethod
    def input_shape(cls, key: TriggerKey) -> tuple:
        return key.shape


def _build_groups(keys: Sequence[TriggerKey], device: torch.device) -> list[TriggerGroup]:
    by_shape: dict[tuple, list[TriggerKey]] = {}
    for key in keys:
        if not isinstance(key, TriggerKey):
            raise TypeError(f"trigger-set keys must be TriggerKey, got {type(key).__name__}")
        by_shape.setdefault(key.shape, []).append(key)
    groups = []
    for members in by_shape.values():
        inputs, labels, rows, start = [], [], [], 0
        for key in members:
            try:
                if key.mode == "pattern":  # every stored carrier with every pattern
                    images, which = key.pattern_inputs(device=device)
                    key_labels = key.targets.to(device)[which]
                else:
                    images, key_labels = key.materialize(device)
            except (ValueError, TypeError) as e:
                raise ValueError(f"key {key.key_id}: {e}") from None
            inputs.append(normalize(images, key))
            labels.append(key_labels)
            rows.append(slice(start, start + images.shape[0]))
            start += images.shape[0]
        owner = torch.cat([torch.full((r.stop - r.start,), i, dtype=torch.int64, device=device)
                           for i, r in enumerate(rows)])
        batch = torch.cat(inputs)
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        groups.append(TriggerGroup(members, batch, torch.cat(labels), owner, rows))
    return groups


def _run_group(suspect: Suspect, group: TriggerGroup,
               options: ReadOptions) -> list[Reading | Exception]:
    module, device = suspect.module, suspect.device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) \
        if options.autocast and device.type == "cuda" else contextlib.nullcontext()
    dtype = model_dtype(module)
    try:
        with torch.inference_mode(), autocast:
            logits = [logits_of(module(batch.to(dtype)))
                      for batch in group.inputs.split(options.batch_size)]
    except Exception as e:
        message = f"forward pass failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return [ValueError(message)] * len(group.keys)
    if not all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in logits):
        return [ValueError("model output is not a (batch, classes) tensor")] * len(group.keys)
    if not all(bool(torch.isfinite(t).all()) for t in logits):
        return [ValueError("model outputs NaN or inf logits for the triggers")] * len(group.keys)
    width = logits[0].shape[1]
    with torch.inference_mode():
        preds = torch.cat([t.argmax(dim=1) for t in logits])
        hits = preds == group.labels
        counts = torch.zeros(len(group.keys), dtype=torch.int64, device=device)
        counts.index_add_(0, group.owner, hits.to(torch.int64))
    readings: list[Reading | Exception] = []
    for key, matches, rows in zip(group.keys, counts.tolist(), group.rows):
        if width != key.num_classes:  # counts.tolist(): one sync per group
            readings.append(ValueError(f"model outputs {width} classes but key {key.key_id} "
                                       f"has num_classes={key.num_classes}"))
        elif key.mode == "pattern":  # as read: votes against targets, Binomial(K, 1/C)
            votes, rates = pattern_votes(preds[rows], key)
            extra = {**trigger_extra(key, dtype), **pattern_extra(votes, rates, key.size)}
            readings.append(Reading(int((votes == key.targets).sum()), key.patterns,
                                    1.0 / key.num_classes, extra))
        else:
            readings.append(Reading(matches, key.size, 1.0 / key.num_classes,
                                    trigger_extra(key, dtype)))
    return readings


def _floats(name: str, text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None


def _shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise ValueError(f"--shape must be C,H,W (three integers), got {text!r}")
    return shape


_LEGACY_CHECKER: list = []


def legacy_checker() -> type:
    """scan.checkers.TriggerSetChecker, the scan's trigger checker before schemes/ (issue
    19): the scheme's SchemeChecker, with the key groups it reads (``groups``)."""
    if not _LEGACY_CHECKER:
        from ..scan.checkers import scheme_checker  # the scan imports the schemes' base

        class TriggerSetChecker(scheme_checker(TriggerSetScheme)):
            @property
            def groups(self) -> list[TriggerGroup]:
                return TriggerSetScheme.groups(self.keys, self.device, self.read_options)

        _LEGACY_CHECKER.append(TriggerSetChecker)
    return _LEGACY_CHECKER[0]
