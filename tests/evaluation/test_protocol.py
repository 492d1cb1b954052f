"""The protocol from a config file: checked config, every cell once, a rerun after an
interruption finishes without redoing a finished cell, and the payoff tables."""

import json
import tomllib
from pathlib import Path

import pytest

from mlguard.cli.main import main
from mlguard.evaluation.config import load_config, parse_config
from mlguard.evaluation.payoff import tables, to_html, to_markdown, write_all
from mlguard.evaluation.protocol import JOURNAL, run_protocol

TINY = (Path(__file__).resolve().parents[2] / "configs" / "smoke.toml").read_text()



def config_file(tmp_path, text=TINY):
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("edit, message", [
    (("[owner]", "[ownr]"), r"unknown section\(s\) \['ownr'\]"),
    (("\nepochs = 1", "\nepoch = 1"), r"\[owner\] has unknown field\(s\) \['epoch'\]"),
    (("seeds = [0]", "seeds = [0, 0]"), "protocol.seeds must be distinct"),
    (("scheme = \"weight\"", "scheme = \"wieght\""), "scheme must be one of"),
    (("train_limit = 1500", "train_limit = \"1500\""), "data.train_limit must be a int"),
    (("attacks = [", "attacks = [3, "), r"attacks\[0\] must be a string"),
])
def test_config_mistakes_are_named(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        load_config(config_file(tmp_path, TINY.replace(*edit)))


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(config_file(tmp_path, "[data\nname="))


def cell(scheme, attack, detected, loss, seed=0, params=""):
    return {"scheme": scheme, "seed": seed, "attack": attack, "params": params,
            "detected": detected, "accuracy_loss": loss, "log10_p": -8.0 if detected else -1.0,
            "seconds": 2.0, "p_value": 1e-8 if detected else 0.1, "matches": 5, "total": 10,
            "accuracy": 0.8}


def test_payoff_counts_a_removal_only_below_the_loss_limit():
    cells = [cell("adi", "rtal", False, 0.01), cell("adi", "rtal", False, 0.01, seed=1),
             cell("adi", "distill", False, 0.09), cell("adi", "prune", True, 0.0),
             cell("uchida", "prune", True, 0.0)]
    t = tables(cells, max_loss=0.05, alpha=1e-6)
    assert t["payoff"]["adi"]["rtal"]["removed"] == 2
    assert t["payoff"]["adi"]["distill"]["removed"] == 0  # not detected but costs 9 points
    best = {b["scheme"]: b for b in t["best"]}
    assert best["adi"]["attack"] == "rtal" and best["uchida"]["attack"] is None
    md = to_markdown(t)
    assert "| adi |" in md and "none removes it" in md
    assert "<script" not in to_html(t) and "<table>" in to_html(t)


def test_a_mark_not_detected_on_its_own_model_is_never_counted_as_removed():
    owner = cell("weak", "none", False, 0.0) | {"clean_twin": {"matches": 1, "total": 10,
                                                               "p_value": 0.5},
                                                "clean_accuracy": 0.8, "embedding_cost": 0.0}
    cells = [owner, cell("weak", "prune", False, 0.0), cell("adi", "prune", False, 0.0)]
    t = tables(cells, max_loss=0.05, alpha=1e-6)
    assert "weak" not in t["payoff"] and [c["scheme"] for c in t["not_embedded"]] == ["weak"]
    assert [b["scheme"] for b in t["best"]] == ["adi"]
    md = to_markdown(t)
    assert "Not embedded" in md and "| weak | prune |" not in md


def test_the_protocol_does_not_attack_a_mark_its_model_does_not_show(tmp_path):
    text = TINY[:TINY.index("[schemes.adi]")].replace('bits = 32', 'bits = 32\nembedding = '
                                                      '{strength = 1e-12}')
    lines = []
    cells = run_protocol(load_config(config_file(tmp_path, text)), tmp_path / "o",
                         progress=lines.append)
    assert [c["attack"] for c in cells] == ["none"] and not cells[0]["detected"]
    assert "not detected" in lines[-1] and "not run" in lines[-1]


def test_the_protocol_runs_every_cell_once_and_resumes_after_an_interruption(tmp_path):
    config = load_config(config_file(tmp_path))
    out = tmp_path / "out"
    seen = []

    def interrupt(line):  # Ctrl-C while the third cell is reported (it is already journaled)
        seen.append(line)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_protocol(config, out, progress=interrupt)
    finished = (out / JOURNAL).read_text().splitlines()
    assert len(finished) == 3  # uchida's owner cell, prune, quantize:4; adi's never began
    again = []
    cells = run_protocol(config, out, progress=again.append)
    assert len(cells) == 2 * (1 + 3)  # per scheme: the owner cell, prune, quantize x 2
    assert len(again) == len(cells) - 3  # nothing finished was redone
    assert len((out / JOURNAL).read_text().splitlines()) == len(cells)
    owner = {c["scheme"]: c for c in cells if c["attack"] == "none"}
    for c in owner.values():  # each mark is detected on its model and not on the clean twin
        assert c["detected"] and not c["clean_twin"]["detected"]
    written = write_all(cells, out, 0.05, 1e-6)
    assert all(p.exists() for p in written)
    assert json.loads((out / "results.json").read_text())["cells"][0]["cell"] == cells[0]["cell"]
    # a changed config redoes exactly what it changes: here adi's cells, none of uchida's
    raw = tomllib.loads(TINY)
    raw["schemes"]["adi"]["size"] = 30
    raw["schemes"]["adi"]["embedding"]["per_batch"] = 30  # as many views per trigger
    changed = []
    cells = run_protocol(parse_config(raw), out, progress=changed.append)
    assert len(changed) == 4 and all(" adi" in line for line in changed)
    assert {c["total"] for c in cells if c["scheme"] == "adi"} == {30}


def test_the_cli_runs_a_config_and_says_what_it_wrote(tmp_path, capsys):
    text = TINY[:TINY.index("[schemes.adi]")].replace(
        '["prune:0.9", {attack = "quantize", bits = [4, 2]}]', '["cast"]')
    path = config_file(tmp_path, text)
    assert main(["evaluate", "--config", str(path), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "uchida:" in out and "wrote" in out and "results.md" in out
    assert main(["evaluate", "--config", str(path), "--out", str(tmp_path / "o"),
                 "--attacks", "ftal"]) == 2
    assert main(["evaluate", "--config", str(path)]) == 2


def test_a_cell_that_fails_is_journaled_reported_and_left_out_of_the_tables(tmp_path, capsys):
    text = TINY[:TINY.index("[schemes.adi]")].replace(
        '["prune:0.9", {attack = "quantize", bits = [4, 2]}]', '["cast", "transfer:1:num_classes=1"]')
    text += '\n[schemes.broken]\nscheme = "weight"\nbits = 32\ntargets = ["no.such.weight"]\n'
    path = config_file(tmp_path, text)
    assert main(["evaluate", "--config", str(path), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 1
    cells = [json.loads(line) for line in (tmp_path / "o" / JOURNAL).read_text().splitlines()]
    failed = {(c["scheme"], c["attack"]) for c in cells if "error" in c}
    assert failed == {("uchida", "transfer"), ("broken", "none")}
    assert any(c["scheme"] == "uchida" and c["attack"] == "cast" and "error" not in c
               for c in cells)
    md = (tmp_path / "o" / "results.md").read_text()
    assert "Failed cells" in md and "no.such.weight" in md
    assert "cell(s) failed" in capsys.readouterr().err


def test_cross_architecture_retraining_is_named_in_the_config(tmp_path):
    head, adi = TINY[:TINY.index("[schemes.uchida]")], TINY[TINY.index("[schemes.adi]"):]
    text = head.replace('["prune:0.9", {attack = "quantize", bits = [4, 2]}]',
                        '["retrain:1:arch=mlguard.evaluation.archs:fashion_mlp"]') + adi
    config = load_config(config_file(tmp_path, text))
    cells = run_protocol(config, tmp_path / "o", progress=lambda _line: None)
    (stolen,) = [c for c in cells if c["attack"] == "retrain"]
    assert "error" not in stolen and "mlguard.evaluation.archs:fashion_mlp" in stolen["params"]
    assert stolen["total"] == 20 and 0 < stolen["accuracy"] <= 1


def test_a_scheme_whose_embedding_takes_the_owners_data_gets_it_and_a_failed_owner_is_retried(
        tmp_path, monkeypatch):
    text = TINY[:TINY.index("[schemes.uchida]")].replace(
        '["prune:0.9", {attack = "quantize", bits = [4, 2]}]', '["cast"]')
    config = load_config(config_file(tmp_path, text + '[schemes.ewe]\nscheme = "ewe"\n'
                                                      'size = 20\n'))

    def broken(*_args, **_kwargs):
        raise ValueError("no owner today")

    with monkeypatch.context() as m:
        m.setattr("mlguard.evaluation.protocol._owner", broken)
        (failed,) = run_protocol(config, tmp_path / "o", progress=lambda _line: None)
    assert "no owner today" in failed["error"]
    cells = run_protocol(config, tmp_path / "o", progress=lambda _line: None)
    owner = [c for c in cells if c["attack"] == "none"]
    assert len(owner) == 1 and "error" not in owner[0] and owner[0]["total"] == 20


def test_ctrl_c_says_how_to_resume_and_exits_130(tmp_path, capsys, monkeypatch):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mlguard.evaluation.protocol.run_protocol", interrupted)
    code = main(["evaluate", "--config", str(config_file(tmp_path)), "--out",
                 str(tmp_path / "o")])
    assert code == 130
    assert "rerun the same command to finish" in capsys.readouterr().err
