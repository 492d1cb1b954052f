"""A researcher's own scheme, registered from their script, gets the whole toolchain
(issue 19): the example in docs/schemes.md, executed from the docs' text, through key
generation, save / load_key, embed, verify, a scan of a folder, evidence and the CLI."""

import re
import sys
import types
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

import mlguard
from mlguard.cli.main import main
from mlguard.ownership.identity import Identity
from mlguard.schemes import SCHEMES
from mlguard.verification.verdict import make_verdict

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemes.md"


@pytest.fixture(scope="module")
def docs_scheme():
    """The docs' example, exec'd as a user's script would run it; unregistered afterwards."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert blocks, "docs/schemes.md has no python code block"
    module = types.ModuleType("users_own_scheme")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(blocks[0], str(DOCS), "exec"), module.__dict__)
    yield module
    SCHEMES.pop(module.MeanSigns.name, None)
    sys.modules.pop(module.__name__, None)


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def _loader():
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(16, 1, 4, 4, generator=g), torch.randint(3, (16,), generator=g))
            for _ in range(4)]


def test_the_docs_scheme_gets_the_whole_toolchain(docs_scheme, tmp_path, capsys):
    scheme = mlguard.get_scheme("mean-signs")
    assert scheme is docs_scheme.MeanSigns and mlguard.schemes.scheme_of(
        scheme.generate(target="1.weight")) is scheme
    # keys: generation, a file, load_key by the body's "scheme" field
    key = scheme.generate(target="1.weight", bits=32)
    key.save(tmp_path / "owner.key")
    loaded = mlguard.load_key(tmp_path / "owner.key")
    assert loaded == key and loaded.commitment() == key.commitment()

    # embed: the scheme's embedding (a loss term) in mlguard.embed's loop, until detected
    model = _net(1)
    verdict = mlguard.embed(model, key, _loader(), 30,
                            torch.optim.SGD(model.parameters(), lr=0.5), strength=2.0)
    assert verdict.detected and verdict.scheme == "mean-signs" and verdict.total == 32
    with pytest.raises(TypeError, match="per_kilo"):
        mlguard.embed(_net(1), key, _loader(), 1, torch.optim.SGD(model.parameters(), lr=0.1),
                      per_kilo=3)

    # verify: a module, a state_dict file (no arch: needs_module is False); a clean twin
    suspects = tmp_path / "suspects"
    suspects.mkdir()
    safetensors.torch.save_file(model.state_dict(), suspects / "marked.safetensors")
    safetensors.torch.save_file(_net(2).state_dict(), suspects / "clean.safetensors")
    on_file = mlguard.verify(suspects / "marked.safetensors", key)
    assert on_file.detected and on_file.matches == verdict.matches and on_file.file_sha256
    clean = mlguard.verify(_net(2), key)
    assert not clean.detected and clean.chance == 0.5

    # evaluate: the key read on each attacked model, named by its scheme
    x, y = _loader()[0]
    report = mlguard.evaluate(model, key, [("prune", {"amount": 0.1})], test_data=(x, y),
                              progress=False)
    assert [(r.attack, r.key, r.scheme) for r in report.rows] == [
        ("none", "mean-signs", "mean-signs"), ("prune", "mean-signs", "mean-signs")]
    assert report.rows[0].matches == verdict.matches

    # scan of a folder, with the key file
    rows = mlguard.scan(suspects, [tmp_path / "owner.key"], device="cpu", progress=False)
    by_file = {Path(r["path"]).name: r for r in rows}
    assert by_file["marked.safetensors"]["detected"]
    assert by_file["marked.safetensors"]["scheme"] == "mean-signs"
    assert not by_file["clean.safetensors"]["detected"]
    assert by_file["clean.safetensors"]["error"] is None

    # evidence: signed, checked, and the opened key's expected_test enforced
    owner = Identity.generate()
    doc = mlguard.evidence([on_file], suspects / "marked.safetensors",
                           opening=mlguard.reveal(key), identity=owner, command="x")
    assert mlguard.check_evidence(doc, suspects / "marked.safetensors") == []
    wrong = make_verdict("mean-signs", on_file.matches, 40, 0.5, on_file.alpha,
                         on_file.commitment, on_file.weights_sha256, on_file.device,
                         file_sha256=on_file.file_sha256)
    with pytest.raises(ValueError, match="implies 32 trials at chance 0.5"):
        mlguard.evidence([wrong], suspects / "marked.safetensors",
                         opening=mlguard.reveal(key), identity=owner, command="x")

    # the CLI: `mlguard key new mean-signs OUT ...`, listed with its summary
    out = tmp_path / "cli.key"
    assert main(["key", "new", "mean-signs", str(out), "--target", "1.weight",
                 "--bits", "16"]) == 0
    made = mlguard.load_key(out)
    assert isinstance(made, docs_scheme.SignKey) and len(made.message) == 16
    assert main(["key", "new", "mean-signs", str(out), "--target", "1.weight"]) == 2  # exists
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["key", "new", "--help"])
    assert "mean-signs: signs of keyed weight-subset means" in capsys.readouterr().out


def test_a_missing_tensor_is_an_error_not_a_count(docs_scheme, tmp_path):
    key = docs_scheme.MeanSigns.generate(target="nope.weight")
    with pytest.raises(ValueError, match="no tensor 'nope.weight'"):
        mlguard.verify(_net(1), key)
    folder = tmp_path / "m"
    folder.mkdir()
    safetensors.torch.save_file(_net(1).state_dict(), folder / "a.safetensors")
    rows = mlguard.scan(folder, [key], device="cpu", progress=False)
    assert rows[0]["error"] == "mean-signs key: the model has no tensor 'nope.weight'"
