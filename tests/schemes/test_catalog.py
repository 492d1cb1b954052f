"""The torch-free catalog of built-in schemes (what `mlguard key new --help` lists) is the
registry: every built-in scheme, its module, aliases and summary."""

import mlguard  # noqa: F401
from mlguard.schemes import SCHEMES
from mlguard.schemes.catalog import BUILTIN


def test_the_catalog_lists_exactly_the_built_in_schemes():
    builtin = {name: s for name, s in SCHEMES.items()
               if s.__module__.startswith("mlguard.schemes.")}
    assert list(BUILTIN) == list(builtin)  # same names, in the same order
    for name, (module, aliases, summary) in BUILTIN.items():
        scheme = builtin[name]
        assert scheme.__module__ == f"mlguard.schemes.{module}"
        assert tuple(scheme.cli_aliases) == aliases
        assert scheme.summary == summary
