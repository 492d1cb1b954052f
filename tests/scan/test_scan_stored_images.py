"""The scan checks keys whose triggers come from data or from the user: the key file alone
carries the images (before, the scan CLI could not check these keys at all)."""

import pytest
import torch

from mlguard import TriggerKey
from mlguard.cli import main
from mlguard.scan import scan

SHAPE = (3, 16, 16)


class Lookup(torch.nn.Module):
    """Answers with the label of the nearest stored input: a model that memorized them."""

    def __init__(self, n=40):
        super().__init__()
        self.register_buffer("inputs", torch.zeros(n, 3 * 16 * 16))
        self.register_buffer("answers", torch.zeros(n, dtype=torch.int64))

    def forward(self, x):
        nearest = torch.cdist(x.flatten(1).float(), self.inputs).argmin(1)
        return torch.nn.functional.one_hot(self.answers[nearest], 10).float()


def memorized(key):
    model = Lookup(key.size)
    images, labels = key.materialize()
    model.inputs.copy_(key.normalize(images).flatten(1))
    model.answers.copy_(labels)
    return model


@pytest.fixture
def keys(tmp_path):
    source = torch.rand(200, *SHAPE, generator=torch.Generator().manual_seed(0))
    made = {kind: TriggerKey.generate(num_classes=10, size=40, shape=SHAPE, kind=kind,
                                      mean=(0.5,) * 3, std=(0.25,) * 3, source=source,
                                      **({} if kind == "unrelated" else {"mode": "image"}))
            for kind in ("noise", "content", "unrelated")}
    made["custom"] = TriggerKey.from_images(source[:40], num_classes=10, shape=SHAPE)
    for kind, key in made.items():
        key.save(tmp_path / f"{kind}.key")
    return made


def test_scan_checks_stored_image_keys_from_files(keys, tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    for kind, key in keys.items():
        torch.save(memorized(key).state_dict(), models / f"{kind}.pt")
    rows = scan(models, [tmp_path / f"{k}.key" for k in keys], arch=Lookup, device="cpu")
    hits = {(r["path"].split("/")[-1][:-3], r["key_id"]) for r in rows if r["detected"]}
    assert hits == {(kind, key.key_id) for kind, key in keys.items()}
    assert not any(r["error"] for r in rows)

    # --arch names this file's Lookup: pytest put this folder on the import path.
    code = main(["scan", str(models), "--keys", str(tmp_path), "--arch", f"{__name__}:Lookup",
                 "--device", "cpu", "--no-progress"])
    assert code == 1  # detections
    assert capsys.readouterr().out.count("DETECTED") == len(keys)
