"""mlguard.load_model: a model file loaded into its architecture, as it leaked."""

import copy
import sys
import types
import warnings

import pytest
import safetensors.torch
import torch
from torch import nn

import mlguard
from mlguard.verification import state_dict_sha256


def net(num_classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, num_classes))


class Tied(nn.Module):
    """Weight tying, as in language models: one Parameter under two names."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.head = nn.Linear(4, 5, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, x):
        return self.head(self.embed(x))


@pytest.fixture
def trained():
    torch.manual_seed(0)
    model = net().eval()
    model[1].running_mean.uniform_()  # buffers are weights too
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_keeps_the_file_dtype_and_weights(tmp_path, trained, dtype):
    leaked = copy.deepcopy(trained).to(dtype)
    path = tmp_path / "leaked.pt"
    torch.save(leaked.state_dict(), path)
    model = mlguard.load_model(path, net)
    assert not model.training
    assert {t.dtype for t in model.parameters()} == {dtype}
    assert model[1].num_batches_tracked.dtype == torch.int64
    assert state_dict_sha256(model.state_dict()) == state_dict_sha256(leaked.state_dict())
    x = torch.randn(2, 4).to(dtype)
    assert torch.equal(model(x), leaked(x))


def test_arch_as_factory_string_or_module(tmp_path, trained, monkeypatch):
    path = tmp_path / "m.safetensors"
    safetensors.torch.save_file({"module." + k: v for k, v in trained.state_dict().items()}, path)
    want = state_dict_sha256(trained.state_dict())
    helper = types.ModuleType("leak_arch")
    helper.net = net
    monkeypatch.setitem(sys.modules, "leak_arch", helper)
    into = net(num_classes=3)
    models = [mlguard.load_model(path, net), mlguard.load_model(path, "leak_arch:net"),
              mlguard.load_model(path, net, arch_kwargs={"num_classes": 3}),
              mlguard.load_model(path, into)]
    assert models[-1] is into  # loaded in place
    for model in models:
        assert state_dict_sha256(model.state_dict()) == want


def test_tied_weights_stay_tied_when_the_dtype_changes(tmp_path):
    torch.manual_seed(0)
    half = Tied().half()
    path = tmp_path / "tied.pt"
    torch.save(half.state_dict(), path)
    model = mlguard.load_model(path, Tied)
    assert model.head.weight is model.embed.weight
    assert model.head.weight.dtype == torch.float16
    assert torch.equal(model.embed.weight, half.embed.weight)


class Wrapper(nn.Module):
    """An architecture whose own names all start with "module."."""

    def __init__(self):
        super().__init__()
        self.module = net()

    def forward(self, x):
        return self.module(x)


def test_wrapped_architectures_take_unwrapped_files(tmp_path, trained):
    path = tmp_path / "m.pt"
    torch.save(Wrapper().state_dict(), path)  # "module.0.weight", ...: read as "0.weight"
    model = mlguard.load_model(path, Wrapper)
    assert state_dict_sha256(model.state_dict()) == \
        state_dict_sha256(torch.load(path, weights_only=True))
    torch.save(trained.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DataParallel without GPUs just runs the module
        into = nn.DataParallel(net())
    mlguard.load_model(path, into)
    x = torch.randn(2, 4)
    assert torch.equal(into.module(x), trained(x))


def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path, trained):
    path = tmp_path / "m.pt"
    sd = trained.state_dict()
    sd["extra.weight"] = torch.ones(1)
    del sd["3.bias"]
    torch.save({"state_dict": sd, "epoch": 2}, path)
    with pytest.raises(ValueError, match=r"wrong architecture: model file .*m\.pt.* does not fit "
                                         r"Sequential: 1 missing \('3.bias'\) and 1 unexpected "
                                         r"\('extra.weight'\) names"):
        mlguard.load_model(path, net)
    torch.save(trained.state_dict(), path)
    with pytest.raises(ValueError, match=r"wrong architecture: .*size mismatch for 3.weight"):
        mlguard.load_model(path, lambda: net(num_classes=5))


def test_bad_arguments(tmp_path, trained):
    path = tmp_path / "m.pt"
    torch.save(trained.state_dict(), path)
    with pytest.raises(ValueError, match="arch is required"):
        mlguard.load_model(path, None)
    with pytest.raises(ValueError, match="arch must look like 'package.module:factory'"):
        mlguard.load_model(path, "no_colon")
    with pytest.raises(ValueError, match="cannot be imported"):
        mlguard.load_model(path, "no_such_pkg_xyz:net")
    with pytest.raises(TypeError, match="arch must build a torch.nn.Module, got int"):
        mlguard.load_model(path, lambda: 3)
    with pytest.raises(ValueError, match="arch_kwargs were given with an nn.Module"):
        mlguard.load_model(path, net(), arch_kwargs={"num_classes": 3})
    with pytest.raises(ValueError, match="ambiguous checkpoint"):
        torch.save({"model": trained.state_dict(), "state_dict": net().state_dict()}, path)
        mlguard.load_model(path, net)


def test_scan_refuses_a_module_instance_as_arch(tmp_path, trained):
    """An nn.Module is callable, but calling it runs forward(): say so instead."""
    path = tmp_path / "m.pt"
    torch.save(trained.state_dict(), path)
    key = mlguard.TriggerKey.generate(num_classes=3, size=10, shape=(1, 12, 12))
    with pytest.raises(TypeError, match="arch must be a factory .* got a Sequential instance"):
        mlguard.scan(path, [key], arch=trained, device="cpu")
