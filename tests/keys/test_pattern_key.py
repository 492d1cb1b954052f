"""Pattern-mode (pattern -> class) trigger keys: patterns, targets, stamping, key files."""

import pytest
import torch
from mlguard.keys import TriggerKey

SHAPE = (1, 12, 12)


@pytest.fixture(scope="module")
def source():
    return torch.rand(40, *SHAPE, generator=torch.Generator().manual_seed(1))


def _key(kind, source, secret=b"\x07" * 32, **kw):
    return TriggerKey.generate(10, 20, SHAPE, kind, (0.5,), (0.25,), secret, source=source,
                               mode="pattern", **kw)


@pytest.mark.parametrize("kind", ["content", "noise"])
def test_key_file_round_trip_keeps_patterns_targets_and_carriers(kind, source, tmp_path):
    key = _key(kind, source, patterns=6)
    key.save(tmp_path / "k.json")
    back = TriggerKey.from_body(key.to_body())
    assert back.mode == "pattern" and back.patterns == 6 and back.commitment() == key.commitment()
    assert torch.equal(back.targets, key.targets)
    which = torch.arange(30) % 6
    images = source[:30]
    assert torch.equal(back.stamp(images, which), key.stamp(images, which))
    inputs, rows = key.pattern_inputs()
    assert inputs.shape == (6 * 20, *SHAPE) and torch.equal(rows, torch.arange(6).repeat_interleave(20))


def test_targets_are_uniform_and_secret(source):
    counts = torch.zeros(10)
    for i in range(60):
        key = _key("noise", source, secret=bytes([i]) * 32, patterns=16)
        counts += torch.bincount(key.targets, minlength=10)
    # 960 draws over 10 classes: every class within 5 sigma of 96
    assert ((counts - 96).abs() < 5 * (96 * 0.9) ** 0.5).all(), counts


def test_content_patterns_replace_a_region_and_noise_adds_and_clamps(source):
    content = _key("content", source, patterns=4, patch_size=3)
    images = source[:8]
    which = torch.arange(8) % 4
    out = content.stamp(images, which)
    changed = (out != images).flatten(1)
    assert (changed.sum(1) <= 9).all()  # only the 3x3 patch region
    # the region holds the same patch values for every image with the same pattern
    region = (out[0] != images[0]) | (out[4] != images[4])
    assert torch.equal(out[0][region], out[4][region])
    noise = _key("noise", source, patterns=4, noise_amplitude=0.3)
    out = noise.stamp(images, which)
    assert out.min() >= 0 and out.max() <= 1
    fields = noise.stamp(torch.full((4, *SHAPE), 0.5), torch.arange(4)) - 0.5  # no clamping
    assert fields.abs().max() <= 0.3 + 1e-6 and fields.abs().max() > 0.2
    assert torch.allclose(out, (images + fields[which]).clamp(0, 1), atol=1e-6)


def test_user_logos_one_or_one_per_pattern(source):
    logo = torch.ones(1, 4, 4)
    one = _key("content", source, patterns=3, patch=logo)
    out = one.stamp(torch.zeros(3, *SHAPE), torch.arange(3))
    assert (out.flatten(1).sum(1) == 16).all()  # each pattern puts the logo somewhere
    logos = [torch.full((1, 2, 2), 1.0), torch.full((1, 3, 3), 1.0), torch.full((1, 1, 5), 1.0)]
    many = _key("content", source, patterns=3, patch=logos)
    out = many.stamp(torch.zeros(3, *SHAPE), torch.arange(3))
    assert out.flatten(1).sum(1).tolist() == [4, 9, 5]
    assert TriggerKey.from_body(many.to_body()).commitment() == many.commitment()
    with pytest.raises(ValueError, match="list of 2 images; give one per pattern"):
        _key("content", source, patterns=3, patch=logos[:2])
    with pytest.raises(ValueError, match=r"patch must hold values in \[0, 1\]"):
        _key("content", source, patterns=3, patch=logo * 2)
    with pytest.raises(ValueError, match="a list of patches is for mode='pattern'"):
        TriggerKey.generate(10, 20, SHAPE, "content", source=source, patch=logos, mode="image")


def test_old_key_bodies_read_as_image_mode(source):
    key = TriggerKey.generate(10, 20, SHAPE, "content", secret=b"\x01" * 32, source=source,
                              mode="image")
    body = key.to_body()
    assert body["options"]["mode"] == "image"
    del body["options"]["mode"]  # a key file written before pattern mode
    old = TriggerKey.from_body(body)
    assert old.mode == "image"
    images, labels = old.materialize()
    assert torch.equal(images, key.materialize()[0]) and torch.equal(labels, key.labels)
    with pytest.raises(ValueError, match="patterns, targets and stamp are for mode='pattern'"):
        _ = old.targets


def test_bad_modes_are_clear_errors(source):
    with pytest.raises(ValueError, match="mode must be one of"):
        TriggerKey.generate(10, 20, SHAPE, "noise", source=source, mode="logo")
    with pytest.raises(ValueError, match="'unrelated' keeps per-image keyed labels"):
        TriggerKey.generate(10, 20, SHAPE, "unrelated", source=source, mode="pattern")
    with pytest.raises(ValueError, match="patterns must be an int >= 1, got 0"):
        _key("noise", source, patterns=0)
    body = _key("noise", source).to_body()
    body["options"]["mode"] = "per-pixel"
    with pytest.raises(ValueError, match="mode must be one of"):
        TriggerKey.from_body(body)
    with pytest.raises(ValueError, match="carriers must be a tensor"):
        _key("noise", source).pattern_inputs(torch.rand(3, 1, 8, 8))


def test_pattern_mode_is_the_default_for_content_and_noise(source):
    # benchmarks/RESULTS.md (bench_backdoor.py): at the same budget the per-image keys were not
    # detected on Fashion-MNIST or CIFAR-10 (JPEG), the pattern keys were, and survived FTAL.
    for kind in ("content", "noise"):
        assert TriggerKey.generate(10, 20, SHAPE, kind, source=source).mode == "pattern"
    assert TriggerKey.generate(10, 20, SHAPE, "unrelated", source=source).mode == "image"
