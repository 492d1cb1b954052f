"""Runs a recipe page's Python block, so that the docs stay true."""

from __future__ import annotations

import os
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "recipes"


def run_recipe(page: str, folder: Path) -> dict:
    """Executes the first ```python block of docs/recipes/<page> in `folder`; its globals."""
    text = (DOCS / page).read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)[1]
    old = os.getcwd()
    os.chdir(folder)
    try:
        scope: dict = {"__name__": "recipe"}
        exec(compile(code, str(DOCS / page), "exec"), scope)
        return scope
    finally:
        os.chdir(old)
