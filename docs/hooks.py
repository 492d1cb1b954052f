"""mkdocs hooks (mkdocs.yml `hooks:`): the pages made from the code at every build.

- cli.md: every `mlguard` command's --help, from the argparse parsers themselves
  (mlguard.cli.main.build_parser). Generated at build time rather than by a script that
  writes a committed docs/cli.md: the reference cannot go stale, and building the parsers
  imports no torch (tests/cli/test_cli_start.py), so it costs well under a second.
- api/index.md: every name in `mlguard.__all__`, linked to its entry in the API pages
  (read from python/mlguard/__init__.py's source: no import, no compiled extension).
- examples/*.ipynb: the example notebooks, rendered by mkdocs-jupyter (never executed by the
  build): the newest executed copy from `make reproduce` (runs/examples/) with its outputs
  where there is one, else as stored (the repository keeps them without outputs);
  examples/results.md: examples/RESULTS.md, the figures every reproduce run measured.
- index.md: the README, the front page in both places; its links are written relative to
  the repository root (docs/guides/scan.md), so they are rewritten relative to docs/.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "mlguard"
HELP_WIDTH = "96"  # argparse wraps --help to $COLUMNS: fixed, so builds are reproducible
log = logging.getLogger("mkdocs.plugins.mlguard")  # its warnings fail the strict build
_packages_on: dict[str, list[str]] = {}  # API page -> the packages it documents whole
_rendered: set[str] = set()  # the object ids the API pages rendered
_staging: list[Path] = []  # temporary folders of this build, removed after it


def on_startup(**_) -> None:
    sys.path.insert(0, str(ROOT / "python"))  # the source tree, built or not


# -- cli.md ----------------------------------------------------------------------------------

def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for the parser and every sub-command, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, path + (name,))


def cli_reference() -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        from mlguard.cli.main import build_parser
        lines = ["# Command-line reference", "",
                 "Every `mlguard` command's `--help`, generated from its argparse parser when "
                 "this site is built (`docs/hooks.py`). The [README](index.md#the-command-line)"
                 " has the one-line cheat sheet with exit codes; "
                 "[the command-line walkthrough](guides/cli-walkthrough.md) takes a key to "
                 "signed evidence.", ""]
        for path, parser in _commands(build_parser()):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                parser.print_help()
            title = " ".join(("mlguard", *path))
            lines += [f"{'#' * min(2 + max(len(path) - 1, 0), 4)} `{title}`", "",
                      "```text", out.getvalue().rstrip(), "```", ""]
        return "\n".join(lines)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


# -- index.md ------------------------------------------------------------------------------

def front_page() -> str:
    readme = (ROOT / "README.md").read_text()
    return re.sub(r"\]\(docs/", "](", readme)


# -- api/index.md ----------------------------------------------------------------------------

def public_names() -> list[tuple[str, str]]:
    """(name, module that defines it) for every name in mlguard.__all__, from the source."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    exports, names = {}, []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id == "_EXPORTS":
                exports = ast.literal_eval(node.value)
            elif node.targets[0].id == "__all__":
                names = ast.literal_eval(node.value)
    return [(n, "mlguard" + exports[n] if n in exports else "mlguard") for n in names]


def package_names(package: str) -> list[str]:
    """The names in `package`'s __all__ (python/mlguard/.../__init__.py), from the source."""
    init = PACKAGE.joinpath(*package.split(".")[1:], "__init__.py")
    tree = ast.parse(init.read_text()) if init.is_file() else ast.Module(body=[])
    return next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], "id", None) == "__all__"), [])


def shadowed(package: str) -> dict[str, str]:
    """{name: where it is defined} for the names in `package`'s __all__ that are also one of
    its submodules (`from .embed import embed`, `from . import stats`): the documentation
    tools see (and skip) the submodule there, so the API page documents each of them with
    a directive of its own (on_page_markdown)."""
    folder = PACKAGE.joinpath(*package.split(".")[1:])
    if not (folder / "__init__.py").is_file():
        return {}
    tree = ast.parse((folder / "__init__.py").read_text())
    names = package_names(package)
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                name = alias.asname or alias.name
                if name in names and ((folder / f"{name}.py").is_file() or (folder / name).is_dir()):
                    # `from .embed import embed`: the definition; `from . import stats`: the
                    # submodule, which is not rendered as a member either
                    found[name] = ".".join(filter(None, (package, node.module, alias.name)))
    return found


def api_index() -> str:
    rows = []
    for name, module in public_names():
        if name == "__version__":
            rows.append("| `__version__` | mlguard's version (`mlguard._version`) |")
            continue
        target = module if module.rsplit(".", 1)[-1] == name else f"{module}.{name}"
        target = shadowed(module).get(name, target)
        rows.append(f"| [`mlguard.{name}`][{target}] | `{target}` |")
    return "\n".join([
        "# API reference", "",
        "`import mlguard` gives the names below; each subpackage's page documents every name "
        "in its `__all__`, from the docstrings. The names load on first use, so `import "
        "mlguard` itself is cheap; the first one used loads torch and the compiled ops.", "",
        "| name | documented at |", "|---|---|", *rows, ""])


# -- hooks -----------------------------------------------------------------------------------

def _packages(markdown: str) -> list[str]:
    """The packages an API page documents whole (`::: mlguard.<package>` lines)."""
    return [line[4:].strip() for line in markdown.splitlines()
            if line.startswith("::: mlguard.") and line.count(".") == 1]


def on_pre_build(**_) -> None:
    _packages_on.clear()  # `mkdocs serve` builds again in the same process
    _rendered.clear()


def on_page_markdown(markdown: str, page, **_) -> str:
    """An API page's `::: mlguard.<package>` also documents the package's shadowed names."""
    packages = _packages(markdown) if page.file.src_uri.startswith("api/") else []
    if not packages:
        return markdown
    _packages_on[page.file.src_uri] = packages
    extra = [f"\n::: {where}" for package in packages for where in shadowed(package).values()]
    return markdown + "\n".join(extra) + ("\n" if extra else "")


@event_priority(100)  # before mkdocs-jupyter's on_files, which must see the notebooks
def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "index.md", content=front_page()))
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    files.append(File.generated(config, "api/index.md", content=api_index()))
    staged = _stage_notebooks()
    for notebook in sorted(staged.glob("examples/*.ipynb")):
        # a real file (mkdocs-jupyter reads it from disk), at examples/<name> on the site
        files.append(File(f"examples/{notebook.name}", src_dir=str(staged),
                          dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls))
    files.append(File.generated(config, "examples/results.md",
                                content=(ROOT / "examples" / "RESULTS.md").read_text()))
    return files


def _stage_notebooks() -> Path:
    """A folder with examples/<name>.ipynb for every notebook: the newest executed copy that
    `make reproduce` left in runs/examples/<time>-<scale>/ where there is one (the
    repository stores the notebooks without outputs), else the notebook as stored."""
    _staging.append(Path(tempfile.mkdtemp(prefix="mlguard-docs-")))
    staged = _staging[-1] / "stage"
    (staged / "examples").mkdir(parents=True)
    runs = sorted((ROOT / "runs" / "examples").glob("*-*"), reverse=True)  # newest first
    for notebook in sorted((ROOT / "examples").glob("*.ipynb")):
        executed = next((r / notebook.name for r in runs if (r / notebook.name).is_file()),
                        notebook)
        shutil.copyfile(executed, staged / "examples" / notebook.name)
    return staged


def on_page_content(html: str, page, **_) -> str:
    if page.file.src_uri in _packages_on:
        _rendered.update(re.findall(r'id="(mlguard[\w.]*)"', html))
    return html


def on_post_build(config, **_) -> None:
    """Every name in a documented package's __all__ has an entry: a name the documentation
    tools could not find or render fails the strict build."""
    while _staging:
        shutil.rmtree(_staging.pop(), ignore_errors=True)
    for package in sorted({p for packages in _packages_on.values() for p in packages}):
        where = shadowed(package)
        for name in package_names(package):
            target = where.get(name, f"{package}.{name}")
            if target not in _rendered:
                log.warning(f"API reference: {package}.{name} is in __all__ but has no "
                            f"entry ({target}); give it a docstring or a page")
