"""Issue 20: a weight key read after permute / rescale / add_dummy_units. Without the
owner's reference the read is as before (and says it is not permutation-invariant); with it
the copy is aligned first and detected, and the verdict records what alignment did."""

import pytest
import torch

from mlguard import Fingerprints, TriggerKey, Verdict, WeightKey, attacks, verify
from mlguard.cli.demo import small_cnn
from mlguard.weights import embed_weights
from mlguard.weights.align import Reference
from mlguard.verification.verify import weights_sha256

ATTACKS = {
    "permute": lambda m: attacks.permute(m, 1),
    "rescale": lambda m: attacks.rescale(m, 1),
    "dummy": lambda m: attacks.add_dummy_units(m, 6, 1),
    "stacked": lambda m: attacks.add_dummy_units(attacks.rescale(attacks.permute(m, 1), 2), 4, 3),
}


@pytest.fixture(scope="module")
def owner():
    torch.manual_seed(0)
    model = small_cnn().eval()
    key = WeightKey.generate(bits=128, targets=("7.weight",), secret=bytes(range(32)))
    embed_weights(model, key, strength=1.0)
    return model, key


def test_permuted_copy_is_missed_without_and_found_with_the_reference(owner):
    model, key = owner
    plain = verify(model, key)
    assert plain.detected and plain.matches == 128
    assert plain.extra["permutation_invariant"] is False
    suspect = attacks.permute(model, 1)
    missed = verify(suspect, key)  # today's read: the bits are scrambled
    assert not missed.detected and missed.extra["permutation_invariant"] is False
    found = verify(suspect, key, reference=model)
    assert found.detected and found.matches == 128
    assert found.extra["permutation_invariant"] is True
    alignment = found.extra["alignment"]
    assert alignment["reference_sha256"] == weights_sha256(model)
    assert alignment["units_permuted"] > 100 and alignment["excluded"] == ["7.weight"]
    assert found.weights_sha256 == weights_sha256(suspect)  # the suspect as given
    assert Verdict.from_dict(found.to_dict()) == found


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_every_free_transform_is_read_through(owner, attack, tmp_path):
    model, key = owner
    suspect = ATTACKS[attack](model)
    ref = Reference(model)
    verdict = verify(suspect, key, reference=ref)
    assert verdict.detected and verdict.matches == 128, attack
    path = tmp_path / "suspect.pt"
    torch.save(suspect.state_dict(), path)
    from_file = verify(str(path), key, reference=ref)
    assert from_file.matches == 128 and from_file.file_sha256 is not None


def test_an_unrelated_model_stays_undetected_after_alignment(owner):
    model, key = owner
    torch.manual_seed(7)
    other = small_cnn().eval()
    verdict = verify(other, key, reference=model)
    assert not verdict.detected and verdict.extra["alignment"]["matching_cost"] > 0.1


def test_fingerprint_identifies_a_stacked_copy_with_the_reference():
    torch.manual_seed(0)
    base = small_cnn().eval()
    customers = ["globex", "acme", "initech"]
    shop = Fingerprints(bytes(range(32)), bits=64, targets=("7.weight",), issued=customers)
    copy = small_cnn().eval()
    copy.load_state_dict(base.state_dict())
    embed_weights(copy, shop.key_for("acme"), strength=1.0)
    leaked = ATTACKS["stacked"](copy)
    assert shop.identify(leaked, customers).customer is None  # today's read names no one
    found = shop.identify(leaked, customers, reference=base)
    assert found.customer == "acme"
    assert found.verdict.extra["alignment"]["units_dropped"] == 12


def test_trigger_keys_ignore_the_reference(owner):
    model, _ = owner
    key = TriggerKey.generate(num_classes=10, size=32, shape=(1, 28, 28), secret=bytes(32))
    assert verify(model, key, reference=model) == verify(model, key)


def test_a_reference_of_another_architecture_is_refused(owner):
    _, key = owner
    narrow = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 128),
                                 torch.nn.ReLU(), torch.nn.Linear(128, 10))
    with pytest.raises(ValueError, match="no tensor"):
        verify(small_cnn(), key, reference=narrow)


def test_resnet18_key_on_the_residual_stream_survives_the_stacked_attack():
    """A key on a conv that writes the residual stream (rescaled through its BatchNorm,
    permuted with the whole stream, widened) is read back with the reference."""
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    key = WeightKey.generate(bits=128, targets=("layer3.1.conv2.weight",), secret=bytes(32))
    embed_weights(model, key, strength=1.0)
    suspect = ATTACKS["stacked"](model)
    assert not verify(suspect, key).detected
    found = verify(suspect, key, reference=model)
    assert found.detected and found.matches == 128
    assert found.extra["alignment"]["units_rescaled"] > 1000
