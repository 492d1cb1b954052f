"""evaluate(): one row per (attack, parameters, key), each scored on the attacked model
itself; the report in every format."""

import csv
import io
import json
import math

import pytest
import torch
from torch import nn

from mlguard import RobustnessReport, TriggerKey, WeightKey, attacks, evaluate, verify
from mlguard.attacks import Stack, stack
from mlguard.evaluation import parse_cli
from mlguard.evaluation.report import Row


def memorized(key: TriggerKey, steps: int = 150):
    """A small MLP trained on the key's triggers alone: detected until an attack breaks it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    images, labels = key.materialize()
    x = key.normalize(images)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def setup():
    key = TriggerKey.generate(num_classes=10, size=40, shape=(1, 8, 8), kind="abstract",
                              mean=(0.5,), std=(0.25,), secret=bytes(range(32)))
    wkey = WeightKey.generate(bits=64, targets=("1.weight",), secret=bytes(range(1, 33)))
    model = memorized(key)
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(60, 1, 8, 8, generator=g), torch.randint(0, 10, (60,), generator=g))
    return model, key, wkey, data


def test_rows_per_attack_params_and_key_scored_on_the_attacked_model(setup):
    model, key, wkey, data = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    made = []

    def zero_head(m):
        out = nn.Sequential(*[type(l)(*(l.in_features, l.out_features)) if isinstance(l, nn.Linear)
                              else l for l in m])
        out.load_state_dict(m.state_dict())
        with torch.no_grad():
            out[3].weight.zero_()
        made.append(out)
        return out

    report = evaluate(model, {"mine": key, "w": wkey},
                      [("prune", {"amount": [0.0, 1.0]}), "cast", zero_head],
                      data, data, progress=False)
    assert isinstance(report, RobustnessReport)
    assert [(r.attack, r.params, r.key) for r in report.rows] == [
        ("none", "", "mine"), ("none", "", "w"),
        ("prune", "amount=0.0", "mine"), ("prune", "amount=0.0", "w"),
        ("prune", "amount=1.0", "mine"), ("prune", "amount=1.0", "w"),
        ("cast", "", "mine"), ("cast", "", "w"),
        ("zero_head", "", "mine"), ("zero_head", "", "w")]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the input model is never changed
    rows = {(r.attack, r.params, r.key): r for r in report.rows}
    base = verify(model, key)
    assert rows["none", "", "mine"].matches == base.matches and base.detected
    assert rows["none", "", "mine"].detected and rows["none", "", "w"].total == 64
    assert rows["prune", "amount=0.0", "mine"].matches == base.matches
    assert not rows["prune", "amount=1.0", "mine"].detected  # every weight zero
    assert rows["prune", "amount=1.0", "mine"].info["pruned_fraction"] == 1.0
    # the callable's own model was scored, not the original's parts
    direct = verify(made[0], key)
    assert rows["zero_head", "", "mine"].matches == direct.matches
    assert rows["zero_head", "", "mine"].log10_p == pytest.approx(
        direct.log_p_value / math.log(10))
    for r in report.rows:
        assert r.accuracy_change == pytest.approx(r.accuracy - report.base_accuracy)
        assert r.seconds >= 0


def test_query_attacks_get_the_keys_normalization_and_overwrite_a_fresh_key(setup):
    model, key, wkey, data = setup
    report = evaluate(model, [key, wkey], [("blur", {"sigma": 1.0}), ("overwrite", {"epochs": 1})],
                      data, data, progress=False)
    blur = [r for r in report.rows if r.attack == "blur"]
    assert blur[0].key == "abstract" and blur[1].key == "weight"
    assert blur[1].matches == report.rows[1].matches  # same weights: the weight key reads alike
    over = [r for r in report.rows if r.attack == "overwrite"]
    assert "abstract trigger key" in over[0].params and over[0].info["key_kind"] == "abstract"


def test_attack_specs_are_checked(setup):
    model, key, _, data = setup
    with pytest.raises(ValueError, match="unknown attack 'shred'"):
        evaluate(model, key, ["shred"], data, data, progress=False)
    with pytest.raises(TypeError, match=r"attacks\[0\]"):
        evaluate(model, key, [42], data, data, progress=False)
    with pytest.raises(ValueError, match="keys is empty"):
        evaluate(model, [], ["cast"], data, data, progress=False)
    with pytest.raises(ValueError, match="amount"):
        evaluate(model, key, [("prune", {"amount": 2.0})], data, data, progress=False)
    with pytest.raises(ValueError, match=r"attacker_data is None, but attacks \['ftal'\]"):
        evaluate(model, key, ["cast", "ftal"], None, data, progress=False)
    with pytest.raises(TypeError, match="test_data must be a torch DataLoader"):
        evaluate(model, key, ["cast"], data, [1, 2], progress=False)
    no_data = evaluate(model, key, ["cast"], None, data, progress=False)
    assert no_data.attacker == "no data (no attack here uses any)" and len(no_data.rows) == 2


def test_parse_cli():
    assert parse_cli("ftal,prune:0.5,quantize:4,noise:0.5,fine_prune:0.5:epochs=2,cast:bf16") == [
        ("ftal", {}), ("prune", {"amount": 0.5}), ("quantize", {"bits": 4}),
        ("weight_noise", {"sigma": 0.5}), ("fine_prune", {"amount": 0.5, "epochs": 2}),
        ("cast", {"dtype": "bf16"})]
    assert parse_cli("retrain:10:arch=mlguard.evaluation.archs:fashion_mlp:labels=soft") == [
        ("retrain", {"epochs": 10, "arch": "mlguard.evaluation.archs:fashion_mlp",
                     "labels": "soft"})]
    with pytest.raises(ValueError, match="write extra parameters as key=value"):
        parse_cli("fine_prune:0.5:epochs=2:3")  # a number is never a factory's ':' tail
    with pytest.raises(ValueError, match="unknown attack"):
        parse_cli("ftal,nope")
    with pytest.raises(ValueError, match="empty attack"):
        parse_cli("ftal,,prune")


def sample_report():
    rows = [Row("none", "", "abstract", "trigger-set", 0.9, 0.0, 40, 40, 0.0, -40.0, True, 0.0),
            Row("prune", "amount=0.9", "abstract", "trigger-set", 0.5, -0.4, 5, 40, 0.6,
                -0.22, False, 1.5, {"pruned_fraction": 0.9})]
    return RobustnessReport(rows=rows, alpha=1e-6, base_accuracy=0.9, attacker="12 images",
                            test="8 samples")


def test_report_formats(tmp_path):
    report = sample_report()
    md = report.to_markdown(tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text() == md
    assert "| prune | amount=0.9 | abstract | 50.00% | -40.00 | 5/40 | 0.603 | **no** | 1.5 |" in md
    assert "1.00e-40" in md and "12 images" in md
    table = list(csv.DictReader(io.StringIO(report.to_csv(tmp_path / "r.csv"))))
    assert len(table) == 2 and table[1]["attack"] == "prune" and table[1]["detected"] == "False"
    loaded = json.loads(report.to_json(tmp_path / "r.json"))
    assert loaded["rows"][1]["info"] == {"pruned_fraction": 0.9} and loaded["alpha"] == 1e-6
    assert RobustnessReport.from_dict(loaded) == report
    with pytest.raises(ValueError, match="not a RobustnessReport"):
        RobustnessReport.from_dict({"rows": []})
    html = report._repr_html_()
    assert html.count("<tr") == 3 and "amount=0.9" in html
    report.plot(tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_to_pandas_or_a_clear_error():
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="to_pandas needs pandas"):
            sample_report().to_pandas()
    else:
        frame = sample_report().to_pandas()
        assert list(frame["attack"]) == ["none", "prune"]


# -- stacked attacks: steps in order as one attack, each given what it needs --------------


def test_a_stack_is_its_steps_in_order(setup):
    model, key, wkey, data = setup
    report = evaluate(model, {"mine": key, "w": wkey},
                      [stack(("prune", {"amount": [0.3, 0.6]}), ("ftal", {"epochs": 1}))],
                      data, data, progress=False)
    stacked = [r for r in report.rows if r.attack == "prune+ftal"]
    assert [r.params for r in stacked[::2]] == ["prune(amount=0.3) + ftal(mode=FTAL, epochs=1)",
                                                "prune(amount=0.6) + ftal(mode=FTAL, epochs=1)"]
    steps = stacked[0].info["steps"]
    assert [s["attack"] for s in steps] == ["prune", "ftal"]
    assert steps[0]["pruned_fraction"] == pytest.approx(0.3, abs=0.01)
    assert steps[1]["attacker_samples"] == 60  # the data need reached the second step
    # the same as running the steps by hand
    by_hand = attacks.fine_tune(attacks.prune(model, 0.3), data, "FTAL", epochs=1)
    assert stacked[0].matches == verify(by_hand, key).matches


def test_stacks_are_checked_and_parsed():
    assert parse_cli("rtal:2+distill,cast") == [
        Stack((("rtal", {"epochs": 2}), ("distill", {}))), ("cast", {})]
    with pytest.raises(ValueError, match="at least two"):
        stack("ftal")
    with pytest.raises(TypeError, match="not stacks"):
        stack("ftal", stack("prune", "cast"))
    with pytest.raises(ValueError, match="unknown attack"):
        parse_cli("rtal+shred")
