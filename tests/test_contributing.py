"""The worked examples of docs/contributing.md work as written: an attack and a trigger kind,
each one file, reach the registries and everything that reads them. Each runs in its own
interpreter, so the examples never join the registries the other tests iterate over."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "contributing.md").read_text(),
                    re.S)


def _run(package: str, block: str, check: str, tmp_path: Path) -> None:
    """Runs a doc block as if it were a file of `package` (its relative imports resolved
    there), then `check`."""
    code = re.sub(r"^from \.(\w*) import", lambda m: f"from {package}{'.' + m[1] if m[1] else ''}"
                  " import", block, flags=re.M)
    script = tmp_path / "example.py"
    script.write_text(code + "\n" + textwrap.dedent(check))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "python"), str(ROOT / "tests")]))
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_doc_shows_one_attack_and_one_kind():
    assert len(BLOCKS) == 2


def test_the_worked_attack_is_in_evaluate_the_cli_and_the_registry(tmp_path):
    _run("mlguard.attacks", BLOCKS[0], """
        import contextlib, io
        from mlguard import WeightKey, evaluate
        from mlguard.attacks import get_attack
        from mlguard.cli import main
        from mlguard.cli.demo import small_cnn
        from mlguard.evaluation import parse_cli

        assert get_attack("SVD").fn is low_rank
        assert parse_cli("svd:2") == [("low_rank", {"rank": 2})]
        torch.manual_seed(0)
        model = small_cnn()
        attacked = low_rank(model, **get_attack("low_rank").example)
        for m in attacked.modules():
            if isinstance(m, nn.Linear):
                assert torch.linalg.matrix_rank(m.weight) <= 4
        x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
        key = WeightKey.generate(bits=16, targets=("9.weight",))
        report = evaluate(model, key, [("low_rank", {"rank": [1, 2]})], test_data=(x, y),
                          progress=False)
        assert [r.attack for r in report.rows] == ["none", "low_rank", "low_rank"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main(["evaluate", "--list-attacks"])
        assert "low_rank (svd)" in out.getvalue()
    """, tmp_path)


def test_the_worked_kind_makes_saves_and_verifies_keys(tmp_path):
    _run("mlguard.keys.kinds", BLOCKS[1], f"""
        from mlguard import TriggerKey, load_key, verify
        from memorizer import Memorizer

        key = TriggerKey.generate(10, 20, (1, 8, 8), kind="speckle")
        images, labels = key.materialize()
        assert images.shape == (20, 1, 8, 8) and set(images.unique().tolist()) == {{0.0, 1.0}}
        assert key.stored_images is None
        key.save({str(tmp_path / "speckle.key")!r})
        again = load_key({str(tmp_path / "speckle.key")!r})
        assert again.commitment() == key.commitment()
        assert torch.equal(again.materialize()[0], images)
        assert verify(Memorizer(again, 20), again).detected
    """, tmp_path)
