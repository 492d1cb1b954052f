"""Every public name has a reference entry and a docstring (issue 24).

The public names are `mlguard.__all__` and each subpackage's `__all__`. The API pages
(docs/api/*.md) document a subpackage whole with a `::: mlguard.<package>` line, which
mkdocstrings expands to every name in its `__all__`; `make docs` then fails (strict) on any
name it could not render (docs/hooks.py checks the rendered pages). This test needs no
documentation tools: it checks that every package has its page and every name a docstring.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import mlguard

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "mlguard"
API = ROOT / "docs" / "api"
# subpackages without an __all__: internals, not public API
NOT_PUBLIC = {"files", "reference"}


def subpackages() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE)]) if m.ispkg)


def public_names() -> list[tuple[str, str]]:
    """(package, name) for every public name."""
    names = [("mlguard", n) for n in mlguard.__all__]
    for sub in subpackages():
        module = importlib.import_module(f"mlguard.{sub}")
        names += [(f"mlguard.{sub}", n) for n in getattr(module, "__all__", [])]
    return names


def directives() -> dict[str, str]:
    """{documented object: its options text} for every `::: object` line of the API pages."""
    found = {}
    for page in API.glob("*.md"):
        for m in re.finditer(r"^::: (\S+)\n((?:    .*\n)*)", page.read_text(), flags=re.M):
            found[m.group(1)] = m.group(2)
    return found


def attribute_docstring(package: str, name: str) -> str | None:
    """The string literal right after `name = ...` at the top of a module (how data is
    documented; mkdocstrings shows it): `package`'s modules first, then any of mlguard's (a
    name imported from another subpackage)."""
    folder = PACKAGE.joinpath(*package.split(".")[1:])
    for path in [*sorted(folder.rglob("*.py")), *sorted(PACKAGE.rglob("*.py"))]:
        body = ast.parse(path.read_text()).body
        for node, after in zip(body, body[1:]):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) \
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) \
                    and isinstance(after.value.value, str):
                return after.value.value
    return None


def test_the_public_names_are_found():
    names = public_names()
    assert ("mlguard", "TriggerKey") in names and ("mlguard.scan", "ScanResult") in names
    assert len(names) > 100, len(names)


@pytest.mark.parametrize("package", [p for p in subpackages() if p not in NOT_PUBLIC])
def test_every_public_package_has_an_api_page(package):
    module = importlib.import_module(f"mlguard.{package}")
    assert getattr(module, "__all__", None), \
        f"mlguard.{package} has no __all__: add one (its public names) or list it in NOT_PUBLIC"
    assert f"mlguard.{package}" in directives(), \
        f"no docs/api/*.md has a '::: mlguard.{package}' line"


def test_the_subpackages_without_all_are_the_known_ones():
    missing = {p for p in subpackages()
               if not getattr(importlib.import_module(f"mlguard.{p}"), "__all__", None)}
    assert missing == NOT_PUBLIC


def test_every_top_level_name_has_an_entry():
    """mlguard.X is documented where it is defined: its subpackage's page, or a page naming
    the module (and, with a `members:` option, the name)."""
    found = directives()
    for name, module in mlguard._EXPORTS.items():
        module = "mlguard" + module
        if module in found and module.count(".") == 1:
            continue  # a subpackage page: every name in its __all__
        assert module in found, f"mlguard.{name}: no '::: {module}' line in docs/api/*.md"
        members = re.search(r"members: \[(.*)\]", found[module])
        assert members is None or name in [m.strip() for m in members.group(1).split(",")], \
            f"mlguard.{name}: '::: {module}' lists members without it"


@pytest.mark.parametrize("package, name", public_names(),
                         ids=[f"{p}.{n}" for p, n in public_names()])
def test_every_public_name_has_a_docstring(package, name):
    obj = getattr(importlib.import_module(package), name)
    if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj):
        doc = obj.__doc__ if not inspect.isclass(obj) else obj.__dict__.get("__doc__")
        assert doc and doc.strip(), f"{package}.{name} has no docstring"
    else:  # data: a docstring after its assignment
        assert attribute_docstring(package, name), \
            f"{package}.{name} = ... has no docstring (a string literal on the next line)"


def test_the_lazy_names_are_exactly_all():
    """mlguard loads its names on first use: every name in __all__ must be mapped, and each
    must be the object its module defines."""
    assert set(mlguard._EXPORTS) == set(mlguard.__all__) - {"__version__"}
    for name, module in mlguard._EXPORTS.items():
        defined = importlib.import_module("mlguard" + module)
        expected = defined if name in mlguard._SUBPACKAGES else getattr(defined, name)
        assert getattr(mlguard, name) is expected, name


def test_mlguard_scan_stays_the_function_after_its_modules_are_imported():
    importlib.import_module("mlguard.scan.rows")
    assert callable(mlguard.scan) and not inspect.ismodule(mlguard.scan)
    from mlguard import scan
    assert scan is mlguard.scan


def test_every_subpackage_is_an_attribute_after_import_mlguard():
    """As before the names were lazy: `import mlguard` then `mlguard.ownership.environment()`."""
    for sub in subpackages():
        assert inspect.ismodule(getattr(mlguard, sub)) or sub == "scan", sub
    assert callable(mlguard.scan)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        mlguard.nonexistent  # noqa: B018


def test_the_readme_is_a_front_page():
    """Issue 24: at most ~150 lines, the two commands in the first screen, no paths into the
    CI machine's folders (users point MLGUARD_CIFAR10 at their own CIFAR-10)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, len(lines)
    first_screen = "\n".join(lines[:30])
    assert "make demo" in first_screen and "make test" in first_screen
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        assert "shared/data" not in page.read_text(), page
