"""Execute the example notebooks in a fresh kernel and read back what they measured.

Shared by the notebook tests (tests/examples/) and `make reproduce` (reproduce.py). Every
notebook's last cell displays its results as one output of type RESULTS_MIME: the scale,
device and seconds of the run, the table rows (what, ours, published, source) and named
checks (True when the run shows what the notebook claims).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent
RESULTS_MIME = "application/vnd.mlguard.results+json"
SCALES = ("smoke", "full")


def notebooks() -> list[Path]:
    """Every notebook in examples/, in name order (a new one is picked up by itself)."""
    return sorted(EXAMPLES.glob("*.ipynb"))


def _kernel_manager(python: str, spec_dir: Path) -> KernelManager:
    """A kernel on `python` (this interpreter by default), whatever kernelspecs the user has
    installed elsewhere: a private kernelspec folder holds the only one it may use."""
    kdir = spec_dir / "mlguard-python"
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mlguard examples", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir)], ensure_native_kernel=False)
    return KernelManager(kernel_name="mlguard-python", kernel_spec_manager=ksm)


def execute(path: str | os.PathLike, scale: str, *, env: dict[str, str] | None = None,
            timeout: int = 600, python: str = sys.executable, cwd: str | os.PathLike | None = None
            ) -> nbformat.NotebookNode:
    """Runs the notebook at `path` at `scale` ("smoke" or "full") in a fresh kernel and
    returns it with its outputs. `env`: extra environment variables for the kernel (it
    inherits this process's environment; MLGUARD_SCALE is set here). A failing cell raises
    nbclient's CellExecutionError with the cell and its traceback."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    os.environ.update({**(env or {}), "MLGUARD_SCALE": scale})
    try:
        with tempfile.TemporaryDirectory(prefix="mlguard-kernels-") as spec_dir:
            km = _kernel_manager(python, Path(spec_dir))
            client = NotebookClient(nb, timeout=timeout, km=km,
                                    resources={"metadata": {"path": str(cwd or path.parent)}})
            try:
                client.execute()
            finally:
                # nbclient leaves a kernel it was handed running (about 1 GB per notebook).
                if km.has_kernel:
                    km.shutdown_kernel(now=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def results(nb: nbformat.NotebookNode) -> dict:
    """The results the notebook displayed (exactly one RESULTS_MIME output is expected)."""
    found = [out["data"][RESULTS_MIME] for cell in nb.cells if cell.cell_type == "code"
             for out in cell.get("outputs", []) if RESULTS_MIME in out.get("data", {})]
    if len(found) != 1:
        raise ValueError(f"expected one {RESULTS_MIME} output, found {len(found)}")
    return dict(found[0])


def markdown_outputs(nb: nbformat.NotebookNode) -> list[str]:
    return [out["data"]["text/markdown"] for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if "text/markdown" in out.get("data", {})]


def parameters_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
