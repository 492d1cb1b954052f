"""The built-in schemes (trigger-set, weight) on the scheme interface (issue 19): read and
read_many agree with verify, expected_test with the readings, embedding() with the classes
it wraps, mlguard.embed and `mlguard key new <scheme> OUT` for both."""

import pytest
import torch
from torch import nn

import mlguard
from mlguard import TriggerKey, WeightKey
from mlguard.cli.main import main
from mlguard.ownership import reveal
from mlguard.schemes import ReadOptions, Suspect, get_scheme, scheme_names, scheme_of
from mlguard.triggers import TriggerMixer
from mlguard.weights import WeightWatermark

SHAPE = (1, 8, 8)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def test_registry_order_and_lookup():
    assert scheme_names()[:2] == ("trigger-set", "weight")
    trigger = TriggerKey.generate(10, 20, SHAPE, secret=b"\x01" * 32)
    weight = WeightKey.generate(bits=32, targets=("1.weight",), secret=b"\x02" * 32)
    assert scheme_of(trigger) is get_scheme("trigger-set")
    assert scheme_of(weight) is get_scheme("weight")
    with pytest.raises(TypeError, match="key must be a TriggerKey, WeightKey"):
        scheme_of("key")
    with pytest.raises(ValueError, match="scheme must be one of"):
        get_scheme("nope")


def test_reads_agree_with_verify_and_expected_test():
    model = _net()
    trigger = TriggerKey.generate(10, 20, SHAPE, secret=b"\x01" * 32)
    pattern = TriggerKey.generate(10, 6, SHAPE, "noise", source=torch.rand(12, *SHAPE),
                                  secret=b"\x03" * 32, patterns=4)
    weight = WeightKey.generate(bits=32, targets=("1.weight",), secret=b"\x02" * 32)
    suspect = Suspect(model, model.state_dict(), torch.device("cpu"))
    for keys in ([trigger, pattern], [weight]):
        scheme = scheme_of(keys[0])
        many = scheme.read_many(keys, [suspect], ReadOptions(batch_size=7, cache={}))[0]
        for key, reading in zip(keys, many):
            one = scheme.read(key, suspect, ReadOptions())
            verdict = mlguard.verify(model, key)
            assert (reading.matches, reading.total, reading.chance) == \
                (one.matches, one.total, one.chance) == \
                (verdict.matches, verdict.total, verdict.chance)
            assert (reading.total, reading.chance) == scheme.expected_test(reveal(key))
            assert verdict.scheme == scheme.name


def test_embeddings_wrap_the_mixer_and_the_regularizer():
    trigger = TriggerKey.generate(10, 20, SHAPE, secret=b"\x01" * 32)
    emb = get_scheme("trigger-set").embedding(trigger, per_batch=4, augment=False)
    assert isinstance(emb.mixer, TriggerMixer) and emb.mixer.per_batch == 4
    x, y = emb.batch(torch.rand(8, *SHAPE), torch.zeros(8, dtype=torch.long))
    assert x.shape[0] == y.shape[0] == 12
    weight = WeightKey.generate(bits=32, targets=("1.weight",), secret=b"\x02" * 32)
    emb = get_scheme("weight").embedding(weight, strength=0.5)
    model = _net()
    expected = WeightWatermark(weight, 0.5).loss(model)
    assert torch.equal(emb.loss(model, x, y), expected)
    assert emb.batch(x, y) == (x, y)


def test_embed_takes_a_weight_key():
    key = WeightKey.generate(bits=32, targets=("1.weight",), secret=b"\x02" * 32)
    model = _net().train()
    g = torch.Generator().manual_seed(0)
    loader = [(torch.rand(16, *SHAPE, generator=g), torch.randint(10, (16,), generator=g))
              for _ in range(4)]
    verdict = mlguard.embed(model, key, loader, 20, torch.optim.Adam(model.parameters(), 1e-2),
                            strength=1.0)
    assert verdict.detected and verdict.scheme == "weight" and verdict.matches >= 0.8 * 32
    with pytest.raises(TypeError, match="per_kilo"):
        mlguard.embed(model, key, loader, 1, torch.optim.SGD(model.parameters(), 0.1),
                      per_kilo=1)


def test_key_new_takes_out_as_a_positional_or_an_option(tmp_path, capsys):
    out = tmp_path / "w.key"
    assert main(["key", "new", "weight", str(out), "--bits", "16", "--targets", "fc.weight"]) == 0
    assert mlguard.load_key(out).bits == 16
    assert main(["key", "new", "trigger-set", str(tmp_path / "t.key"), "--num-classes", "10",
                 "--size", "10", "--shape", "1,8,8"]) == 0
    assert main(["key", "new", "trigger", "--out", str(tmp_path / "t2.key"), "--num-classes",
                 "10", "--size", "10", "--shape", "1,8,8"]) == 0
    assert mlguard.load_key(tmp_path / "t2.key").size == 10
    capsys.readouterr()
    assert main(["key", "new", "weight", "--bits", "16", "--targets", "fc.weight"]) == 2
    assert "OUT or --out FILE" in capsys.readouterr().err
    assert main(["key", "new", "weight", str(tmp_path / "a.key"), "--out",
                 str(tmp_path / "b.key"), "--bits", "16", "--targets", "fc.weight"]) == 2
    assert "give the key file once" in capsys.readouterr().err


def test_a_scheme_with_only_read_many_reads_in_verify():
    from mlguard.schemes import SCHEMES, Reading, Scheme

    class Bits(Scheme):  # key_type only for scheme_of; reads count positive weights
        name, key_type, needs_module = "test-only-read-many", WeightKey, False

        @classmethod
        def read_many(cls, keys, suspects, options):
            return [[Reading(int((s.state_dict["1.weight"] > 0).sum()),
                             s.state_dict["1.weight"].numel(), 0.5) for _ in keys]
                    for s in suspects]

    suspect = Suspect(None, _net().state_dict(), torch.device("cpu"))
    reading = Bits.read(None, suspect, ReadOptions())
    assert reading.total == 64 * 32 and 0 < reading.matches < reading.total

    class Nothing(Scheme):
        name, key_type = "test-nothing", WeightKey

    with pytest.raises(NotImplementedError, match="neither read"):
        Nothing.read(None, suspect, ReadOptions())
    assert "test-only-read-many" not in SCHEMES  # never registered: no global state changed
