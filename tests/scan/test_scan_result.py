"""scan() returns a ScanResult (issue 10, "What was seen" 8): still the list of row dicts
old code indexes and iterates, plus .rows, .detections, .errors, .to_pandas() and an HTML
view for notebooks; write_report returns the path it wrote."""

from __future__ import annotations

import json

import pytest
import torch

from mlguard import TriggerKey, scan
from mlguard.scan import ScanResult, write_report

from scan_helper import MEAN, SHAPE, STD, tiny_cnn


def test_scan_result(tmp_path):
    key = TriggerKey.generate(num_classes=10, size=20, shape=SHAPE, mean=MEAN, std=STD,
                              secret=b"\x09" * 32)
    torch.manual_seed(0)
    torch.save(tiny_cnn().state_dict(), tmp_path / "a.pt")
    (tmp_path / "<b>bad.pt").write_text("not a model")
    result = scan(tmp_path, [key], arch="scan_helper:tiny_cnn", device="cpu", workers=1)
    assert isinstance(result, ScanResult) and isinstance(result, list)
    assert len(result) == 2 and result[0] is result.rows[0]
    assert [r["path"] for r in result] == [r["path"] for r in result.rows]
    assert result.detections == [] and len(result.errors) == 1
    page = result._repr_html_()
    assert "2 models x 1 keys, 0 detections, 1 files with errors" in page
    assert "&lt;b&gt;bad.pt" in page and "<b>bad" not in page
    written = write_report(result, tmp_path / "rows.json", alpha=1e-6)
    assert written == tmp_path / "rows.json"
    assert json.loads(written.read_text())["rows"] == result
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs pandas"):
            result.to_pandas()
    else:
        assert list(result.to_pandas()["path"]) == [r["path"] for r in result]


class _Key:
    scheme = "toy-count"

    def commitment(self) -> str:
        return "ab" * 32


def test_progress_counts_checked_files_not_files_read(tmp_path, monkeypatch):
    """Issue 10, "What was seen" 3: with a batched (weight-like) scheme the bar counted files
    read, stalled, then jumped. Now each update is the files whose rows were just committed."""
    import tqdm
    import tqdm.auto

    from mlguard.scan import CHECKERS, register_state_dict_checker

    checked = [0]
    seen: list[tuple[int, int]] = []  # (bar position after an update, files checked so far)

    def check(state_dicts, keys, device):
        checked[0] += len(state_dicts)
        return [[(1, 2, 0.5, {})] for _ in state_dicts]

    class Bar(tqdm.auto.tqdm):
        def update(self, n=1):
            super().update(n)
            seen.append((self.n, checked[0]))

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    monkeypatch.setattr(tqdm, "tqdm", Bar)
    monkeypatch.setitem(CHECKERS, "toy-count", None)
    register_state_dict_checker("toy-count", check, models_per_call=4)
    for i in range(10):
        torch.save({"w": torch.full((4,), float(i))}, tmp_path / f"m{i}.pt")
    scan(tmp_path, [_Key()], device="cpu", workers=2, progress=True)
    assert seen and all(position == done for position, done in seen)
    assert seen[-1] == (10, 10)
