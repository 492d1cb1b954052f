"""`mlguard evaluate`: a real run on a Fashion-MNIST subset, and wrong arguments give exit 2
with a message that names the problem."""

import csv
import os

import pytest
import torch

from mlguard import TriggerKey, cli, data
from mlguard.cli.demo import small_cnn

ARCH = "mlguard.cli.demo:small_cnn"


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    torch.save(small_cnn().state_dict(), tmp_path / "model.pt")
    key = TriggerKey.generate(num_classes=10, size=20, shape=(1, 28, 28), kind="abstract",
                              mean=data.FASHION_MNIST_MEAN, std=data.FASHION_MNIST_STD)
    key.save(tmp_path / "owner.key")
    return tmp_path


def evaluate(files, *extra):
    return cli.main(["evaluate", str(files / "model.pt"), "--arch", ARCH, "--keys",
                     str(files / "owner.key"), "--no-progress", *map(str, extra)])


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                    reason="needs Debian's dataset-fashion-mnist (make setup installs it)")
def test_evaluate_writes_the_table_and_the_plot(files, capsys):
    code = evaluate(files, "--attacks", "prune:0.5,quantize:4,ftll", "--train-limit", "300",
                    "--test-limit", "200", "--out", files / "r.md", "--out", files / "r.csv",
                    "--plot", files / "f.png")
    assert code == 0, capsys.readouterr().err
    md = (files / "r.md").read_text()
    assert "100 of 300 training images of fashion-mnist" in md  # what the attacker had
    rows = list(csv.DictReader((files / "r.csv").open()))
    assert [r["attack"] for r in rows] == ["none", "prune", "quantize", "ftll"]
    assert rows[1]["params"] == "amount=0.5" and rows[0]["total"] == "20"
    assert (files / "f.png").stat().st_size > 1000
    out = capsys.readouterr().out  # a summary and what was written, not silence (issue 24)
    attacked = rows[1:]
    kept = sum(r["detected"] == "True" for r in attacked)
    assert f"{kept} of {len(attacked)} attacked (model, key) rows still detected" in out, out
    for name in ("r.md", "r.csv", "f.png"):
        assert f"wrote {files / name}" in out, out


@pytest.mark.parametrize("extra, message", [
    (["--attacks", "ftal", "--out", "r.txt"], "--out must end in .md, .csv or .json"),
    (["--attacks", "ftal", "--plot", "f.jpg"], "--plot must end in .png"),
    (["--attacks", "ftal,shred"], "unknown attack 'shred'"),
    (["--attacks", "prune:2"], "amount must be a fraction in [0, 1], got 2"),
    (["--attacks", "ftal", "--attacker-fraction", "0"], "--attacker-fraction must be in"),
    (["--attacks", "ftal", "--data", "/nonexistent"], "--data must be 'fashion-mnist' or a folder"),
    (["--attacks", "ftal", "--arch-kwargs", "[1]"], "--arch-kwargs must be a JSON object"),
    (["--attacks", "ftal", "--train-limit", "0"], "--train-limit must be >= 1"),
])
def test_wrong_arguments_exit_2_with_a_clear_message(files, capsys, extra, message):
    small = [] if "--train-limit" in extra else ["--train-limit", "60", "--test-limit", "20"]
    assert evaluate(files, *extra, *small) == 2
    err = capsys.readouterr().err
    assert "mlguard evaluate: error:" in err and message in err, err


def test_a_model_that_does_not_fit_the_arch_exits_2(files, capsys):
    torch.save({"w": torch.zeros(3)}, files / "model.pt")
    assert evaluate(files, "--attacks", "ftal") == 2
    assert "does not fit --arch" in capsys.readouterr().err


def test_missing_required_arguments_exit_2(capsys):
    assert cli.main(["evaluate", "model.pt", "--keys", "k.key"]) == 2
    assert "--arch" in capsys.readouterr().err  # (or --config FILE --out FOLDER)


def test_list_attacks_prints_every_registered_attack_and_needs_no_other_argument(capsys):
    from mlguard.attacks import ATTACKS, list_attacks

    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate", "--list-attacks"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == list_attacks()
    for line, name in zip(lines, list_attacks()):
        assert f" {ATTACKS[name].main_param} " in line
