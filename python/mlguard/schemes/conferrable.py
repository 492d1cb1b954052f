"""Fingerprinting by conferrable adversarial examples (Lukas, Zhang and Kerschbaum, "Deep Neural
Network Fingerprinting by Conferrable Adversarial Examples", ICLR 2021), as a scheme.

A fingerprint changes nothing in the owner's model (``embedding`` adds nothing): it is a set
of inputs whose adversarial label *transfers* to models derived from the owner's (a copy
retrained on its answers, fine-tuned, distilled) but not to models trained independently on
the same task. The paper calls such examples *conferrable* (Sec. 3). Where this file follows
the paper (Sec. 4, "Conferrable Ensemble Method", CEM):

- **Models** (Sec. 4): the owner trains *surrogate* models derived from the source model (here:
  fresh networks trained on its answers, what retraining theft gives) and *reference* models
  trained independently on the ground truth (``_owner_models.train_owner_models``; or the
  owner gives their own).
- **Score** (Sec. 4, the conferrability score): for an input x' and the source model's label
  t on it, sigma_t(x') = mean over surrogates S of S(x')_t * (1 - max over references R of
  R(x')_t), softmax outputs: high when every derived model agrees with the source and no
  reference does.
- **Attack** (Sec. 4, the CEM loss): the paper minimizes H(1, sigma(x')) - H(M(x), M(x')) +
  H(M(x'), mean S(x')) over an L-inf ball of radius eps. Here the same three goals are one
  term, -log(M(x')_t * sigma_t(x')) (the source says t, the surrogates agree, the references
  do not), minimized by signed-gradient PGD steps (Madry et al., ICLR 2018) in [0, 1] pixel
  space, projected on the eps ball; t is, at each step, the class other than the true label
  with the highest score (an untargeted attack, as the paper's). Inputs start from owner
  images the source classifies correctly, in a keyed order from the secret.
- **Selection** (Sec. 4/5): the candidates the source model labels adversarially (t != true
  label) after rounding to k/255, ranked by their conferrability score; the ``size`` best
  are the fingerprint, each stored (uint8) with the source model's label t.
- **Verification** (Sec. 5, CAEAcc): the suspect's labels on the fingerprint; a match is
  the source's label t. ``matches`` / ``total`` is the paper's fingerprint retention.

**The null is estimated, and bounded.** The paper decides with a threshold on CAEAcc set
from reference models. Here the verdict is the exact binomial test at a stated upper bound:
``calibration`` reference models, trained independently like the references but **held out
of the optimization** (the examples were tuned not to transfer to the optimization
references, so those would understate the rate), read the finished key; the per-trial chance
is ``schemes.base.conservative_chance`` of their reads (the largest model's rate, its
one-sided Clopper-Pearson bound at 1 - 1e-3). The reads are stored in the key and the bound
is recomputed from them when the key is opened. The bound holds for models *like the
calibration models* (same task, independent of the owner's model); an independent model that
shares the owner's adversarial directions more than they do (another architecture, much
more data, adversarial training) is not covered, and ``Reading.extra["null"]`` says so.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from functools import cached_property

import torch

from .._checks import check_int
from ..keys import images as key_images
from ..keys import keyfile
from ..keys.base import Key
from ..keys.sampling import keyed_choice
from ..keys.trigger_key import _check_shape
from . import _adversarial as adv
from .base import Embedding, Reading, ReadOptions, Scheme, Suspect, register_scheme

NAME = "conferrable"
DEFAULT_SIZE = 200  # fingerprint inputs (the paper uses 100; 200 tightens the test, RESULTS.md)
DEFAULT_EPS = 0.1  # L-inf radius in [0, 1] pixels (the paper studies 0.01 to 0.15 on CIFAR-10)
DEFAULT_STEPS = 20
_BODY = {"scheme", "secret", "nonce", "num_classes", "shape", "mean", "std", "eps", "steps",
         "images", "labels", "true_labels", "reference", "generation"}
_GENERATION = {"surrogate_matches", "optimization_reference_matches", "candidates"}


@dataclass(frozen=True)
class ConferrableKey(adv.StoredImages, Key):
    """A conferrable fingerprint: the stored inputs, the source model's label on each, the
    true labels of the images they were made from, and the held-out calibration models'
    reads (the null's bound); ``generation`` keeps the surrogates' and optimization
    references' reads of the finished key (figures, not used by the test)."""

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    num_classes: int
    shape: tuple[int, int, int]
    eps: float
    steps: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    stored_images: dict = field(repr=False)
    labels: tuple[int, ...] = field(repr=False)
    true_labels: tuple[int, ...] = field(repr=False)
    reference: dict = field(repr=False)
    generation: dict = field(repr=False)
    label: str | None = field(default=None, compare=False)
    path: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def _checked(cls, *, secret, nonce, num_classes, shape, eps, steps, mean, std,
                 stored_images, labels, true_labels, reference, generation,
                 label=None) -> ConferrableKey:
        secret = bytes(secret)
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        num_classes = check_int("num_classes", num_classes, low=2)
        shape = _check_shape(shape)
        eps = adv.check_eps(eps)
        steps = check_int("steps", steps, low=1)
        mean, std = adv.normalization(mean, std, shape)
        pixels = key_images.decode(stored_images)
        size = pixels.shape[0]
        if tuple(pixels.shape[1:]) != shape or pixels.dtype != torch.uint8 or size < 1:
            raise ValueError(f"key images must be uint8 (N >= 1, *{shape}), got "
                             f"{pixels.dtype} {tuple(pixels.shape)}")
        labels = tuple(key_images.read_labels(list(labels), size, num_classes))
        true_labels = tuple(key_images.read_labels(list(true_labels), size, num_classes))
        if any(a == b for a, b in zip(labels, true_labels)):
            raise ValueError("every fingerprint label must differ from its image's true label "
                             "(the examples are adversarial for the source model)")
        adv.check_reference(reference, size)
        generation = _check_generation(generation, size)
        key = cls(secret=secret, nonce=bytes(nonce), num_classes=num_classes, shape=shape,
                  eps=eps, steps=steps, mean=mean, std=std, stored_images=stored_images,
                  labels=labels, true_labels=true_labels,
                  reference={"matches": list(reference["matches"]),
                             "totals": list(reference["totals"])},
                  generation=generation, label=keyfile.check_label(label))
        key.__dict__["_pixels"] = pixels
        return key

    @classmethod
    def generate(cls, *, model: torch.nn.Module, images, labels, surrogate_models,
                 reference_models, calibration_models, size: int = DEFAULT_SIZE,
                 eps: float = DEFAULT_EPS, steps: int = DEFAULT_STEPS,
                 candidates: int | None = None, mean=None, std=None,
                 secret: bytes | str | None = None, batch_size: int = 256,
                 label: str | None = None) -> ConferrableKey:
        """A new fingerprint of the owner's trained ``model`` from the owner's ``images``
        ((N, C, H, W) uint8 or float in [0, 1], before the normalization ``mean``/``std``
        that training applies) and their true ``labels``.

        ``surrogate_models``: models derived from ``model`` (e.g. retrained on its answers);
        ``reference_models``: models trained independently on the ground truth, used in the
        optimization; ``calibration_models``: more independent models, held out of the
        optimization, whose reads bound the null (each a list of modules or a callable
        returning one; ``_owner_models.train_owner_models`` trains all three groups).
        ``candidates`` (default 3 * size) owner images are attacked; the ``size`` most
        conferrable of those the source model labels adversarially are kept. ValueError when
        fewer than ``size`` candidates become adversarial."""
        model = adv.check_model(model)
        size = check_int("size", size, low=1)
        eps = adv.check_eps(eps)
        steps = check_int("steps", steps, low=1)
        candidates = 3 * size if candidates is None else check_int("candidates", candidates,
                                                                   low=size)
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            adv.owner_data(images, labels, 2)  # raises the message about images
        shape = _check_shape(tuple(images.shape[1:]))
        mean, std = adv.normalization(mean, std, shape)
        from .frontier_stitching import _num_classes

        num_classes = _num_classes(model, images, mean, std)
        pixels, labels = adv.owner_data(images, labels, num_classes)
        groups = {}
        for name, given in (("surrogate_models", surrogate_models),
                            ("reference_models", reference_models),
                            ("calibration_models", calibration_models)):
            try:
                groups[name] = adv.reference_list(given)
            except ValueError:
                raise ValueError(f"{name} must be a list of at least one model (or a callable "
                                 "returning one); see ConferrableKey.generate") from None
        secret = keyfile.secret_or_new(secret)
        order = keyed_choice(keyfile.derive_seed(secret, f"{NAME}/select"), pixels.shape[0],
                             pixels.shape[0])
        probe = adv.predictions
        x, y = pixels[order], labels[order]
        right = probe(model, x, mean, std, num_classes, batch_size) == y
        x, y = x[right][:candidates], y[right][:candidates]
        xa = conferrable_attack(model, groups["surrogate_models"], groups["reference_models"],
                                x, y, eps, steps, mean, std, batch_size)
        t = probe(model, xa, mean, std, num_classes, batch_size)
        score = conferrability(groups["surrogate_models"], groups["reference_models"], xa, t,
                               mean, std, batch_size)
        score[t == y] = -1.0  # not adversarial for the source model: never kept
        adversarial = int((t != y).sum())
        if adversarial < size:
            raise ValueError(f"{len(x)} correctly classified owner images gave {adversarial} "
                             f"adversarial examples at eps={eps}, steps={steps}; the key needs "
                             f"size={size}: give more images or candidates, or raise eps")
        keep = score.argsort(descending=True, stable=True)[:size]
        key_x, key_t, key_y = xa[keep], t[keep], y[keep]

        def reads(models):
            return [int((probe(m, key_x, mean, std, num_classes, batch_size) == key_t).sum())
                    for m in models]

        return cls._checked(
            secret=secret, nonce=keyfile.new_nonce(), num_classes=num_classes, shape=shape,
            eps=eps, steps=steps, mean=mean, std=std,
            stored_images=key_images.encode(key_x), labels=key_t.tolist(),
            true_labels=key_y.tolist(),
            reference={"matches": reads(groups["calibration_models"]),
                       "totals": [size] * len(groups["calibration_models"])},
            generation={"surrogate_matches": reads(groups["surrogate_models"]),
                        "optimization_reference_matches": reads(groups["reference_models"]),
                        "candidates": len(x)},
            label=label)

    # -- derived ----------------------------------------------------------------------------

    @cached_property
    def chance(self) -> float:
        """The null's per-trial bound, recomputed from the stored calibration reads."""
        return adv.check_reference(self.reference, self.size)[2]

    def materialize(self, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(fingerprint inputs float32 in [0, 1] (size, *shape), the source model's labels)."""
        return (key_images.to_float(self._pixels).to(device),
                torch.tensor(self.labels, dtype=torch.int64, device=device))

    # -- files ------------------------------------------------------------------------------

    def to_body(self) -> dict:
        return {"scheme": NAME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "num_classes": self.num_classes, "shape": list(self.shape), "eps": self.eps,
                "steps": self.steps, "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std),
                "images": self.stored_images, "labels": list(self.labels),
                "true_labels": list(self.true_labels), "reference": self.reference,
                "generation": self.generation}

    @classmethod
    def from_body(cls, body: dict) -> ConferrableKey:
        keyfile.check_body_fields(body, NAME, _BODY)
        try:
            return cls._checked(
                secret=keyfile.secret_from_hex(body["secret"]),
                nonce=bytes.fromhex(body["nonce"]), num_classes=body["num_classes"],
                shape=body["shape"], eps=body["eps"], steps=body["steps"], mean=body["mean"],
                std=body["std"], stored_images=body["images"], labels=body["labels"],
                true_labels=body["true_labels"], reference=body["reference"],
                generation=body["generation"])
        except (TypeError, AttributeError) as e:
            raise ValueError(f"{NAME} key body has a bad field: {e}") from None


def _check_generation(doc, size: int) -> dict:
    if not isinstance(doc, dict) or set(doc) != _GENERATION:
        raise ValueError(f"generation must be an object with exactly {sorted(_GENERATION)}")
    out = {}
    for name in ("surrogate_matches", "optimization_reference_matches"):
        values = doc[name]
        if not isinstance(values, list) or not values:
            raise ValueError(f"generation {name} must be a non-empty list of counts")
        out[name] = [check_int(f"generation {name}", v, low=0, high=size) for v in values]
    out["candidates"] = check_int("generation candidates", doc["candidates"], low=size)
    return out


# -- the attack (paper Sec. 4) -----------------------------------------------------------------

def _probabilities(models, x, mean, std) -> torch.Tensor:
    """(len(models), N, C) softmax outputs, differentiable in x."""
    z = adv.normalize(x, mean, std)
    return torch.stack([torch.softmax(m(z.to(adv.model_device(m))).float(), 1).to(x.device)
                        for m in models])


def _scores(surrogates, references, x, mean, std) -> torch.Tensor:
    """(N, C) conferrability score of every class: mean surrogate probability times
    (1 - the largest reference probability) (paper Sec. 4)."""
    s = _probabilities(surrogates, x, mean, std).mean(0)
    r = _probabilities(references, x, mean, std).amax(0)
    return s * (1.0 - r)


@torch.no_grad()
def conferrability(surrogates, references, x: torch.Tensor, t: torch.Tensor, mean, std,
                   batch_size: int = 256) -> torch.Tensor:
    """The conferrability score (paper Sec. 4) of inputs ``x`` ([0, 1] pixels) for labels
    ``t``: mean surrogate softmax of t times (1 - the largest reference softmax of t)."""
    out = []
    with _eval(list(surrogates) + list(references)):
        for xb, tb in zip(x.split(batch_size), t.split(batch_size)):
            out.append(_scores(surrogates, references, xb.float(), mean, std)
                       .gather(1, tb[:, None]).squeeze(1))
    return torch.cat(out) if out else torch.zeros(0)


def conferrable_attack(model, surrogates, references, x: torch.Tensor, y: torch.Tensor,
                       eps: float, steps: int, mean, std, batch_size: int = 256) -> torch.Tensor:
    """The Conferrable Ensemble Method (paper Sec. 4) as batched PGD: ``steps`` signed steps
    of 2.5 * eps / steps that lower -log(M(x')_t * score_t(x')) for t the best-scoring class
    other than the true label ``y``, projected on the L-inf ball of radius eps around ``x``
    and on [0, 1]; rounded to k/255 within eps (adversarial.stored_within). No model's
    parameters change."""
    step = 2.5 * eps / steps
    out = []
    everyone = [model, *surrogates, *references]
    with _eval(everyone):
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            xb = xb.float()
            xa = xb.clone()
            for _ in range(steps):
                xa.requires_grad_(True)
                score = _scores(surrogates, references, xa, mean, std)
                source = _probabilities([model], xa, mean, std)[0]
                total = (source * score).detach()
                total[torch.arange(len(yb)), yb] = -1.0  # the true label is not a target
                t = total.argmax(1)
                rows = torch.arange(len(t))
                loss = -(torch.log(source[rows, t] + 1e-12)
                         + torch.log(score[rows, t] + 1e-12)).sum()
                (grad,) = torch.autograd.grad(loss, xa)
                xa = xa.detach() - step * grad.sign()
                xa = torch.min(torch.max(xa, xb - eps), xb + eps).clamp(0, 1)
            out.append(adv.stored_within(xa.detach(), xb, eps))
    return torch.cat(out) if out else x.clone()


class _eval:
    """Puts models in eval mode for a block, then restores each one's mode; parameters
    need no gradient inside (only the inputs are optimized)."""

    def __init__(self, models):
        self.models = models

    def __enter__(self):
        self.state = [(m, m.training, [p.requires_grad for p in m.parameters()])
                      for m in self.models]
        for m in self.models:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def __exit__(self, *exc):
        for m, training, grads in self.state:
            m.train(training)
            for p, g in zip(m.parameters(), grads):
                p.requires_grad_(g)


# -- `mlguard key new conferrable` ----------------------------------------------------------------

def _add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    adv.add_owner_model_arguments(parser, "the network of --model (and of the surrogate and "
                                          "reference models trained here)")
    adv.add_owner_data_arguments(parser, count=20000)
    parser.add_argument("--public", default=None, metavar="FILE.npz",
                        help="unlabeled images of the same task the owner did not train on "
                             "('images' in an .npz): more inputs for the surrogates")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help=f"fingerprint inputs (default {DEFAULT_SIZE})")
    parser.add_argument("--eps", type=float, default=DEFAULT_EPS,
                        help=f"L-inf radius in (0, 1] pixels (default {DEFAULT_EPS})")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"attack steps (default {DEFAULT_STEPS})")
    parser.add_argument("--surrogates", type=int, default=3,
                        help="surrogate models trained on the model's answers (default 3)")
    parser.add_argument("--references", type=int, default=3,
                        help="independent models the examples are optimized against (3)")
    parser.add_argument("--calibration", type=int, default=4,
                        help="held-out independent models that bound the null (default 4)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="training epochs of each surrogate / reference model (default 3)")
    parser.add_argument("--per-model", type=int, default=6000,
                        help="images each surrogate / reference model trains on (default 6000)")
    parser.add_argument("--surrogate-labels", choices=("hard", "soft"), default="hard",
                        help="the surrogates learn the model's top-1 answers (hard) or its "
                             "posteriors (soft) (default hard)")


def _from_cli(args: argparse.Namespace) -> ConferrableKey:
    from ..cli._args import arch_kwargs
    from ..files.model import resolve_arch
    from ._owner_models import train_owner_models

    # every number checked before minutes of training
    for option in ("size", "steps", "surrogates", "references", "calibration", "epochs",
                   "per_model"):
        check_int("--" + option.replace("_", "-"), getattr(args, option), low=1)
    adv.check_eps(args.eps, "--eps")
    model = adv.cli_owner_model(args)
    arch = resolve_arch(args.arch, arch_kwargs(args.arch, args.arch_kwargs))
    images, labels, mean, std = adv.cli_owner_data(args)
    public = None if args.public is None else adv.read_npz(args.public, "--public",
                                                          ("images",))[0]
    secret = keyfile.new_secret()
    count = args.surrogates + args.references + args.calibration
    print(f"conferrable: training {count} models ({args.surrogates} surrogates, "
          f"{args.references} references, {args.calibration} calibration), then the attack; "
          f"minutes on a CPU", file=sys.stderr)
    models = train_owner_models(
        model, arch, images, labels, public=public, surrogates=args.surrogates,
        references=args.references, calibration=args.calibration, per_model=args.per_model,
        epochs=args.epochs, mean=mean, std=std,
        seed=keyfile.derive_seed(secret, f"{NAME}/models"),
        surrogate_labels=args.surrogate_labels)
    key = ConferrableKey.generate(
        model=model, images=images, labels=labels, surrogate_models=models["surrogates"],
        reference_models=models["references"], calibration_models=models["calibration"],
        size=args.size, eps=args.eps, steps=args.steps, mean=mean, std=std, secret=secret)
    print(f"conferrable: {key.size} inputs; the calibration models matched "
          f"{list(key.reference['matches'])} of them, so the null's chance is {key.chance:.3f}",
          file=sys.stderr)
    return key


@register_scheme
class Conferrable(adv.StoredInputs, Scheme):
    """Conferrable adversarial examples (Lukas et al., ICLR 2021); see the module docstring."""

    name = NAME
    key_type = ConferrableKey
    summary = ("conferrable adversarial examples (Lukas et al., ICLR 2021): a fingerprint "
               "whose adversarial labels transfer to models derived from yours, not to "
               "independent ones; null bounded by held-out reference models")

    @classmethod
    def generate(cls, *, secret=None, **options) -> ConferrableKey:
        return ConferrableKey.generate(secret=secret, **options)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        _add_cli_arguments(parser)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> ConferrableKey:
        return _from_cli(args)

    @classmethod
    def embedding(cls, key, **options) -> Embedding:
        """Nothing: a fingerprint leaves the owner's training unchanged."""
        _check_key(key)
        if options:
            raise ValueError(f"a {NAME} fingerprint's embedding takes no options, got "
                             f"{sorted(options)}")
        return Embedding()

    @classmethod
    def read(cls, key, suspect: Suspect, options: ReadOptions) -> Reading:
        _check_key(key)
        preds, t = adv.stored_predictions(key, suspect, options, NAME)
        matches = int((preds == t).sum())
        refs = key.reference["matches"]
        return Reading(matches, key.size, key.chance, extra={
            "null": (f"conservative: the largest rate of the key's {len(refs)} held-out "
                     "calibration models (trained independently of the owner's model at key "
                     "generation, not used to optimize the examples), one-sided "
                     "Clopper-Pearson bound at 1 - 1e-3; it holds for independent models like "
                     "them, not for ones that share the owner's adversarial directions more "
                     "(another architecture, far more data, adversarial training)"),
            "calibration_matches": list(refs),
            "surrogate_matches": list(key.generation["surrogate_matches"]),
            "true_label_answers": int((preds == torch.tensor(key.true_labels)).sum()),
            "eps": key.eps})

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        key = ConferrableKey.from_body(body)
        return key.size, key.chance

    @classmethod
    def nickname(cls, key) -> str:
        return "cae"


def _check_key(key) -> None:
    if not isinstance(key, ConferrableKey):
        raise TypeError(f"key must be a ConferrableKey, got {type(key).__name__}")

