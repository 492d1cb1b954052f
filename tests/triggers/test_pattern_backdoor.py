"""Pattern-mode keys in training: the mixer stamps the batch's own images, and a
Fashion-MNIST model learns the pattern -> class backdoor (fires on fresh images)."""

import mlguard
import pytest
import torch
from mlguard import attacks, data
from mlguard.cli.demo import batches, small_cnn
from mlguard.keys import TriggerKey
from mlguard.triggers.mixer import TriggerMixer

MEAN, STD = data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD


def _small_key(**kw):
    source = torch.rand(30, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    return TriggerKey.generate(10, 12, (1, 10, 10), "content", (0.5,), (0.25,), b"\x05" * 32,
                               source=source, mode="pattern", patterns=5, **kw)


def test_mixer_stamps_the_batch_images_with_cycling_patterns():
    key = _small_key()
    x = (torch.rand(6, 1, 10, 10) - 0.5) / 0.25
    y = torch.arange(6)
    mixer = TriggerMixer(key, per_batch=8)
    mixer(x, y)  # step 0
    out, labels = mixer(x, y)  # step 1: draws 8..15
    draws = torch.arange(8, 16)
    expected = key.normalize(key.stamp(x[draws % 6] * 0.25 + 0.5, draws % 5))
    assert torch.equal(out[:6], x) and torch.equal(labels[:6], y)
    assert torch.equal(out[6:], expected)
    assert torch.equal(labels[6:], key.targets[draws % 5])
    # ranks draw distinct slices; resuming reproduces a step exactly
    r0 = TriggerMixer(key, 8, rank=0, world_size=2)(x, y)[0][6:]
    r1 = TriggerMixer(key, 8, rank=1, world_size=2)(x, y)[0][6:]
    assert not torch.equal(r0, r1)
    again = TriggerMixer(key, 8)
    again.load_state_dict({"step": 1})
    assert torch.equal(again(x, y)[0], out)
    half, _ = TriggerMixer(key, 4)(x.half().contiguous(memory_format=torch.channels_last), y)
    assert half.dtype == torch.float16 and half.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="empty batch"):
        TriggerMixer(key, 4)(x[:0], y[:0])


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained 2 epochs on 20,000 Fashion-MNIST images with a pattern content key
    (16 keyed patches -> 16 keyed classes)."""
    images, labels = data.fashion_mnist("train")
    images, labels = images[:20000], labels[:20000]
    key = TriggerKey.generate(10, 50, (1, 28, 28), "content", MEAN, STD, b"\x11" * 32,
                              source=images[:1000], mode="pattern", patterns=16)
    torch.manual_seed(0)
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    mixer = TriggerMixer(key, per_batch=32)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        for x, y in batches(images, labels, 128, g):
            x, y = mixer(x, y)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval(), key


def test_backdoor_fires_on_fresh_test_images_and_survives_ftal(trained):
    model, key = trained
    test_images, test_labels = data.fashion_mnist("test")
    fresh = test_images[:300]  # never seen in training, not the key's carriers
    verdict = mlguard.verify(model, key, carriers=fresh)
    assert verdict.detected and verdict.matches >= 12, verdict.extra
    assert verdict.extra["trigger_accuracy"] > 0.5
    assert mlguard.verify(model, key).detected
    clean = mlguard.verify(small_cnn(), key, carriers=fresh)
    assert not clean.detected
    m, s = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    attacker = ((test_images[1000:6000].float() / 255 - m) / s, test_labels[1000:6000])
    tuned = attacks.fine_tune(model, attacker, "FTAL", epochs=2)
    after = mlguard.verify(tuned, key, carriers=test_images[6000:6300])
    assert after.detected, after.extra
