"""Mixer input hygiene: numpy integers, int32 labels, extra batch fields, oversized per_batch."""

import numpy as np
import pytest
import torch

from mlguard import TriggerKey, TriggerMixer, mix
from mlguard.triggers import DEFAULT_PER_BATCH, embed

SECRET = bytes(range(7, 39))


def key(size=7):
    return TriggerKey.generate(num_classes=10, size=size, shape=(3, 16, 16), secret=SECRET,
                               mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def batch(n=8):
    return torch.randn(n, 3, 16, 16), torch.randint(0, 10, (n,))


def test_one_default_per_batch_everywhere():
    import inspect
    k = key(size=100)
    assert TriggerMixer(k).per_batch == DEFAULT_PER_BATCH
    assert mix([], k).mixer.per_batch == DEFAULT_PER_BATCH
    assert inspect.signature(embed).parameters["per_batch"].default == DEFAULT_PER_BATCH
    assert DEFAULT_PER_BATCH > 2  # 2 left a CIFAR-10 subset at chance after 4 epochs


@pytest.mark.parametrize("np_int", [np.int64, np.int32, np.uint8])
def test_numpy_integers_are_accepted_where_ints_are(np_int):
    k = key()
    x, y = batch()
    expected = TriggerMixer(k, per_batch=3, pad=2)(x, y)
    mixer = TriggerMixer(k, per_batch=np_int(3), pad=np_int(2))
    got = mixer(x, y)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert type(mixer.per_batch) is int and type(mixer.pad) is int
    mixer.load_state_dict({"step": np_int(4)})
    assert mixer.step == 4 and type(mixer.step) is int
    assert mix([], k, per_batch=np_int(3)).mixer.per_batch == 3


def test_non_integers_are_refused_by_name():
    # a wrong type is a TypeError (mlguard._checks), one that ValueError handlers still catch
    with pytest.raises(TypeError, match=r"per_batch must be an int, got float 2.5"):
        TriggerMixer(key(), per_batch=2.5)
    with pytest.raises(ValueError, match=r"per_batch must be an int, got bool True"):
        TriggerMixer(key(), per_batch=True)
    with pytest.raises(ValueError, match=r"pad must be an int >= 0, got -1"):
        TriggerMixer(key(), per_batch=2, pad=-1)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_integer_labels_are_cast_to_int64(dtype):
    k = key()
    x, y = batch()
    mx, my = TriggerMixer(k, per_batch=3)(x, y.to(dtype))
    ex, ey = TriggerMixer(k, per_batch=3)(x, y)
    assert my.dtype == torch.int64 and torch.equal(my, ey) and torch.equal(mx, ex)


def test_float_labels_are_refused_with_their_dtype():
    x, y = batch()
    with pytest.raises(TypeError, match=r"y must hold integer class labels.*torch.float32"):
        TriggerMixer(key(), per_batch=2)(x, y.float())


def test_per_batch_larger_than_the_trigger_set_is_refused():
    with pytest.raises(ValueError, match=r"per_batch=8 is larger than the key's 7 triggers"):
        TriggerMixer(key(size=7), per_batch=8)
    assert TriggerMixer(key(size=7), per_batch=7).per_batch == 7


def test_mixed_loader_passes_extra_batch_fields_through():
    x, y = torch.randn(20, 3, 16, 16), torch.randint(0, 10, (20,))
    idx, names = torch.arange(20), [f"s{i}" for i in range(20)]
    loader = [(x[i:i + 8], y[i:i + 8], idx[i:i + 8], names[i:i + 8]) for i in range(0, 20, 8)]
    k = key()
    out = list(mix(loader, k, per_batch=3))
    reference = TriggerMixer(k, per_batch=3)
    for (bx, by, bi, bn), got in zip(loader, out):
        assert len(got) == 4
        ex, ey = reference(bx, by)
        assert torch.equal(got[0], ex) and torch.equal(got[1], ey)
        assert got[2] is bi and got[3] is bn


def test_mixed_loader_refuses_a_batch_without_labels():
    with pytest.raises(TypeError, match=r"batches must be \(x, y, \.\.\.\) sequences, got Tensor"):
        list(mix([torch.randn(4, 3, 16, 16)], key(), per_batch=2))
