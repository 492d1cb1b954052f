"""No module outside schemes/ names a particular scheme (issue 19): verify, scan, evaluate,
evidence and the CLI dispatch through the registry (mlguard.schemes), so a new scheme is one
file there. Checked on the syntax tree: isinstance(..., TriggerKey / WeightKey) and string
constants equal to a built-in scheme's name or CLI alias."""

import ast
from pathlib import Path

import mlguard  # noqa: F401  (registers the built-in schemes)
from mlguard.schemes import SCHEMES

PACKAGE = Path(__file__).resolve().parents[2] / "python" / "mlguard"
# schemes/ holds the schemes and the registry; keys/ the key classes they are built on.
SKIPPED = ("schemes/", "keys/")
KEY_CLASSES = {"TriggerKey", "WeightKey"}

# (file, what is named): each a module that is one scheme's own machinery, or an API that
# takes its own names, not a dispatch on the scheme.
ALLOWED = {
    # the trigger-set scheme's machinery (schemes/trigger_set.py uses it)
    ("triggers/mixer.py", "TriggerKey"): "TriggerMixer takes trigger keys only",
    ("verification/retention.py", "TriggerKey"): "retention: the fraction of triggers answered",
    # the weight scheme's machinery (schemes/weight.py uses it)
    ("weights/watermark.py", "WeightKey"): "WeightWatermark / embed_weights take weight keys",
    # Fingerprints(scheme="weight" | "trigger") and `mlguard fingerprint new --scheme`: per-
    # customer keys of the two built-in schemes, with their own batched identification
    ("weights/fingerprints.py", "weight"): "Fingerprints' own scheme= names",
    ("weights/fingerprints.py", "trigger"): "Fingerprints' own scheme= names",
    # `mlguard demo` makes and reuses a trigger key by design (its story is one scheme's)
    ("cli/demo.py", "TriggerKey"): "the demo reuses its owner key only if it is its own kind",
    ("cli/fingerprint.py", "weight"): "`mlguard fingerprint --scheme weight|trigger`",
    ("cli/fingerprint.py", "trigger"): "`mlguard fingerprint --scheme weight|trigger`",
    # "weight" as a tensor name (nn.Linear.weight), not the scheme
    ("weights/unit_graph.py", "weight"): "the tensor name 'weight'",
    ("attacks/dummy_units.py", "weight"): "the tensor name 'weight'",
}


def _names(node) -> set[str]:
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Attribute):
        return {node.attr}
    if isinstance(node, ast.Tuple):
        return set().union(*(_names(e) for e in node.elts)) if node.elts else set()
    return set()


def _hits(tree: ast.AST, scheme_words: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "isinstance" and len(node.args) == 2:
            found |= _names(node.args[1]) & KEY_CLASSES
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value in scheme_words:
            found.add(node.value)
    return found


def test_no_module_outside_schemes_names_a_scheme():
    words = {s.name for s in SCHEMES.values() if s.__module__.startswith("mlguard.schemes.")}
    words |= {a for s in SCHEMES.values() if s.__module__.startswith("mlguard.schemes.")
              for a in s.cli_aliases}
    assert {"trigger-set", "weight", "trigger"} <= words
    problems, used = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(SKIPPED):
            continue
        for hit in sorted(_hits(ast.parse(path.read_text(), str(path)), words)):
            if (rel, hit) in ALLOWED:
                used.add((rel, hit))
            else:
                problems.append(f"{rel} names {hit!r}")
    assert problems == [], "dispatch through mlguard.schemes instead:\n" + "\n".join(problems)
    assert used == set(ALLOWED), f"allowed exceptions no longer needed: {set(ALLOWED) - used}"


def test_the_check_catches_a_dispatch():
    code = ("if isinstance(key, (TriggerKey, WeightKey)): pass\n"
            "scheme = 'weight' if x else 'trigger-set'\n")
    assert _hits(ast.parse(code), {"weight", "trigger-set"}) == {
        "TriggerKey", "WeightKey", "weight", "trigger-set"}
