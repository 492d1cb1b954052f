"""DeepMarks (schemes/deepmarks.py): the AND-ACC code, masked exact reads, averaged colluders."""

from __future__ import annotations

import argparse
import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

from mlguard.keys import keyfile
from mlguard.schemes import ReadOptions, Suspect, get_scheme, scheme_of
from mlguard.schemes.deepmarks import DeepMarks, DeepMarksKey, identify, projective_plane
from mlguard.verification.verdict import make_verdict

SECRET = bytes(range(32))
# q = 3: 13 users, lines of 4 points; 6 repeats: 24 positions per user (2^-24 < 1e-6).
ARGS = dict(targets=("1.weight",), q=3, repeats=6)


def _key(user=0, secret=SECRET, **kw):
    return DeepMarksKey.generate(user=user, secret=secret, **{**ARGS, **kw})


def _base():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def _marked(base, key, steps=150):
    model = copy.deepcopy(base)
    emb = DeepMarks.embedding(key)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = emb.loss(model, None, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _average(models):
    out = copy.deepcopy(models[0])
    out.load_state_dict({k: sum(m.state_dict()[k] for m in models) / len(models)
                         for k in out.state_dict()})
    return out


def test_projective_plane_is_a_bibd():
    for q in (2, 3, 5, 7):
        inc = projective_plane(q).astype(np.int64)
        v = q * q + q + 1
        assert inc.shape == (v, v)
        assert (inc.sum(1) == q + 1).all() and (inc.sum(0) == q + 1).all()
        meet = inc @ inc.T
        assert (meet[~np.eye(v, dtype=bool)] == 1).all()  # two lines meet in one point
    with pytest.raises(ValueError, match="prime"):
        projective_plane(4)


def test_and_of_two_codes_is_unique_and_names_them():
    codes = _key().codes
    seen = {}
    for a, b in itertools.combinations(range(len(codes)), 2):
        both = tuple((codes[a] & codes[b]).tolist())
        assert both not in seen
        seen[both] = (a, b)
        zeros = torch.tensor(both) == 0
        inside = [u for u in range(len(codes)) if bool(zeros[codes[u] == 0].all())]
        assert inside == [a, b]


def test_key_round_trip_and_tampering(tmp_path):
    key = _key(5).with_label("customer-5")
    key.save(tmp_path / "u5.key")
    again = DeepMarksKey.from_body(keyfile.read_key_file(tmp_path / "u5.key"))
    assert again == key and again.commitment() == key.commitment()
    for change in ({"q": 4}, {"user": 13}, {"repeats": 0}, {"reduce": "max"},
                   {"targets": []}, {"scheme": "weight"}, {"secret": "ab"}):
        body = {**key.to_body(), **change}
        with pytest.raises(ValueError):
            DeepMarksKey.from_body(body)
    body = key.to_body()
    del body["targets"]
    with pytest.raises(ValueError, match="missing"):
        DeepMarksKey.from_body(body)


def test_keys_are_reproducible_from_the_master():
    a, b = _key(3), _key(0).for_user(3)
    assert a == b and a.commitment() == b.commitment()
    assert _key(3).commitment() != _key(4).commitment()
    assert not torch.equal(_key(secret=bytes(32)).mask, a.mask)
    assert get_scheme("deepmarks") is DeepMarks and scheme_of(a) is DeepMarks
    assert DeepMarks.expected_test(a.to_body()) == (4 * 6, 0.5)


def test_users_copies_are_named_alone_and_averaged():
    base = _base()
    models = [_marked(base, _key(u)) for u in range(3)]
    for u, model in enumerate(models):
        r = DeepMarks.read(_key(u), Suspect(None, model.state_dict()), ReadOptions())
        assert r.matches == r.total == 24 and "exact" in r.extra["null"]
        assert make_verdict("deepmarks", r.matches, r.total, r.chance, 1e-6, "c", "w",
                            "cpu").detected
        found = identify(model, _key(0))
        assert found.named == [u] and found.decoded == [u]
    for group in ((0, 1), (0, 1, 2)):
        found = identify(_average([models[u] for u in group]), _key(0))
        assert found.named == list(group) and found.decoded == list(group)
    clean = identify(base, _key(0))
    assert clean.named == [] and clean.decoded == []


def test_read_many_reads_each_master_once_and_matches_read():
    base = _base()
    model = _marked(base, _key(2))
    keys = [_key(u) for u in range(13)] + [_key(2, secret=bytes(32))]
    rows = DeepMarks.read_many(keys, [Suspect(model, None), Suspect(None, base.state_dict())],
                               ReadOptions())
    assert [r.matches for r in rows[0][:13]] == [
        DeepMarks.read(_key(u), Suspect(model, None), ReadOptions()).matches for u in range(13)]
    assert rows[0][2].matches == 24 and rows[0][13].matches < 24
    assert all(r.total == 24 for r in rows[1])


def test_null_is_binomial_for_independent_masters():
    """A fixed model against 400 fresh masters: the count is Binomial(24, 1/2)."""
    model = _base()
    counts = [DeepMarks.read(_key(0, secret=bytes([i % 256, i // 256]) + bytes(30)),
                             Suspect(model, None), ReadOptions()).matches for i in range(400)]
    assert abs(np.mean(counts) - 12) < 0.6 and 4.0 < np.var(counts) < 8.5


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="user"):
        _key(13)
    with pytest.raises(ValueError, match="prime"):
        _key(q=6)
    with pytest.raises(ValueError, match="margin_zero"):
        DeepMarks.embedding(_key(), margin_one=3.0, margin_zero=2.0)
    with pytest.raises(ValueError, match="not a parameter"):
        DeepMarks.read(_key(targets=("9.weight",)), Suspect(_base(), None), ReadOptions())
    with pytest.raises(ValueError, match="more than"):  # 7 * 57 bits in 4 * 64 weights
        DeepMarks.embedding(_key(q=7, repeats=7, targets=("3.weight",))).loss(_base())


def test_command_line_arguments(tmp_path):
    parser = argparse.ArgumentParser()
    DeepMarks.add_arguments(parser)
    first = DeepMarks.from_arguments(parser.parse_args(["--targets", "7.weight", "--q", "5"]))
    assert first.user == 0 and first.users == 31
    first.save(tmp_path / "u0.key")
    other = DeepMarks.from_arguments(parser.parse_args(
        ["--targets", "7.weight", "--q", "5", "--user", "4", "--family", str(tmp_path / "u0.key")]))
    assert other == first.for_user(4)
    with pytest.raises(ValueError, match="differ"):
        DeepMarks.from_arguments(parser.parse_args(
            ["--targets", "7.weight", "--user", "4", "--family", str(tmp_path / "u0.key")]))


def test_attacker_key_is_a_fresh_master():
    key = _key(3)
    fresh = DeepMarks.attacker_key(key)
    assert fresh.secret != key.secret and (fresh.targets, fresh.q, fresh.repeats) == (
        key.targets, key.q, key.repeats)


def test_verify_and_load_key_through_the_registry(tmp_path):
    from mlguard import verify
    from mlguard.keys import load_key

    key = _key(4)
    key.save(tmp_path / "u4.key")
    loaded = load_key(tmp_path / "u4.key")
    assert loaded == key and isinstance(loaded, DeepMarksKey)
    base = _base()
    v = verify(_marked(base, key), loaded)
    assert v.detected and v.matches == v.total == 24 and v.chance == 0.5
    assert not verify(_marked(base, _key(5)), loaded).detected  # another user's copy
    assert not verify(base, loaded).detected


def test_scan_of_state_dict_files_names_each_copy(tmp_path):
    from mlguard import scan

    base = _base()
    for name, model in (("u0", _marked(base, _key(0))), ("u1", _marked(base, _key(1))),
                        ("base", base)):
        torch.save(model.state_dict(), tmp_path / f"{name}.pt")
    keys = [_key(u).with_label(f"user-{u}") for u in range(3)]
    result = scan(str(tmp_path), keys, device="cpu", progress=False)
    assert not result.errors and len(result) == 9
    found = {(r["path"].rsplit("/", 1)[-1], r["key_label"]) for r in result.detections}
    assert found == {("u0.pt", "user-0"), ("u1.pt", "user-1")}


def test_embed_evaluate_and_key_new_through_the_toolchain(tmp_path):
    import mlguard
    from mlguard.cli import main

    key = _key(2)
    model = _base()
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 4, (64,))
    verdict = mlguard.embed(model, key, [(x, y)], 200, torch.optim.Adam(model.parameters(), 1e-2))
    assert verdict.detected and verdict.scheme == "deepmarks" and verdict.total == 24
    report = mlguard.evaluate(model, key, [("prune", {"amount": 0.1})], test_data=(x, y),
                              progress=False)
    assert [r.attack for r in report.rows] == ["none", "prune"]
    assert report.rows[0].matches == verdict.matches
    out = tmp_path / "u3.key"
    assert main(["key", "new", "deepmarks", str(out), "--targets", "7.weight", "--user", "3",
                 "--label", "customer-3"]) == 0
    made = mlguard.load_key(out)
    assert isinstance(made, DeepMarksKey) and made.user == 3 and made.label == "customer-3"
