"""Scan outputs name keys and files so that people can read them (issue 10, item 5): every
row carries the key's label and key file; CSV, JSON, HTML, PNG and the CLI summary show
them; the heatmap and the HTML page stay readable for thousands of files."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3

import pytest
import torch
from PIL import Image

from mlguard import Verdict, WeightKey, embed_weights, load_key, scan
from mlguard.cli import main
from mlguard.scan import COLUMNS, write_report
from mlguard.scan.checkers import Outcome
from mlguard.scan.heatmap import MAX_FILES, heatmap_figure
from mlguard.scan.result import ScanResult
from mlguard.scan.rows import adjust, key_name, make_row, row_verdict

TARGET = "0.weight"
XSS_FILE = "<script>.pt"
XSS_LABEL = "<img src=x onerror=alert(2)>"


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 64))


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Customer keys from a fingerprint registry (files written by `mlguard fingerprint
    key`), a leaked copy carrying acme's key, a clean model and a file that is no model."""
    root = tmp_path_factory.mktemp("shop")
    master = root / "master.json"
    assert main(["fingerprint", "new", "--out", str(master), "--bits", "64",
                 "--targets", TARGET]) == 0
    keys = root / "keys"
    keys.mkdir()
    for customer in ("acme", "globex", XSS_LABEL):
        name = "xss" if customer == XSS_LABEL else customer
        assert main(["fingerprint", "key", str(master), "--customer", customer,
                     "--out", str(keys / f"{name}.key")]) == 0
    models = root / "models"
    models.mkdir()
    leak = _net(0)
    embed_weights(leak, load_key(keys / "acme.key"))
    torch.save(leak.state_dict(), models / "leaked_copy.pt")
    torch.save(_net(1).state_dict(), models / "clean.pt")
    (models / XSS_FILE).write_text("not a model\n")
    return root


def test_rows_carry_the_key_label_and_key_file(shop):
    rows = scan(shop / "models", shop / "keys", device="cpu", workers=1)
    assert tuple(rows[0]) == COLUMNS and {"key_label", "key_path"} <= set(COLUMNS)
    by_label = {r["key_label"] for r in rows}
    assert by_label == {"acme", "globex", XSS_LABEL}
    for r in rows:
        name = "xss" if r["key_label"] == XSS_LABEL else r["key_label"]
        assert r["key_path"] == str(shop / "keys" / f"{name}.key")
    [hit] = rows.detections
    assert hit["key_label"] == "acme" and hit["path"].endswith("leaked_copy.pt")
    # A key made in memory has no file; a key without a label is named by its file stem.
    fresh = WeightKey.generate(64, (TARGET,))
    unnamed = load_key(shop / "keys" / "globex.key").with_label(None)
    mixed = scan(shop / "models" / "clean.pt", [fresh, unnamed], device="cpu", workers=1)
    assert [(r["key_label"], r["key_path"]) for r in mixed] == [
        (None, None), (None, str(shop / "keys" / "globex.key"))]
    assert [key_name(r) for r in mixed] == [fresh.key_id, "globex"]


def test_json_and_csv_carry_the_names(shop, tmp_path):
    rows = scan(shop / "models", shop / "keys", device="cpu", workers=1)
    write_report(rows, tmp_path / "r.json", alpha=1e-6)
    write_report(rows, tmp_path / "r.csv", alpha=1e-6)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [(r["key_label"], r["key_path"]) for r in doc["rows"]] == \
        [(r["key_label"], r["key_path"]) for r in rows]
    with open(tmp_path / "r.csv", newline="") as f:
        table = list(csv.DictReader(f))
    detected = [t for t in table if t["detected"] == "True"]
    assert [(t["key_label"], t["key_path"]) for t in detected] == \
        [("acme", str(shop / "keys" / "acme.key"))]


def test_cli_summary_names_the_file_and_the_customer(shop, tmp_path, capsys):
    out = tmp_path / "rows.json"
    status = main(["scan", str(shop / "models"), "--keys", str(shop / "keys"), "--device",
                   "cpu", "--no-progress", "--out", str(out)])
    assert status == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "DETECTED" in line]
    assert len(lines) == 1  # printed with --out too
    assert re.match(r"DETECTED  .*leaked_copy\.pt  key acme \([0-9a-f]{16}\)  64/64", lines[0])


def test_resuming_a_journal_written_before_the_key_columns(shop, tmp_path, monkeypatch):
    """A journal whose rows lack key_label/key_path resumes (nothing is read again) and
    its rows name the keys as the resumed scan was given them."""
    journal = tmp_path / "j.db"
    first = scan(shop / "models", shop / "keys", device="cpu", workers=1, journal=journal)
    db = sqlite3.connect(journal)
    stored = db.execute("SELECT path, commitment, row FROM rows").fetchall()
    assert all(json.loads(row)["key_label"] is not None for _, _, row in stored)
    for path, commitment, row in stored:  # as an mlguard before these columns wrote them
        old = {k: v for k, v in json.loads(row).items() if k not in ("key_label", "key_path")}
        db.execute("UPDATE rows SET row = ? WHERE path = ? AND commitment = ?",
                   (json.dumps(old), path, commitment))
    db.commit()
    db.close()
    from mlguard.scan import loading
    reads = []
    real_read = loading.read_model_file
    monkeypatch.setattr(loading, "read_model_file",
                        lambda p, *a: reads.append(p) or real_read(p, *a))
    again = scan(shop / "models", shop / "keys", device="cpu", workers=1, journal=journal)
    assert reads == [] and again == first
    assert {r["key_label"] for r in again} == {"acme", "globex", XSS_LABEL}


def _synthetic(files: int, keys: list[tuple[str, str | None]]) -> list[dict]:
    """`files` x keys rows: file 1234 is acme's leaked copy, files 7 and 2500 are broken,
    every other pair is a chance-level result, a few of them strong-ish."""
    rows = []
    for i in range(files):
        path = f"/data/models/batch{i // 500}/model_{i:05d}.safetensors"
        for j, (commitment, label) in enumerate(keys):
            if i in (7, 2500):
                outcome = Outcome.failed(f"not a model file: truncated header ({i})")
            elif i == 1234 and label == "acme":
                outcome = Outcome(matches=64, total=64, chance=0.5)
            else:
                outcome = Outcome(matches=32 + (i * 7 + j) % 15, total=64, chance=0.5)
            rows.append(make_row(path, 1000, "f" * 64, commitment, "weight", outcome, "cpu",
                                 "e" * 64, key_label=label,
                                 key_path=f"/keys/{label or 'anon'}.key"))
    return adjust(rows, 1e-6)


KEYS = [("a" * 64, "acme"), ("b" * 64, "globex"), ("c" * 64, None)]


def test_heatmap_of_3000_files_names_the_files_that_matter():
    rows = _synthetic(3000, KEYS)
    fig = heatmap_figure(rows, 1e-6)
    ax = fig.axes[0]
    files = [t.get_text() for t in ax.get_yticklabels()]
    keys = [t.get_text() for t in ax.get_xticklabels()]
    assert len(files) == MAX_FILES
    assert files[0] == "batch2/model_01234.safetensors"  # the detection comes first
    assert "batch0/model_00007.safetensors  (error)" in files
    assert "batch5/model_02500.safetensors  (error)" in files
    assert keys == ["acme", "globex", "anon"]  # labels; the file stem for a key without one
    title = ax.get_title()
    assert "40 of 3,000 files shown" in title
    assert "+ 2,960 files with nothing detected, see the table" in title
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    width, height = Image.open(buf).size
    assert width <= 1800 and height <= 1600  # a picture, not a 3,000-row strip


def test_heatmap_says_when_detections_were_left_out():
    rows = _synthetic(60, KEYS)
    for r in rows:  # 59 files detected (file 7 is broken): more than the picture can name
        if r["error"] is None and r["key_label"] == "globex":
            r["detected"] = True
    title = heatmap_figure(rows, 1e-6).axes[0].get_title()
    assert "59 detections" in title and "40 of 60 files shown" in title
    assert "+ 20 more files (19 with detections, 1 with errors), see the table" in title


def test_html_report_sorts_filters_groups_errors_and_escapes(tmp_path):
    rows = _synthetic(300, KEYS)
    rows[0]["path"] = "/data/models/<script>alert(1)</script>/" + XSS_FILE
    for r in rows[:3]:
        r["error"], r["detected"] = "cannot load: <b>bad</b>", False
    rows[3]["key_label"] = XSS_LABEL
    write_report(rows, tmp_path / "r.html", alpha=1e-6)
    page = (tmp_path / "r.html").read_text()
    # Offline and injection-proof: no external resource, only the page's own script runs.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "Content-Security-Policy" in page and "script-src 'sha256-" in page
    assert page.count("<script>") == 1 and "<script>alert" not in page \
        and "<script>.pt" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;/&lt;script&gt;.pt" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<b>bad</b>" not in page
    # The table of all rows, sortable and filterable.
    table = page.split('<table id="all-rows">')[1].split("</table>")[0]
    assert table.count("<tr") == 1 + len(rows)
    assert 'id="filter"' in page and 'id="only"' in page and "addEventListener" in page
    assert table.count('class="detected"') == 0 and table.count('class="error"') == 3 + 3
    assert "acme" in table and "/keys/acme.key" in table
    # Errors grouped by key, with counts and the reasons.
    errors = page.split("<h2>Errors by key</h2>")[1].split("<h2>All rows</h2>")[0]
    assert errors.count("<h3>key ") == 3
    assert "key acme" in errors and "2 files could not be checked" in errors  # files 0 and 7
    assert "cannot load: &lt;b&gt;bad&lt;/b&gt;" in errors
    detections = page.split("<h2>Detections</h2>")[1].split("<h2>")[0]
    assert "model_01234" not in detections  # only 300 files here
    assert "None." in detections


def test_notebook_views_and_verdicts_show_the_label():
    rows = _synthetic(1300, KEYS)
    result = ScanResult(rows, 1e-6)
    page = result._repr_html_()
    [hit] = result.detections
    assert hit["key_label"] == "acme"
    detections = page.split("<h4>Detections</h4>")[1].split("<h4>")[0]
    assert "<td>acme</td>" in detections and "model_01234" in detections
    tests = sum(1 for r in rows if r["error"] is None)
    verdict = row_verdict(hit, alpha=1e-6, tests=tests)
    assert verdict.key_label == "acme"
    assert "<code>acme</code>" in verdict._repr_html_() and "key label:  acme" in str(verdict)
    assert Verdict.from_dict(verdict.to_dict()) == verdict
    unnamed = row_verdict({**hit, "key_label": None}, alpha=1e-6, tests=tests)
    assert "key_label" not in unnamed.to_dict()  # verdicts without a label read as before
