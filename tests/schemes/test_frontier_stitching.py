"""Frontier Stitching (schemes/frontier_stitching.py): keys, embedding, reading, null."""

import math

import pytest
import torch

from mlguard.keys import keyfile
from mlguard.schemes import get_scheme, scheme_of
from mlguard.schemes.frontier_stitching import FrontierStitching, FrontierStitchingKey
from mlguard.verification.verdict import make_verdict

from _adversarial_models import MEAN, STD, fine_tune, read, shared_models

SECRET = bytes(range(32))
ALPHA = 1e-3  # 50 true adversaries, bound near 0.75: 0.75**50 ~ 6e-7 at best


@pytest.fixture(scope="module")
def setup():
    m = shared_models()
    x, y, owner, refs = m["x"], m["y"], m["owner"], m["refs"]
    key = FrontierStitchingKey.generate(model=owner, images=x[50000:51500],
                                        labels=y[50000:51500], reference_models=refs, size=100,
                                        eps=0.25, mean=MEAN, std=STD, secret=SECRET)
    marked = fine_tune(owner, "frontier-stitching", key, x[:2000], y[:2000], per_batch=32)
    twin = m["twin"]
    return {"x": x, "y": y, "owner": owner, "refs": refs, "key": key, "marked": marked,
            "twin": twin}


def test_registered():
    assert get_scheme("frontier-stitching") is FrontierStitching


def test_key_holds_half_true_half_false_adversaries_with_true_labels(setup):
    key = setup["key"]
    assert key.size == 100 and key.total == 50 and scheme_of(key) is FrontierStitching
    x, y = key.materialize()
    assert torch.equal(x * 255, (x * 255).round())  # stored losslessly as uint8
    # the owner's (pre-embedding) model flips exactly the true adversaries
    owner_wrong = read("frontier-stitching", key, setup["owner"])
    assert owner_wrong.matches == 0
    assert owner_wrong.extra["false_adversaries_correct"] == "50/50"
    assert 0.0 < key.chance < 1.0
    assert len(key.reference["matches"]) == 3


def test_round_trip_through_a_key_file(setup, tmp_path):
    key = setup["key"]
    key.save(tmp_path / "fs.key")
    again = FrontierStitchingKey.from_body(keyfile.read_key_file(tmp_path / "fs.key"))
    assert again == key and again.commitment() == key.commitment()
    assert again.chance == key.chance


@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(extra=1), "exactly the fields"),
    (lambda b: b["true_adversaries"].pop(), "booleans"),
    (lambda b: b["labels"].__setitem__(0, 10), "outside"),
    (lambda b: b["reference"]["matches"].__setitem__(0, 51), "counts out of"),
    (lambda b: b["reference"].update(matches=[50, 50, 50]), "match every trial"),
    (lambda b: b.update(eps=0), "eps"),
    (lambda b: b.update(scheme="blackmarks"), "exactly the fields"),
])
def test_tampered_bodies_are_refused(setup, change, message):
    body = setup["key"].to_body()
    body = {**body, "reference": {k: list(v) for k, v in body["reference"].items()},
            "true_adversaries": list(body["true_adversaries"]), "labels": list(body["labels"])}
    change(body)
    with pytest.raises(ValueError, match=message):
        FrontierStitchingKey.from_body(body)


def test_generation_is_deterministic_from_the_secret(setup):
    key = setup["key"]
    x, y = setup["x"], setup["y"]
    again = FrontierStitchingKey.generate(model=setup["owner"], images=x[50000:51500],
                                          labels=y[50000:51500], reference_models=setup["refs"],
                                          size=100, eps=0.25, mean=MEAN, std=STD, secret=SECRET)
    a, b = key.to_body(), again.to_body()
    assert a.pop("nonce") != b.pop("nonce")
    assert a == b


def test_marked_model_detected_clean_twin_not(setup):
    key = setup["key"]
    marked = read("frontier-stitching", key, setup["marked"])
    twin = read("frontier-stitching", key, setup["twin"])
    assert (marked.total, marked.chance) == FrontierStitching.expected_test(key.to_body())
    assert "conservative" in marked.extra["null"]
    verdicts = [make_verdict("frontier-stitching", r.matches, r.total, r.chance, ALPHA,
                             key.commitment(), "0" * 64, "cpu") for r in (marked, twin)]
    assert verdicts[0].detected, (marked.matches, marked.total, marked.chance)
    assert not verdicts[1].detected, (twin.matches, twin.total, twin.chance)
    assert twin.matches / twin.total <= key.chance


def test_embedding_mixes_the_key_into_batches(setup):
    emb = FrontierStitching.embedding(setup["key"], per_batch=8)
    x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64)
    mx, my = emb.batch(x, y)
    assert mx.shape == (12, 1, 28, 28) and my.shape == (12,)
    assert float(emb.loss(setup["owner"], mx, my)) == 0.0
    with pytest.raises(ValueError, match="per_batch"):
        FrontierStitching.embedding(setup["key"], per_batch=0)
    with pytest.raises(ValueError, match="takes per_batch only"):
        FrontierStitching.embedding(setup["key"], lam=1)


def test_bad_arguments_are_refused(setup):
    x, y, owner, refs = setup["x"][:200], setup["y"][:200], setup["owner"], setup["refs"]
    base = dict(model=owner, images=x, labels=y, reference_models=refs, size=10, mean=MEAN,
                std=STD)
    with pytest.raises(ValueError, match="eps"):
        FrontierStitchingKey.generate(**{**base, "eps": 0})
    with pytest.raises(ValueError, match="size"):
        FrontierStitchingKey.generate(**{**base, "size": 1})
    with pytest.raises(ValueError, match="labels"):
        FrontierStitchingKey.generate(**{**base, "labels": y.float()})
    with pytest.raises(ValueError, match="images"):
        FrontierStitchingKey.generate(**{**base, "images": x[:, 0]})
    with pytest.raises(ValueError, match="reference_models"):
        FrontierStitchingKey.generate(**{**base, "reference_models": []})
    with pytest.raises(TypeError, match="model"):
        FrontierStitchingKey.generate(**{**base, "model": "net.pt"})
    with pytest.raises(ValueError, match="true and"):
        FrontierStitchingKey.generate(**{**base, "images": x[:4], "labels": y[:4]})
    with pytest.raises(ValueError, match="mean and std"):
        FrontierStitchingKey.generate(**{**base, "std": None})
    with pytest.raises(TypeError, match="FrontierStitchingKey"):
        FrontierStitching.embedding("key")
    assert math.isfinite(setup["key"].chance)


def test_key_new_options_build_a_key_from_files(setup, tmp_path):
    import argparse

    import numpy as np

    torch.save(setup["owner"].state_dict(), tmp_path / "owner.pt")
    for i, ref in enumerate(setup["refs"]):
        torch.save(ref.state_dict(), tmp_path / f"ref{i}.pt")
    np.savez(tmp_path / "own.npz", images=setup["x"][50000:50400].numpy(),
             labels=setup["y"][50000:50400].numpy())
    parser = argparse.ArgumentParser()
    FrontierStitching.add_arguments(parser)
    args = parser.parse_args([
        "--model", str(tmp_path / "owner.pt"), "--arch", "mlguard.cli.demo:small_cnn",
        "--references", *(str(tmp_path / f"ref{i}.pt") for i in range(3)),
        "--data", str(tmp_path / "own.npz"), "--size", "10",
        "--mean", str(MEAN[0]), "--std", str(STD[0])])
    key = FrontierStitching.from_arguments(args)
    assert key.size == 10 and key.total == 5 and key.mean == (MEAN[0],)
    args.data = str(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="--data"):
        FrontierStitching.from_arguments(args)


def test_verify_load_key_and_evaluate(setup, tmp_path):
    from _adversarial_models import toolchain_checks

    toolchain_checks(setup["key"], setup["marked"], setup["twin"], setup["x"][:500],
                     setup["y"][:500], ALPHA, tmp_path)
