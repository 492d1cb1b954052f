"""Margin-based watermarks (schemes/margin.py): keys, the exact null, the margin embedding,
reading through verify / scan / the CLI."""

import copy

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

import mlguard
from mlguard.cli.main import main
from mlguard.evaluation.calibration import binomial_fit
from mlguard.keys import keyfile
from mlguard.schemes import get_scheme, scheme_of
from mlguard.schemes.margin import Margin, MarginEmbedding, MarginKey

from _adversarial_models import MEAN, STD, fine_tune, read, shared_models

SECRET = bytes(range(32))
ALPHA = 1e-6


@pytest.fixture(scope="module")
def setup():
    m = shared_models()
    x, y = m["x"], m["y"]
    key = MarginKey.generate(images=x[50000:51000], labels=y[50000:51000], num_classes=10,
                             size=50, mean=MEAN, std=STD, secret=SECRET)
    # the owner's model (2 epochs on 3000 images) fine-tuned with the key for 2 epochs on
    # 3000 images, every trigger in every step at weight 3 (the paper: 25 at 0.1, for 200
    # epochs from scratch; see docs/schemes_margin.md)
    marked = fine_tune(m["owner"], "margin", key, x[:3000], y[:3000], max_epochs=2,
                       per_batch=50, weight=3.0)
    return {"x": x, "y": y, "owner": m["owner"], "twin": m["twin"], "key": key,
            "marked": marked}


def test_registered():
    assert get_scheme("margin") is Margin


def test_key_labels_are_keyed_wrong_classes(setup):
    key, y = setup["key"], setup["y"]
    assert key.size == 50 and scheme_of(key) is Margin and key.chance == 1 / 9
    assert all(a != t for a, t in zip(key.labels, key.true_labels))
    x, labels = key.materialize()
    assert torch.equal(x * 255, (x * 255).round())  # the owner's uint8 images, stored as is
    # every trigger is one of the given images, with its true label recorded
    pool = (setup["x"][50000:51000].float() / 255).flatten(1)
    idx = [int(torch.nonzero((pool == row).all(1))[0]) for row in x.flatten(1)]
    assert len(set(idx)) == 50
    assert list(key.true_labels) == [int(y[50000 + i]) for i in idx]


def test_labels_are_uniform_over_the_other_classes():
    """Over many secrets, each trigger's label is spread evenly over the 9 other classes."""
    images = torch.zeros(20, 1, 4, 4, dtype=torch.uint8)
    truth = torch.arange(20) % 10
    counts = np.zeros((20, 10))
    for s in range(450):
        key = MarginKey.generate(images=images, labels=truth, num_classes=10, size=20,
                                 secret=bytes([s % 256, s // 256]) + bytes(30))
        for t, lab in zip(key.true_labels, key.labels):
            counts[t, lab] += 1
    assert all(counts[t, t] == 0 for t in range(10))
    per_class = counts[:10] + counts[10:]  # two triggers per true class
    others = per_class[~np.eye(10, dtype=bool)]  # 900 draws per class, 100 expected per cell
    assert others.min() > 55 and others.max() < 145


def test_round_trip_through_a_key_file(setup, tmp_path):
    key = setup["key"]
    key.save(tmp_path / "m.key")
    again = MarginKey.from_body(keyfile.read_key_file(tmp_path / "m.key"))
    assert again == key and again.commitment() == key.commitment()
    assert mlguard.load_key(tmp_path / "m.key").commitment() == key.commitment()
    assert Margin.expected_test(key.to_body()) == (50, 1 / 9)


def test_generation_is_deterministic_from_the_secret(setup):
    key, x, y = setup["key"], setup["x"], setup["y"]
    again = MarginKey.generate(images=x[50000:51000], labels=y[50000:51000], num_classes=10,
                               size=50, mean=MEAN, std=STD, secret=SECRET)
    assert again.labels == key.labels and again.stored_images == key.stored_images
    other = MarginKey.generate(images=x[50000:51000], labels=y[50000:51000], num_classes=10,
                               size=50, mean=MEAN, std=STD)
    assert other.labels != key.labels


def _swap_to_true(body):
    body["labels"][0] = body["true_labels"][0]


def _other_wrong(body):
    body["labels"][0] = next(c for c in range(10)
                             if c not in (body["labels"][0], body["true_labels"][0]))


@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(extra=1), "exactly the fields"),
    (_swap_to_true, "its true class"),
    (_other_wrong, "not the secret's draws"),
    (lambda b: b["true_labels"].pop(), "true_labels|labels"),
    (lambda b: b.update(num_classes=2), "num_classes"),
])
def test_tampered_bodies_are_refused(setup, change, message):
    body = copy.deepcopy(setup["key"].to_body())
    change(body)
    with pytest.raises(ValueError, match=message):
        MarginKey.from_body(body)


def test_bad_arguments_are_refused(setup):
    x, y = setup["x"][:100], setup["y"][:100]
    with pytest.raises(ValueError, match="size=200"):
        MarginKey.generate(images=x, labels=y, num_classes=10, size=200)
    with pytest.raises(ValueError, match="num_classes"):
        MarginKey.generate(images=x, labels=y, num_classes=2, size=10)
    with pytest.raises(ValueError, match="labels must lie"):
        MarginKey.generate(images=x, labels=y, num_classes=5, size=10)
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        MarginKey.generate(images=x, labels=y[:50], num_classes=10, size=10)
    with pytest.raises(ValueError, match="images must be a tensor"):
        MarginKey.generate(images=x[0], labels=y, num_classes=10, size=10)
    with pytest.raises(ValueError, match="size"):
        MarginKey.generate(images=x, labels=y, num_classes=10, size=0)
    key = setup["key"]
    for options, message in [({"per_batch": 0}, "per_batch"), ({"steps": -1}, "steps"),
                             ({"step_size": 2.0}, "step_size"), ({"weight": -1}, "weight"),
                             ({"lr": 1}, "takes per_batch")]:
        with pytest.raises(ValueError, match=message):
            Margin.embedding(key, **options)
    with pytest.raises(TypeError, match="MarginKey"):
        Margin.embedding(object())


class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))

    def forward(self, x):
        return self.body(x)


def test_the_ascent_leaves_params_grads_and_bn_statistics_alone(setup):
    torch.manual_seed(0)
    model = _BNNet().train()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    emb = Margin.embedding(setup["key"], per_batch=10)
    x0, y0 = setup["key"].materialize()
    x0, y0 = x0[:10], y0[:10]
    moved = emb.moved(model, x0, y0)
    assert model.training  # its mode restored
    for name, t in model.state_dict().items():
        assert torch.equal(t, before[name]), name  # weights and BN running stats
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    # 5 steps of 1/255, inside [0, 1], and the watermark label's loss went up (ascent)
    assert (moved - x0).abs().max() <= 5 / 255 + 1e-6 and moved.min() >= 0 and moved.max() <= 1
    model.eval()
    norm = lambda t: (t - MEAN[0]) / STD[0]  # noqa: E731
    ce = nn.functional.cross_entropy
    assert ce(model(norm(moved)), y0) > ce(model(norm(x0)), y0)


def test_the_loss_is_the_papers_weighted_sum_over_batch_plus_triggers(setup):
    model = copy.deepcopy(setup["owner"]).eval()
    key = setup["key"]
    emb = MarginEmbedding(key, per_batch=7, steps=0, weight=0.1)
    idx = emb._order[:7]
    x, y = torch.zeros(13, 1, 28, 28), torch.zeros(13, dtype=torch.int64)
    got = emb.loss(model, x, y)
    kx, ky = key.materialize()
    logits = model((kx[idx] - MEAN[0]) / STD[0])
    want = 0.1 * nn.functional.cross_entropy(logits, ky[idx], reduction="sum") / (13 + 7)
    assert torch.allclose(got, want)
    assert torch.equal(emb.take(), emb._order[7:14])  # the keyed cycle goes on


def test_marked_model_detected_clean_models_not(setup):
    marked = read("margin", setup["key"], setup["marked"])
    assert marked.matches >= 25 and mlguard.verify(setup["marked"], setup["key"],
                                                   alpha=ALPHA).detected, marked.matches
    for name in ("owner", "twin"):
        clean = mlguard.verify(setup[name], setup["key"], alpha=ALPHA)
        assert not clean.detected and clean.matches <= 15, (name, clean.matches)
    reading = read("margin", setup["key"], setup["twin"])
    assert "1/9" in reading.extra["null"] and reading.chance == 1 / 9


def test_the_null_holds_over_many_keys(setup):
    """An independent model read on 300 keys (other secrets, same images): the mean match
    rate is P(wrong)/(C-1) <= 1/9, and the counts fit Binomial(size, rate) no better than
    chance allows; a model that is always wrong reaches 1/9 exactly."""
    x, y = setup["x"][50000:50500], setup["y"][50000:50500]
    twin = setup["twin"]
    norm = (x.float() / 255 - MEAN[0]) / STD[0]
    with torch.no_grad():
        wrong = (twin(norm).argmax(1) != y).float().mean().item()

    proj = torch.randn(28 * 28, 8, generator=torch.Generator().manual_seed(0))
    pool = norm.flatten(1) @ proj

    class AlwaysWrong(nn.Module):
        """Answers (true class + 1) mod 10 on these images: never right, key-independent."""

        def forward(self, inputs):  # which image: nearest in a random 8-d projection
            rows = torch.cdist(inputs.flatten(1) @ proj, pool).argmin(1)
            return nn.functional.one_hot((y[rows] + 1) % 10, 10).float()

    counts = {"twin": [], "wrong": []}
    for s in range(300):
        key = MarginKey.generate(images=x, labels=y, num_classes=10, size=40, mean=MEAN,
                                 std=STD, secret=s.to_bytes(32, "big"))
        counts["twin"].append(read("margin", key, twin).matches)
        counts["wrong"].append(read("margin", key, AlwaysWrong()).matches)
    twin_rate = np.mean(counts["twin"]) / 40
    assert abs(twin_rate - wrong / 9) < 4 * np.sqrt(wrong / 9 / (300 * 40)) + 0.01
    assert twin_rate <= 1 / 9
    fit = binomial_fit(counts["wrong"], 40, 1 / 9)
    assert abs(fit.mean - 40 / 9) < 0.5 and fit.p_value > 1e-3, fit
    assert max(counts["wrong"]) < 20  # no key of an independent model near detection


def test_attacker_key_is_a_fresh_key_from_the_thiefs_data(setup):
    key = setup["key"]
    x, y = setup["x"][:300], setup["y"][:300]
    data = ((x.float() / 255 - MEAN[0]) / STD[0], y)
    thief = Margin.attacker_key(key, model=setup["owner"], data=data)
    assert isinstance(thief, MarginKey) and thief.size == key.size
    assert thief.secret != key.secret and thief.mean == key.mean
    pool = (x.float() / 255).flatten(1)
    tx, _ = thief.materialize()
    assert all(bool((pool == row).all(1).any()) for row in tx.flatten(1))
    with pytest.raises(ValueError, match="attacker's data"):
        Margin.attacker_key(key)


def test_key_new_from_the_command_line(setup, tmp_path, capsys):
    np.savez(tmp_path / "own.npz", images=setup["x"][50000:50300].numpy(),
             labels=setup["y"][50000:50300].numpy())
    out = tmp_path / "cli.key"
    common = ["--data", str(tmp_path / "own.npz"), "--mean", str(MEAN[0]), "--std",
              str(STD[0]), "--size", "30"]
    assert main(["key", "new", "margin", *common, "--out", str(out)]) == 0
    key = mlguard.load_key(out)
    assert isinstance(key, MarginKey) and key.size == 30 and key.mean == (MEAN[0],)
    bad = tmp_path / "bad.key"
    assert main(["key", "new", "margin", *common, "--data", str(tmp_path / "none.npz"),
                 "--out", str(bad)]) == 2
    assert "--data" in capsys.readouterr().err and not bad.exists()
    assert main(["key", "new", "margin", *common, "--size", "400", "--out", str(bad)]) == 2
    assert "size=400" in capsys.readouterr().err and not bad.exists()
    # the owner-data options every adversarial scheme shares: never fewer images than asked,
    # never half a normalization
    assert main(["key", "new", "margin", *common, "--count", "301", "--out", str(bad)]) == 2
    assert "--count 301 is more than the 300 images" in capsys.readouterr().err
    assert main(["key", "new", "margin", "--data", str(tmp_path / "own.npz"), "--std", "0.3",
                 "--out", str(bad)]) == 2
    assert "--std needs --mean too" in capsys.readouterr().err
    assert main(["key", "new", "margin", *common, "--mean", "0.1", "0.2", "--out",
                 str(bad)]) == 2
    assert "--mean has 2 figures and --std 1" in capsys.readouterr().err and not bad.exists()
    # a key too small to ever be detected at 1e-6 is made, with a warning that says so
    assert main(["key", "new", "margin", *common[:-1], "5", "--out", str(tmp_path / "5.key")]) == 0
    err = capsys.readouterr().err
    assert "all 5 trials gets p = 1.7e-05" in err and "never" in err


def test_verify_evaluate_scan_and_evidence(setup, tmp_path):
    from _adversarial_models import toolchain_checks

    from mlguard.ownership.identity import Identity

    x, y = setup["x"][:500], setup["y"][:500]
    toolchain_checks(setup["key"], setup["marked"], setup["twin"], x, y, ALPHA, tmp_path)
    suspects = tmp_path / "suspects"
    suspects.mkdir()
    safetensors.torch.save_file(setup["marked"].state_dict(), suspects / "copy.safetensors")
    safetensors.torch.save_file(setup["twin"].state_dict(), suspects / "twin.safetensors")
    rows = mlguard.scan(suspects, [tmp_path / "owner.key"], arch="mlguard.cli.demo:small_cnn",
                        device="cpu", alpha=ALPHA, progress=False)
    by_file = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_file["copy.safetensors"]["detected"]
    assert by_file["copy.safetensors"]["scheme"] == "margin"
    assert not by_file["twin.safetensors"]["detected"]
    verdict = mlguard.verify(suspects / "copy.safetensors", setup["key"], alpha=ALPHA,
                             arch="mlguard.cli.demo:small_cnn")
    doc = mlguard.evidence([verdict], suspects / "copy.safetensors",
                           opening=mlguard.reveal(setup["key"]), identity=Identity.generate(),
                           command="x")
    assert mlguard.check_evidence(doc, suspects / "copy.safetensors") == []
