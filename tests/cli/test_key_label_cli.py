"""`mlguard key new ... --label NAME` (issue 10, item 5): the label goes into the key file
(not into the commitment) and a bad label is refused before anything is written."""

from __future__ import annotations

from mlguard import load_key
from mlguard.cli import main


def test_key_new_saves_the_label(tmp_path, capsys):
    out = tmp_path / "acme.key"
    assert main(["key", "new", "weight", "--bits", "32", "--targets", "fc.weight",
                 "--label", "acme corp", "--out", str(out)]) == 0
    key = load_key(out)
    assert key.label == "acme corp" and key.display_name == "acme corp"
    assert "labelled 'acme corp'" in capsys.readouterr().out
    trig = tmp_path / "t.key"
    assert main(["key", "new", "trigger", "--num-classes", "10", "--size", "10", "--shape",
                 "1,8,8", "--label", "model-v3", "--out", str(trig)]) == 0
    assert load_key(trig).label == "model-v3"
    plain = tmp_path / "plain.key"
    assert main(["key", "new", "weight", "--bits", "32", "--targets", "fc.weight",
                 "--out", str(plain)]) == 0
    assert load_key(plain).label is None


def test_a_bad_label_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "k.key"
    assert main(["key", "new", "weight", "--bits", "32", "--targets", "fc.weight",
                 "--label", "two\nlines", "--out", str(out)]) == 2
    assert "label must be" in capsys.readouterr().err and not out.exists()
