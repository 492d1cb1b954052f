"""BlackMarks (Chen, Rouhani, Koushanfar, "BlackMarks: Blackbox Multibit Watermarking for Deep
Neural Networks", arXiv:1904.00344, 2019), as a scheme.

Encoding (paper Sec. 3.1): the owner model's mean output activation (logits) per class over
the owner's data, split into two clusters by k-means; class c encodes bit f[c] in {0, 1}.
Key (Sec. 3.2, Algorithm 1): a keyed binary signature b of K bits (uniform, from the secret);
for bit i, an owner image whose true class is in the *other* cluster (1 - b_i) is moved by a
targeted adversarial attack (here targeted PGD of radius ``eps``) toward a keyed class of
cluster b_i. The key holds the K images (rounded to k/255, stored uint8) and their targets.
Embedding (Sec. 3.3, Eq. 2-3): fine-tuning with the key inputs labelled with their targets
mixed into the batches, plus the signature loss lambda * mean_i |softmax(model(x_i)) . f - b_i|
(the soft Hamming distance between the decoded and the owner's signature).
Reading (Sec. 3.4): each key input's predicted class decoded to its cluster bit; matches =
bits equal to the signature (the bit error rate is 1 - matches / K).
Filtering (Sec. 3.2; WRT's ``key_expansion_factor``): a candidate that an unmarked model
already decodes to its bit is dropped, or the key would detect models that never carried
it. Here the unmarked model is the owner's own pre-watermark model (the one whose
derivatives most readily share its adversarial examples): bit i takes the first of up to
``tries`` keyed source images whose candidate the owner model does not decode to b_i. The
paper's second filter (keys the *marked* model fails to learn) is left to the embedding,
which trains until every bit reads.

The null, thought through. If a suspect's decoded bits were independent of the signature, each
bit would match with probability exactly 1/2 whatever the model does, because the signature
is secret and uniform: a model that answers every key input with one class matches
Binomial(K, 1/2) exactly. But the key inputs are not independent of the signature: input i is
an image of cluster 1 - b_i pushed toward cluster b_i, so what any model answers on it
depends on b_i. A model trained on the same task that sees through the perturbation answers
the source class and decodes 1 - b_i (rate below 1/2); one to which the owner's adversarial
examples transfer decodes b_i (rate above 1/2). Neither direction is fixed by the secret, so
no exact chance exists. The verdict uses chance = max(1/2, c), where c is
``schemes.base.conservative_chance`` of reference models the owner trains at key generation,
independently of the marked model (the largest model's rate, one-sided Clopper-Pearson bound
at 1 - 1e-3): the 1/2 floor covers models whose answers ignore the inputs (exactly 1/2), c the
transfer to models like the references. It is conservative for models like the references,
not for a model to which the owner's perturbations transfer more than to any of them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import cached_property

import torch

from .._checks import check_int, check_real
from ..keys import images as key_images
from ..keys import keyfile
from ..keys.base import Key
from ..keys.sampling import keyed_below, keyed_choice
from ..keys.trigger_key import _check_shape
from . import _adversarial as adv
from .base import Embedding, Reading, ReadOptions, Scheme, Suspect, register_scheme
from .frontier_stitching import _num_classes

NAME = "blackmarks"
DEFAULT_EPS = 0.1  # WRT's CIFAR-10 config (eps: 0.1)
DEFAULT_STEPS = 10
DEFAULT_LAMBDA = 0.5  # WRT's CIFAR-10 config (lmbda: 0.5)
_BODY = {"scheme", "secret", "nonce", "num_classes", "shape", "mean", "std", "eps", "steps",
         "encoding", "images", "targets", "reference"}


def signature_bits(secret: bytes, bits: int) -> torch.Tensor:
    """The owner's K-bit signature: uniform, from its own HKDF sub-seed."""
    return keyed_below(keyfile.derive_seed(secret, f"{NAME}/signature"), bits, 2)


def two_means(points: torch.Tensor, iterations: int = 100) -> torch.Tensor:
    """k-means with k = 2 (Lloyd's algorithm) on the rows of ``points`` (float64), started
    from the two farthest rows so the result is deterministic; the cluster of row 0 is 0."""
    points = points.double()
    d = torch.cdist(points, points)
    first, second = divmod(int(d.argmax()), points.shape[0])
    centers = points[[first, second]]
    assign = torch.zeros(points.shape[0], dtype=torch.int64)
    for _ in range(iterations):
        new = torch.cdist(points, centers).argmin(dim=1)
        if (new == 0).all() or (new == 1).all():
            break
        if torch.equal(new, assign):
            break
        assign = new
        centers = torch.stack([points[assign == k].mean(dim=0) for k in (0, 1)])
    if (assign == 0).all() or (assign == 1).all():
        raise ValueError("the mean activations of the classes do not split into two clusters")
    return assign if assign[0] == 0 else 1 - assign


@dataclass(frozen=True)
class BlackmarksKey(Key):
    """A BlackMarks key: the class->bit encoding, K stored key inputs and their target
    classes (the signature is regenerated from the secret), and the reference reads."""

    secret: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    num_classes: int
    shape: tuple[int, int, int]
    eps: float
    steps: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    encoding: tuple[int, ...]
    stored_images: dict = field(repr=False)
    targets: tuple[int, ...] = field(repr=False)
    reference: dict = field(repr=False)
    label: str | None = field(default=None, compare=False)
    path: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def _checked(cls, *, secret, nonce, num_classes, shape, eps, steps, mean, std, encoding,
                 stored_images, targets, reference, label=None) -> BlackmarksKey:
        secret = keyfile.secret_or_new(secret)
        num_classes = check_int("num_classes", num_classes, low=2)
        shape = _check_shape(shape)
        eps = adv.check_eps(eps)
        steps = check_int("steps", steps, low=1)
        mean, std = adv.normalization(mean, std, shape)
        if not (isinstance(encoding, (list, tuple)) and len(encoding) == num_classes
                and all(e in (0, 1) and not isinstance(e, bool) for e in encoding)
                and 0 < sum(encoding) < num_classes):
            raise ValueError(f"encoding must give each of the {num_classes} classes a bit 0 or "
                             "1, both bits used")
        pixels = key_images.decode(stored_images)
        bits = pixels.shape[0]
        if tuple(pixels.shape[1:]) != shape or pixels.dtype != torch.uint8 or bits < 1:
            raise ValueError(f"key images must be uint8 (K >= 1, *{shape}), got "
                             f"{pixels.dtype} {tuple(pixels.shape)}")
        targets = tuple(key_images.read_labels(list(targets), bits, num_classes))
        signature = signature_bits(secret, bits)
        if any(encoding[t] != int(b) for t, b in zip(targets, signature)):
            raise ValueError("targets must lie in the cluster of their signature bit (the key "
                             "does not match its secret)")
        adv.check_reference(reference, bits)
        key = cls(secret=secret, nonce=bytes(nonce), num_classes=num_classes, shape=shape,
                  eps=eps, steps=steps, mean=mean, std=std, encoding=tuple(encoding),
                  stored_images=stored_images, targets=targets,
                  reference={"matches": list(reference["matches"]),
                             "totals": list(reference["totals"])},
                  label=keyfile.check_label(label))
        key.__dict__["_pixels"] = pixels
        key.__dict__["signature"] = signature
        return key

    @classmethod
    def generate(cls, *, model: torch.nn.Module, images, labels, reference_models,
                 bits: int = 100, eps: float = DEFAULT_EPS, steps: int = DEFAULT_STEPS,
                 mean=None, std=None, secret: bytes | str | None = None, tries: int = 10,
                 batch_size: int = 256, label: str | None = None) -> BlackmarksKey:
        """A new key of ``bits`` signature bits from the owner's trained ``model`` and data
        (``images`` (N, C, H, W) uint8 or float in [0, 1] before the normalization
        ``mean``/``std`` of training; ``labels`` their true classes). ``reference_models``:
        models trained like the owner's but independently (or a callable returning them).
        ``tries``: candidate source images per bit (WRT's key_expansion_factor, 10)."""
        model = adv.check_model(model)
        bits = check_int("bits", bits, low=1)
        eps = adv.check_eps(eps)
        steps = check_int("steps", steps, low=1)
        tries = check_int("tries", tries, low=1)
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            adv.owner_data(images, labels, 2)  # raises the message about images
        shape = _check_shape(tuple(images.shape[1:]))
        mean, std = adv.normalization(mean, std, shape)
        num_classes = _num_classes(model, images, mean, std)
        pixels, labels = adv.owner_data(images, labels, num_classes)
        secret = keyfile.secret_or_new(secret)
        encoding = _encoding(model, pixels, labels, num_classes, mean, std, batch_size)
        signature = signature_bits(secret, bits)
        preds = adv.predictions(model, pixels, mean, std, num_classes, batch_size)
        order = keyed_choice(keyfile.derive_seed(secret, f"{NAME}/select"), pixels.shape[0],
                             pixels.shape[0])
        usable = order[(preds[order] == labels[order])]  # correctly classified sources
        pools = [usable[encoding[labels[usable]] == bit].tolist() for bit in (0, 1)]
        members = [torch.nonzero(encoding == bit).flatten() for bit in (0, 1)]
        pick = keyed_below(keyfile.derive_seed(secret, f"{NAME}/targets"), bits,
                           num_classes)  # reduced below by the cluster's size, per bit
        targets = [int(members[b][int(pick[i]) % len(members[b])])
                   for i, b in enumerate(signature.tolist())]
        # (pick mod |cluster| is not exactly uniform over the cluster; the target class only
        # steers the attack and needs no uniformity: the null does not rest on it.)
        key_x = torch.empty(bits, *shape)
        pending = list(range(bits))
        for _ in range(tries):
            if not pending:
                break
            srcs = []
            for i in pending:  # the next unused source of the other cluster, moved toward b_i
                pool = pools[1 - int(signature[i])]
                if not pool:
                    raise ValueError(f"the images hold too few correctly classified images of "
                                     f"cluster {1 - int(signature[i])} for {bits} bits; give "
                                     "more images")
                srcs.append(pool.pop(0))
            cand = adv.targeted_pgd(model, pixels[srcs], torch.tensor(targets)[pending], eps,
                                    steps, mean, std, batch_size)
            owner_bits = encoding[adv.predictions(model, cand, mean, std, num_classes,
                                                  batch_size)]
            keep = owner_bits != signature[pending]  # the unmarked owner model misses its bit
            for j in torch.nonzero(keep).flatten().tolist():
                key_x[pending[j]] = cand[j]
            pending = [i for j, i in enumerate(pending) if not keep[j]]
        if pending:
            raise ValueError(f"{len(pending)} of {bits} bits found no candidate in {tries} "
                             f"tries that the owner's unmarked model does not already decode "
                             f"to its bit at eps={eps}: lower eps or raise tries")
        refs = adv.reference_list(reference_models)
        matches = [int((encoding[adv.predictions(r, key_x, mean, std, num_classes, batch_size)]
                        == signature).sum()) for r in refs]
        return cls._checked(secret=secret, nonce=keyfile.new_nonce(), num_classes=num_classes,
                            shape=shape, eps=eps, steps=steps, mean=mean, std=std,
                            encoding=encoding.tolist(), stored_images=key_images.encode(key_x),
                            targets=targets,
                            reference={"matches": matches, "totals": [bits] * len(refs)},
                            label=label)

    # -- derived ----------------------------------------------------------------------------

    @cached_property
    def _pixels(self) -> torch.Tensor:
        return key_images.decode(self.stored_images)

    @cached_property
    def signature(self) -> torch.Tensor:
        return signature_bits(self.secret, self.bits)

    @property
    def bits(self) -> int:
        return len(self.targets)

    @cached_property
    def chance(self) -> float:
        """max(1/2, the reference models' conservative bound): see the module docstring."""
        return max(0.5, adv.check_reference(self.reference, self.bits)[2])

    def materialize(self, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(key inputs float32 in [0, 1] (K, *shape), their target classes int64)."""
        return (key_images.to_float(self._pixels).to(device),
                torch.tensor(self.targets, dtype=torch.int64, device=device))

    def decode(self, classes: torch.Tensor) -> torch.Tensor:
        """Predicted classes -> their cluster bits."""
        return torch.tensor(self.encoding, dtype=torch.int64)[classes.cpu()]

    # -- files ------------------------------------------------------------------------------

    def to_body(self) -> dict:
        return {"scheme": NAME, "secret": self.secret.hex(), "nonce": self.nonce.hex(),
                "num_classes": self.num_classes, "shape": list(self.shape), "eps": self.eps,
                "steps": self.steps, "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std),
                "encoding": list(self.encoding), "images": self.stored_images,
                "targets": list(self.targets), "reference": self.reference}

    @classmethod
    def from_body(cls, body: dict) -> BlackmarksKey:
        keyfile.check_body_fields(body, NAME, _BODY)
        try:
            return cls._checked(
                secret=keyfile.secret_from_hex(body["secret"]), nonce=bytes.fromhex(body["nonce"]),
                num_classes=body["num_classes"], shape=body["shape"], eps=body["eps"],
                steps=body["steps"], mean=body["mean"], std=body["std"],
                encoding=body["encoding"], stored_images=body["images"],
                targets=body["targets"], reference=body["reference"])
        except (TypeError, AttributeError) as e:
            raise ValueError(f"{NAME} key body has a bad field: {e}") from None


@torch.no_grad()
def _encoding(model, pixels, labels, num_classes, mean, std, batch_size) -> torch.Tensor:
    """f: class -> bit, k-means (k = 2) on the per-class mean logits (paper Sec. 3.1)."""
    device, dtype = adv.model_device(model), adv.model_dtype(model)
    sums = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"the images must hold every class to cluster them; missing {missing}")
    was_training = model.training
    model.eval()
    try:
        for xb, yb in zip(pixels.split(batch_size), labels.split(batch_size)):
            logits = model(adv.normalize(xb.to(device), mean, std).to(dtype)).double().cpu()
            sums.index_add_(0, yb, logits)
    finally:
        model.train(was_training)
    return two_means(sums / counts[:, None])


class BlackmarksEmbedding(Embedding):
    """Fine-tuning with the key (paper Sec. 3.3): ``per_batch`` key inputs with their target
    classes appended to each batch, plus ``lam`` times the soft Hamming distance between
    their decoded bits (softmax . f) and the signature, averaged over those inputs."""

    def __init__(self, key: BlackmarksKey, per_batch: int = 16, lam: float = DEFAULT_LAMBDA):
        x, y = key.materialize()
        self.key = key
        self.lam = check_real("lam", lam, low=0)
        self.rows = adv.KeyBatches(x, y, key.mean, key.std, per_batch,
                                   keyfile.derive_seed(key.secret, f"{NAME}/mix"))
        self._f = torch.tensor(key.encoding, dtype=torch.float32)
        self._b = key.signature.float()
        self._n = None

    def batch(self, x, y):
        self._n = x.shape[0]
        return self.rows.mix(x, y)

    def loss(self, model, x, y):
        if self._n is None or self.lam == 0:
            return torch.zeros((), device=x.device)
        keyed = x[self._n:self._n + self.rows.per_batch]
        if keyed.shape[0] != self.rows.per_batch:
            raise ValueError("loss() must get the batch that batch() returned")
        soft_bits = torch.softmax(model(keyed).float(), dim=1) @ self._f.to(x.device)
        b = self._b[self.rows.last].to(x.device)
        return self.lam * (soft_bits - b).abs().mean()


@register_scheme
class Blackmarks(adv.StoredInputs, Scheme):
    """BlackMarks (Chen, Rouhani, Koushanfar, arXiv 2019)."""

    name = NAME
    key_type = BlackmarksKey
    summary = ("BlackMarks (Chen et al., 2019): a K-bit signature in the cluster of the "
               "classes predicted for targeted adversarial inputs; null bounded by reference "
               "models")

    @classmethod
    def generate(cls, *, secret=None, **options) -> BlackmarksKey:
        return BlackmarksKey.generate(secret=secret, **options)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        adv.add_cli_arguments(parser)
        parser.add_argument("--bits", type=int, default=100, help="signature bits K (100)")
        parser.add_argument("--eps", type=float, default=DEFAULT_EPS,
                            help=f"targeted PGD radius in [0, 1] pixels (default {DEFAULT_EPS})")
        parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> BlackmarksKey:
        return BlackmarksKey.generate(bits=args.bits, eps=args.eps, steps=args.steps,
                                      **adv.cli_inputs(args))

    @classmethod
    def attacker_key(cls, key: BlackmarksKey, *, model=None, data=None) -> BlackmarksKey:
        """The thief's own signature of as many bits, at the same eps and steps as ``key``,
        from the stolen ``model``'s class clustering and the attacker's ``data`` (an (x, y)
        pair as the model takes it; see _adversarial.thief_material)."""
        _check_key(key)
        model, images, labels, refs = adv.thief_material(key, model, data, NAME)
        return BlackmarksKey.generate(model=model, images=images, labels=labels,
                                      reference_models=refs, bits=key.bits, eps=key.eps,
                                      steps=key.steps, mean=key.mean, std=key.std)

    @classmethod
    def embedding(cls, key, per_batch: int = 16, lam: float = DEFAULT_LAMBDA,
                  **options) -> Embedding:
        _check_key(key)
        if options:
            raise ValueError(f"{NAME} embedding takes per_batch and lam, got {sorted(options)}")
        return BlackmarksEmbedding(key, per_batch, lam)

    @classmethod
    def read(cls, key, suspect: Suspect, options: ReadOptions) -> Reading:
        _check_key(key)
        preds, _ = adv.stored_predictions(key, suspect, options, NAME)
        decoded = key.decode(preds)
        matches = int((decoded == key.signature).sum())
        return Reading(matches, key.bits, key.chance, extra={
            "null": ("conservative: max(1/2, the largest per-bit rate of the key's "
                     f"{len(key.reference['matches'])} reference models, one-sided "
                     "Clopper-Pearson bound at 1 - 1e-3); key inputs depend on their bit, so "
                     "1/2 is exact only for models whose answers ignore the inputs"),
            "bit_error_rate": round(1 - matches / key.bits, 6),
            "reference_matches": list(key.reference["matches"]), "eps": key.eps})

    @classmethod
    def expected_test(cls, body: dict) -> tuple[int, float]:
        key = BlackmarksKey.from_body(body)
        return key.bits, key.chance


def _check_key(key) -> None:
    if not isinstance(key, BlackmarksKey):
        raise TypeError(f"key must be a BlackmarksKey, got {type(key).__name__}")
