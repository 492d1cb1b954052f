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


@pytest.fixture(scope="module")
def two_owners(tmp_path_factory):
    """Two owners' marked small_cnns (different weights), a stacked copy of each."""
    folder = tmp_path_factory.mktemp("two_owners")
    owners = []
    for n in (0, 1):
        torch.manual_seed(10 + n)
        model = small_cnn().eval()
        key = WeightKey.generate(bits=96, targets=("7.weight",), secret=bytes([n + 1] * 32))
        embed_weights(model, key, strength=1.0)
        stacked = attacks.add_dummy_units(attacks.rescale(attacks.permute(model, 4 + n), 2),
                                          3, 3)
        torch.save(stacked.state_dict(), folder / f"copy-of-{n}.pt")
        owners.append((model, key))
    return owners, folder


def test_scan_with_a_reference_per_key(two_owners):
    (model_a, key_a), (model_b, key_b) = two_owners[0]
    folder = two_owners[1]
    ref_a, ref_b = Reference(model_a), Reference(model_b)
    rows = scan(folder, [key_a, key_b], device="cpu", progress=False,
                reference={key_a.commitment(): ref_a, key_b.commitment(): ref_b})
    got = {(r["path"].rsplit("/", 1)[-1], r["commitment"]): r for r in rows}
    a, b = key_a.commitment(), key_b.commitment()
    assert got[("copy-of-0.pt", a)]["detected"] and got[("copy-of-0.pt", a)]["matches"] == 96
    assert got[("copy-of-1.pt", b)]["detected"] and got[("copy-of-1.pt", b)]["matches"] == 96
    assert not got[("copy-of-0.pt", b)]["detected"] and not got[("copy-of-1.pt", a)]["detected"]
    for (_, c), row in got.items():  # each key was read against its own owner's reference
        sha = (ref_a if c == a else ref_b).sha256
        assert row["extra"]["alignment"]["reference_sha256"] == sha
    # one reference for both: only the first owner's copy comes back for its key
    rows = scan(folder, [key_a, key_b], device="cpu", progress=False, reference=ref_a)
    got = {(r["path"].rsplit("/", 1)[-1], r["commitment"]): r for r in rows}
    assert got[("copy-of-0.pt", a)]["detected"] and not got[("copy-of-1.pt", b)]["detected"]


def test_scan_per_key_reference_leaves_other_keys_unaligned(two_owners):
    (model_a, key_a), (_, key_b) = two_owners[0]
    rows = scan(two_owners[1], [key_a, key_b], device="cpu", progress=False,
                reference={key_a.commitment(): model_a})
    for row in rows:
        invariant = row["extra"]["permutation_invariant"]
        assert invariant == (row["commitment"] == key_a.commitment())
    with pytest.raises(ValueError, match="no key with commitment"):
        scan(two_owners[1], [key_a], device="cpu", progress=False,
             reference={key_b.commitment(): model_a})


def test_scan_aligns_each_model_once_per_reference(two_owners, monkeypatch):
    from mlguard.weights import align as align_module
    (model_a, key_a), (model_b, key_b) = two_owners[0]
    key_c = WeightKey.generate(bits=64, targets=("7.weight",), secret=bytes([9] * 32))
    calls = []
    real = align_module.align
    monkeypatch.setattr(align_module, "align",
                        lambda s, r, **kw: calls.append(r.sha256) or real(s, r, **kw))
    ref_a = Reference(model_a)
    scan(two_owners[1], [key_a, key_b, key_c], device="cpu", progress=False,
         reference={key_a.commitment(): ref_a, key_c.commitment(): ref_a,
                    key_b.commitment(): Reference(model_b)})
    assert len(calls) == 4  # 2 files x 2 references, not x 3 keys


def test_journal_keeps_per_key_references_apart(two_owners, tmp_path):
    (model_a, key_a), (model_b, key_b) = two_owners[0]
    per_key = {key_a.commitment(): model_a, key_b.commitment(): model_b}
    journal = tmp_path / "j.db"
    scan(two_owners[1], [key_a, key_b], device="cpu", progress=False, reference=per_key,
         journal=journal)
    again = scan(two_owners[1], [key_a, key_b], device="cpu", progress=False,
                 reference=per_key, journal=journal)  # resumes: same references
    assert sum(r["detected"] for r in again) == 2
    with pytest.raises(ValueError, match="other settings.*reference"):
        scan(two_owners[1], [key_a, key_b], device="cpu", progress=False, reference=model_a,
             journal=journal)
