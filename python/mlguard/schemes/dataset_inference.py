"""Dataset inference (Maini, Yaghini and Papernot, "Dataset Inference: Ownership Resolution in
Machine Learning", ICLR 2021), as a scheme with an exact binomial verdict.

The paper's claim (Sec. 3-4): a model trained on the owner's private data, or extracted from
a model that was, sits farther from its decision boundary on those private samples than on
public samples of the same distribution, because training pushes the boundary away from
the samples it saw and extraction copies the boundary. Its test (Sec. 5, Algorithm 1):
embed each sample by its distances to every class (MinGD in the white-box setting, Blind
Walk in the black-box one), learn a regressor on the owner's model that scores "private"
against "public", and compare the suspect's mean score on m private and m public samples
with a one-sided Welch t-test.

mlguard's form keeps the paper's statistic (the suspect's margin on private against public
samples) and makes the test exact, a one-sided binomial sign test:

- the key holds K owner-private samples and K public samples, paired by the key's secret
  (a keyed draw from each pool, so two keys of one owner differ);
- a trial is one pair; it *matches* when the suspect's logit margin on the true label
  (z_y - max_{j != y} z_j, the cheapest first-order distance to the boundary) is strictly
  larger on the private sample than on its public partner;
- H0: the suspect was not trained on the owner's private data nor derived from a model that
  was. If the private/public split of the owner's pool was random, the two samples of a pair
  are exchangeable for such a suspect, so a pair matches with probability at most 1/2
  (ties count as no match) independently of the other pairs: matches ~ at most
  Binomial(K, 1/2), whatever the suspect's architecture or accuracy.

That exactness rests on the split being random: public samples drawn from another source
(e.g. a data set's official test split, which can be harder than its training split) break
it, and a suspect trained on neither reads above K/2. So a key may also hold the reads of
reference models (trained on neither half, e.g. on other data of the task); the verdict
then uses the larger of 1/2 and ``conservative_chance`` of those reads, and
``Reading.extra["null"]`` says which. No regressor is learned: a score learned on the
owner's model from the key's own samples would depend on the split and void the exact null
(the paper's regressor is fitted on samples apart from the test's for the same reason).

What the key file reveals: the K private images with their labels (the owner's training
data) and the K public ones. It is a secret like every key (mode 0600); the published
commitment hides it, but opening the key in an evidence report discloses those images.
"""

from __future__ import annotations

import argparse
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

NAME = "dataset-inference"
SCORES = ("logit-margin",)  # the per-sample statistic a trial compares (the key names it)
DEFAULT_PAIRS = 1000
_BODY = {"scheme", "secret", "nonce", "num_classes", "shape", "mean", "std", "score",
         "private_images", "private_labels", "public_images", "public_labels", "sources",
         "owner_matches", "reference"}
EXACT_NULL = ("exact 1/2 by exchangeability: a suspect neither trained on the owner's private "
              "data nor derived from a model that was ranks a private sample above its public "
              "partner with probability at most 1/2 (ties count as no match), PROVIDED the "
              "owner's private/public split was random (same distribution)")


@dataclass(frozen=True)
class DatasetInferenceKey(Key):
    """A dataset-inference key: K owner-private samples paired with K public ones (stored
    images and true labels), the score a pair compares, the owner model's own read and the
    reference models' reads (optional: they raise the null above 1/2 when they read above it)."""

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    score: str
    private_images: dict = field(repr=False)
    private_labels: tuple[int, ...] = field(repr=False)
    public_images: dict = field(repr=False)
    public_labels: tuple[int, ...] = field(repr=False)
    sources: dict = field(repr=False)
    owner_matches: int
    reference: dict | None = field(repr=False)
    label: str | None = field(default=None, compare=False)
    path: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def _checked(cls, *, secret, nonce, num_classes, shape, mean, std, score, private_images,
                 private_labels, public_images, public_labels, sources, owner_matches,
                 reference, label=None) -> DatasetInferenceKey:
        secret = keyfile.secret_from_hex(secret) if isinstance(secret, str) else bytes(secret)
        if len(secret) != keyfile.SECRET_BYTES:
            raise ValueError(f"secret must be {keyfile.SECRET_BYTES} bytes, got {len(secret)}")
        num_classes = check_int("num_classes", num_classes, low=2)
        shape = _check_shape(shape)
        mean, std = adv.normalization(mean, std, shape)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        halves = []
        for name, stored, labels in (("private", private_images, private_labels),
                                     ("public", public_images, public_labels)):
            pixels = key_images.decode(stored)
            if tuple(pixels.shape[1:]) != shape or pixels.dtype != torch.uint8 \
                    or pixels.shape[0] < 1:
                raise ValueError(f"{name} images must be uint8 (K >= 1, *{shape}), got "
                                 f"{pixels.dtype} {tuple(pixels.shape)}")
            halves.append((pixels, tuple(key_images.read_labels(list(labels), pixels.shape[0],
                                                                num_classes))))
        pairs = halves[0][0].shape[0]
        if halves[1][0].shape[0] != pairs:
            raise ValueError(f"the key pairs each private sample with one public sample: "
                             f"{pairs} private, {halves[1][0].shape[0]} public")
        if not (isinstance(sources, dict) and set(sources) == {"private", "public"}
                and all(isinstance(v, str) for v in sources.values())):
            raise ValueError("sources must be {private: str, public: str}, where the samples "
                             "were drawn from")
        owner_matches = check_int("owner_matches", owner_matches, low=0, high=pairs)
        if reference is not None:
            adv.check_reference(reference, pairs)
            reference = {"matches": list(reference["matches"]),
                         "totals": list(reference["totals"])}
        key = cls(secret=secret, nonce=bytes(nonce), num_classes=num_classes, shape=shape,
                  mean=mean, std=std, score=score, private_images=private_images,
                  private_labels=halves[0][1], public_images=public_images,
                  public_labels=halves[1][1], sources=dict(sources),
                  owner_matches=owner_matches, reference=reference,
                  label=keyfile.check_label(label))
        key.__dict__["_private"] = halves[0][0]
        key.__dict__["_public"] = halves[1][0]
        return key

    @classmethod
    def generate(cls, *, model: torch.nn.Module, private_images, private_labels,
                 public_images, public_labels, pairs: int = DEFAULT_PAIRS, mean=None,
                 std=None, reference_models=None, sources: dict | None = None,
                 secret: bytes | str | None = None, batch_size: int = 256,
                 label: str | None = None) -> DatasetInferenceKey:
        """A new key from the owner's trained ``model``, samples of its training data
        (``private_images``/``private_labels``) and samples of the same distribution it never
        trained on (``public_images``/``public_labels``): images (N, C, H, W) uint8 or float
        in [0, 1] before the normalization ``mean``/``std`` that training applies. The secret
        draws ``pairs`` of each. ``reference_models`` (optional): models trained on neither
        half; their reads bound the null when the split was not random. ``sources``: where
        the two sets came from, in words (stored in the key)."""
        model = adv.check_model(model)
        pairs = check_int("pairs", pairs, low=1)
        for name, images in (("private_images", private_images),
                             ("public_images", public_images)):
            if not isinstance(images, torch.Tensor) or images.dim() != 4:
                got = tuple(images.shape) if isinstance(images, torch.Tensor) \
                    else type(images).__name__
                raise ValueError(f"{name} must be a tensor (N, C, H, W), got {got}")
        shape = _check_shape(tuple(private_images.shape[1:]))
        if tuple(public_images.shape[1:]) != shape:
            raise ValueError(f"public_images must have the private images' shape {shape}, got "
                             f"{tuple(public_images.shape[1:])}")
        mean, std = adv.normalization(mean, std, shape)
        num_classes = _num_classes(model, private_images, mean, std)
        secret = keyfile.secret_or_new(secret)
        drawn = []
        for name, images, labels in (("private", private_images, private_labels),
                                     ("public", public_images, public_labels)):
            pixels, labels = adv.owner_data(images, labels, num_classes)
            if pixels.shape[0] < pairs:
                raise ValueError(f"pairs={pairs} needs as many {name} samples; "
                                 f"{name}_images holds {pixels.shape[0]}")
            pick = keyed_choice(keyfile.derive_seed(secret, f"{NAME}/{name}"),
                                pixels.shape[0], pairs)
            # rounded to k/255 so that the stored image is exactly the one read
            drawn.append((adv.quantize(pixels[pick]), labels[pick]))
        (px, py), (qx, qy) = drawn
        owner = _matches(model, px, py, qx, qy, mean, std, num_classes, batch_size)
        reference = None
        if reference_models is not None:
            refs = adv.reference_list(reference_models)
            reference = {"matches": [_matches(r, px, py, qx, qy, mean, std, num_classes,
                                              batch_size) for r in refs],
                         "totals": [pairs] * len(refs)}
        sources = sources or {"private": "given tensors", "public": "given tensors"}
        return cls._checked(secret=secret, nonce=keyfile.new_nonce(), num_classes=num_classes,
                            shape=shape, mean=mean, std=std, score=SCORES[0],
                            private_images=key_images.encode(px),
                            private_labels=py.tolist(),
                            public_images=key_images.encode(qx), public_labels=qy.tolist(),
                            sources=sources, owner_matches=owner, reference=reference,
                            label=label)

    # -- derived ----------------------------------------------------------------------------

    @cached_property
    def _private(self) -> torch.Tensor:
        return key_images.decode(self.private_images)

    @cached_property
    def _public(self) -> torch.Tensor:
        return key_images.decode(self.public_images)

    @property
    def pairs(self) -> int:
        """K: the trials a read counts."""
        return len(self.private_labels)

    @cached_property
    def chance(self) -> float:
        """1/2, or the reference models' conservative bound when it is larger."""
        if self.reference is None:
            return 0.5
        return max(0.5, adv.check_reference(self.reference, self.pairs)[2])

    def materialize(self, device="cpu") -> tuple[torch.Tensor, ...]:
        """(private images float32 in [0, 1], their labels, public images, their labels)."""
        return (key_images.to_float(self._private).to(device),
                torch.tensor(self.private_labels, dtype=torch.int64, device=device),
                key_images.to_float(self._public).to(device),
                torch.tensor(self.public_labels, dtype=torch.int64, device=device))

    # -- files ------------------------------------------------------------------------------

    def to_body(self) -> dict:
        return {"scheme": NAME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "num_classes": self.num_classes, "shape": list(self.shape),
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std), "score": self.score,
                "private_images": self.private_images,
                "private_labels": list(self.private_labels),
                "public_images": self.public_images, "public_labels": list(self.public_labels),
                "sources": dict(self.sources), "owner_matches": self.owner_matches,
                "reference": self.reference}

    @classmethod
    def from_body(cls, body: dict) -> DatasetInferenceKey:
        keyfile.check_body_fields(body, NAME, _BODY)
        try:
            return cls._checked(
                secret=keyfile.secret_from_hex(body["secret"]),
                nonce=bytes.fromhex(body["nonce"]), num_classes=body["num_classes"],
                shape=body["shape"], mean=body["mean"], std=body["std"], score=body["score"],
                private_images=body["private_images"], private_labels=body["private_labels"],
                public_images=body["public_images"], public_labels=body["public_labels"],
                sources=body["sources"], owner_matches=body["owner_matches"],
                reference=body["reference"])
        except (TypeError, AttributeError) as e:
            raise ValueError(f"{NAME} key body has a bad field: {e}") from None


# -- the statistic ----------------------------------------------------------------------------

@torch.no_grad()
def logit_margins(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mean, std,
                  num_classes: int, batch_size: int = 256) -> torch.Tensor:
    """z_y - max_{j != y} z_j per image (float64, CPU): positive when the model answers y,
    larger the farther the image is from the boundary in logit space. Eval mode, no grad;
    the model's mode is restored. NaN/inf logits are refused (no evidence in them)."""
    from ..verification.verify import logits_of

    device, dtype = adv.model_device(model), adv.model_dtype(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            z = logits_of(model(adv.normalize(xb.to(device), mean, std).to(dtype)))
            if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != num_classes:
                got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
                raise ValueError(f"model must output (batch, {num_classes}) logits to match the "
                                 f"key's num_classes={num_classes}, got {got}")
            z = z.double().cpu()
            if not bool(torch.isfinite(z).all()):
                raise ValueError("the model outputs NaN or inf logits on the key's samples; "
                                 "its margins cannot be compared")
            true = z.gather(1, yb[:, None])[:, 0]
            others = z.scatter(1, yb[:, None], float("-inf")).max(1).values
            out.append(true - others)
    finally:
        model.train(was_training)
    return torch.cat(out)


def _matches(model, px, py, qx, qy, mean, std, num_classes, batch_size) -> int:
    private = logit_margins(model, px, py, mean, std, num_classes, batch_size)
    public = logit_margins(model, qx, qy, mean, std, num_classes, batch_size)
    return int((private > public).sum())


@torch.no_grad()
def _num_classes(model, images, mean, std) -> int:
    """The model's number of outputs, from one image (the key's label range)."""
    from ..verification.verify import logits_of

    if images.shape[0] == 0:
        raise ValueError("private_images must not be empty")
    one = key_images.to_float(key_images.as_stored(images[:1], "private_images"))
    was_training = model.training
    model.eval()
    try:
        out = logits_of(model(adv.normalize(one.to(adv.model_device(model)), mean, std)
                              .to(adv.model_dtype(model))))
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < 2:
        raise ValueError(f"model must output (batch, num_classes) logits, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)}")
    return int(out.shape[1])


@register_scheme
class DatasetInference(adv.StoredInputs, Scheme):
    """Dataset inference (Maini, Yaghini and Papernot, ICLR 2021), exact sign-test form."""

    name = NAME
    key_type = DatasetInferenceKey
    summary = ("Dataset inference (Maini et al., ICLR 2021): the suspect's margin on the "
               "owner's private samples against paired public ones; exact null 1/2 if the "
               "split was random")

    @classmethod
    def generate(cls, *, secret=None, **options) -> DatasetInferenceKey:
        return DatasetInferenceKey.generate(secret=secret, **options)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        adv.add_owner_model_arguments(parser, "the network of --model (and --references)")
        spec = "fashion-mnist:SPLIT[a:b] | cifar10=PATH:SPLIT[a:b] | FILE.npz[a:b]"
        parser.add_argument("--private", required=True, metavar="SPEC",
                            help=f"the owner's private training samples ({spec}, images "
                                 "uint8 (N, C, H, W) and labels)")
        parser.add_argument("--public", required=True, metavar="SPEC",
                            help="samples of the same distribution the model never trained "
                                 "on (same forms); the null is exact only if private and "
                                 "public were split at random")
        parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS,
                            help=f"K, private/public pairs (trials) in the key (default "
                                 f"{DEFAULT_PAIRS})")
        parser.add_argument("--references", nargs="+", default=None, metavar="FILE",
                            help="optional model files (same --arch) trained on neither half: "
                                 "their reads bound the null when above 1/2")
        parser.add_argument("--mean", type=float, nargs="+", default=None,
                            help="per-channel normalization of training (Fashion-MNIST's by "
                                 "default with a fashion-mnist spec)")
        parser.add_argument("--std", type=float, nargs="+", default=None,
                            help="its std, one per channel like --mean")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> DatasetInferenceKey:
        from .. import data
        from ..cli._args import arch_kwargs
        from ..files.model import load_model_file
        from ._dataset_spec import load_spec

        private = load_spec(args.private, "--private")
        public = load_spec(args.public, "--public")
        kwargs = arch_kwargs(args.arch, args.arch_kwargs)
        model = adv.cli_owner_model(args)
        refs = None if not args.references else \
            [load_model_file(p, args.arch, arch_kwargs=kwargs)[0] for p in args.references]
        mean, std = adv.check_cli_normalization(args.mean, args.std)
        if mean is None and args.private.startswith("fashion-mnist"):
            mean, std = data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD
        pairs = check_int("--pairs", args.pairs, low=1)
        return DatasetInferenceKey.generate(
            model=model, private_images=private[0], private_labels=private[1],
            public_images=public[0], public_labels=public[1], pairs=pairs, mean=mean, std=std,
            reference_models=refs, sources={"private": args.private, "public": args.public})

    @classmethod
    def embedding(cls, key, **options) -> Embedding:
        """Nothing: dataset inference reads what ordinary training leaves (no change to it)."""
        _check_key(key)
        if options:
            raise ValueError(f"{NAME} embedding takes no options, got {sorted(options)}")
        return Embedding()

    @classmethod
    def read(cls, key, suspect: Suspect, options: ReadOptions) -> Reading:
        _check_key(key)
        module = adv.module_of(suspect, NAME)
        px, py, qx, qy = key.materialize()
        args = (key.mean, key.std, key.num_classes, options.batch_size)
        private = logit_margins(module, px, py, *args)
        public = logit_margins(module, qx, qy, *args)
        matches = int((private > public).sum())
        if key.reference is None:
            null = EXACT_NULL
        else:
            null = (f"{EXACT_NULL}; the key's {len(key.reference['matches'])} reference models "
                    "(trained on neither half) bound it at "
                    f"{key.chance:.4g} (the largest one's one-sided Clopper-Pearson bound at "
                    "1 - 1e-3), used when above 1/2")
        return Reading(matches, key.pairs, key.chance, extra={
            "null": null, "score": key.score, "ties": int((private == public).sum()),
            "median_margin_private": float(private.median()),
            "median_margin_public": float(public.median()),
            "owner_matches": key.owner_matches, "sources": dict(key.sources)})

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        key = DatasetInferenceKey.from_body(body)
        return key.pairs, key.chance


def _check_key(key) -> None:
    if not isinstance(key, DatasetInferenceKey):
        raise TypeError(f"key must be a DatasetInferenceKey, got {type(key).__name__}")
