"""mlguard.scan on a corpus of model files: descendants, strangers and hostile files."""

import csv
import hashlib
import io
import json
import math
import os
import re
import warnings

import pytest
import safetensors.torch
import torch

from mlguard import TriggerKey, TriggerMixer, verify
from mlguard.scan import (CHECKERS, COLUMNS, register_state_dict_checker, scan, write_report)
from mlguard.scan.checkers import CheckerOptions, TriggerSetChecker, resolve_arch
from mlguard.cli import scan as scan_cli

from scan_helper import MEAN, SHAPE, STD, Evil, evil_pickle, tiny_cnn, train

ARCH = "scan_helper:tiny_cnn"
XSS_NAME = "<img src=x onerror=alert(1)>.pt"


def _key(secret: int, **kw) -> TriggerKey:
    args = dict(num_classes=10, size=50, shape=SHAPE, mean=MEAN, std=STD,
                secret=bytes([secret]) * 32)
    args.update(kw)
    return TriggerKey.generate(**args)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Model files: 4 descendants of a watermarked model, 2 strangers, 9 unusable files."""
    root = tmp_path_factory.mktemp("corpus")
    owner = _key(1)
    other = _key(2, mean=(0.4,), std=(0.3,))  # same shape, other normalization
    big = _key(3, size=30, shape=(1, 16, 16), mean=None, std=None)  # a second input shape
    (root / "keys").mkdir()
    owner.save(root / "keys" / "owner.key")

    torch.manual_seed(0)
    marked = train(tiny_cnn(), 150, seed=0, mixer=TriggerMixer(owner, per_batch=16, augment=False))
    m = root / "models"
    for sub in ("copies", "derived", "bad"):
        (m / sub).mkdir(parents=True)
    sd = marked.state_dict()
    safetensors.torch.save_file(sd, m / "marked.safetensors")
    torch.save(sd, m / "copies" / "marked_copy.pt")
    descendants = {}
    for name, seed in (("finetuned.safetensors", 5), ("finetuned_ckpt.pth", 6)):
        d = tiny_cnn()
        d.load_state_dict(sd)
        train(d, 30, seed=seed, lr=1e-3, data_seed=100 + seed)  # other data, a few steps
        descendants[name] = d
    safetensors.torch.save_file(descendants["finetuned.safetensors"].state_dict(),
                                m / "derived" / "finetuned.safetensors")
    torch.save({"state_dict": descendants["finetuned_ckpt.pth"].state_dict(), "epoch": 3},
               m / "derived" / "finetuned_ckpt.pth")
    strangers = {"stranger_a.pt": train(tiny_cnn(), 150, seed=11),
                 "stranger_b.safetensors": train(tiny_cnn(), 100, seed=12)}
    torch.save(strangers["stranger_a.pt"].state_dict(), m / "stranger_a.pt")
    safetensors.torch.save_file(strangers["stranger_b.safetensors"].state_dict(),
                                m / "stranger_b.safetensors")

    bad = m / "bad"
    data = (m / "copies" / "marked_copy.pt").read_bytes()
    (bad / "truncated.pt").write_bytes(data[:len(data) // 2])
    data = (m / "marked.safetensors").read_bytes()
    (bad / "truncated.safetensors").write_bytes(data[:len(data) // 2])
    (bad / "notes.pt").write_text("these are my notes, not a model\n")
    (bad / XSS_NAME).write_text("<script>alert(1)</script>\n")
    torch.save(tiny_cnn(width=4).state_dict(), bad / "other_arch.pt")
    marker = root / "PWNED"
    (bad / "evil.pt").write_bytes(evil_pickle(str(marker)))
    buf = io.BytesIO()
    torch.save({"weights": Evil(str(marker))}, buf)
    (bad / "evil_zip.pt").write_bytes(buf.getvalue())
    nan_sd = {k: v.clone() for k, v in sd.items()}
    nan_sd["7.weight"][0, 0] = float("nan")
    safetensors.torch.save_file(nan_sd, bad / "nan.safetensors")
    with warnings.catch_warnings():  # TorchScript is deprecated, but files of it abound
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(marked, torch.zeros(1, *SHAPE)), m / "scripted.pts")
    (m / "README.txt").write_text("not scanned: not a model suffix\n")

    models = {"marked.safetensors": marked, "copies/marked_copy.pt": marked,
              "derived/finetuned.safetensors": descendants["finetuned.safetensors"],
              "derived/finetuned_ckpt.pth": descendants["finetuned_ckpt.pth"],
              "stranger_a.pt": strangers["stranger_a.pt"],
              "stranger_b.safetensors": strangers["stranger_b.safetensors"]}
    return dict(root=root, models_dir=m, keys=[root / "keys" / "owner.key", other, big],
                owner=owner, other=other, big=big, marker=marker, models=models)


@pytest.fixture(scope="module")
def rows(corpus):
    return scan(corpus["models_dir"], corpus["keys"], arch=ARCH, device="cpu", workers=2)


def _by_file(rows, root):
    out = {}
    for r in rows:
        out.setdefault(os.path.relpath(r["path"], root), []).append(r)
    return out


def test_detects_exactly_the_descendants(corpus, rows):
    owner = corpus["owner"].commitment()
    detected = {os.path.relpath(r["path"], corpus["models_dir"]) for r in rows if r["detected"]}
    assert detected == {"marked.safetensors", "copies/marked_copy.pt",
                        "derived/finetuned.safetensors", "derived/finetuned_ckpt.pth"}
    for r in rows:
        if r["detected"]:
            assert r["commitment"] == owner and r["adjusted_p_value"] < 1e-6
            assert r["log10_p_value"] < -6 and r["error"] is None
    assert not corpus["marker"].exists()


def test_every_pair_has_one_row_with_the_right_columns(corpus, rows):
    files = _by_file(rows, corpus["models_dir"])
    assert len(files) == 15 and "README.txt" not in files  # 6 models + 9 others
    keys = [corpus["owner"], corpus["other"], corpus["big"]]
    for name, file_rows in files.items():
        assert [r["commitment"] for r in file_rows] == [k.commitment() for k in keys], name
    assert all(tuple(r) == COLUMNS for r in rows)
    assert rows == sorted(rows, key=lambda r: r["path"])  # path order, then key order
    marked = files["marked.safetensors"][0]
    data = (corpus["models_dir"] / "marked.safetensors").read_bytes()
    assert marked["file_sha256"] == hashlib.sha256(data).hexdigest()
    assert marked["file_size"] == len(data) and marked["scheme"] == "trigger-set"
    assert marked["key_id"] == keys[0].key_id and marked["device"] == "cpu"
    assert marked["extra"] == {"kind": "abstract", "dtype": "float32"} and marked["chance"] == 0.1


def test_matches_agree_with_verify_for_every_key(corpus, rows):
    """Concatenating all keys' triggers in one batch gives verify()'s answer per key."""
    files = _by_file(rows, corpus["models_dir"])
    keys = [corpus["owner"], corpus["other"], corpus["big"]]
    for name, model in corpus["models"].items():
        for key, row in zip(keys, files[name]):
            v = verify(model, key)
            assert (row["matches"], row["total"]) == (v.matches, v.total), (name, key.key_id)
            assert row["log10_p_value"] == pytest.approx(v.log_p_value / math.log(10), rel=1e-12)


def test_bad_files_get_error_rows_naming_the_problem(corpus, rows):
    files = _by_file(rows, corpus["models_dir"])
    expected = {
        "bad/truncated.pt": r"truncated or corrupt zip archive",
        "bad/truncated.safetensors": r"truncated or corrupt safetensors file",
        "bad/notes.pt": r"not a model file",
        f"bad/{XSS_NAME}": r"not a model file",
        "bad/other_arch.pt": r"wrong architecture: .*size mismatch",
        "bad/evil.pt": r"unsafe pickle refused \(not unpickled\): .*GLOBAL io.open",
        "bad/evil_zip.pt": r"unsafe pickle refused",
        "bad/nan.safetensors": r"non-finite weights: NaN or inf in 7.weight",
        "scripted.pts": r"TorchScript archive refused",
    }
    failed = {name for name, rs in files.items() if any(r["error"] for r in rs)}
    assert failed == set(expected)
    for name, pattern in expected.items():
        for r in files[name]:
            assert r["error"] and re.search(pattern, r["error"]), (name, r["error"])
            assert r["matches"] is None and r["p_value"] is None and r["detected"] is False
    assert files["bad/truncated.pt"][0]["file_sha256"] is not None  # read, then refused
    assert not corpus["marker"].exists()


def test_bonferroni_over_the_tests_of_the_scan(rows):
    tests = [r for r in rows if r["error"] is None]
    assert len(tests) == 6 * 3
    for r in tests:
        expected = min(0.0, r["log10_p_value"] + math.log10(len(tests)))
        assert r["log10_adjusted_p_value"] == pytest.approx(expected, abs=1e-12)
        assert r["adjusted_p_value"] == pytest.approx(min(1.0, r["p_value"] * len(tests)),
                                                      rel=1e-9)
        assert r["detected"] == (r["log10_adjusted_p_value"] < -6)
    alone = scan(tests[0]["path"], [_key(9)], arch=ARCH, device="cpu")
    assert alone[0]["adjusted_p_value"] == alone[0]["p_value"]  # a single test: m = 1


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_only_when_trusted(corpus):
    path = corpus["models_dir"] / "scripted.pts"
    rows = scan(path, [corpus["owner"]], trust_torchscript=True, device="cpu")
    assert rows[0]["error"] is None and rows[0]["detected"] and rows[0]["matches"] == 50
    with pytest.raises(ValueError, match="arch is required for trigger-set keys"):
        scan(path, [corpus["owner"]], device="cpu")


def test_rerun_with_journal_does_no_work(corpus, rows, tmp_path, monkeypatch):
    from mlguard.scan import loading
    reads = []
    real_read = loading.read_model_file
    monkeypatch.setattr(loading, "read_model_file",
                        lambda p, *a: reads.append(p) or real_read(p, *a))
    journal = tmp_path / "scan.db"
    first = scan(corpus["models_dir"], corpus["keys"], arch=ARCH, device="cpu", journal=journal)
    assert first == rows and len(reads) == 15
    reads.clear()
    again = scan(corpus["models_dir"], corpus["keys"], arch=ARCH, device="cpu", journal=journal)
    assert again == rows and reads == []
    # A new key: every file is checked again, once; old rows are reused, not duplicated.
    extra = _key(4)
    more = scan(corpus["models_dir"], [*corpus["keys"], extra], arch=ARCH, device="cpu",
                journal=journal)
    assert len(reads) == 15 and len(more) == 15 * 4
    assert {r["commitment"] for r in more} >= {extra.commitment()}
    with pytest.raises(ValueError, match="other settings"):
        scan(corpus["models_dir"], corpus["keys"], arch="scan_helper:slow_tiny_cnn",
             device="cpu", journal=journal)


def test_changed_file_is_checked_again(corpus, tmp_path, monkeypatch):
    from mlguard.scan import loading
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        safetensors.torch.save_file(corpus["models"]["stranger_a.pt"].state_dict(), folder / name)
    journal = tmp_path / "j.db"
    scan(folder, [corpus["owner"]], arch=ARCH, device="cpu", journal=journal)
    safetensors.torch.save_file(corpus["models"]["marked.safetensors"].state_dict(),
                                folder / "b.safetensors")
    os.utime(folder / "b.safetensors", ns=(1, 1))  # a new mtime whatever the clock says
    reads = []
    real_read = loading.read_model_file
    monkeypatch.setattr(loading, "read_model_file",
                        lambda p, *a: reads.append(p) or real_read(p, *a))
    rows = scan(folder, [corpus["owner"]], arch=ARCH, device="cpu", journal=journal)
    assert reads == [str(folder / "b.safetensors")]
    assert [r["detected"] for r in rows] == [False, True]


def test_reports(corpus, rows, tmp_path):
    for name in ("r.json", "r.csv", "r.png", "r.html"):
        write_report(rows, tmp_path / name, alpha=1e-6)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["rows"] == rows and doc["alpha"] == 1e-6 and doc["tests"] == 18
    with open(tmp_path / "r.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and tuple(table[0]) == COLUMNS
    assert sum(t["detected"] == "True" for t in table) == 4
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in page and "finetuned_ckpt.pth" in page
    assert "&lt;img src=x onerror=alert(1)&gt;.pt" in page and "<img src=x" not in page
    errors, table = page.split("<h2>All rows</h2>")
    # Grouped per key (3 keys; the two evil files share one reason), then one cell per pair.
    assert errors.count("unsafe pickle refused") == 3 and table.count("unsafe pickle refused") == 6
    with pytest.raises(ValueError, match=r"must end in .json, .csv, .png or .html"):
        write_report(rows, tmp_path / "r.txt", alpha=1e-6)


def test_cli(corpus, tmp_path, capsys):
    out, report = tmp_path / "rows.json", tmp_path / "report.html"
    status = scan_cli.main([str(corpus["models_dir"] / "derived"),
                            str(corpus["models_dir"] / "stranger_a.pt"),
                            "--keys", str(corpus["keys"][0]), "--arch", "scan_helper:tiny_cnn",
                            "--arch-kwargs", '{"num_classes": 10}', "--device", "cpu",
                            "--out", str(out), "--report", str(report), "--no-progress"])
    assert status == 1  # detections
    doc = json.loads(out.read_text())
    assert [r["detected"] for r in doc["rows"]] == [True, True, False]
    assert "scan: 3 models x 1 keys, 2 detections, 0 files with errors" in capsys.readouterr().err
    assert report.exists()
    status = scan_cli.main([str(corpus["models_dir"] / "stranger_a.pt"), "--keys",
                            str(corpus["keys"][0]), "--arch", ARCH, "--device", "cpu"])
    assert status == 0
    for argv, message in (
            (["--arch", ARCH, "--out", "x.txt"], "--out must end in .json or .csv"),
            (["--arch", ARCH, "--arch-kwargs", "{num"], "--arch-kwargs is not valid JSON"),
            ([], "arch is required for trigger-set keys"),
            (["--arch", "nosuchmodule:f"], "arch 'nosuchmodule:f' cannot be imported")):
        status = scan_cli.main([str(corpus["models_dir"] / "stranger_a.pt"), "--keys",
                                str(corpus["keys"][0]), "--device", "cpu", *argv])
        assert status == 2 and message in capsys.readouterr().err


def test_bad_arguments(corpus):
    models, key = corpus["models_dir"] / "stranger_a.pt", corpus["owner"]
    with pytest.raises(ValueError, match="alpha must be in the open interval"):
        scan(models, [key], arch=ARCH, alpha=1.5)
    with pytest.raises(ValueError, match="keys must hold at least one key"):
        scan(models, [], arch=ARCH)
    with pytest.raises(ValueError, match="is given twice"):
        scan(models, [key, key], arch=ARCH)
    with pytest.raises(FileNotFoundError, match="models: no such file or folder"):
        scan(corpus["root"] / "nope", [key], arch=ARCH)
    with pytest.raises(ValueError, match="no model files found"):
        scan(corpus["root"] / "keys", [key], arch=ARCH)
    with pytest.raises(ValueError, match="arch must look like 'package.module:factory'"):
        scan(models, [key], arch="scan_helper.tiny_cnn")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        scan(models, [key], arch=ARCH, batch_size=0)
    with pytest.raises(ValueError, match="device must be like"):
        scan(models, [key], arch=ARCH, device="gpu")


def test_keys_are_grouped_by_input_shape_and_checked_per_key(corpus, tmp_path):
    five = _key(5, num_classes=5)  # same shape as the owner key, but 5 classes
    checker = TriggerSetChecker([corpus["owner"], corpus["big"], five], torch.device("cpu"),
                                CheckerOptions(resolve_arch(ARCH)))
    assert [len(g.keys) for g in checker.groups] == [2, 1]
    assert checker.groups[0].inputs.shape == (100, *SHAPE)
    rows = scan(corpus["models_dir"] / "marked.safetensors", [corpus["owner"], corpus["big"]],
                arch=ARCH, device="cpu", batch_size=7)  # batches split across keys
    assert rows[0]["detected"] and rows[0]["matches"] == 50
    # A key the architecture cannot answer is a configuration error, found before the scan.
    with pytest.raises(ValueError, match=f"key {five.key_id} has num_classes=5 but the "
                                         "architecture outputs 10 classes"):
        scan(corpus["models_dir"] / "marked.safetensors", [corpus["owner"], five],
             arch=ARCH, device="cpu")


class ToyWeightKey:
    """A stand-in for a weight-space key: 32 sign bits of the first layer's weights."""

    scheme = "toy-weight"

    def __init__(self, bits: torch.Tensor, layer: str = "0.weight"):
        self.bits, self.layer = bits, layer

    def commitment(self) -> str:
        return hashlib.sha256(f"{self.layer}{self.bits.tolist()}".encode()).hexdigest()


def test_a_state_dict_scheme_plugs_in(corpus, monkeypatch):
    calls = []

    def check(state_dicts, keys, device):
        calls.append(len(state_dicts))
        out = []
        for sd in state_dicts:
            if sd["0.weight"].shape[0] != 8:
                raise ValueError("toy: wrong layer")  # fails this model, not its batch
            signs = (sd["0.weight"].flatten()[:32] > 0).long()
            out.append([(int((signs == k.bits).sum()), 32, 0.5, {"layer": k.layer})
                        if sd["0.weight"].numel() >= 32 else "layer too small" for k in keys])
        return out

    monkeypatch.setitem(CHECKERS, "toy-weight", None)
    register_state_dict_checker("toy-weight", check, models_per_call=4)
    marked_bits = (corpus["models"]["marked.safetensors"].state_dict()["0.weight"]
                   .flatten()[:32] > 0).long()
    keys = [ToyWeightKey(marked_bits), ToyWeightKey(1 - marked_bits)]
    rows = scan(corpus["models_dir"], keys, device="cpu")  # no arch needed
    files = _by_file(rows, corpus["models_dir"])
    assert files["marked.safetensors"][0]["matches"] == 32
    assert files["marked.safetensors"][1]["matches"] == 0
    assert files["marked.safetensors"][0]["scheme"] == "toy-weight"
    assert files["stranger_a.pt"][0]["error"] is None  # no architecture needed
    assert files["bad/other_arch.pt"][0]["error"] == "check failed: ValueError: toy: wrong layer"
    assert max(calls) == 4 and 1 in calls  # batched; the failing batch retried one by one
    assert sum(r["error"] is None for r in rows) == 6 * 2
    assert files["bad/nan.safetensors"][0]["error"].startswith("non-finite weights")
    with pytest.raises(ValueError, match=r"no checker for scheme\(s\) \['nope'\]"):
        scan(corpus["models_dir"], [type("K", (), {"scheme": "nope",
                                                   "commitment": lambda s: "0" * 64})()])


@pytest.mark.cuda
def test_cpu_and_cuda_give_the_same_rows(corpus, rows):
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        gpu = scan(corpus["models_dir"], corpus["keys"], arch=ARCH, device="cuda",
                   autocast=False)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    strip = [{k: v for k, v in r.items() if k != "device"} for r in rows]
    assert [{k: v for k, v in r.items() if k != "device"} for r in gpu] == strip
    fast = scan(corpus["models_dir"], corpus["keys"], arch=ARCH, device="cuda")  # bf16
    assert [r["detected"] for r in fast] == [r["detected"] for r in rows]
    assert [r["error"] is None for r in fast] == [r["error"] is None for r in rows]


def test_weight_keys_and_trigger_keys_in_one_scan(corpus):
    """Weight keys need no architecture: a file of another architecture still gets them."""
    from mlguard import WeightKey
    from mlguard.verification import verify_weights
    weight_keys = [WeightKey.generate(bits=32, targets=("3.weight",), secret=bytes([7]) * 32),
                   WeightKey.generate(bits=16, targets=("7.weight",), reduce="mean_out",
                                      secret=bytes([8]) * 32)]
    rows = scan(corpus["models_dir"], [corpus["owner"], *weight_keys], arch=ARCH, device="cpu")
    files = _by_file(rows, corpus["models_dir"])
    for name, model in corpus["models"].items():
        trigger, *weights = files[name]
        assert trigger["scheme"] == "trigger-set" and trigger["error"] is None
        for key, row in zip(weight_keys, weights):
            assert row["scheme"] == "weight" and row["total"] == key.bits and not row["detected"]
            assert row["matches"] == verify_weights(model, key).matches, name
    other_trigger, *other_weights = files["bad/other_arch.pt"]
    assert other_trigger["error"].startswith("wrong architecture")
    assert all(r["error"] is None and r["matches"] is not None for r in other_weights)
