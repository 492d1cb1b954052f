"""TriggerMixer and mix(): the one line added to a training loop."""

import pytest
import torch

from mlguard import TriggerKey, TriggerMixer, mix

SECRET = bytes(range(1, 33))


def key(**kw):
    args = dict(num_classes=10, size=7, shape=(3, 16, 16), secret=SECRET,
                mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    args.update(kw)
    return TriggerKey.generate(**args)


def batch(n=8, dtype=torch.float32):
    return torch.randn(n, 3, 16, 16).to(dtype), torch.randint(0, 10, (n,))


def test_appends_cycling_labels():
    k = key()
    mixer = TriggerMixer(k, per_batch=3)
    labels = []
    for _ in range(5):
        x, y = batch()
        mx, my = mixer(x, y)
        assert mx.shape == (11, 3, 16, 16) and my.shape == (11,)
        assert torch.equal(mx[:8], x) and torch.equal(my[:8], y)
        labels.append(my[8:])
    assert torch.equal(torch.cat(labels), k.labels[torch.arange(15) % 7])
    assert mixer.step == 5


def test_without_augmentation_triggers_are_normalized_key_images():
    k = key()
    mixer = TriggerMixer(k, per_batch=7, augment=False)
    mx, _ = mixer(*batch())
    images, _ = k.materialize()
    mean = torch.tensor(k.mean)[:, None, None]
    std = torch.tensor(k.std)[:, None, None]
    assert torch.equal(mx[8:], (images - mean) / std)


def test_step_reproducible_and_resumable():
    k = key()
    a, b = TriggerMixer(k, per_batch=4), TriggerMixer(k, per_batch=4)
    x, y = batch()
    outs = [a(x, y)[0] for _ in range(3)]
    b.load_state_dict(a.state_dict())
    assert torch.equal(b(x, y)[0], a(x, y)[0])
    b.load_state_dict({"step": 1})
    assert torch.equal(b(x, y)[0], outs[1])
    assert not torch.equal(outs[0][8:], outs[1][8:])  # the set moves on


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_keeps_dtype_and_memory_format(dtype):
    x, y = batch(dtype=dtype)
    x = x.to(memory_format=torch.channels_last)
    mx, my = TriggerMixer(key(), per_batch=2)(x, y)
    assert mx.dtype == dtype and mx.is_contiguous(memory_format=torch.channels_last)
    assert my.dtype == torch.int64


def test_works_under_autocast():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(),
                                torch.nn.LazyLinear(10))
    mixer = TriggerMixer(key(), per_batch=2)
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mx, my = mixer(x, y)
        loss = torch.nn.functional.cross_entropy(model(mx), my)
    assert mx.dtype == torch.float32
    loss.backward()


def test_source_kind_through_the_mixer():
    source = torch.rand(40, 3, 16, 16)
    mixer = TriggerMixer(key(kind="noise", source=source), per_batch=2)
    assert mixer(*batch())[0].shape == (10, 3, 16, 16)


def test_mix_wraps_a_loader():
    data = torch.utils.data.TensorDataset(torch.randn(20, 3, 16, 16), torch.randint(0, 10, (20,)))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    mixed = mix(loader, key(), device="cpu", per_batch=2)
    assert len(mixed) == 3
    sizes = [x.shape[0] for x, _ in mixed]
    assert sizes == [10, 10, 6]


def test_bad_inputs():
    mixer = TriggerMixer(key(), per_batch=2)
    with pytest.raises(ValueError, match=r"x must be \(N, \*\(3, 16, 16\)\) to match the key"):
        mixer(torch.zeros(4, 1, 16, 16), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(TypeError, match="x and y must be tensors"):
        mixer([1], torch.zeros(1))
    with pytest.raises(RuntimeError, match="y must be 1-D with one label per sample of x"):
        mixer(torch.zeros(4, 3, 16, 16), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="per_batch must be an int >= 0"):
        TriggerMixer(key(), per_batch=-1)
    with pytest.raises(TypeError, match="key must be a TriggerKey"):
        TriggerMixer("not a key")


@pytest.mark.cuda
def test_cuda_mixer_matches_cpu():
    k = key()
    x, y = batch()
    cpu = TriggerMixer(k, per_batch=3)(x, y)
    gpu = TriggerMixer(k, per_batch=3)(x.cuda(), y.cuda())
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])
