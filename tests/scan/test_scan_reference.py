"""scan(reference=...): weight keys find permuted / widened copies; without it, as before."""

import pytest
import torch

from mlguard import WeightKey, attacks, scan
from mlguard.cli.demo import small_cnn
from mlguard.weights import embed_weights
from mlguard.weights.align import Reference


@pytest.fixture(scope="module")
def owned(tmp_path_factory):
    torch.manual_seed(0)
    model = small_cnn().eval()
    key = WeightKey.generate(bits=96, targets=("7.weight",), secret=bytes(range(32)))
    embed_weights(model, key, strength=1.0)
    folder = tmp_path_factory.mktemp("suspects")
    torch.save(attacks.permute(model, 1).state_dict(), folder / "permuted.pt")
    stacked = attacks.add_dummy_units(attacks.rescale(attacks.permute(model, 2), 2), 4, 3)
    torch.save(stacked.state_dict(), folder / "stacked.pt")
    torch.manual_seed(5)
    torch.save(small_cnn().state_dict(), folder / "unrelated.pt")
    torch.save({"0.weight": torch.zeros(3)}, folder / "broken.pt")
    return model, key, folder


def by_file(rows):
    return {r["path"].rsplit("/", 1)[-1]: r for r in rows}


def test_scan_with_reference_finds_the_transformed_copies(owned, tmp_path):
    model, key, folder = owned
    ref = Reference(model)
    rows = by_file(scan(folder, [key], device="cpu", progress=False, reference=ref,
                        journal=tmp_path / "j.db"))
    assert rows["permuted.pt"]["detected"] and rows["permuted.pt"]["matches"] == 96
    assert rows["stacked.pt"]["detected"] and rows["stacked.pt"]["matches"] == 96
    assert rows["stacked.pt"]["extra"]["alignment"]["units_dropped"] == 12
    assert rows["stacked.pt"]["extra"]["alignment"]["reference_sha256"] == ref.sha256
    assert not rows["unrelated.pt"]["detected"]
    assert "alignment to the reference failed" in rows["broken.pt"]["error"]
    # the journal was written with the reference: reading it without one is refused
    with pytest.raises(ValueError, match="other settings.*reference"):
        scan(folder, [key], device="cpu", progress=False, journal=tmp_path / "j.db")


def test_scan_without_reference_reads_as_before(owned):
    _, key, folder = owned
    rows = by_file(scan(folder, [key], device="cpu", progress=False))
    assert not rows["permuted.pt"]["detected"]
    assert rows["permuted.pt"]["extra"]["permutation_invariant"] is False
