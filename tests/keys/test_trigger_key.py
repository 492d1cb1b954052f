"""Trigger keys: derivation, materialization of every kind, files, commitments."""

import json
import os

import numpy as np
import pytest
import torch
from scipy import stats

import mlguard
from mlguard import TriggerKey, load_key
from mlguard.reference import philox
from mlguard.keys import keyed_below, keyed_choice

SECRET = bytes(range(32))


def key(**kw):
    args = dict(num_classes=10, size=50, shape=(3, 16, 16), secret=SECRET)
    args.update(kw)
    return TriggerKey.generate(**args)


def test_keyed_below_matches_an_independent_rejection_sampler():
    seed, high = -77, 7
    limit = 2**32 - 2**32 % high
    expected = []
    for i in range(300):
        for attempt in range(64):
            w = philox.keyed_words(i, seed, attempt)[0]
            if w < limit:
                expected.append(w % high)
                break
    assert keyed_below(seed, 300, high).tolist() == expected


def test_labels_are_uniform_and_deterministic():
    k = key(size=20000)
    counts = torch.bincount(k.labels, minlength=10)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4
    assert torch.equal(k.labels, key(size=20000).labels)
    assert not torch.equal(k.labels, key(size=20000, secret=bytes(32)).labels)
    # Label i does not depend on the set size.
    assert torch.equal(key(size=50).labels, k.labels[:50])


def test_keyed_choice_is_a_keyed_sample_without_replacement():
    chosen = keyed_choice(5, 1000, 100)
    assert len(set(chosen.tolist())) == 100 and chosen.max() < 1000
    assert torch.equal(chosen, keyed_choice(5, 1000, 100))
    assert not torch.equal(chosen, keyed_choice(6, 1000, 100))


def test_abstract_materialize():
    x, y = key().materialize()
    assert x.shape == (50, 3, 16, 16) and x.dtype == torch.float32
    assert y.shape == (50,) and y.dtype == torch.int64 and 0 <= y.min() and y.max() < 10
    x2, y2 = key().materialize("cpu")
    assert torch.equal(x, x2) and torch.equal(y, y2)


@pytest.fixture
def source():
    return torch.rand(300, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", ["noise", "content", "unrelated"])
def test_source_kinds(kind, source):
    k = key(kind=kind, source=source, **({} if kind == "unrelated" else {"mode": "image"}))
    x, y = k.materialize()
    assert x.shape == (50, 3, 16, 16) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, k.materialize()[0])
    chosen = source[keyed_choice(k.seed("select"), 300, 50)]
    if kind == "unrelated":
        assert torch.equal(x, chosen)
    elif kind == "noise":
        diff = (x - chosen).abs()
        assert 0.05 < diff.mean() < 0.25 and diff.max() <= 0.25 + 1e-6
    else:
        patch = k.patch()
        assert patch.shape == (3, 4, 4)
        stamped = [any(torch.equal(img[:, t:t + 4, l:l + 4], patch)
                       for t in range(13) for l in range(13)) for img in x]
        assert all(stamped)


def test_uint8_source_and_user_patch(source, tmp_path):
    u8 = (source * 255).round().to(torch.uint8)
    x, _ = key(kind="unrelated", source=u8).materialize()
    assert torch.equal(x, u8[keyed_choice(key().seed("select"), 300, 50)].float() / 255)
    patch = torch.ones(3, 2, 5)
    k = key(kind="content", patch=patch, source=source)
    assert torch.equal(k.patch(), patch)
    k.save(tmp_path / "patch.key")
    assert torch.equal(load_key(tmp_path / "patch.key").patch(), patch)


def test_source_errors(source):
    with pytest.raises(ValueError, match="kind='noise' needs source="):
        key(kind="noise")
    with pytest.raises(ValueError, match=r"source must be \(N, \*\(3, 16, 16\)\)"):
        key(kind="noise", source=torch.rand(300, 1, 16, 16))
    with pytest.raises(ValueError, match="source has 10 images but the key needs 50"):
        key(kind="unrelated", source=source[:10])
    with pytest.raises(ValueError, match="source must be float in"):
        key(kind="unrelated", source=source.long())
    with pytest.raises(ValueError, match="source= is only for"):
        key(source=source)


@pytest.mark.parametrize("kw,match", [
    (dict(num_classes=1), "num_classes must be an int >= 2, got 1"),
    (dict(size=0), "size must be an int >= 1, got 0"),
    (dict(shape=(3, 16)), r"shape must be \(C, H, W\)"),
    (dict(kind="stripes"), "kind must be one of"),
    (dict(mean=(0.5,), std=(1.0,)), r"mean needs one value per channel \(3\)"),
    (dict(mean=(0.5, 0.5, 0.5)), "mean and std go together"),
    (dict(std=(0.5, 0.5, 0.5)), "mean and std go together"),
    (dict(shape=(32, 32, 3)), r"looks like \(H, W, C\): use \(3, 32, 32\)"),
    (dict(num_classes=10.0), "num_classes must be an int, got float 10.0"),
    (dict(mean=(0, 0, 0), std=(1, 0, 1)), "std must be finite and > 0"),
    (dict(secret=b"short"), "secret must be 32 bytes, got 5"),
    (dict(kind="content", patch=torch.ones(3, 20, 2), source=torch.rand(60, 3, 16, 16)),
     "patch must be"),
])
def test_bad_generate_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        key(**kw)


@pytest.mark.parametrize("bad", [10.0, True, "10"])
def test_a_wrong_type_is_a_type_error_as_the_checks_policy_says(bad):
    with pytest.raises(TypeError, match="num_classes must be an int, got"):
        key(num_classes=bad)


def test_numpy_integers_are_ints():
    k = key(num_classes=np.int64(10), size=np.int32(50), shape=(np.int64(3), 16, 16))
    assert (k.num_classes, k.size, k.shape) == (10, 50, (3, 16, 16))
    assert type(k.num_classes) is int and type(k.shape[0]) is int


def test_save_load_roundtrip(tmp_path, source):
    k = key(kind="noise", mean=(0.1, 0.2, 0.3), std=(0.9, 0.8, 0.7), source=source)
    k.save(tmp_path / "owner.key")
    assert (os.stat(tmp_path / "owner.key").st_mode & 0o777) == 0o600
    loaded = load_key(tmp_path / "owner.key")
    assert loaded == k and loaded.commitment() == k.commitment()
    assert torch.equal(loaded.labels, k.labels)


def test_commitment_binds_every_field(source):
    base = key()
    variants = [key(num_classes=11), key(size=51), key(shape=(3, 16, 17)),
                key(kind="noise", source=source),
                key(mean=(0, 0, 0), std=(1, 1, 1)), key(secret=bytes(32))]
    commitments = {base.commitment()} | {v.commitment() for v in variants}
    assert len(commitments) == len(variants) + 1
    assert key().commitment() != base.commitment()  # a fresh nonce each time
    assert SECRET.hex() not in base.commitment() and len(base.commitment()) == 64


def test_secret_never_shown():
    k = key()
    assert SECRET.hex() not in repr(k) and SECRET.hex() not in str(k)


def test_corrupt_key_files(tmp_path):
    path = tmp_path / "owner.key"
    key().save(path)
    text = path.read_text()
    cases = {
        "truncated": text[: len(text) // 2],
        "empty": "",
        "garbage": "\x00\x01not json",
        "tampered": text.replace('"num_classes":10', '"num_classes":11').replace(
            '"num_classes": 10', '"num_classes": 11'),
        "version": json.dumps({**json.loads(text), "version": 99}),
    }
    assert cases["tampered"] != text
    for name, content in cases.items():
        bad = tmp_path / f"{name}.key"
        bad.write_text(content)
        with pytest.raises(ValueError) as err:
            load_key(bad)
        assert str(bad) in str(err.value) and SECRET.hex() not in str(err.value), name


def test_unknown_scheme_is_rejected(tmp_path):
    from mlguard.keys import keyfile
    body = key().to_body() | {"scheme": "nonsense"}
    keyfile.write_key_file(tmp_path / "k.key", body)
    with pytest.raises(ValueError, match="unknown scheme 'nonsense'"):
        load_key(tmp_path / "k.key")


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["abstract", "noise", "content"])
def test_cuda_materialize_bit_identical(kind, source):
    k = key(kind=kind, source=None if kind == "abstract" else source)
    cpu = k.materialize("cpu")
    gpu = k.materialize("cuda")
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


def test_public_api_names():
    for name in ("TriggerKey", "load_key", "TriggerMixer", "mix", "embed", "verify", "Verdict",
                 "build_info"):
        assert hasattr(mlguard, name)
