"""The trigger-kind registry (keys/kinds): every kind is pinned by a golden key file, the
kind lists users see come from it, and registration refuses what would corrupt it."""

import pytest
import torch

from mlguard import TriggerKey
from mlguard.keys import trigger_key
from mlguard.keys.kinds import KINDS, TriggerKind, get_kind, register_kind

from test_golden_keys import CASES, GOLDEN  # noqa: I001  (tests/keys is on sys.path)


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_has_a_golden_key_file(name):
    made = [case for case in CASES if (GOLDEN / f"{case}.mlkey").read_text().count(
        f'"kind": "{name}"') == 1]
    assert made, f"kind {name!r} has no golden case in tests/keys/test_golden_keys.py"
    if KINDS[name].pattern_mode:
        assert any("pattern" in case for case in made), f"{name}: no pattern-mode case"


def test_the_kind_lists_come_from_the_registry():
    assert trigger_key.KINDS == ("abstract", "noise", "content", "unrelated", "custom")
    assert trigger_key.STORES_IMAGES == ("noise", "content", "unrelated", "custom")
    assert trigger_key.PATTERN_KINDS == ("noise", "content")


def test_register_kind_refuses_a_taken_name_and_a_non_kind():
    class Again(TriggerKind):
        name = "noise"

    with pytest.raises(ValueError, match="kind 'noise' is already registered by Noise"):
        register_kind(Again)
    with pytest.raises(TypeError, match="TriggerKind subclass"):
        register_kind(object)
    assert KINDS["noise"].__name__ == "Noise"


@pytest.mark.parametrize("bad", ["Abstract", "patterns", None, 3])
def test_an_unknown_kind_names_the_known_ones(bad):
    with pytest.raises(ValueError, match=r"kind must be one of \('abstract', 'noise'"):
        get_kind(bad)
    with pytest.raises(ValueError, match=r"kind must be one of \('abstract', 'noise'"):
        TriggerKey.generate(10, 4, (1, 8, 8), kind=bad)


def test_patch_on_a_kind_without_one_says_so():
    key = TriggerKey.generate(10, 4, (1, 8, 8), "abstract")
    with pytest.raises(ValueError, match="patch\\(\\) is for 'content' keys; this key's kind "
                                         "is 'abstract'"):
        key.patch()
    assert key.kind_class is KINDS["abstract"]
    assert key.materialize()[0].shape == (4, 1, 8, 8)
    assert torch.equal(key.materialize()[0], key.materialize()[0])
