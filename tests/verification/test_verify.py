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
