"""verify(): the exact binomial test on a model's answers to the triggers."""

import pytest
import torch
from scipy import stats

from mlguard import TriggerKey, verify
from mlguard.verification import state_dict_sha256
from memorizer import Memorizer


def key(**kw):
    args = dict(num_classes=10, size=100, shape=(1, 12, 12), mean=(0.3,), std=(0.4,))
    args.update(kw)
    return TriggerKey.generate(**args)


@pytest.mark.parametrize("correct", [0, 10, 25, 60, 100])
def test_p_value_is_the_exact_binomial_tail(correct):
    k = key()
    model = Memorizer(k, correct)
    v = verify(model, k)
    assert v.matches == correct and v.total == 100
    assert v.p_value == pytest.approx(stats.binom.sf(correct - 1, 100, 0.1), rel=1e-9)
    assert v.detected == (v.p_value < 1e-6)
    assert v.commitment == k.commitment()
    assert v.model_sha256 == state_dict_sha256(model.state_dict())
    assert v.device == "cpu" and v.scheme == "trigger-set"


def test_extreme_p_values_stay_exact_in_log_space():
    k = key(size=1000, num_classes=1000)
    v = verify(Memorizer(k, 1000), k)
    assert v.log_p_value == pytest.approx(1000 * -6.907755278982137, rel=1e-12)
    assert v.p_value == 0.0 and v.detected  # below float range, still decided correctly
    assert "e-3000" in str(v)


def test_restores_training_mode_and_gradients():
    k = key()
    model = Memorizer(k, 50).train()
    verify(model, k)
    assert model.training
    model.eval()
    verify(model, k)
    assert not model.training


def test_output_width_mismatch():
    k = key()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 7))
    with pytest.raises(ValueError, match=r"model must output \(batch, 10\) logits .* got \(100, 7\)"):
        verify(model, k)


def test_bad_arguments():
    k = key()
    model = Memorizer(k, 5)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        verify(lambda x: x, k)
    with pytest.raises(TypeError, match="key must be a TriggerKey"):
        verify(model, "key")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        verify(model, k, batch_size=0)
    with pytest.raises(ValueError, match="alpha"):
        verify(model, k, alpha=2.0)


def test_batching_does_not_change_the_verdict():
    k = key()
    model = Memorizer(k, 37)
    assert verify(model, k, batch_size=7).matches == verify(model, k, batch_size=256).matches == 37


def test_verdict_serializes():
    k = key()
    v = verify(Memorizer(k, 90), k)
    d = v.to_dict()
    assert d["matches"] == 90 and d["detected"] and d["commitment"] == k.commitment()
    assert "DETECTED" in str(v)


# -- models as they leak: half precision, files, wrapped state_dicts -----------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_are_verified_in_their_dtype(dtype):
    """A model watermarked in fp32 and cast with .half() / .bfloat16() is still detected."""
    k = key()
    leaked = Memorizer(k, 90).to(dtype)
    v = verify(leaked, k)
    assert v.detected and v.matches == 90 and v.extra["dtype"] == str(dtype)[6:]
    assert v.weights_sha256 == state_dict_sha256(leaked.state_dict())
    assert v.weights_sha256 != verify(Memorizer(k, 90), k).weights_sha256  # dtype counts
    assert verify(Memorizer(k, 90), k).extra["dtype"] == "float32"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_conv_net_gets_triggers_in_its_dtype(dtype):
    k = key(mean=None, std=None)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(400, 10)).to(dtype).eval()
    images, labels = k.materialize()
    expected = int((net(images.to(dtype)).argmax(1) == labels).sum())
    assert verify(net, k).matches == expected


def test_verify_a_model_file(tmp_path):
    """verify(path, key, arch=...) loads with load_model and cites the file's SHA-256."""
    import hashlib

    import safetensors.torch
    k, stranger = key(), key()
    leaked = Memorizer(k, 100).half()
    path = tmp_path / "suspect.safetensors"
    safetensors.torch.save_file({"module." + n: t for n, t in leaked.state_dict().items()}, path)
    arch = lambda: Memorizer(stranger, 100)  # the architecture, with other weights
    v = verify(path, k, arch=arch)
    assert v.detected and v.matches == 100 and v.extra["dtype"] == "float16"
    assert v.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert v.weights_sha256 == state_dict_sha256(leaked.state_dict())
    assert not verify(str(path), stranger, arch=arch).detected
    with pytest.raises(ValueError, match="arch is required"):
        verify(path, k)
    with pytest.raises(ValueError, match="arch and arch_kwargs are only for a model given as a "
                                         "file path"):
        verify(leaked, k, arch=arch)


def test_verify_weights_reads_wrapped_prefixed_and_half_state_dicts(tmp_path):
    from mlguard import WeightKey, verify_weights
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    k = WeightKey.generate(bits=32, targets=("0.weight",))
    base = verify_weights(net, k)
    sd = net.state_dict()
    for leaked in ({"module." + n: t for n, t in sd.items()},
                   {"_orig_mod." + n: t for n, t in sd.items()},
                   {"state_dict": sd, "epoch": 3, "optimizer": {"lr": 0.1}},
                   {"model_state_dict": sd}, {"module": sd}):
        v = verify_weights(leaked, k)
        assert (v.matches, v.weights_sha256) == (base.matches, base.weights_sha256)
        assert v.file_sha256 is None
    half = {n: t.half() for n, t in sd.items()}
    assert verify_weights(half, k).weights_sha256 == state_dict_sha256(half)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"module." + n: t for n, t in sd.items()}, "step": 9}, path)
    v = verify(path, k)  # a weight key needs no architecture
    assert (v.matches, v.weights_sha256) == (base.matches, base.weights_sha256)
    assert v.file_sha256 is not None and verify_weights(path, k) == v
    arch = lambda: torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    assert verify(path, k, arch=arch) == v  # loaded into the architecture: the same reading
    with pytest.raises(ValueError, match="wrong architecture"):
        verify(path, k, arch=lambda: torch.nn.Linear(64, 32))
    with pytest.raises(ValueError, match="arch and arch_kwargs are only for a model given as"):
        verify(net, k, arch=arch)


def test_nan_logits_are_not_counted():
    # argmax of NaN picks an arbitrary class: a verdict from it would be no evidence.
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.full((x.shape[0], 10), float("nan")) + self.w

    with pytest.raises(ValueError, match="NaN or inf logits"):
        verify(Broken(), key())
