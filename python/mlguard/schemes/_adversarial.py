"""What the adversarial-example schemes (frontier_stitching, blackmarks) share: checked owner
data, FGSM / targeted PGD in pixel space with plain torch autograd, predictions of a model on
key inputs, and the reference models' reads that bound their null.

Key inputs are crafted in [0, 1] pixel space and rounded to k/255, so a key stores them
losslessly as uint8 (keys.images) and the stored image is exactly the one that was tested on
the owner's model: a flip decided before rounding could be undone by it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import math
from functools import cached_property

import torch

from .._checks import check_int, check_real
from ..keys import images as key_images
from ..keys.trigger_key import _check_normalization, _check_shape
from .base import conservative_chance

NULL_CONFIDENCE = 1 - 1e-3  # conservative_chance's one-sided confidence, fixed by the format


def owner_data(images, labels, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 in [0, 1] (N, C, H, W), labels int64 (N,)), checked."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N, C, H, W), uint8 or float in [0, 1] "
                         f"(before normalization), got {got}")
    pixels = key_images.to_float(key_images.as_stored(images, "images"))
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 \
            or labels.shape[0] != pixels.shape[0] or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({pixels.shape[0]},), one "
                         f"true label per image, got "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else labels!r}")
    labels = labels.detach().cpu().to(torch.int64)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, num_classes={num_classes}), got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return pixels, labels


def check_model(model, name: str = "model") -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_eps(eps, name: str = "eps") -> float:
    return check_real(name, eps, low=0, high=1, low_open=True, noun="a pixel-space step")


def normalization(mean, std, shape) -> tuple[tuple | None, tuple | None]:
    return _check_normalization(mean, std, _check_shape(shape)[0])


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel in float32, as TriggerKey.normalize computes it."""
    if mean is None:
        return x.float()
    m = torch.tensor(mean, dtype=torch.float32, device=x.device)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32, device=x.device)[:, None, None]
    return (x.float() - m) / s


def thief_material(key, model, data, name: str):
    """(model, images in [0, 1], labels, reference models) for a thief's fresh key like
    ``key`` (Scheme.attacker_key): the stolen ``model`` and the attacker's ``data``, an
    (x, y) pair as the model takes it (normalized with the owner key's mean/std, which are
    undone here). The thief only embeds this key, its null is never read: one re-initialized
    copy of the model (independent of the owner's by construction) stands in for the
    reference models a key must hold."""
    if model is None or data is None:
        raise ValueError(f"a {name} attacker key is made from the stolen model and the "
                         f"attacker's data: give model= and data=(x, y)")
    model = check_model(model)
    if not (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data) and data[0].dim() == 4):
        raise ValueError(f"data must be an (x (N, C, H, W), y (N,)) pair of tensors, got "
                         f"{type(data).__name__}")
    x, y = data
    images = x.detach().float().cpu()
    if key.mean is not None:
        m = torch.tensor(key.mean, dtype=torch.float32)[:, None, None]
        s = torch.tensor(key.std, dtype=torch.float32)[:, None, None]
        images = images * s + m
    from ..attacks._data import fresh_student  # attacks import the schemes, not at load
    try:
        reference = fresh_student(model, None, 0, argument="")
    except ValueError:
        raise ValueError(f"a {name} attacker key needs a reference model, the stolen model's "
                         "architecture re-initialized, but some of its parameters have no "
                         "reset_parameters(): give the overwrite attack a key= made "
                         "beforehand") from None
    return model, images.clamp(0, 1), y.detach().long().cpu(), [reference.eval()]


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Pixels rounded to k/255 (what a uint8 key stores)."""
    return (x.clamp(0, 1) * 255.0).round() / 255.0


def stored_within(adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """``adv`` rounded to k/255 and kept within eps of ``x`` (rounded too): the largest whole
    number of 1/255 steps not above eps, so rounding never exceeds the attack's radius."""
    xq, r = quantize(x), math.floor(eps * 255.0 + 1e-6) / 255.0
    return quantize(torch.min(torch.max(quantize(adv), xq - r), xq + r))


def model_device(model: torch.nn.Module) -> torch.device:
    return next((t.device for t in (*model.parameters(), *model.buffers())),
                torch.device("cpu"))


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next((t.dtype for t in (*model.parameters(), *model.buffers())
                 if t.is_floating_point()), torch.float32)


def predictions(model: torch.nn.Module, x: torch.Tensor, mean, std, num_classes: int,
                batch_size: int = 256) -> torch.Tensor:
    """The model's classes (int64, CPU) for images in [0, 1]: on its device and in its dtype,
    in eval mode without gradients; its previous mode is restored."""
    from ..verification.verify import predict  # late: verification may import schemes

    device, dtype = model_device(model), model_dtype(model)
    was_training = model.training
    model.eval()
    try:
        inputs = normalize(x.to(device), mean, std).to(dtype)
        return predict(model, inputs, num_classes, batch_size).cpu()
    finally:
        model.train(was_training)


def _input_grad(model, x, target, mean, std) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(normalize(x, mean, std)), target)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, mean, std,
         batch_size: int = 256) -> torch.Tensor:
    """Untargeted FGSM (Goodfellow et al., ICLR 2015, Eq. 3): x + eps * sign(grad_x loss(x, y)),
    clipped to [0, 1] and rounded to k/255 within eps (stored_within). The model's
    parameters are left untouched."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            xb, yb = xb.to(device).float(), yb.to(device)
            step = eps * _input_grad(model, xb, yb, mean, std).sign()
            out.append(stored_within(xb + step, xb, eps).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else x.clone()


def targeted_pgd(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, eps: float,
                 steps: int, mean, std, batch_size: int = 256) -> torch.Tensor:
    """Targeted iterative FGSM / PGD (Kurakin et al. 2017; Madry et al., ICLR 2018): `steps`
    signed-gradient steps of eps / steps * 2.5 that lower the loss of `target`, projected on
    the L-inf ball of radius eps around x and on [0, 1]; rounded within eps (stored_within)."""
    device = model_device(model)
    step = 2.5 * eps / steps
    was_training = model.training
    model.eval()
    out = []
    try:
        for xb, tb in zip(x.split(batch_size), target.split(batch_size)):
            xb, tb = xb.to(device).float(), tb.to(device)
            adv = xb.clone()
            for _ in range(steps):
                adv = adv - step * _input_grad(model, adv, tb, mean, std).sign()
                adv = torch.min(torch.max(adv, xb - eps), xb + eps).clamp(0, 1)
            out.append(stored_within(adv, xb, eps).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else x.clone()


def reference_list(reference_models) -> list[torch.nn.Module]:
    """The owner's reference models (independent of the marked model): a sequence of modules,
    or a callable that trains and returns them."""
    if callable(reference_models) and not isinstance(reference_models, torch.nn.Module):
        reference_models = reference_models()
    if reference_models is None or isinstance(reference_models, torch.nn.Module) \
            or not isinstance(reference_models, Sequence) or len(reference_models) < 1:
        raise ValueError("reference_models must be a list of at least one model not derived "
                         "from the owner's (other seeds / data orders), or a callable returning "
                         "one: they bound the verdict's null (schemes.base.conservative_chance)")
    return [check_model(m, f"reference_models[{i}]") for i, m in enumerate(reference_models)]


def check_reference(doc, total: int) -> tuple[list[int], list[int], float]:
    """A key body's {"matches": [...], "totals": [...]} reference reads, and the chance
    conservative_chance gives from them (recomputed, never trusted from the file)."""
    if not isinstance(doc, dict) or set(doc) != {"matches", "totals"}:
        raise ValueError("reference must be {matches: [...], totals: [...]}, the reference "
                         "models' reads of the key")
    matches, totals = doc["matches"], doc["totals"]
    if not (isinstance(matches, list) and isinstance(totals, list) and matches
            and len(matches) == len(totals)):
        raise ValueError("reference matches and totals must be non-empty lists of equal length")
    matches = [check_int("reference matches", m, low=0) for m in matches]
    totals = [check_int("reference totals", t, low=1) for t in totals]
    if any(t != total for t in totals) or any(m > t for m, t in zip(matches, totals)):
        raise ValueError(f"reference reads must be counts out of the key's {total} trials")
    return matches, totals, conservative_chance(matches, totals, NULL_CONFIDENCE)


def check_batch_args(per_batch) -> int:
    return check_int("per_batch", per_batch, low=1)


ModelSource = Sequence[torch.nn.Module] | Callable[[], Sequence[torch.nn.Module]]


class KeyBatches:
    """Key inputs (normalized once) mixed into training batches, `per_batch` at a time, in a
    fixed keyed cyclic order (the order is seeded from the key: a rerun mixes the same rows)."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, mean, std, per_batch: int,
                 seed: int):
        from ..keys.sampling import keyed_choice

        self.per_batch = min(check_batch_args(per_batch), inputs.shape[0])
        self._x = normalize(inputs, mean, std)
        self._y = labels.to(torch.int64)
        self._order = keyed_choice(seed, inputs.shape[0], inputs.shape[0])
        self._pos = 0
        self.last: torch.Tensor | None = None  # the key rows of the last batch() (indices)

    def take(self) -> torch.Tensor:
        n = self._order.numel()
        idx = self._order[(self._pos + torch.arange(self.per_batch)) % n]
        self._pos = (self._pos + self.per_batch) % n
        self.last = idx
        return idx

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self._x.shape[1:]):
            raise ValueError(f"x must be a batch (B, *{tuple(self._x.shape[1:])}) of normalized "
                             f"inputs to mix the key into, got {tuple(x.shape)}")
        idx = self.take()
        kx = self._x[idx].to(x.device, x.dtype)
        ky = self._y[idx].to(y.device, y.dtype)
        return torch.cat([x, kx]), torch.cat([y, ky])


# -- `mlguard key new <scheme>`: the owner's model, data and reference models from files ------

def add_owner_model_arguments(parser, arch_help: str) -> None:
    """--model and --arch (with --arch-kwargs): the owner's trained model file."""
    from ..cli._args import add_arch_arguments

    parser.add_argument("--model", required=True, metavar="FILE",
                        help="the owner's trained model file (state_dict; needs --arch)")
    add_arch_arguments(parser, arch_help, required=True)


def cli_owner_model(args) -> torch.nn.Module:
    """The model of --model, built by --arch (and --arch-kwargs)."""
    from ..cli._args import arch_kwargs
    from ..files.model import load_model_file

    return load_model_file(args.model, args.arch,
                           arch_kwargs=arch_kwargs(args.arch, args.arch_kwargs))[0]


def add_cli_arguments(parser) -> None:
    add_owner_model_arguments(parser, "the network of --model and --references")
    parser.add_argument("--references", required=True, nargs="+", metavar="FILE",
                        help="model files trained like the owner's but independently (other "
                             "seeds / data orders): they bound the verdict's null")
    add_owner_data_arguments(parser, count=10000)


def add_owner_data_arguments(parser, count: int) -> None:
    """--data, --count, --mean, --std: the owner's images and their normalization."""
    parser.add_argument("--data", default="fashion-mnist", metavar="fashion-mnist|FILE.npz",
                        help="the owner's images: Fashion-MNIST's training set (the default), "
                             "or an .npz with 'images' (N, C, H, W) uint8 and 'labels' (N,)")
    parser.add_argument("--count", type=int, default=None,
                        help=f"use the first COUNT images (default: the first {count}, or all "
                             "when there are fewer)")
    parser.set_defaults(default_count=count)
    parser.add_argument("--mean", type=float, nargs="+", default=None,
                        help="per-channel normalization of training (Fashion-MNIST's by default "
                             "with --data fashion-mnist)")
    parser.add_argument("--std", type=float, nargs="+", default=None,
                        help="its std, one per channel like --mean")


def cli_inputs(args) -> dict:
    """generate()'s model, images, labels, reference_models, mean and std from the options."""
    from ..cli._args import arch_kwargs
    from ..files.model import load_model_file

    kwargs = arch_kwargs(args.arch, args.arch_kwargs)
    model = cli_owner_model(args)
    refs = [load_model_file(p, args.arch, arch_kwargs=kwargs)[0] for p in args.references]
    images, labels, mean, std = cli_owner_data(args)
    return {"model": model, "images": images, "labels": labels, "reference_models": refs,
            "mean": mean, "std": std}


def cli_owner_data(args) -> tuple:
    """(images, labels, mean, std) from --data, --count, --mean, --std."""
    from .. import data

    count = None if args.count is None else check_int("--count", args.count, low=1)
    mean, std = check_cli_normalization(args.mean, args.std)
    if args.data == "fashion-mnist":
        images, labels = data.fashion_mnist("train")
        if mean is None:
            mean, std = data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD
    else:
        images, labels = read_npz(args.data, "--data", ("images", "labels"))
    if count is not None and count > len(images):  # never fewer than asked, quietly
        raise ValueError(f"--count {count} is more than the {len(images)} images of --data "
                         f"{args.data}")
    count = args.default_count if count is None else count
    return images[:count], labels[:count], mean, std


def check_cli_normalization(mean, std) -> tuple:
    """--mean and --std: both or neither, one figure per channel each."""
    if (mean is None) != (std is None):
        given, missing = ("--mean", "--std") if std is None else ("--std", "--mean")
        raise ValueError(f"{given} needs {missing} too (the model's input normalization, one "
                         "figure per channel each)")
    if mean is not None and len(mean) != len(std):
        raise ValueError(f"--mean has {len(mean)} figures and --std {len(std)}: give one per "
                         "channel to each")
    return mean, std


def read_npz(path: str, option: str, fields: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """The arrays `fields` of an .npz file, as tensors; never unpickles."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            return tuple(torch.from_numpy(f[name]) for name in fields)
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{option} {path!r}: not an .npz with {', '.join(map(repr, fields))} "
                         f"({e})") from None


def module_of(suspect, name: str):
    """The suspect's network: these keys are read by running it (black-box), so a suspect
    given as weights alone is refused."""
    if suspect.module is None:
        raise ValueError(f"a {name} key is read by running the model (black-box); this "
                         "suspect has no module")
    return suspect.module


def stored_predictions(key, suspect, options, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the suspect's classes on the key's stored inputs, the key's labels for them)."""
    x, labels = key.materialize()
    return predictions(module_of(suspect, name), x, key.mean, key.std, key.num_classes,
                       options.batch_size), labels


class StoredImages:
    """Key mixin for keys that store their inputs (``stored_images``, keys/images.py's
    encoding) with one label each (``labels``): the pixels decoded once, and ``size``."""

    @cached_property
    def _pixels(self) -> torch.Tensor:
        return key_images.decode(self.stored_images)

    @property
    def size(self) -> int:
        return len(self.labels)


class StoredInputs:
    """Scheme hooks shared by the schemes whose keys store their input images with the
    owner's shape and normalization (frontier stitching, blackmarks)."""

    @classmethod
    def input_normalization(cls, key):
        return None if key.mean is None else (tuple(key.mean), tuple(key.std))

    @classmethod
    def input_shape(cls, key):
        return key.shape
