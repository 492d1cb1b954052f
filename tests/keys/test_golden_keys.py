"""Golden files: trigger keys of every kind and mode, written by mlguard at 344c110 (before
the trigger kinds became classes, issue 25), must keep their bytes, commitments, triggers
and verdicts. Any change here changes what published commitments and evidence mean.

tests/keys/golden/*.mlkey are key files; expected.json holds, per key, its commitment, the
SHA-256 of what it materializes (and its pattern inputs) and two verdicts. Regenerate only
on purpose, with the reason in the commit: `python tests/keys/test_golden_keys.py --write`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from mlguard import TriggerKey, load_key, verify
from mlguard.keys import keyfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from memorizer import Memorizer  # noqa: E402

GOLDEN = Path(__file__).with_name("golden")
SECRET = bytes(range(32))
NONCE = bytes(range(100, 116))
MEAN, STD = (0.25,), (0.5,)


def _source(channels: int = 1, n: int = 20) -> torch.Tensor:
    """uint8 images a data-derived key chooses from (fixed; no RNG whose stream may move)."""
    i = torch.arange(n * channels * 8 * 8, dtype=torch.int64)
    return ((i * 37 + (i // 7) * 11) % 256).to(torch.uint8).reshape(n, channels, 8, 8)


def _patch(top: float, side: int = 3) -> torch.Tensor:
    return torch.linspace(0.2, top, side * side).reshape(1, side, side)


# name -> how the key is made (each call gets the fixed secret; the nonce is fixed too)
CASES = {
    "abstract": lambda: TriggerKey.generate(10, 6, (1, 8, 8), "abstract", MEAN, STD, SECRET),
    "abstract_rgb_labelled": lambda: TriggerKey.generate(
        4, 5, (3, 8, 8), "abstract", None, None, SECRET, label="customer-7"),
    "noise_image": lambda: TriggerKey.generate(
        10, 6, (1, 8, 8), "noise", MEAN, STD, SECRET, source=_source(), mode="image",
        noise_amplitude=0.3),
    "noise_pattern": lambda: TriggerKey.generate(
        10, 6, (1, 8, 8), "noise", MEAN, STD, SECRET, source=_source(), patterns=4),
    "content_image": lambda: TriggerKey.generate(
        10, 6, (1, 8, 8), "content", MEAN, STD, SECRET, source=_source(), mode="image",
        patch_size=3),
    "content_image_patch": lambda: TriggerKey.generate(
        10, 6, (1, 8, 8), "content", MEAN, STD, SECRET, source=_source(), mode="image",
        patch=_patch(1.0)),
    "content_pattern": lambda: TriggerKey.generate(
        10, 6, (1, 8, 8), "content", MEAN, STD, SECRET, source=_source(), patterns=4),
    "content_pattern_patches": lambda: TriggerKey.generate(
        10, 6, (1, 8, 8), "content", MEAN, STD, SECRET, source=_source(), patterns=3,
        patch=[_patch(0.5), _patch(0.75, 2), _patch(1.0)]),
    "unrelated": lambda: TriggerKey.generate(
        10, 6, (3, 8, 8), "unrelated", None, None, SECRET, source=_source(3)),
    "custom_labels": lambda: TriggerKey.from_images(
        _source()[:5], [3, 1, 4, 1, 5], num_classes=10, shape=(1, 8, 8), mean=MEAN, std=STD,
        secret=SECRET),
    "custom_drawn": lambda: TriggerKey.from_images(
        _source()[5:10].float() / 255.0, num_classes=10, shape=(1, 8, 8), secret=SECRET),
}


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _figures(key: TriggerKey) -> dict:
    """What must not move: commitment, trigger bits, pattern inputs, two verdicts."""
    inputs, labels = key.materialize()
    out = {"commitment": key.commitment(), "inputs": _sha(inputs), "labels": labels.tolist()}
    if key.mode == "pattern":
        stamped, which = key.pattern_inputs()
        out["pattern_inputs"] = _sha(stamped)
        out["targets"] = key.targets.tolist()
        out["which"] = which.tolist()
    for correct in (key.size, key.size // 2):
        v = verify(Memorizer(key, correct), key, alpha=0.05)
        out[f"verdict_{correct}"] = [v.matches, v.total, v.p_value.hex(), v.detected]
    return out


def _make(name: str, monkeypatch=None) -> TriggerKey:
    if monkeypatch is not None:
        monkeypatch.setattr(keyfile, "new_nonce", lambda: NONCE)
        return CASES[name]()
    real = keyfile.new_nonce
    keyfile.new_nonce = lambda: NONCE
    try:
        return CASES[name]()
    finally:
        keyfile.new_nonce = real


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((GOLDEN / "expected.json").read_text())


def test_every_case_has_a_golden_file(expected):
    assert sorted(expected) == sorted(CASES)
    assert sorted(p.stem for p in GOLDEN.glob("*.mlkey")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_key_file_loads_and_saves_byte_for_byte(name, tmp_path):
    golden = GOLDEN / f"{name}.mlkey"
    key = load_key(golden)
    key.save(tmp_path / "again.mlkey")
    assert (tmp_path / "again.mlkey").read_bytes() == golden.read_bytes()


@pytest.mark.parametrize("name", sorted(CASES))
def test_generating_again_writes_the_same_bytes(name, tmp_path, monkeypatch):
    _make(name, monkeypatch).save(tmp_path / "made.mlkey")
    assert (tmp_path / "made.mlkey").read_bytes() == (GOLDEN / f"{name}.mlkey").read_bytes()


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_key_gives_the_same_commitment_triggers_and_verdicts(name, expected):
    assert _figures(load_key(GOLDEN / f"{name}.mlkey")) == expected[name]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.mkdir(exist_ok=True)
    figures = {}
    for case in sorted(CASES):
        made = _make(case)
        made.save(GOLDEN / f"{case}.mlkey", overwrite=True)
        figures[case] = _figures(load_key(GOLDEN / f"{case}.mlkey"))
    (GOLDEN / "expected.json").write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(figures)} golden keys to {GOLDEN}")
