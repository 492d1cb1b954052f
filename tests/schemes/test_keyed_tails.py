"""Keyed tails (schemes/keyed_tails.py): the key and its file, the serving wrapper, the exact
1/C null (super-uniform over secrets), and a tiny extraction through the wrapper that is
detected while an independent model is not; verify, evaluate and the command line."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _adversarial_models import MEAN, STD, fashion, read, shared_models, toolchain_checks

import mlguard
from mlguard.cli.demo import batches, small_cnn, train
from mlguard.cli.main import main
from mlguard.schemes.keyed_tails import KeyedTails, KeyedTailsKey, KeyedTailsWrapper
from mlguard.verification.stats import binomial_p_value

SECRET = bytes(range(1, 33))
ALPHA = 1e-6


def normalized(images):
    return torch.cat([x for x, _ in batches(images, torch.zeros(len(images), dtype=torch.long),
                                            1000)])


@pytest.fixture(scope="module")
def setup():
    fashion()
    models = shared_models()
    x, y = models["x"], models["y"]
    key = KeyedTailsKey.generate(model=models["owner"], images=x[:6000], num_classes=10,
                                 directions=5, tail=0.02, mean=MEAN, std=STD, secret=SECRET)
    # the thief: its own 4,000 images labelled by the API, a fresh small_cnn, 3 epochs
    api = KeyedTailsWrapper(models["owner"], key, output="labels")
    qx = x[30000:34000]
    answers = torch.cat([api(b) for b in normalized(qx).split(500)])
    torch.manual_seed(11)
    thief = small_cnn()
    train(thief, qx, answers, 3, "cpu", None, seed=11)
    return {**models, "key": key, "api": api, "answers": answers, "qx": qx,
            "thief": thief.eval()}


def test_the_key_round_trips_and_refuses_classes_that_are_not_the_secrets(setup, tmp_path):
    key = setup["key"]
    assert key.cells == 10 and key.chance == 0.1 and len(key.owner_answers) == 10 * 120
    key.save(tmp_path / "k.key")
    loaded = mlguard.load_key(tmp_path / "k.key")
    assert loaded == key and torch.equal(loaded.directions, key.directions)
    assert torch.equal(loaded.center, key.center)
    body = key.to_body()
    body["classes"] = [(c + 1) % 10 for c in body["classes"]]
    with pytest.raises(ValueError, match="not the secret's draws"):
        KeyedTailsKey.from_body(body)
    body = key.to_body()
    body["directions"]["shape"] = [2, 784]
    with pytest.raises(ValueError, match="directions"):
        KeyedTailsKey.from_body(body)
    with pytest.raises(ValueError, match="4 images per cell, fewer than 10"):
        KeyedTailsKey.generate(model=setup["owner"], images=setup["x"][:2000], num_classes=10,
                               tail=0.002, mean=MEAN, std=STD)


def test_the_wrapper_answers_the_keyed_class_in_a_cell_and_the_model_elsewhere(setup):
    key, owner = setup["key"], setup["owner"]
    x = normalized(setup["qx"])
    hit, keyed = key.cell_of(x)
    with torch.no_grad():
        own = owner(x)
    served = setup["answers"]
    assert torch.equal(served[hit], keyed[hit]) and torch.equal(served[~hit], own.argmax(1)[~hit])
    assert 0.14 <= hit.float().mean() <= 0.26  # 10 cells of 2% of the owner's images
    logits = KeyedTailsWrapper(owner, key)(x)
    assert torch.equal(logits.argmax(1), served)
    assert torch.equal(logits.sort(1).values, own.sort(1).values)  # a swap, nothing invented
    with pytest.raises(ValueError, match="batch of inputs"):
        KeyedTailsWrapper(owner, key)(x[:, :, :10])
    with pytest.raises(ValueError, match="floats, normalized"):
        KeyedTailsWrapper(owner, key)(setup["qx"][:4])  # the uint8 images, not model inputs
    with pytest.raises(ValueError, match="output"):
        KeyedTailsWrapper(owner, key, output="probs")


def test_the_null_is_exact_over_secrets(setup):
    """For two fixed models the matches over fresh secrets are at most Binomial(cells, 1/C):
    the rate per cell and the p-values' tail stay within sampling error of the bound."""
    owner, other = setup["owner"], setup["refs"][0]
    x = setup["x"][:3000]
    matches, ps = [], []
    for i in range(150):
        key = KeyedTailsKey.generate(model=owner, images=x, num_classes=10, directions=2,
                                     tail=0.02, mean=MEAN, std=STD, secret=bytes([i]) * 32)
        r = read("keyed-tails", key, other)
        matches.append(r.matches)
        ps.append(binomial_p_value(r.matches, r.total, r.chance))
    rate = sum(matches) / (4 * len(matches))
    assert rate <= 0.1 + 3 * (0.1 * 0.9 / 600) ** 0.5
    ps = torch.tensor(ps)
    for a in (0.05, 0.35):
        assert (ps <= a).float().mean() <= a + 3 * (a * (1 - a) / 150) ** 0.5


def test_a_copy_trained_on_the_apis_answers_is_detected_and_an_independent_one_is_not(
        setup, tmp_path):
    key, thief, twin = setup["key"], setup["thief"], setup["twin"]
    hit = mlguard.verify(thief, key, alpha=ALPHA)
    assert hit.detected and hit.matches >= 8, hit.matches
    assert not mlguard.verify(setup["owner"], key, alpha=ALPHA).detected  # no rule in it
    assert read("keyed-tails", key, setup["owner"]).matches == 0
    toolchain_checks(key, thief, twin, setup["x"][:500], setup["y"][:500], ALPHA, tmp_path)


def test_attacker_key_and_embedding(setup):
    key = setup["key"]
    data = (normalized(setup["qx"]), setup["y"][30000:34000])
    thief_key = KeyedTails.attacker_key(key, model=setup["thief"], data=data)
    assert thief_key.secret != key.secret and thief_key.cells == key.cells
    with pytest.raises(ValueError, match="attacker's data"):
        KeyedTails.attacker_key(key)
    emb = KeyedTails.embedding(key)
    x, y = torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    assert emb.batch(x, y) == (x, y)
    with pytest.raises(ValueError, match="no options"):
        KeyedTails.embedding(key, weight=1)


def test_key_new_from_the_command_line(setup, tmp_path, capsys):
    np.savez(tmp_path / "own.npz", images=setup["x"][:3000].numpy(),
             labels=setup["y"][:3000].numpy())
    model = tmp_path / "owner.pt"
    torch.save(copy.deepcopy(setup["owner"]).state_dict(), model)
    common = ["--model", str(model), "--arch", "mlguard.cli.demo:small_cnn", "--data",
              str(tmp_path / "own.npz"), "--mean", str(MEAN[0]), "--std", str(STD[0])]
    out = tmp_path / "cli.key"
    assert main(["key", "new", "keyed-tails", *common, "--tail", "0.01", "--out",
                 str(out)]) == 0
    key = mlguard.load_key(out)
    assert isinstance(key, KeyedTailsKey) and key.cells == 10 and key.tail == 0.01
    err = capsys.readouterr().err
    assert "KeyedTailsWrapper" in err and "needs 8 of 10 cells" in err
    assert "% of the owner's images lie in a cell" in err
    bad = tmp_path / "bad.key"
    assert main(["key", "new", "keyed-tails", *common, "--tail", "0.7", "--out",
                 str(bad)]) == 2
    assert "--tail" in capsys.readouterr().err and not bad.exists()
    assert main(["key", "new", "keyed-tails", *common, "--tail", "0.0001", "--out",
                 str(bad)]) == 2
    assert "fewer than 10" in capsys.readouterr().err and not bad.exists()
    # images the network cannot take (3 channels into small_cnn): an error line, no traceback
    np.savez(tmp_path / "rgb.npz", images=np.repeat(setup["x"][:3000].numpy(), 3, axis=1),
             labels=setup["y"][:3000].numpy())
    assert main(["key", "new", "keyed-tails", *common, "--data", str(tmp_path / "rgb.npz"),
                 "--mean", *[str(MEAN[0])] * 3, "--std", *[str(STD[0])] * 3,
                 "--tail", "0.01", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "the key could not be made" in err and "fit each other" in err, err
    assert "Traceback" not in err and not bad.exists()
