"""`mlguard scan` exit codes cannot lie: configuration errors stop the scan before it starts
(exit 2), files that could not be checked are never reported as clean (exit 3), and the
reasons are printed even without --out (issue 10, "What was seen" 2, 4 and 7)."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from mlguard import TriggerKey
from mlguard.cli import scan as scan_cli

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scan"))
from scan_helper import MEAN, SHAPE, STD, tiny_cnn  # noqa: E402

ARCH = "scan_helper:tiny_cnn"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("exit_codes")
    key = TriggerKey.generate(num_classes=10, size=20, shape=SHAPE, mean=MEAN, std=STD,
                              secret=b"\x07" * 32)
    (root / "keys").mkdir()
    key.save(root / "keys" / "owner.key")
    (root / "models").mkdir()
    torch.manual_seed(0)
    torch.save(tiny_cnn().state_dict(), root / "models" / "a.pt")
    torch.save(tiny_cnn().state_dict(), root / "models" / "b.pt")
    (root / "broken").mkdir()
    (root / "broken" / "notes.pt").write_text("not a model\n")
    return root


def _scan(files, *argv):
    return scan_cli.main([str(files / "models"), "--keys", str(files / "keys" / "owner.key"),
                          "--device", "cpu", "--no-progress", *argv])


def test_clean_scan_exits_0(files):
    assert _scan(files, "--arch", ARCH) == 0


@pytest.mark.parametrize("kwargs, message", [
    ('{"num_clases": 10}', "building the architecture failed"),  # a typo: every file failed
    ('{"num_classes": 1000}', "has num_classes=10 but the architecture outputs 1000"),
])
def test_bad_arch_kwargs_exit_2_before_the_scan(files, capsys, kwargs, message):
    assert _scan(files, "--arch", ARCH, "--arch-kwargs", kwargs) == 2
    err = capsys.readouterr().err
    assert message in err and "scan:" not in err.replace("mlguard scan:", "")


def test_forgotten_arch_kwargs_exit_2(files, tmp_path, capsys, monkeypatch):
    # A factory whose default is 1000 classes (as torchvision's), used with 10-class keys.
    (tmp_path / "imagenet_default.py").write_text(
        "from scan_helper import tiny_cnn\n"
        "def net(num_classes=1000):\n    return tiny_cnn(num_classes)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _scan(files, "--arch", "imagenet_default:net") == 2
    assert "outputs 1000 classes" in capsys.readouterr().err


def test_key_shape_that_does_not_fit_the_model_exits_2(files, tmp_path, capsys):
    rgb = TriggerKey.generate(num_classes=10, size=8, shape=(3, 12, 12), secret=b"\x08" * 32)
    rgb.save(tmp_path / "rgb.key")
    status = scan_cli.main([str(files / "models"), "--keys", str(tmp_path / "rgb.key"),
                            "--arch", ARCH, "--device", "cpu", "--no-progress"])
    assert status == 2
    err = capsys.readouterr().err
    assert f"key {rgb.key_id}: triggers of shape (3, 12, 12) do not fit" in err


@pytest.mark.parametrize("flag, name", [("--out", "rows.json"), ("--report", "report.html")])
def test_output_into_a_missing_folder_exits_2_before_the_scan(files, tmp_path, capsys,
                                                              flag, name):
    target = tmp_path / "missing" / name
    assert _scan(files, "--arch", ARCH, flag, str(target)) == 2
    err = capsys.readouterr().err
    assert f"cannot write '{target}'" in err and "does not exist" in err


@pytest.mark.parametrize("flag, name", [("--out", "rows.csv"), ("--report", "report.png")])
def test_existing_output_is_kept_without_force(files, tmp_path, capsys, flag, name):
    """An earlier scan's results are not replaced silently (the rule of every other verb)."""
    target = tmp_path / name
    target.write_text("earlier results\n")
    assert _scan(files, "--arch", ARCH, flag, str(target)) == 2
    err = capsys.readouterr().err
    assert f"'{target}' exists" in err and "--force" in err
    assert target.read_text() == "earlier results\n"
    assert _scan(files, "--arch", ARCH, flag, str(target), "--force") == 0
    assert target.read_bytes() != b"earlier results\n"


def test_files_that_could_not_be_checked_exit_3_and_are_printed(files, capsys):
    status = scan_cli.main([str(files / "models"), str(files / "broken"), "--keys",
                            str(files / "keys" / "owner.key"), "--arch", ARCH,
                            "--device", "cpu", "--no-progress"])
    assert status == 3
    err = capsys.readouterr().err
    assert "notes.pt" in err and "ERROR" in err


def test_keys_swallowing_a_folder_of_models_exits_2(files, capsys):
    # `scan a/ --keys k.key b/` takes b/ as a key folder: it must not be silently skipped.
    status = scan_cli.main([str(files / "broken"), "--keys", str(files / "keys" / "owner.key"),
                            str(files / "models"), "--arch", ARCH, "--device", "cpu",
                            "--no-progress"])
    assert status == 2
    assert f"folder '{files / 'models'}' holds no *.key files" in capsys.readouterr().err


def test_keys_swallowing_a_model_file_exits_2(files, capsys):
    status = scan_cli.main([str(files / "broken"), "--keys", str(files / "keys" / "owner.key"),
                            str(files / "models" / "a.pt"), "--arch", ARCH, "--device", "cpu",
                            "--no-progress"])
    assert status == 2
    assert str(files / "models" / "a.pt") in capsys.readouterr().err


def test_ctrl_c_prints_one_line_and_exits_130(files, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(sys.modules["mlguard.scan"], "scan", interrupted)
    assert _scan(files, "--arch", ARCH, "--journal", str(tmp_path / "j.db")) == 130
    err = capsys.readouterr().err
    assert "interrupted; rerun with the same --journal to resume" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_resumed_scan_says_how_many_were_done(files, tmp_path, capsys):
    journal = tmp_path / "j.db"
    assert _scan(files, "--arch", ARCH, "--journal", str(journal)) == 0
    capsys.readouterr()
    assert _scan(files, "--arch", ARCH, "--journal", str(journal)) == 0
    assert "2 of 2 files already done, 0 to check" in capsys.readouterr().err


def test_ctrl_c_during_the_scan_says_how_many_files_were_checked(files, tmp_path, capsys,
                                                                  monkeypatch):
    from mlguard.scan import ScanInterrupted

    def interrupted(*args, **kwargs):
        raise ScanInterrupted(3, 7)
    monkeypatch.setattr(sys.modules["mlguard.scan"], "scan", interrupted)
    assert _scan(files, "--arch", ARCH, "--journal", str(tmp_path / "j.db")) == 130
    err = capsys.readouterr().err.strip()
    assert err == ("mlguard scan: interrupted after 3 of 7 files; "
                   "rerun with the same --journal to resume")


@pytest.mark.parametrize("text, size", [("512M", 512 << 20), ("8G", 8 << 30),
                                        ("1.5GiB", 3 << 29), ("4096", 4096), ("64mb", 64 << 20)])
def test_memory_cap_sizes(files, monkeypatch, text, size):
    seen = {}

    def fake_scan(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")
    monkeypatch.setattr(sys.modules["mlguard.scan"], "scan", fake_scan)
    assert _scan(files, "--arch", ARCH, "--memory-cap", text) == 2
    assert seen["memory_cap"] == size


@pytest.mark.parametrize("text", ["lots", "0", "0.5", "inf", "nan"])
def test_bad_memory_cap_exits_2_naming_it(files, capsys, text):
    with pytest.raises(SystemExit) as e:
        _scan(files, "--arch", ARCH, "--memory-cap", text)
    assert e.value.code == 2
    assert f"--memory-cap: expected a size like 512M or 8G, got '{text}'" in \
        capsys.readouterr().err
