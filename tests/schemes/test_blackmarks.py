"""BlackMarks (schemes/blackmarks.py): keys, encoding, embedding, reading and its null."""

import pytest
import torch

from mlguard.keys import keyfile
from mlguard.schemes import get_scheme, scheme_of
from mlguard.schemes.blackmarks import Blackmarks, BlackmarksKey, signature_bits, two_means
from mlguard.verification.verdict import make_verdict

from _adversarial_models import MEAN, STD, fine_tune, read, shared_models

SECRET = bytes(range(1, 33))
BITS = 40


@pytest.fixture(scope="module")
def setup():
    m = shared_models()
    x, y, owner, refs = m["x"], m["y"], m["owner"], m["refs"][:2]
    key = BlackmarksKey.generate(model=owner, images=x[50000:51000], labels=y[50000:51000],
                                 reference_models=refs, bits=BITS, mean=MEAN, std=STD,
                                 secret=SECRET)
    marked = fine_tune(owner, "blackmarks", key, x[:2000], y[:2000])
    twin = m["twin"]
    return {"x": x, "y": y, "owner": owner, "refs": refs, "key": key, "marked": marked,
            "twin": twin}


def test_two_means_splits_two_clear_groups():
    points = torch.tensor([[0.0, 0], [0.1, 0], [5, 5], [0, 0.2], [5.1, 5]])
    assert two_means(points).tolist() == [0, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="two clusters"):
        two_means(torch.zeros(3, 2))


def test_key_follows_the_signature(setup):
    key = setup["key"]
    assert scheme_of(key) is Blackmarks and get_scheme("blackmarks") is Blackmarks
    assert torch.equal(key.signature, signature_bits(SECRET, BITS))
    # each target lies in its bit's cluster; the signature is not all one bit
    assert [key.encoding[t] for t in key.targets] == key.signature.tolist()
    assert 0 < int(key.signature.sum()) < BITS
    assert 0 < sum(key.encoding) < key.num_classes
    # the paper's filter, with the owner's unmarked model: it decodes no key input to its bit
    assert read("blackmarks", key, setup["owner"]).matches == 0


def test_round_trip_through_a_key_file(setup, tmp_path):
    key = setup["key"]
    key.save(tmp_path / "bm.key")
    again = BlackmarksKey.from_body(keyfile.read_key_file(tmp_path / "bm.key"))
    assert again == key and again.commitment() == key.commitment()


def _flip_target(body):
    t = body["targets"][0]
    other = next(c for c in range(10) if body["encoding"][c] != body["encoding"][t])
    body["targets"][0] = other


@pytest.mark.parametrize("change, message", [
    (_flip_target, "cluster of their signature bit"),
    (lambda b: b.update(encoding=[0] * 10), "both bits"),
    (lambda b: b.update(secret="00" * 32), "cluster of their signature bit"),
    (lambda b: b["targets"].pop(), "labels"),
    (lambda b: b["reference"]["totals"].__setitem__(0, BITS + 1), "counts out of"),
    (lambda b: b.update(steps=0), "steps"),
    (lambda b: b.pop("eps"), "exactly the fields"),
])
def test_tampered_bodies_are_refused(setup, change, message):
    body = setup["key"].to_body()
    body = {**body, "reference": {k: list(v) for k, v in body["reference"].items()},
            "targets": list(body["targets"]), "encoding": list(body["encoding"])}
    change(body)
    with pytest.raises(ValueError, match=message):
        BlackmarksKey.from_body(body)


def test_generation_is_deterministic_from_the_secret(setup):
    x, y = setup["x"], setup["y"]
    again = BlackmarksKey.generate(model=setup["owner"], images=x[50000:51000],
                                   labels=y[50000:51000], reference_models=setup["refs"],
                                   bits=BITS, mean=MEAN, std=STD, secret=SECRET)
    a, b = setup["key"].to_body(), again.to_body()
    assert a.pop("nonce") != b.pop("nonce")
    assert a == b


def test_marked_model_detected_clean_twin_not(setup):
    key = setup["key"]
    marked, twin = (read("blackmarks", key, setup[m]) for m in ("marked", "twin"))
    assert (marked.total, marked.chance) == Blackmarks.expected_test(key.to_body())
    verdicts = [make_verdict("blackmarks", r.matches, r.total, r.chance, 1e-6,
                             key.commitment(), "0" * 64, "cpu") for r in (marked, twin)]
    assert verdicts[0].detected, (marked.matches, marked.chance)
    assert not verdicts[1].detected, (twin.matches, twin.chance)
    assert marked.extra["bit_error_rate"] == 1 - marked.matches / BITS


def test_null_is_half_only_for_answers_that_ignore_the_inputs(setup):
    """The docstring's argument, checked: a constant model decodes one bit everywhere and
    matches exactly the signature bits equal to it (a secret uniform count, Binomial(K, 1/2)),
    while clean models trained on the task decode the source cluster, 1 - b_i, far more often
    than half the time: the key inputs depend on their bits, so 1/2 is not exact for them,
    and the key's chance is max(1/2, the reference bound)."""
    key = setup["key"]
    for cls in (0, 5):
        constant = _Constant(cls)
        r = read("blackmarks", key, constant)
        assert r.matches == int((key.signature == key.encoding[cls]).sum())
    twin = read("blackmarks", key, setup["twin"])
    assert twin.matches < BITS // 2
    assert key.chance >= 0.5


def test_embedding_adds_the_signature_loss(setup):
    key = setup["key"]
    emb = Blackmarks.embedding(key, per_batch=8, lam=1.0)
    x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64)
    mx, my = emb.batch(x, y)
    assert mx.shape == (12, 1, 28, 28)
    loss = emb.loss(setup["owner"], mx, my)
    assert 0 < float(loss.detach()) <= 1.0
    assert float(Blackmarks.embedding(key, lam=0).loss(setup["owner"], mx, my)) == 0
    with pytest.raises(ValueError, match="lam"):
        Blackmarks.embedding(key, lam=-1)
    with pytest.raises(ValueError, match="per_batch and lam"):
        Blackmarks.embedding(key, boost=3)


def test_bad_arguments_are_refused(setup):
    x, y, owner, refs = setup["x"][:300], setup["y"][:300], setup["owner"], setup["refs"]
    base = dict(model=owner, images=x, labels=y, reference_models=refs, bits=8, mean=MEAN,
                std=STD)
    with pytest.raises(ValueError, match="bits"):
        BlackmarksKey.generate(**{**base, "bits": 0})
    with pytest.raises(ValueError, match="eps"):
        BlackmarksKey.generate(**{**base, "eps": 1.5})
    with pytest.raises(ValueError, match="missing"):
        BlackmarksKey.generate(**{**base, "images": x[y < 9], "labels": y[y < 9]})
    with pytest.raises(ValueError, match="too few"):
        BlackmarksKey.generate(**{**base, "bits": 400})
    with pytest.raises(ValueError, match="reference_models"):
        BlackmarksKey.generate(**{**base, "reference_models": owner})


class _Constant(torch.nn.Module):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        out = torch.zeros(x.shape[0], 10)
        out[:, self.cls] = 1.0
        return out + self.w


def test_verify_load_key_and_evaluate(setup, tmp_path):
    from _adversarial_models import toolchain_checks

    toolchain_checks(setup["key"], setup["marked"], setup["twin"], setup["x"][:500],
                     setup["y"][:500], 1e-6, tmp_path)
