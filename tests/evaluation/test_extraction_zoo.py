"""A tiny extraction zoo (benchmarks/extraction_zoo.py: 300 images per split, 1 epoch, one
victim, 3 independents) in the format docs/extraction_zoo.md fixes, and the evidence harness
(benchmarks/bench_extraction_evidence.py) reading it."""

import json
import sys
from pathlib import Path

import pytest
import torch

from mlguard import data

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_extraction_evidence as harness  # noqa: E402
import extraction_zoo  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not Path(data.FASHION_MNIST_DIR).is_dir(),
                       reason="needs Debian's dataset-fashion-mnist (make setup installs it)"),
    pytest.mark.skipif(not extraction_zoo.CIFAR_ARCHIVE.exists(),
                       reason=f"knockoff's transfer set needs CIFAR-10 at "
                              f"{extraction_zoo.CIFAR_ARCHIVE} (or MLGUARD_CIFAR10)")]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    extraction_zoo.build_zoo("fashion-mnist", root, seeds=(0,), independents=3, tiny=True,
                             log=lambda _s: None)
    return root


def test_manifest_lists_every_role_in_the_documented_format(zoo):
    manifest = json.loads((zoo / "manifest.json").read_text())
    assert not list(zoo.glob("*.tmp"))
    assert manifest["dataset"] == "fashion-mnist" and manifest["num_classes"] == 10
    assert manifest["input_shape"] == [1, 28, 28]
    assert manifest["normalization"]["mean"] == list(data.FASHION_MNIST_MEAN)
    roles = [m["role"] for m in manifest["models"]]
    assert roles == ["victim"] + ["stolen"] * 7 + ["derived"] + ["independent"] * 3
    victim = manifest["models"][0]
    assert victim["keys"] == ["victim-s0.adi.key", "victim-s0.uchida.key"]
    assert all((zoo / k).exists() for k in victim["keys"])
    attacks = [m["attack"] for m in manifest["models"] if m["role"] == "stolen"]
    assert attacks == ["retrain", "retrain", "knockoff", "transfer", "distill", "rtal+distill",
                       "retrain-xarch"]
    for m in manifest["models"][1:9]:
        assert m["victim"] == "victim-s0" and isinstance(m["attack_info"], dict)
        assert m["stealing_loss"] == pytest.approx(victim["test_accuracy"] - m["test_accuracy"])
    assert manifest["models"][2]["attack_info"]["labels"] == "soft"
    split = json.loads((zoo / manifest["split"]).read_text())
    assert split["owner"] == [0, 20000] and split["attacker"] == [20000, 40000]
    assert split["independent"] == [40000, 60000] and split["eval"] == [5000, 10000]
    assert split["loader"]["function"] == "mlguard.data.fashion_mnist"


def test_load_zoo_rebuilds_the_saved_models_and_the_split(zoo):
    from safetensors.torch import load_file
    loaded = extraction_zoo.load_zoo(zoo)
    train_x, train_y = data.fashion_mnist("train")
    x, y = loaded["tensors"]["attacker"]
    assert torch.equal(y, train_y[20000:20300])
    assert torch.allclose(x, extraction_zoo.normalize(train_x[20000:20300],
                                                      data.FASHION_MNIST_MEAN,
                                                      data.FASHION_MNIST_STD))
    for entry in loaded["models"]:
        saved = load_file(zoo / entry["file"])
        state = entry["model"].state_dict()
        assert not entry["model"].training
        assert all(torch.equal(state[k], saved[k]) for k in saved)
    indep = [m["model"] for m in loaded["models"] if m["role"] == "independent"]
    assert not torch.equal(indep[0].state_dict()["0.weight"], indep[1].state_dict()["0.weight"])


def test_a_rerun_keeps_every_model_already_built(zoo):
    before = {p.name: p.stat().st_mtime_ns for p in zoo.glob("*.safetensors")}
    extraction_zoo.build_zoo("fashion-mnist", zoo, seeds=(0,), independents=3, tiny=True,
                             log=lambda s: pytest.fail(f"retrained: {s}"))
    assert {p.name: p.stat().st_mtime_ns for p in zoo.glob("*.safetensors")} == before


def test_attacks_option_builds_only_the_named_stolen_models(tmp_path, capsys):
    extraction_zoo.main(["--dataset", "fashion-mnist", "--out", str(tmp_path), "--tiny",
                         "--part", "owner", "--seeds", "0", "--attacks", "distill"])
    listed = json.loads((tmp_path / "manifest.partial.json").read_text())["models"]
    assert [m["name"] for m in listed] == ["victim-s0", "stolen-distill-s0"]
    assert not (tmp_path / "manifest.json").exists()  # a partial zoo, read with --partial
    for wrong in (["--part", "owner", "--attacks", "distil"],
                  ["--part", "independents", "--attacks", "distill"]):
        with pytest.raises(SystemExit) as e:
            extraction_zoo.main(["--dataset", "fashion-mnist", "--out", str(tmp_path),
                                 "--tiny", *wrong])
        assert e.value.code == 2 and "--attacks" in capsys.readouterr().err


def test_harness_reads_every_key_on_the_victims_models_and_the_null(zoo):
    manifest = json.loads((zoo / "manifest.json").read_text())
    result = harness.run(zoo, harness.key_files(zoo, manifest, None), 1e-6, False,
                         log=lambda _s: None)
    assert result["kinds"] == ["adi", "uchida"]
    rows = {r["model"]: r for r in result["rows"]}
    assert len(rows) == 9 and result["independents"] == 3
    assert rows["victim-s0"]["keys"]["uchida"]["detected"]  # the weight mark, embedded
    assert "na" in rows["stolen-retrain-mlp-s0"]["keys"]["uchida"]  # no 7.weight in an MLP
    assert rows["stolen-retrain-mlp-s0"]["keys"]["adi"]["total"] == 100
    null = result["null"]["adi"]
    assert null["readings"] == 3 and null["false_detections"] == 0
    assert "too few readings for a fit" in harness.to_markdown(result)  # 3 of them
    # --reuse: an earlier run's readings are taken as they are, nothing is read again
    earlier = json.loads(json.dumps(result))
    earlier["null_readings"]["adi"][0]["matches"] = 99
    again = harness.run(zoo, harness.key_files(zoo, manifest, None), 1e-6, False,
                        log=lambda _s: None, reuse=earlier)
    assert again["rows"] == result["rows"]
    assert again["null_readings"]["adi"][0]["matches"] == 99
    with pytest.raises(ValueError, match="alpha"):
        harness.run(zoo, harness.key_files(zoo, manifest, None), 1e-3, False,
                    log=lambda _s: None, reuse=earlier)


def test_key_names_give_victim_and_type():
    assert harness.key_identity(Path("keys/dataset-inference-victim-s2.key")) == \
        ("victim-s2", "dataset-inference")
    assert harness.key_identity(Path("victim-s0.adi.key")) == ("victim-s0", "adi")
    with pytest.raises(ValueError, match="victim-s<seed>"):
        harness.key_identity(Path("owner.key"))


def test_null_fit_of_mixed_totals_accepts_binomial_counts_and_rejects_others():
    import numpy as np
    rng = np.random.default_rng(0)
    good = [{"matches": int(rng.binomial(n, 0.1)), "total": n, "chance": 0.1}
            for n in rng.choice([50, 100], size=400)]
    assert harness.binomial_fit(good)["p"] > 0.01
    bad = [{**r, "matches": min(r["total"], r["matches"] + 3)} for r in good]
    assert harness.binomial_fit(bad)["p"] < 1e-6


def test_cifar_split_ranges_index_a_fixed_shuffle(monkeypatch):
    """The CIFAR-10 archive is sorted by class: without the shuffle the owner range held four
    classes and the eval range five others (victims at 0% test accuracy)."""
    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, as the archive
    fake = type("Images", (), {"images": labels.view(1000, 1, 1, 1).to(torch.uint8),
                               "labels": labels})
    monkeypatch.setattr(data, "cifar10", lambda _path, _split: fake)
    sets = extraction_zoo.raw_sets("cifar10")
    again = extraction_zoo.raw_sets("cifar10")
    x, y = sets["train"]
    assert torch.equal(y, again["train"][1]) and not torch.equal(y, labels)
    assert torch.equal(x.flatten().long(), y)  # images and labels move together
    assert len(set(y[:340].tolist())) == 10 and len(set(y[680:].tolist())) == 10
    assert sorted(y.tolist()) == labels.tolist()  # a permutation: nothing lost or repeated
    assert "shuffle" in extraction_zoo.loader_record("cifar10")


def test_natural_mistakes_bench_runs_on_the_tiny_zoo(zoo, monkeypatch, capsys):
    import bench_natural_mistakes

    out = zoo / "natural.json"
    monkeypatch.setattr(sys, "argv", [
        "bench_natural_mistakes.py", "--zoo", str(zoo), "--size", "20", "--surrogates", "1",
        "--references", "1", "--calibration", "1", "--epochs", "1", "--per-model", "300",
        "--json", str(out)])
    bench_natural_mistakes.main()
    doc = json.loads(out.read_text())
    reads = doc["reads"]
    manifest = json.loads((zoo / "manifest.json").read_text())
    assert len(reads) == len(manifest["models"])  # one victim: every model read once
    victim = next(r for r in reads if r["role"] == "victim")
    assert victim["matches"] == victim["total"] == 20  # the labels are the victim's answers
    assert all(0 < r["chance"] < 1 for r in reads)
    assert "Detections at alpha 1e-6 per attack" in capsys.readouterr().out


def test_hard_retrain_bench_reads_every_key_of_the_victim(zoo, monkeypatch, capsys):
    import bench_hard_retrain

    out = zoo / "hard.json"
    monkeypatch.setattr(sys, "argv", ["bench_hard_retrain.py", "--zoo", str(zoo), "--lr",
                                      "0.01", "--epochs", "1", "--json", str(out)])
    bench_hard_retrain.main()
    (row,) = json.loads(out.read_text())
    victim = next(m for m in json.loads((zoo / "manifest.json").read_text())["models"]
                  if m["role"] == "victim")
    assert row["victim"] == victim["name"] and row["lr"] == 0.01 and row["epochs"] == 1
    assert set(row["keys"]) >= set(victim["keys"])  # the manifest's keys at least
    assert all(0 <= r["matches"] <= r["total"] for r in row["keys"].values())
    assert abs(row["stealing_loss"] - (victim["test_accuracy"] - row["test_accuracy"])) < 1e-9


def test_dawn_bench_records_the_thief_and_reads_its_record_on_copy_and_null(zoo, monkeypatch,
                                                                           tmp_path):
    import bench_dawn_extraction

    out = tmp_path / "dawn.json"
    monkeypatch.setattr(sys, "argv", [
        "bench_dawn_extraction.py", "--zoo", str(zoo), "--rate", "0.2", "--epochs", "1",
        "--attacks", "retrain-hard", "distill", "--records", str(tmp_path / "records"),
        "--json", str(out)])
    bench_dawn_extraction.main()
    rows = json.loads(out.read_text())
    assert [r["attack"] for r in rows] == ["retrain-hard", "distill"]
    attacker = 300  # the tiny zoo's attacker split
    for row in rows:
        # each attacker image queried once per epoch (retraining adds one shape check)
        assert attacker * row["epochs"] <= row["served"] <= attacker * row["epochs"] + 1
        assert row["dawn"]["total"] == row["records"] and 30 <= row["records"] <= 90
        assert row["null"]["models"] == 3 and row["null"]["false_detections"] == 0
        assert set(row["keys"]) >= {"victim-s0.adi.key", "victim-s0.uchida.key"}


def test_every_zoo_configuration_names_archs_and_weight_targets_that_exist():
    for dataset, cfg in extraction_zoo.DATASETS.items():
        shape = cfg["shape"]
        for arch in [cfg["victim"], cfg["xarch"], *cfg["others"]]:
            model = extraction_zoo.build(arch).eval()
            assert model(torch.zeros(2, *shape)).shape == (2, 10), (dataset, arch)
        victim = extraction_zoo.build(cfg["victim"])
        assert cfg["weight_target"] in dict(victim.named_parameters()), dataset
        assert set(extraction_zoo.SPLITS[dataset]) == set(extraction_zoo.SPLIT_OF), dataset


def test_keyed_tails_bench_steals_through_the_api_and_reads_copy_and_null(zoo, monkeypatch,
                                                                          tmp_path):
    import bench_keyed_tails

    out = tmp_path / "tails.json"
    monkeypatch.setattr(sys, "argv", [
        "bench_keyed_tails.py", "--zoo", str(zoo), "--epochs", "1", "--tail", "0.035",
        "--directions", "2",
        "--attacks", "retrain-hard", "--json", str(out)])
    bench_keyed_tails.main()
    (row,) = json.loads(out.read_text())
    assert row["attack"] == "retrain-hard" and row["keyed_tails"]["total"] == 4
    assert 0 < row["changed"] < 0.4  # the thief was answered through the keyed API
    assert row["null"]["models"] == 3 and row["null"]["false_detections"] == 0
    assert "stolen-retrain-hard-s0" in row["unruled_copies"]
    assert set(row["keys"]) >= {"victim-s0.adi.key", "victim-s0.uchida.key"}


def test_rtal_surrogates_bench_writes_a_key_per_kind(zoo, tmp_path, capsys):
    import bench_rtal_surrogates
    import mlguard
    from mlguard.schemes.conferrable import ConferrableKey
    bench_rtal_surrogates.main(["--zoo", str(zoo), "--out", str(tmp_path), "--epochs", "1",
                                "--rtal-epochs", "1", "--size", "8", "--candidates", "300",
                                "--kinds", "rtal", "chain"])
    said = capsys.readouterr().out
    for kind in ("rtal", "chain"):
        key = mlguard.load_key(tmp_path / f"conferrable-{kind}-victim-s0.key")
        assert isinstance(key, ConferrableKey) and key.size == 8
        assert key.generation["surrogate_matches"] and f"conferrable-{kind}-victim-s0" in said
    with pytest.raises(SystemExit):
        bench_rtal_surrogates.main(["--zoo", str(zoo), "--out", str(tmp_path),
                                    "--victim", "indep-00"])
    assert "not a victim" in capsys.readouterr().err


def test_thief_without_victim_bench_runs_the_same_chain_from_a_fresh_network(zoo, tmp_path,
                                                                            capsys):
    import bench_thief_without_victim
    from safetensors.torch import load_file

    out = tmp_path / "alone.json"
    bench_thief_without_victim.main(["--zoo", str(zoo), "--out", str(tmp_path),
                                     "--json", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    manifest = json.loads((zoo / "manifest.json").read_text())
    stolen = next(m for m in manifest["models"] if m["name"] == "stolen-rtal-distill-s0")
    assert row["from_victim"]["copy"] == stolen["test_accuracy"]  # the zoo's copy, not redone
    assert row["victim_gave_copy"] == row["from_victim"]["copy"] - row["from_scratch"]["copy"]
    assert all(0 < row[w][s] <= 1 for w in ("from_victim", "from_scratch")
               for s in ("teacher", "copy"))
    assert load_file(tmp_path / "thief-alone-rtal-distill-s0.safetensors")
    assert "the victim gave the copy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_thief_without_victim.main(["--zoo", str(zoo), "--out", str(tmp_path),
                                         "--seeds", "7"])
    assert "--seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_thief_without_victim.main(["--zoo", str(tmp_path / "none"), "--out",
                                         str(tmp_path)])
    err = capsys.readouterr().err
    assert "--zoo" in err and "no manifest.json" in err


def test_an_attack_that_diverges_is_listed_as_failed_and_the_zoo_goes_on(tmp_path,
                                                                         monkeypatch):
    from mlguard.attacks import TrainingDiverged

    real, tries = extraction_zoo.stolen_specs, []

    def specs(budget, xarch):
        def diverges(*_args):
            tries.append(1)
            raise TrainingDiverged("the attack's training diverged: (test)")
        return [(s, a, diverges if s == "retrain-soft" else f) for s, a, f in real(budget, xarch)]

    monkeypatch.setattr(extraction_zoo, "stolen_specs", specs)
    root = tmp_path / "zoo"
    extraction_zoo.build_zoo("fashion-mnist", root, seeds=(0,), independents=1, tiny=True,
                             log=lambda _s: None)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["failed"] == [{"name": "stolen-retrain-soft-s0",
                                   "error": "the attack's training diverged: (test)"}]
    names = [m["name"] for m in manifest["models"]]
    assert "stolen-retrain-soft-s0" not in names and "stolen-distill-s0" in names
    assert len(names) == 9 and not (root / "stolen-retrain-soft-s0.safetensors").exists()
    extraction_zoo.build_zoo("fashion-mnist", root, seeds=(0,), independents=1, tiny=True,
                             log=lambda _s: None)  # a rerun: nothing retried, nothing lost
    assert len(tries) == 1
    assert json.loads((root / "manifest.json").read_text())["failed"] == manifest["failed"]


def test_copy_agreement_bench_reads_every_model_against_each_victim(zoo, tmp_path, capsys):
    import bench_copy_agreement

    out = tmp_path / "agree.json"
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "again.safetensors").write_bytes((zoo / "victim-s0.safetensors").read_bytes())
    bench_copy_agreement.main(["--zoo", str(zoo), "--extra", str(extra), "--json", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    manifest = json.loads((zoo / "manifest.json").read_text())
    assert row["victim"] == "victim-s0" and len(row["reads"]) == len(manifest["models"])
    assert row["reads"]["again"] == {"role": "extra", "agreement": 1.0, "same_mistakes": 1.0}
    assert row["independents"]["count"] == 3
    assert all(0 <= r["same_mistakes"] <= 1 for r in row["reads"].values())
    assert "the same wrong label" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_copy_agreement.main(["--zoo", str(zoo), "--extra", str(tmp_path / "none")])
    assert "--extra" in capsys.readouterr().err
