"""Which weights a key names: no architecture-specific default, "auto" resolution,
buffers refused where they would be trained, similar-name hints, integer-like inputs."""

import numpy as np
import pytest
import torch

from mlguard import Fingerprints, WeightKey, WeightWatermark, load_key, verify

SECRET = bytes(range(5, 37))


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(100, 300), torch.nn.ReLU(),
                               torch.nn.Linear(300, 10))


def bn_model():
    return torch.nn.Sequential(torch.nn.Linear(8, 200), torch.nn.BatchNorm1d(200),
                               torch.nn.Linear(200, 4))


def test_targets_are_required():
    with pytest.raises(ValueError, match=r"targets is required.*targets='auto'"):
        WeightKey.generate(bits=64)
    with pytest.raises(ValueError, match=r"targets is required"):
        Fingerprints(bytes(32), bits=64)


def test_auto_targets_resolve_to_the_largest_weight_matrix():
    model = mlp()
    model.register_buffer("big", torch.zeros(1000, 1000))  # a buffer is never chosen
    k = WeightKey.generate(bits=64, targets="auto", model=model, secret=SECRET)
    assert k.targets == ("0.weight",)
    wrapped = torch.nn.DataParallel(mlp())  # names as the bare model has them
    assert WeightKey.generate(bits=64, targets="auto", model=wrapped).targets == ("0.weight",)
    with pytest.raises(ValueError, match=r"targets='auto' needs model="):
        WeightKey.generate(bits=64, targets="auto")
    with pytest.raises(ValueError, match="no parameter with 2 or more dimensions"):
        WeightKey.generate(bits=4, targets="auto", model=torch.nn.BatchNorm1d(64))


def test_auto_targets_are_recorded_in_the_key_file(tmp_path):
    k = WeightKey.generate(bits=64, targets="auto", model=mlp(), secret=SECRET)
    k.save(tmp_path / "w.key")
    assert load_key(tmp_path / "w.key").targets == ("0.weight",)


def test_fingerprints_auto_targets_are_resolved_once():
    shop = Fingerprints(bytes(range(32)), bits=64, targets="auto", model=mlp())
    assert shop.key_for("alice").targets == ("0.weight",)
    assert "model" not in shop.key_args  # the model is not kept alive by the registry
    with pytest.raises(ValueError, match=r"bits=64 .*'2\.bias'"):
        Fingerprints(bytes(range(32)), bits=64, targets=("2.bias",), model=mlp())


def test_generate_with_model_checks_the_targets():
    with pytest.raises(ValueError, match=r"target '1\.running_mean' is a buffer, not a parameter"):
        WeightKey.generate(bits=8, targets=("1.running_mean",), model=bn_model())
    with pytest.raises(ValueError, match=r"target '0\.wieght' is not a parameter"):
        WeightKey.generate(bits=8, targets=("0.wieght",), model=mlp())
    with pytest.raises(ValueError, match=r"bits=256 .*'2\.bias'.* 10 weights"):
        WeightKey.generate(bits=256, targets=("2.bias",), model=mlp())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        WeightKey.generate(bits=8, targets="auto", model=mlp().state_dict())


def test_loss_refuses_buffers_frozen_targets_and_too_many_bits():
    model = bn_model()
    buffer_key = WeightKey.generate(bits=8, targets=("1.running_mean",), secret=SECRET)
    with pytest.raises(ValueError, match=r"target '1\.running_mean' is a buffer, not a parameter"):
        WeightWatermark(buffer_key).loss(model)
    assert verify(model, buffer_key).total == 8  # reading a buffer is still fine
    model[0].weight.requires_grad_(False)
    frozen = WeightKey.generate(bits=8, targets=("0.weight",), secret=SECRET)
    with pytest.raises(ValueError, match=r"target '0\.weight' does not require grad"):
        WeightWatermark(frozen).loss(model)
    with torch.no_grad():  # monitoring the loss without training is fine
        WeightWatermark(frozen).loss(model)
    big = WeightKey.generate(bits=300, targets=("1.bias",), secret=SECRET)
    with pytest.raises(ValueError, match=r"bits=300 .*'1\.bias'.* 200 weights"):
        WeightWatermark(big).loss(model)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        WeightWatermark(frozen).loss(model.state_dict())


def test_similar_names_are_similar():
    model = bn_model()
    k = WeightKey.generate(bits=8, targets=("2.wieght",), secret=SECRET)
    with pytest.raises(ValueError, match=r"similar names: \['2\.weight'"):
        k.gather(model)
    with pytest.raises(ValueError, match=r"similar names: \['1\.running_mean'"):
        WeightKey.generate(bits=8, targets=("1.runing_mean",), secret=SECRET).gather(model)


def test_numpy_integers_are_accepted_where_ints_are(tmp_path):
    k = WeightKey.generate(bits=np.int64(64), targets=("0.weight",), secret=SECRET,
                           message=np.arange(64) % 2)
    assert k.bits == 64 and type(k.bits) is int
    assert k == WeightKey.generate(bits=64, targets=["0.weight"], secret=SECRET,
                                   message=[0, 1] * 32, nonce=k.nonce)
    k.save(tmp_path / "np.key")  # JSON-encodable
    assert load_key(tmp_path / "np.key") == k
    shop = Fingerprints(bytes(32), bits=np.int32(16), targets=("0.weight",))
    assert shop.key_for("a").bits == 16


@pytest.mark.parametrize("kw,error,match", [
    (dict(bits=64.0), TypeError, "bits must be an int, got float"),
    (dict(bits="64"), TypeError, "bits must be an int, got str"),
    (dict(bits=True), TypeError, "bits must be an int, got bool"),
    (dict(bits=-3), ValueError, "bits must be a positive int, got -3"),
    (dict(targets=7), TypeError, "targets must be a parameter name or a sequence of them, got int"),
    (dict(targets=("0.weight", 3)), TypeError, "targets must be .* got int 3"),
    (dict(targets=("0.weight", "0.weight")), ValueError, "targets name '0.weight' twice"),
    (dict(message=[0.5] * 8), ValueError, r"message must be 8 bits \(0 or 1\)"),
    (dict(secret=32), TypeError, "secret must be bytes or a hex str, got int"),
    (dict(reduce=None), ValueError, "reduce must be one of"),
])
def test_bad_argument_types_name_the_argument(kw, error, match):
    args = dict(bits=8, targets=("0.weight",), secret=SECRET)
    args.update(kw)
    with pytest.raises(error, match=match):
        WeightKey.generate(**args)


def test_bad_fingerprint_master_secret_type():
    with pytest.raises(TypeError, match="master_secret must be bytes or a hex str, got int"):
        Fingerprints(32, bits=8, targets=("0.weight",))
