"""Ownership evidence: commit/reveal, registration records, signed evidence reports."""

import copy
import json

import pytest
import torch

import mlguard
from mlguard import protect
from mlguard.keys import keyfile
from mlguard.ownership import (check_evidence, check_opening, check_registration, evidence,
                              evidence_html, register, reveal)
from mlguard.ownership.identity import Identity, sign_document
from memorizer import Memorizer


def new_key():
    return mlguard.TriggerKey.generate(num_classes=10, size=50, shape=(1, 12, 12))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A real detection: a memorizing model saved as the suspect file, and its verdict."""
    tmp = tmp_path_factory.mktemp("evidence")
    key = new_key()
    model = Memorizer(key, 50)
    verdict = mlguard.verify(model, key)
    assert verdict.detected and verdict.matches == 50
    suspect = tmp / "suspect.pt"
    torch.save(model.state_dict(), suspect)
    return {"key": key, "verdict": verdict, "suspect": suspect, "owner": Identity.generate(),
            "tmp": tmp}


# -- commit and reveal ---------------------------------------------------------------------

def _mutations(value):
    """Values that differ from `value` (and so must change a commitment)."""
    if isinstance(value, str):
        return [value[:-1] + ("0" if value[-1:] != "0" else "1"), value + "0"]
    if isinstance(value, bool) or value is None:
        return [0.5]
    if isinstance(value, (int, float)):
        return [value + 1, -value if value else 1]
    if isinstance(value, list):
        return [value + [1], value[:-1], list(reversed(value)) + [0]]
    if isinstance(value, dict):
        return [{**value, "x": 1}]
    raise AssertionError(type(value))


def test_changing_any_field_changes_the_commitment():
    key = mlguard.TriggerKey.generate(num_classes=10, size=50, shape=(1, 12, 12),
                                      mean=(0.3,), std=(0.4,))
    body = key.to_body()
    c = key.commitment()
    assert keyfile.commitment(body) == c
    for field, value in body.items():
        for other in _mutations(value):
            changed = {**body, field: other}
            assert keyfile.commitment(changed) != c, field
            assert not check_opening(c, changed), field
    dropped = {k: v for k, v in body.items() if k != "kind"}
    assert keyfile.commitment(dropped) != c


def test_reveal_opens_only_its_own_commitment():
    key = new_key()
    opening = reveal(key)
    assert check_opening(key.commitment(), opening)
    assert check_opening(key.commitment().upper(), opening)
    assert mlguard.TriggerKey.from_body(opening).commitment() == key.commitment()
    # A key made after the fact, even with the same secret and parameters, cannot match:
    # the commitment also binds the random nonce.
    assert not check_opening(key.commitment(), reveal(new_key()))
    same_secret = mlguard.TriggerKey.generate(num_classes=10, size=50, shape=(1, 12, 12),
                                              secret=key.secret)
    assert same_secret.commitment() != key.commitment()
    assert not check_opening(key.commitment(), reveal(same_secret))
    opening["secret"] = "0" * 64
    assert check_opening(key.commitment(), reveal(key))  # reveal returned a copy


def test_reveal_works_for_any_key_with_a_body():
    class OtherKey:  # e.g. the weight-space key: same body and commitment conventions
        def to_body(self):
            return {"scheme": "weight", "secret": "11" * 32, "nonce": "22" * 32, "bits": 256}

        def commitment(self):
            return keyfile.commitment(self.to_body())

    k = OtherKey()
    assert check_opening(k.commitment(), reveal(k))
    assert not check_opening(k.commitment(), {**reveal(k), "bits": 128})


def test_opening_arguments_are_checked():
    key = new_key()
    with pytest.raises(ValueError, match="commitment must be 64 hex digits"):
        check_opening("abc", reveal(key))
    with pytest.raises(ValueError, match=r"missing or not str: \['nonce'\]"):
        check_opening(key.commitment(), {"scheme": "x", "secret": "00" * 32})
    with pytest.raises(TypeError, match="opening must be a dict"):
        check_opening(key.commitment(), "body")


# -- registration --------------------------------------------------------------------------

def test_registration_record(case, tmp_path):
    record = register(case["suspect"], [case["key"], "ab" * 32], case["owner"])
    assert record["model"]["sha256"] == protect.file_sha256(case["suspect"])
    assert [k["commitment"] for k in record["keys"]] == [case["key"].commitment(), "ab" * 32]
    assert record["mlguard_version"] == mlguard.__version__ and record["created"]
    assert check_registration(record, case["suspect"], public_key=case["owner"]) == []
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record))
    assert check_registration(path, case["suspect"]) == []
    edited = copy.deepcopy(record)
    edited["keys"][1]["commitment"] = "cd" * 32
    assert any("modified after signing" in p for p in check_registration(edited))
    other = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(1)}, other)
    problems = check_registration(record, other)
    assert any("SHA-256" in p for p in problems) and any("weights hash" in p for p in problems)


# -- evidence ------------------------------------------------------------------------------

def test_evidence_from_a_real_detection_verifies(case, tmp_path):
    doc = evidence([case["verdict"]], case["suspect"], opening=reveal(case["key"]),
                   identity=case["owner"], command="python check.py suspect.pt")
    assert doc["suspect"]["sha256"] == protect.file_sha256(case["suspect"])
    assert doc["commitments"] == [case["key"].commitment()]
    assert doc["verdicts"][0]["p_value"] == case["verdict"].p_value
    assert doc["environment"]["torch"] == torch.__version__
    assert doc["rerun"]["command"] == "python check.py suspect.pt"
    assert doc["summary"]["detected"] is True
    assert check_evidence(doc, case["suspect"], public_key=case["owner"].public_key_hex) == []
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(doc, indent=2))
    assert check_evidence(path, case["suspect"]) == []
    page = evidence_html(doc, case["suspect"])
    assert "all checks pass" in page and "1.0e-50" in page and "DETECTED" in page
    # The page says what was checked, and what was not (issue 10).
    assert "who signed: no owner public key was given" in page
    assert "the suspect file&#x27;s SHA-256 and weights hash match" in page
    page = evidence_html(doc, public_key=case["owner"].public_key_hex)
    assert "signed by the owner&#x27;s public key given" in page
    assert "the suspect file: none was given" in page and "all checks pass" in page


def test_edited_p_value_is_caught_even_if_re_signed(case):
    doc = evidence([case["verdict"]], case["suspect"], identity=case["owner"], command="x")
    edited = copy.deepcopy(doc)
    edited["verdicts"][0]["p_value"] = 1e-60
    problems = check_evidence(edited)
    assert any("modified after signing" in p for p in problems)
    assert any("p-value is 1e-60, recomputed" in p for p in problems)
    # A signer who lies: the signature is fine, the recomputation still disagrees.
    resigned = sign_document(edited, case["owner"])
    assert [p for p in check_evidence(resigned) if "p-value is 1e-60" in p]
    assert "Problems found" in evidence_html(resigned)
    for field, value in (("detected", False), ("matches", 40), ("alpha", 1e-100)):
        liar = copy.deepcopy(doc)
        liar["verdicts"][0][field] = value
        assert check_evidence(sign_document(liar, case["owner"])) != [], field


def test_evidence_checks_files_and_openings(case, tmp_path):
    doc = evidence([case["verdict"]], case["suspect"], opening=reveal(case["key"]),
                   identity=case["owner"], command="x")
    changed = tmp_path / "changed.pt"
    changed.write_bytes(case["suspect"].read_bytes() + b"\0")
    assert any("SHA-256" in p for p in check_evidence(doc, changed))
    wrong_opening = copy.deepcopy(doc)
    wrong_opening["openings"] = [reveal(new_key())]
    assert any("opens none of the verdicts' commitments" in p
               for p in check_evidence(sign_document(wrong_opening, case["owner"])))
    with pytest.raises(ValueError, match="opens none of the verdicts' commitments"):
        evidence([case["verdict"]], case["suspect"], opening=reveal(new_key()),
                 identity=case["owner"], command="x")
    other = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="checked a model with weights hash"):
        evidence([case["verdict"]], other, identity=case["owner"], command="x")
    with pytest.raises(TypeError, match="identity must be an mlguard.Identity"):
        evidence([case["verdict"]], case["suspect"], command="x")


def test_undetected_verdict_is_reported_honestly(case):
    clean = Memorizer(case["key"], 5)
    verdict = mlguard.verify(clean, case["key"])
    assert not verdict.detected
    suspect = case["tmp"] / "clean.pt"
    torch.save(clean.state_dict(), suspect)
    doc = evidence([verdict.to_dict()], suspect, identity=case["owner"], command="x")
    assert doc["summary"]["detected"] is False
    assert check_evidence(doc, suspect) == []


def test_weight_key_evidence_checks_the_opened_parameters(case, tmp_path):
    if not hasattr(mlguard, "WeightKey"):
        pytest.skip("weight keys are not part of this build")
    key = mlguard.WeightKey.generate(bits=64, targets=("weight",))
    model = torch.nn.Linear(32, 16)
    verdict = mlguard.verify(model, key)
    suspect = tmp_path / "linear.pt"
    torch.save(model.state_dict(), suspect)
    doc = evidence([verdict], suspect, opening=reveal(key), identity=case["owner"], command="x")
    assert check_evidence(doc, suspect) == []
    # An opening whose parameters disagree with the verdict's test is reported.
    liar = copy.deepcopy(doc)
    liar["verdicts"][0]["total"] = 32
    liar["verdicts"][0]["matches"] = min(liar["verdicts"][0]["matches"], 32)
    problems = check_evidence(sign_document(liar, case["owner"]))
    assert any("the key implies 64 trials at chance 0.5" in p for p in problems)


def test_evidence_report_shows_itself_in_a_notebook(case):
    """evidence() returns a dict (saved as JSON, checked as before) that Jupyter renders as
    the report's HTML page, isolated in an iframe so its styles stay out of the notebook."""
    doc = evidence([case["verdict"]], case["suspect"], reveal(case["key"]), case["owner"])
    assert isinstance(doc, mlguard.EvidenceReport) and isinstance(doc, dict)
    assert json.loads(json.dumps(doc)) == doc and check_evidence(doc, case["suspect"]) == []
    shown = doc._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and "<style" not in shown  # the page is escaped
    assert "DETECTED" in shown and "all checks pass" in shown
    assert "the suspect file: none was given" in shown  # says which checks did not run
