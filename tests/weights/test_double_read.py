"""verify/scan with a reference read a weight key twice (plain and aligned) and report the
union bound p = min(1, 2 min(p_plain, p_aligned)): a head re-initialized after marking
(RTAL) spoils the aligned read, and must not lose the plain one (issue 20, fx20's finding)."""

import copy
import math

import pytest
import torch

from mlguard import WeightKey, attacks, scan, verify
from mlguard.cli.demo import small_cnn
from mlguard.ownership import check_evidence, evidence
from mlguard.ownership.identity import Identity, sign_document
from mlguard.verification import stats
from mlguard.verification.verdict import Verdict
from mlguard.weights import embed_weights
from mlguard.weights.align import Reference, align

BITS = 96


@pytest.fixture(scope="module")
def owned():
    torch.manual_seed(0)
    model = small_cnn().eval()
    key = WeightKey.generate(bits=BITS, targets=("7.weight",), secret=bytes(range(32)))
    embed_weights(model, key, strength=1.0)
    rtal = copy.deepcopy(model)
    torch.manual_seed(3)
    rtal[9].reset_parameters()  # RTAL's re-initialized head: what aligns layer 7's units
    return model, key, Reference(model), rtal


def aligned_p(model, key, ref) -> float:
    """The aligned read alone: the suspect aligned as verify aligns it, then read plainly."""
    state, _ = align(model.state_dict(), ref, exclude=set(key.targets))
    return verify(state, key).p_value


def test_rtal_copy_not_permuted_is_detected_with_the_reference(owned):
    model, key, ref, rtal = owned
    plain = verify(rtal, key)
    assert plain.detected and plain.matches == BITS
    v = verify(rtal, key, reference=ref)
    assert v.detected and v.matches == BITS and v.reads == 2
    assert math.isclose(v.log_p_value, math.log(2) + plain.log_p_value, rel_tol=1e-12)
    two = v.extra["two_reads"]
    assert two["used"] == "plain" and two["plain"]["matches"] == BITS
    assert two["aligned"]["matches"] < BITS  # the aligned read alone misses bits here
    assert "two reads (plain, aligned), p doubled; used plain 96/96" in str(v)


def test_permuted_copy_is_detected_at_twice_the_aligned_p(owned):
    model, key, ref, _ = owned
    permuted = attacks.permute(model, 1)
    v = verify(permuted, key, reference=ref)
    p_aligned = aligned_p(permuted, key, ref)
    assert v.detected and v.matches == BITS and v.extra["two_reads"]["used"] == "aligned"
    assert math.isclose(v.p_value, 2 * p_aligned, rel_tol=1e-12)
    assert not verify(permuted, key).detected


def test_unmarked_model_is_never_more_significant_than_its_reads(owned):
    _, key, ref, _ = owned
    torch.manual_seed(5)
    unrelated = small_cnn().eval()
    p_plain = verify(unrelated, key).p_value
    p_aligned = aligned_p(unrelated, key, ref)
    v = verify(unrelated, key, reference=ref)
    assert not v.detected
    assert math.isclose(v.p_value, min(1.0, 2 * min(p_plain, p_aligned)), rel_tol=1e-12)
    assert v.p_value >= min(p_plain, p_aligned)
    assert v.extra["two_reads"]["plain"]["matches"] == verify(unrelated, key).matches


def test_verdict_with_two_reads_round_trips_and_checks_as_evidence(owned, tmp_path):
    model, key, ref, rtal = owned
    v = verify(rtal, key, reference=ref)
    again = Verdict.from_dict(v.to_dict())
    assert again == v and again.reads == 2
    old = v.to_dict()
    for name in ("reads",):  # a verdict written before the field: one read
        del old[name]
    assert Verdict.from_dict(old).reads == 1
    assert "reads" not in verify(rtal, key).to_dict()  # one read: written as before
    suspect = tmp_path / "rtal.pt"
    torch.save(rtal.state_dict(), suspect)
    owner = Identity.generate()
    doc = evidence([v], suspect, identity=owner, command="x")
    assert check_evidence(doc, suspect) == []
    for field, value in (("reads", 1), ("reads", 3)):
        liar = copy.deepcopy(doc)
        liar["verdicts"][0][field] = value
        problems = check_evidence(sign_document(liar, owner))
        assert any("recomputed" in p for p in problems), (field, value, problems)


def test_scan_row_p_is_verify_p(owned, tmp_path):
    model, key, ref, rtal = owned
    torch.save(rtal.state_dict(), tmp_path / "rtal.pt")
    torch.save(attacks.permute(model, 1).state_dict(), tmp_path / "permuted.pt")
    rows = {r["path"].rsplit("/", 1)[-1]: r
            for r in scan(tmp_path, [key], device="cpu", progress=False, reference=ref)}
    for name, suspect in (("rtal.pt", rtal), ("permuted.pt", attacks.permute(model, 1))):
        v = verify(suspect, key, reference=ref)
        row = rows[name]
        assert row["reads"] == 2 and row["matches"] == v.matches and row["detected"]
        assert math.isclose(row["log10_p_value"], stats.log10_p(v.log_p_value), rel_tol=1e-12)
    plain_rows = scan(tmp_path, [key], device="cpu", progress=False)
    assert all(r["reads"] == 1 for r in plain_rows)


def test_reads_is_checked_and_caps_p_at_one():
    from mlguard.verification.verdict import make_verdict

    v = make_verdict("weight", 40, 96, 0.5, 1e-6, "ab" * 32, "cd" * 32, "cpu", reads=2)
    assert v.p_value == 1.0 and "two reads, p doubled" in v.test
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="reads"):
            make_verdict("weight", 40, 96, 0.5, 1e-6, "ab" * 32, "cd" * 32, "cpu", reads=bad)
    d = v.to_dict()
    d["reads"] = "2"
    with pytest.raises(ValueError, match="reads"):
        Verdict.from_dict(d)
