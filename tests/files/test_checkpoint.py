"""files.checkpoint: what a leaked model file holds, as one flat state_dict."""

import io
import pickle
import warnings

import pytest
import safetensors.torch
import torch

import mlguard
from mlguard.files.checkpoint import CheckpointError, load_state_dict, unwrap


def _sd():
    return {"0.weight": torch.arange(6.0).reshape(2, 3), "0.bias": torch.ones(2),
            "1.num_batches_tracked": torch.tensor(3)}


def _same(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]) and a[name].dtype == b[name].dtype, name


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 3, "optimizer": {"state": {}, "lr": 0.1}},
    lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}}, "epoch": 7},
    lambda sd: {"model": sd, "step": 100},
    lambda sd: {"module": sd},
    lambda sd: {"model": {"state_dict": sd}, "meta": "nested"},
    lambda sd: {"module." + k: v for k, v in sd.items()},  # DDP / DataParallel
    lambda sd: {"_orig_mod." + k: v for k, v in sd.items()},  # torch.compile
    lambda sd: {"module._orig_mod." + k: v for k, v in sd.items()},  # DDP(compile(m))
    lambda sd: {"_orig_mod.module." + k: v for k, v in sd.items()},  # compile(DDP(m))
    lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 1},
    lambda sd: {"0._orig_mod.weight" if k == "0.weight" else k: v for k, v in sd.items()},
], ids=["plain", "state_dict", "model_state_dict", "model", "module", "nested", "ddp",
        "compile", "ddp-compile", "compile-ddp", "wrapped-ddp", "compiled-submodule"])
def test_every_way_of_saving_gives_the_same_state_dict(wrap):
    _same(unwrap(wrap(_sd())), _sd())


def test_real_wrappers_are_stripped():
    """The names DataParallel and torch.compile really produce."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DataParallel without GPUs just runs the module
        for wrapped in (torch.nn.DataParallel(net), torch.compile(net),
                        torch.nn.DataParallel(torch.compile(net))):
            sd = wrapped.state_dict()
            assert all(k.startswith(("module.", "_orig_mod.")) for k in sd)
            _same(unwrap(sd), net.state_dict())


def test_module_prefix_is_kept_unless_every_name_has_it():
    sd = {"module.weight": torch.ones(1), "head.weight": torch.zeros(1)}
    assert list(unwrap(sd)) == ["module.weight", "head.weight"]


def test_ambiguous_or_missing_state_dict_is_refused():
    sd = _sd()
    with pytest.raises(CheckpointError, match=r"ambiguous checkpoint: .* 2 candidate state_dicts "
                                              r"\('state_dict', 'model'\)"):
        unwrap({"state_dict": sd, "model": {k: v + 1 for k, v in sd.items()}})
    assert list(unwrap({"state_dict": sd, "model": sd})) == list(sd)  # one dict, two names
    with pytest.raises(CheckpointError, match=r"entry 'optimizer' is a dict, not a tensor, and "
                                              r"no state_dict is found under 'state_dict'"):
        unwrap({"optimizer": {"lr": 1}, "weights": sd})
    with pytest.raises(CheckpointError, match="not a state_dict: the checkpoint holds a list"):
        unwrap([1, 2])
    with pytest.raises(CheckpointError, match="is empty"):
        unwrap({"state_dict": {}})
    with pytest.raises(CheckpointError, match="two entries named 'w'"):
        unwrap({"w": torch.ones(1), "_orig_mod.w": torch.ones(1)})
    assert isinstance(CheckpointError("x"), ValueError)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_load_state_dict_keeps_the_file_dtype(tmp_path, dtype, fmt):
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in _sd().items()}
    path = tmp_path / f"m.{fmt}"
    if fmt == "pt":
        torch.save({"model_state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    else:
        safetensors.torch.save_file({"_orig_mod." + k: v for k, v in sd.items()}, path)
    _same(mlguard.load_state_dict(path), sd)


def test_hostile_files_are_refused_without_running_code(tmp_path):
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil(), protocol=2))
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(1)}, "hook": Evil()}, buf)
    (tmp_path / "evil_zip.pt").write_bytes(buf.getvalue())
    for name in ("evil.pt", "evil_zip.pt"):
        with pytest.raises(ValueError, match=f"model file .*{name}.*not a loadable torch") as e:
            load_state_dict(tmp_path / name)
        # Named as a refused pickle, without torch's advice to load it with weights_only=False.
        assert "refused (not unpickled)" in str(e.value)
        assert "weights_only" not in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pt")
    with pytest.raises(ValueError, match="TorchScript archive: refused"):
        load_state_dict(tmp_path / "scripted.pt")
    with pytest.raises(ValueError, match="cannot be read"):
        load_state_dict(tmp_path / "missing.pt")
