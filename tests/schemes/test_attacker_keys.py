"""The overwrite attack's fresh key for the schemes whose keys are made from a model and
data (frontier stitching, blackmarks, EWE, margin): Scheme.attacker_key with the stolen model and
the attacker's samples, supplied through evaluation.attacker_key."""

import functools

import pytest
import torch

from mlguard import attacks, data
from mlguard.cli.demo import small_cnn, train
from mlguard.evaluation import attacker_key
from mlguard.schemes import ReadOptions, Suspect, scheme_of
from mlguard.schemes.blackmarks import BlackmarksKey
from mlguard.schemes.ewe import EWEKey
from mlguard.schemes.frontier_stitching import FrontierStitchingKey
from mlguard.schemes.margin import MarginKey

MEAN, STD = data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    try:
        images, labels = data.fashion_mnist("train")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed")
    torch.manual_seed(0)
    owner = small_cnn()
    train(owner, images[:3000], labels[:3000], 1, "cpu", None, seed=0)
    owner.eval()
    torch.manual_seed(1)
    reference = small_cnn().eval()
    own = images[3000:4500], labels[3000:4500]
    keys = {
        "frontier": FrontierStitchingKey.generate(model=owner, images=own[0], labels=own[1],
                                                  reference_models=[reference], size=20,
                                                  eps=0.25, mean=MEAN, std=STD),
        "blackmarks": BlackmarksKey.generate(model=owner, images=own[0], labels=own[1],
                                             reference_models=[reference], bits=12, eps=0.1,
                                             steps=5, mean=MEAN, std=STD),
        "ewe": EWEKey.generate(own[0], own[1], [reference], size=20, mean=MEAN, std=STD),
        "margin": MarginKey.generate(images=own[0], labels=own[1], num_classes=10, size=20,
                                     mean=MEAN, std=STD),
    }
    m, s = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    x = (images[5000:6500].float() / 255 - m) / s  # the attacker's samples as the model takes
    return owner, keys, (x, labels[5000:6500])


def _like(owner_key, thief_key):
    assert type(thief_key) is type(owner_key)
    assert thief_key.secret != owner_key.secret and thief_key.key_id != owner_key.key_id
    assert (thief_key.mean, thief_key.std, thief_key.shape) == \
        (owner_key.mean, owner_key.std, owner_key.shape)


@pytest.mark.parametrize("name", ["frontier", "blackmarks", "ewe", "margin"])
def test_a_fresh_key_like_the_owners_from_the_stolen_model_and_the_attackers_data(setup, name):
    owner, keys, attacker = setup
    key = keys[name]
    thief = attacker_key({name: key}, model=owner, data=attacker)
    _like(key, thief)
    if name == "frontier":
        assert (thief.size, thief.eps) == (key.size, key.eps)
        # its inputs are the attacker's images pushed by FGSM, not the owner's
        pixels = thief.materialize()[0]
        m, s = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
        source = attacker[0] * s + m
        nearest = torch.cdist(pixels.flatten(1), source.flatten(1)).min(1).values
        assert float(nearest.max()) <= key.eps * 28 + 1e-3
    elif name == "blackmarks":
        assert (thief.bits, thief.eps, thief.steps) == (key.bits, key.eps, key.steps)
    elif name == "margin":
        assert thief.size == key.size and thief.labels != key.labels
        # its triggers are the attacker's own images
        m, s = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
        source = (attacker[0] * s + m).flatten(1)
        nearest = torch.cdist(thief.materialize()[0].flatten(1), source,
                              compute_mode="donot_use_mm_for_euclid_dist").min(1).values
        assert float(nearest.max()) < 1e-3
    else:
        assert (thief.size, thief.patch_size) == (key.size, key.patch_size)


@pytest.mark.parametrize("name", ["frontier", "blackmarks", "ewe"])
def test_without_the_model_and_data_the_error_says_what_to_give(setup, name):
    _, keys, _ = setup
    with pytest.raises(ValueError, match="model= and data="):
        scheme_of(keys[name]).attacker_key(keys[name])


def test_schemes_whose_keys_need_nothing_are_called_without_context(setup):
    from mlguard import WeightKey

    owner, _, attacker = setup
    weight = WeightKey.generate(bits=16, targets=("7.weight",))
    fresh = attacker_key({"w": weight}, model=owner, data=attacker)
    assert isinstance(fresh, WeightKey) and fresh.targets == weight.targets


@pytest.mark.parametrize("name", ["frontier", "ewe"])
def test_overwrite_embeds_the_key_it_makes_from_the_victim(setup, name):
    owner, keys, attacker = setup
    made = []

    def thief_key(**context):
        made.append(attacker_key({name: keys[name]}, **context))
        return made[-1]

    before = {k: v.clone() for k, v in owner.state_dict().items()}
    attacked = attacks.overwrite(owner, attacker, functools.partial(thief_key), epochs=2,
                                 lr=1e-3, per_batch=16)
    assert all(torch.equal(v, before[k]) for k, v in owner.state_dict().items())
    thief = made[0]
    assert attacked.attack_info["attacker_key"] == thief.key_id
    scheme = scheme_of(thief)
    on_victim = scheme.read(thief, Suspect(owner, None), ReadOptions())
    on_attacked = scheme.read(thief, Suspect(attacked, None), ReadOptions())
    assert on_attacked.matches > on_victim.matches  # the thief's mark went in
