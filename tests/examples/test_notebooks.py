"""Every notebook in examples/ runs at smoke scale on the CPU in a fresh kernel, and shows
what it claims: its checks pass and it ends with a table next to the published figures."""

import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples"))
import notebook_runner  # noqa: E402  (examples/ is not a package)

PYTHON_DIR = str(REPO / "python")
CIFAR10 = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"  # beside the clone in CI
NOTEBOOKS = notebook_runner.notebooks()


def test_examples_has_notebooks():
    assert len(NOTEBOOKS) >= 2, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_clean_with_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), \
        f"{path.name}: clear the outputs before committing"
    params = notebook_runner.parameters_cells(nb)
    assert len(params) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assert re.search(r'^SCALE = "(smoke|full)"', params[0].source, re.M), params[0].source
    assert "MLGUARD_SCALE" in params[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_smoke_scale(path, tmp_path):
    env = {"MLGUARD_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "", "MLGUARD_OUT": str(tmp_path / "out"),
           "MLGUARD_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [PYTHON_DIR, os.environ.get("PYTHONPATH")]))}
    if "MLGUARD_CIFAR10" not in os.environ and CIFAR10.exists():
        env["MLGUARD_CIFAR10"] = str(CIFAR10)  # for notebooks on CIFAR-10
    if "MLGUARD_CIFAR10" in path.read_text() and "MLGUARD_CIFAR10" not in {**os.environ, **env}:
        pytest.skip(f"needs the CIFAR-10 archive at {CIFAR10} (beside the clone in CI) "
                    "or MLGUARD_CIFAR10")
    start = time.perf_counter()
    nb = notebook_runner.execute(path, "smoke", env=env, timeout=300, cwd=tmp_path)
    print(f"{path.name}: {time.perf_counter() - start:.1f} s at smoke scale")
    results = notebook_runner.results(nb)
    assert results["scale"] == "smoke" and results["device"].startswith("CPU"), results
    assert results["checks"], "a notebook must check what it shows"
    failed = [what for what, ok in results["checks"].items() if ok is not True]
    assert not failed, f"{path.name}: failed checks {failed}; results {results}"
    rows = results["rows"]
    assert rows and all(r["ours"] and r["published"] and r["source"] for r in rows), rows
    assert any(r["published"] != "—" and r["source"] != "—" for r in rows), \
        "the table must cite at least one published figure"
    tables = [m for m in notebook_runner.markdown_outputs(nb) if "| published |" in m]
    assert len(tables) == 1, "the notebook must end with one table of ours vs published"
    for r in rows:
        assert f"| {r['what']} | {r['ours']} | {r['published']} | {r['source']} |" in tables[0]


def test_runner_shuts_its_kernel_down(tmp_path):
    """A notebook run must not leave its kernel (about 1 GB with torch loaded) running."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        f"import os; open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))")]
    path = tmp_path / "pid.ipynb"
    nbformat.write(nb, path)
    notebook_runner.execute(path, "smoke", cwd=tmp_path)
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), f"kernel process {pid} still running"
