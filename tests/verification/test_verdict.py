"""Tests for mlguard.verification.verdict: Verdict records and state_dict fingerprints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mlguard._version import __version__
from mlguard.verification.stats import binomial_log_sf
from mlguard.verification.verdict import Verdict, make_verdict, state_dict_sha256

COMMIT = "4f2a" + "0" * 60
MODEL = "9c1d" + "1" * 60


def _verdict(matches: int = 97, total: int = 100, chance: float = 0.1,
             alpha: float = 1e-6, **kw) -> Verdict:
    return make_verdict("trigger-set", matches, total, chance, alpha, COMMIT, MODEL, "cpu", **kw)


# --- make_verdict -----------------------------------------------------------


def test_numbers_match_stats() -> None:
    v = _verdict(extra={"bit_error_rate": 0.03})
    log_p = binomial_log_sf(97, 100, 0.1)
    assert v.log_p_value == log_p
    assert v.p_value == pytest.approx(math.exp(log_p), rel=1e-15)
    assert v.detected is True
    assert (v.matches, v.total, v.chance, v.alpha) == (97, 100, 0.1, 1e-6)
    assert v.test == "exact one-sided binomial test, H0: P(match)=1/10"
    assert v.mlguard_version == __version__
    assert v.extra == {"bit_error_rate": 0.03}
    assert (v.scheme, v.commitment, v.weights_sha256) == ("trigger-set", COMMIT, MODEL)
    assert v.device == "cpu" and v.file_sha256 is None


def test_not_detected_at_chance_level() -> None:
    v = _verdict(matches=12)
    assert v.detected is False
    assert 0.1 < v.p_value < 1


def test_test_description() -> None:
    assert _verdict(chance=0.5).test.endswith("P(match)=1/2")
    assert _verdict(chance=0.001).test.endswith("P(match)=1/1000")
    assert _verdict(chance=0.37).test.endswith("P(match)=0.37")


def test_detected_boundary() -> None:
    # P(X >= 1) for X ~ Bin(1, 0.5) is exactly 0.5: p == alpha is not detected.
    assert binomial_log_sf(1, 1, 0.5) == math.log(0.5)
    assert _verdict(matches=1, total=1, chance=0.5, alpha=0.5).detected is False
    assert _verdict(matches=1, total=1, chance=0.5, alpha=0.5000001).detected is True
    # Just either side of an ordinary p-value.
    p = _verdict(matches=20, total=100, alpha=0.5).p_value
    assert _verdict(matches=20, total=100, alpha=p * (1 + 1e-9)).detected is True
    assert _verdict(matches=20, total=100, alpha=p * (1 - 1e-9)).detected is False


def test_tiny_p_value_stays_exact_and_detected() -> None:
    v = _verdict(matches=1000, total=1000, alpha=1e-300)
    assert v.p_value == 0.0  # underflows ...
    assert v.log_p_value == 1000 * math.log(0.1)  # ... but the log is exact
    assert v.detected is True
    assert "p = 1.0e-1000" in str(v)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(alpha=0.0), ValueError, r"alpha must be in the open interval \(0, 1\), got 0\.0"),
        (dict(alpha=1.0), ValueError, r"alpha must be .*got 1\.0"),
        (dict(alpha=float("nan")), ValueError, r"alpha must be .*got nan"),
        (dict(chance=1.5), ValueError, r"chance must be .*got 1\.5"),
        (dict(chance="0.1"), TypeError, r"chance must be a float, got str"),
        (dict(matches=101), ValueError, r"matches must be in \[0, total=100\], got 101"),
        (dict(matches=-1), ValueError, r"matches must be in .*got -1"),
        (dict(matches=0, total=0), ValueError, r"total must be > 0, got 0"),
        (dict(matches=1.0), TypeError, r"matches must be an int, got float 1\.0"),
        (dict(total=True), TypeError, r"total must be an int, got bool"),
        (dict(extra=[1]), TypeError, r"extra must be a dict or None, got list"),
    ],
)
def test_bad_inputs(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        _verdict(**kwargs)


def test_bad_string_inputs() -> None:
    with pytest.raises(ValueError, match="scheme must be a non-empty str, got ''"):
        make_verdict("", 1, 2, 0.5, 0.01, COMMIT, MODEL, "cpu")
    with pytest.raises(TypeError, match="device must be a str, got NoneType"):
        make_verdict("x", 1, 2, 0.5, 0.01, COMMIT, MODEL, None)  # type: ignore[arg-type]


# --- serialization and display ----------------------------------------------


def test_json_round_trip() -> None:
    v = _verdict(extra={"bit_error_rate": 0.03, "bits": [1, 0, 1]})
    d = v.to_dict()
    assert d["log10_p_value"] == pytest.approx(v.log_p_value / math.log(10))
    text = v.to_json()
    assert json.loads(text) == d
    assert Verdict.from_dict(json.loads(text)) == v
    assert Verdict.from_dict(d) == v
    assert json.loads(v.to_json(indent=None)) == d


def test_round_trip_with_underflowed_p() -> None:
    v = _verdict(matches=1000, total=1000)
    back = Verdict.from_dict(json.loads(v.to_json()))
    assert back == v and back.p_value == 0.0 and back.log_p_value == v.log_p_value


def test_to_dict_rejects_non_json_extra() -> None:
    v = _verdict(extra={"obj": object()})
    with pytest.raises(ValueError, match="not JSON-serializable"):
        v.to_json()


def test_from_dict_rejects_bad_input() -> None:
    d = _verdict().to_dict()
    with pytest.raises(ValueError, match=r"missing fields \['matches'\]"):
        Verdict.from_dict({k: v for k, v in d.items() if k != "matches"})
    with pytest.raises(ValueError, match=r"unknown fields \['bogus'\]"):
        Verdict.from_dict({**d, "bogus": 1})
    with pytest.raises(TypeError, match="matches must be an int, got str"):
        Verdict.from_dict({**d, "matches": "97"})
    with pytest.raises(TypeError, match="detected must be a bool, got int"):
        Verdict.from_dict({**d, "detected": 1})
    with pytest.raises(TypeError, match="d must be a mapping, got list"):
        Verdict.from_dict([])  # type: ignore[arg-type]
    assert Verdict.from_dict({k: v for k, v in d.items() if k != "extra"}).extra == {}


def test_weights_and_file_hashes_round_trip() -> None:
    file_sha = "ab" * 32
    v = _verdict(file_sha256=file_sha)
    d = json.loads(v.to_json())
    assert d["weights_sha256"] == MODEL and d["file_sha256"] == file_sha
    assert "model_sha256" not in d
    assert Verdict.from_dict(d) == v
    assert f"file:       sha256 {file_sha}" in str(v)
    with pytest.raises(TypeError, match="file_sha256 must be a str, got int"):
        Verdict.from_dict({**d, "file_sha256": 3})


def test_reads_verdict_json_written_before_the_rename() -> None:
    """Verdict JSON from before weights_sha256 has model_sha256 and no file_sha256."""
    new = _verdict().to_dict()
    old = {k: v for k, v in new.items() if k not in ("weights_sha256", "file_sha256")}
    old["model_sha256"] = MODEL
    v = Verdict.from_dict(json.loads(json.dumps(old)))
    assert v.weights_sha256 == MODEL and v.file_sha256 is None
    assert v == _verdict() and v.model_sha256 == MODEL  # the old attribute name still reads
    assert Verdict.from_dict({**new, "model_sha256": MODEL}) == v  # both names, one value
    with pytest.raises(ValueError, match="both weights_sha256=.* and its old name model_sha256"):
        Verdict.from_dict({**new, "model_sha256": "0" * 64})


def test_str_says_a_weight_read_without_reference_does_not_rule_out_permuted_copies() -> None:
    plain = str(_verdict(matches=11, extra={"permutation_invariant": False}))
    assert "not ruled out" in plain and "--reference" in plain
    # detected, aligned, or not a weight read: nothing to add
    for v in (_verdict(matches=100, extra={"permutation_invariant": False}),
              _verdict(matches=11, extra={"permutation_invariant": True}), _verdict(matches=11)):
        assert "not ruled out" not in str(v)


def test_str_shows_tiny_p_values() -> None:
    v = _verdict(matches=100, total=100, extra={"bit_error_rate": 0.0})
    text = str(v)
    first = text.splitlines()[0]
    assert first.startswith("DETECTED  trigger-set  100/100 matches  p = 1.0e-100 (alpha 1e-06)")
    assert "key 4f2a\u2026" in first and "weights 9c1d\u2026" in first
    assert COMMIT in text and MODEL in text
    assert "P(match)=1/10" in text
    assert "bit_error_rate: 0.0" in text
    assert str(_verdict(matches=11)).startswith("NOT DETECTED  trigger-set  11/100 matches  p = 0.")


# --- state_dict_sha256 ------------------------------------------------------


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "fc.weight": torch.randn(4, 3, generator=g),
        "fc.bias": torch.randn(4, generator=g),
        "bn.num_batches_tracked": torch.tensor(7),  # 0-dim
        "emb.half": torch.randn(2, 5, generator=g).to(torch.bfloat16),
        "emb.f16": torch.randn(3, generator=g).to(torch.float16),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
    }


def test_hash_ignores_dict_order_and_non_tensors() -> None:
    s = _state()
    h = state_dict_sha256(s)
    assert len(h) == 64
    assert state_dict_sha256(dict(reversed(list(s.items())))) == h
    assert state_dict_sha256({**s, "_extra_state": {"a": 1}}) == h
    # Parameters and non-contiguous views hash by value.
    s2 = {k: torch.nn.Parameter(v.clone(), requires_grad=False) for k, v in s.items()}
    s2["fc.weight"] = s["fc.weight"].t().contiguous().t()  # same values, column-major
    assert not s2["fc.weight"].is_contiguous()
    assert state_dict_sha256(s2) == h


@pytest.mark.parametrize("name", list(_state()))
def test_hash_changes_with_any_entry(name: str) -> None:
    s = _state()
    h = state_dict_sha256(s)
    t = s[name]
    if t.numel():
        changed = t.clone().reshape(-1)
        changed[0] = ~changed[0] if t.dtype == torch.bool else changed[0] + 1
        assert state_dict_sha256({**s, name: changed.reshape(t.shape)}) != h
    assert state_dict_sha256({**s, name: t.to(torch.float64)}) != h  # dtype counts
    assert state_dict_sha256({k: v for k, v in s.items() if k != name}) != h
    assert state_dict_sha256({**s, name + "x": t}) != h  # name counts


def test_hash_distinguishes_shape_and_empty_tensors() -> None:
    a = torch.arange(6, dtype=torch.float32)
    assert state_dict_sha256({"w": a}) != state_dict_sha256({"w": a.reshape(2, 3)})
    h = state_dict_sha256
    assert h({"w": torch.zeros(0, 3)}) != h({"w": torch.zeros(3, 0)})
    assert h({"w": torch.tensor(1.0)}) != h({"w": torch.tensor([1.0])})
    # Entry boundaries are unambiguous (length-prefixed headers).
    x = torch.arange(4, dtype=torch.uint8)
    assert h({"a": x[:2], "b": x[2:]}) != h({"a": x[:1], "b": x[1:]})


def test_hash_of_views_uses_only_their_elements() -> None:
    base = torch.arange(10, dtype=torch.float32)
    assert state_dict_sha256({"w": base[3:7]}) == state_dict_sha256({"w": base[3:7].clone()})
    assert state_dict_sha256({"w": base[::2]}) == state_dict_sha256({"w": base[::2].clone()})


def test_hash_bf16_exact_bits() -> None:
    a = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    b = a.view(torch.int16).clone()
    b[1] += 1  # next representable bf16: numerically close, different bits
    assert state_dict_sha256({"w": a}) != state_dict_sha256({"w": b.view(torch.bfloat16)})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_hash_is_device_independent() -> None:
    s = _state()
    assert state_dict_sha256({k: v.cuda() for k, v in s.items()}) == state_dict_sha256(s)


def test_hash_bad_inputs() -> None:
    with pytest.raises(TypeError, match="state_dict must be a mapping, got list"):
        state_dict_sha256([])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"state_dict keys must be str, got \[0\]"):
        state_dict_sha256({0: torch.zeros(1)})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"state_dict\['w'\] is on the meta device"):
        state_dict_sha256({"w": torch.empty(2, device="meta")})
    with pytest.raises(TypeError, match=r"state_dict\['w'\] has unsupported layout"):
        state_dict_sha256({"w": torch.eye(2).to_sparse()})
