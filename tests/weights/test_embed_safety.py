"""embed_weights never leaves a model corrupted: capacity is checked before anything is
written, and a result that is not finite or still misreads a bit is undone and raised."""

import pytest
import torch

from mlguard import WeightKey, embed_weights, verify
from mlguard.weights import watermark

SECRET = bytes(range(3, 35))


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(100, 300), torch.nn.ReLU(),
                               torch.nn.Linear(300, 10))


def snapshot(model):
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()  # bit for bit (a NaN stays a NaN)
    assert all(torch.equal(after[n].reshape(-1).view(torch.uint8),
                           t.reshape(-1).view(torch.uint8)) for n, t in before.items())


def test_more_bits_than_the_target_carries_is_refused_before_any_write():
    model = mlp()
    before = snapshot(model)
    k = WeightKey.generate(bits=256, targets=("2.bias",), secret=SECRET)
    with pytest.raises(ValueError, match=r"bits=256 .*'2\.bias'.* 10 weights"):
        embed_weights(model, k)
    assert_unchanged(model, before)


@pytest.mark.parametrize("targets,reduce,carrying", [
    (("2.bias",), "none", 10),
    (("0.weight",), "mean_out", 100),          # mean over the 300 outputs: 100 values
    (("2.bias", "0.bias"), "none", 310),
])
def test_capacity_limit_is_a_quarter_of_the_carrying_weights(targets, reduce, carrying):
    limit = carrying // 4
    model = mlp()
    ok = WeightKey.generate(bits=limit, targets=targets, reduce=reduce, secret=SECRET)
    report = embed_weights(model, ok)
    assert report.bit_errors_after == 0 and verify(model, ok).matches == limit
    model = mlp()
    before = snapshot(model)
    over = WeightKey.generate(bits=limit + 1, targets=targets, reduce=reduce, secret=SECRET)
    with pytest.raises(ValueError, match=rf"bits={limit + 1} .* {carrying} weights"):
        embed_weights(model, over)
    assert_unchanged(model, before)


def test_non_finite_result_is_undone_and_raised():
    # A margin of 1e7 RMS is beyond float16's range: the update overflows to inf.
    model = mlp().half()
    before = snapshot(model)
    k = WeightKey.generate(bits=64, targets=("0.weight",), secret=SECRET)
    with pytest.raises(ValueError, match="not finite"):
        embed_weights(model, k, strength=1e7)
    assert_unchanged(model, before)


def test_remaining_bit_errors_are_undone_and_raised(monkeypatch):
    # Every step goes the wrong way (as if a dtype or a broken kernel spoiled it): the
    # weights do change, the bits stay wrong.
    real = watermark._add_to_targets
    monkeypatch.setattr(watermark, "_add_to_targets", lambda *a: real(*a[:-1], -a[-1]))
    model = mlp()
    before = snapshot(model)
    k = WeightKey.generate(bits=64, targets=("0.weight",), secret=SECRET)
    with pytest.raises(ValueError, match=r"bit error\(s\) remain"):
        embed_weights(model, k)
    assert_unchanged(model, before)


def test_a_failing_evaluate_after_embedding_leaves_the_model_as_it_was():
    model = mlp()
    before = snapshot(model)
    calls = []

    def evaluate(m):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("evaluation data missing")
        return 0.5

    k = WeightKey.generate(bits=32, targets=("0.weight",), secret=SECRET)
    with pytest.raises(RuntimeError, match="evaluation data missing"):
        embed_weights(model, k, evaluate=evaluate)
    assert_unchanged(model, before)


def test_non_finite_weights_are_refused_before_any_write():
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    before = snapshot(model)
    k = WeightKey.generate(bits=32, targets=("0.weight",), secret=SECRET)
    with pytest.raises(ValueError, match=r"target '0\.weight' has non-finite values"):
        embed_weights(model, k)
    assert_unchanged(model, before)


def test_buffer_targets_are_refused():
    model = torch.nn.Sequential(torch.nn.Linear(8, 200), torch.nn.BatchNorm1d(200))
    before = snapshot(model)
    k = WeightKey.generate(bits=8, targets=("1.running_mean",), secret=SECRET)
    with pytest.raises(ValueError, match=r"target '1\.running_mean' is a buffer, not a parameter"):
        embed_weights(model, k)
    assert_unchanged(model, before)


@pytest.mark.parametrize("strength,error", [
    ("1", TypeError), (True, TypeError), (float("inf"), ValueError), (float("nan"), ValueError),
    (0, ValueError),
])
def test_bad_strength(strength, error):
    model = mlp()
    with pytest.raises(error, match="strength"):
        embed_weights(model, WeightKey.generate(bits=8, targets=("0.weight",), secret=SECRET),
                      strength=strength)


def test_bad_key_type():
    with pytest.raises(TypeError, match="key must be a WeightKey, got str"):
        embed_weights(mlp(), "owner.key")


def test_at_the_limit_the_change_stays_smaller_than_the_weights():
    # 256 bits in 1024 weights: the minimum-norm change is ~0.75 of the weights' norm; the
    # classic w + alpha R^T (2b - 1) step changed them 5 to 30 times over.
    torch.manual_seed(0)
    model = torch.nn.Linear(1024, 1, bias=False)
    k = WeightKey.generate(bits=256, targets=("weight",), secret=SECRET)
    report = embed_weights(model, k)
    assert report.bit_errors_after == 0 and report.min_margin >= 1.0
    assert 0.5 < report.relative_weight_change < 1.0


def test_data_parallel_names_embed_like_the_bare_model():
    bare, wrapped = mlp(), torch.nn.DataParallel(mlp())
    k = WeightKey.generate(bits=32, targets=("0.weight",), secret=SECRET)
    embed_weights(bare, k)
    embed_weights(wrapped, k)
    assert torch.equal(wrapped.module[0].weight, bare[0].weight)
