"""Runs a recipe page's Python block, so that the docs stay true."""

from __future__ import annotations

import os
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "recipes"


# The recipes draw fresh keys; their tiny runs (hundreds of images) read 6 to 13 of 20 trigger
# inputs depending on the draw (6 of 20, p 0.01, failed a CI run), so the tests fix the secret
# that mlguard draws: the figures then depend on the code, not on the draw.
SECRET = bytes(range(32))


def run_recipe(page: str, folder: Path) -> dict:
    """Executes the first ```python block of docs/recipes/<page> in `folder`, with SECRET as
    every fresh secret it draws; its globals."""
    import pytest

    from mlguard.keys import keyfile

    text = (DOCS / page).read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)[1]
    old = os.getcwd()
    os.chdir(folder)
    try:
        scope: dict = {"__name__": "recipe"}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(keyfile, "new_secret", lambda: SECRET)
            exec(compile(code, str(DOCS / page), "exec"), scope)
        return scope
    finally:
        os.chdir(old)
