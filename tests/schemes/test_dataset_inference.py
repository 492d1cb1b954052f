"""Dataset inference (schemes/dataset_inference.py): the exact null by construction (a model
trained on neither half reads about K/2, one trained on the private half reads high), key
files, tampering, and `mlguard key new dataset-inference` with its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import mlguard
from mlguard import data
from mlguard.keys import keyfile
from mlguard.ownership import reveal
from mlguard.schemes import ReadOptions, Suspect, get_scheme, scheme_of
from mlguard.schemes._dataset_spec import load_spec
from mlguard.schemes.dataset_inference import DatasetInference, DatasetInferenceKey

SECRET = bytes(range(32))
K = 500  # pairs
MEAN, STD = data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def fit(model, x, y, epochs: int) -> nn.Module:
    """Adam on normalized uint8 images; many epochs on few images memorize them."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    xn = (x.float() / 255 - MEAN[0]) / STD[0]
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xn[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    try:
        x, y = data.fashion_mnist("train")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed")
    # Fashion-MNIST's training set is in random order: [0:K) and [K:2K) are a random split.
    private, public = (x[:K], y[:K]), (x[K:2 * K], y[K:2 * K])
    owner = fit(mlp(0), *private, epochs=100)
    neither = fit(mlp(1), x[5000:8000], y[5000:8000], epochs=3)
    key = DatasetInferenceKey.generate(model=owner, private_images=private[0],
                                       private_labels=private[1], public_images=public[0],
                                       public_labels=public[1], pairs=K, mean=MEAN, std=STD,
                                       secret=SECRET)
    return {"x": x, "y": y, "private": private, "public": public, "owner": owner,
            "neither": neither, "key": key}


def read(key, model):
    return get_scheme("dataset-inference").read(key, Suspect(model, None), ReadOptions())


def test_registered_and_scheme_of(setup):
    assert get_scheme("dataset-inference") is DatasetInference
    assert scheme_of(setup["key"]) is DatasetInference


def test_the_owner_model_reads_high_and_is_detected(setup):
    key, owner = setup["key"], setup["owner"]
    reading = read(key, owner)
    assert reading.total == K and reading.chance == 0.5
    assert reading.matches == key.owner_matches
    verdict = mlguard.verify(owner, key)
    assert verdict.detected and verdict.matches > 0.6 * K
    assert "exact 1/2" in reading.extra["null"] and "random" in reading.extra["null"]


def test_a_model_trained_on_neither_half_reads_about_half(setup):
    reading = read(setup["key"], setup["neither"])
    # Binomial(K, 1/2): 4.5 standard deviations either side (fails with probability ~1e-5)
    assert abs(reading.matches - K / 2) < 4.5 * math.sqrt(K / 4)
    assert not mlguard.verify(setup["neither"], setup["key"]).detected


def test_ties_count_as_no_match(setup):
    class Constant(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 10)

    reading = read(setup["key"], Constant())
    assert reading.matches == 0 and reading.extra["ties"] == K


def test_key_holds_keyed_samples_of_each_half(setup):
    key = setup["key"]
    px, py, qx, qy = key.materialize()
    assert px.shape == qx.shape == (K, 1, 28, 28) and key.pairs == K
    pool = setup["private"][0].float() / 255
    # every stored private image is one of the private pool's, with its label
    match = (px.flatten(1)[:, None] == pool.flatten(1)[None]).all(-1)
    assert bool(match.any(1).all())
    rows = match.float().argmax(1)
    assert torch.equal(setup["private"][1][rows], py)
    again = DatasetInferenceKey.generate(
        model=setup["owner"], private_images=setup["private"][0],
        private_labels=setup["private"][1], public_images=setup["public"][0],
        public_labels=setup["public"][1], pairs=K, mean=MEAN, std=STD, secret=SECRET)
    assert again.private_images == key.private_images and again.public_labels == key.public_labels
    other = DatasetInferenceKey.generate(
        model=setup["owner"], private_images=setup["private"][0],
        private_labels=setup["private"][1], public_images=setup["public"][0],
        public_labels=setup["public"][1], pairs=50, mean=MEAN, std=STD, secret=bytes(32))
    assert other.private_labels != key.private_labels[:50]


def test_round_trip_and_evidence_test(setup, tmp_path):
    key = setup["key"]
    key.save(tmp_path / "di.key")
    again = mlguard.load_key(tmp_path / "di.key")
    assert again == key and again.commitment() == key.commitment()
    assert DatasetInference.expected_test(reveal(key)) == (K, 0.5)


def test_a_tampered_key_file_is_refused(setup, tmp_path):
    path = tmp_path / "di.key"
    setup["key"].save(path)
    text = path.read_text()
    count = setup["key"].owner_matches
    # a valid key body, changed: the file's MAC (keyed by the secret) no longer matches
    path.write_text(text.replace(f'"owner_matches": {count}', f'"owner_matches": {count - 1}'))
    with pytest.raises(ValueError, match="MAC"):
        mlguard.load_key(path)


@pytest.mark.parametrize("change, message", [
    (lambda b: b.update(extra=1), "exactly the fields"),
    (lambda b: b["private_labels"].pop(), "labels"),
    (lambda b: b["public_labels"].__setitem__(0, 10), "outside"),
    (lambda b: b.update(score="loss"), "score must be"),
    (lambda b: b.update(owner_matches=K + 1), "owner_matches"),
    (lambda b: b.update(public_images=b["private_images"] | {"shape": [K, 1, 28, 27]}),
     "stored images hold"),
    (lambda b: b.update(sources={"private": 1}), "sources"),
    (lambda b: b.update(reference={"matches": [K + 1], "totals": [K]}), "counts out of"),
])
def test_tampered_bodies_are_refused(setup, change, message):
    body = setup["key"].to_body()
    body = {**body, "private_labels": list(body["private_labels"]),
            "public_labels": list(body["public_labels"])}
    change(body)
    with pytest.raises(ValueError, match=message):
        DatasetInferenceKey.from_body(body)


def test_reference_models_raise_the_null_when_they_read_above_half(setup):
    key = DatasetInferenceKey.generate(
        model=setup["owner"], private_images=setup["private"][0],
        private_labels=setup["private"][1], public_images=setup["public"][0],
        public_labels=setup["public"][1], pairs=K, mean=MEAN, std=STD, secret=SECRET,
        reference_models=[setup["neither"], setup["owner"]])  # the owner: a wrong reference
    assert key.reference["matches"][1] == key.owner_matches
    assert key.chance > 0.5 and "reference models" in read(key, setup["neither"]).extra["null"]
    assert DatasetInference.expected_test(reveal(key)) == (K, key.chance)


def test_generation_errors_name_the_argument(setup):
    p, q = setup["private"], setup["public"]
    args = dict(model=setup["owner"], private_images=p[0], private_labels=p[1],
                public_images=q[0], public_labels=q[1], mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="pairs=501 needs as many private samples"):
        DatasetInferenceKey.generate(**args, pairs=K + 1)
    with pytest.raises(ValueError, match="public_images must have the private images' shape"):
        DatasetInferenceKey.generate(**{**args, "public_images": q[0][:, :, :27]}, pairs=10)
    with pytest.raises(ValueError, match="labels must lie in"):
        DatasetInferenceKey.generate(**{**args, "public_labels": q[1] + 10}, pairs=10)
    with pytest.raises(ValueError, match="private_images must be a tensor"):
        DatasetInferenceKey.generate(**{**args, "private_images": p[0][0]}, pairs=10)


def test_dataset_specs(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((10, 1, 4, 4), np.uint8), labels=np.arange(10))
    x, y = load_spec(f"{path}[2:5]", "--private")
    assert x.shape == (3, 1, 4, 4) and y.tolist() == [2, 3, 4]
    assert load_spec(str(path), "--public")[0].shape[0] == 10
    with pytest.raises(ValueError, match=r"--private .*range \[5:20\]"):
        load_spec(f"{path}[5:20]", "--private")
    with pytest.raises(ValueError, match="--public .*not a data set spec"):
        load_spec("imagenet:train", "--public")
    with pytest.raises(ValueError, match="split must be train or test"):
        load_spec("fashion-mnist:val[0:10]", "--private")
    np.savez(path, images=np.zeros((10, 1, 4, 4), np.float32), labels=np.arange(10))
    with pytest.raises(ValueError, match="'images' must be uint8"):
        load_spec(str(path), "--private")


def test_key_new_on_the_command_line(setup, tmp_path, capsys):
    from mlguard.cli.main import main

    model = tmp_path / "owner.pt"
    torch.save(setup["owner"].state_dict(), model)
    for name, (x, y) in (("private", setup["private"]), ("public", setup["public"])):
        np.savez(tmp_path / f"{name}.npz", images=x.numpy(), labels=y.numpy())
    arch = "test_dataset_inference:owner_arch"  # tests/schemes is on sys.path
    out = tmp_path / "di.key"
    common = ["--model", str(model), "--arch", arch, "--mean", str(MEAN[0]),
              "--std", str(STD[0]), "--pairs", "100"]
    assert main(["key", "new", "dataset-inference", str(out),
                 "--private", f"{tmp_path / 'private.npz'}[0:200]",
                 "--public", str(tmp_path / "public.npz"), *common]) == 0
    key = mlguard.load_key(out)
    assert isinstance(key, DatasetInferenceKey) and key.pairs == 100
    assert key.sources["private"].endswith("private.npz[0:200]")
    assert mlguard.verify(setup["owner"], key).matches == key.owner_matches
    capsys.readouterr()
    assert main(["key", "new", "dataset-inference", str(tmp_path / "bad.key"),
                 "--private", str(tmp_path / "missing.npz"),
                 "--public", str(tmp_path / "public.npz"), *common]) == 2
    assert "--private" in capsys.readouterr().err
    assert main(["key", "new", "dataset-inference", str(tmp_path / "bad.key"),
                 "--private", str(tmp_path / "private.npz"),
                 "--public", f"{tmp_path / 'public.npz'}[0:50]", *common]) == 2
    assert "pairs=100 needs as many public samples" in capsys.readouterr().err
    assert main(["key", "new", "dataset-inference", str(tmp_path / "bad.key"),
                 "--private", str(tmp_path / "private.npz"), "--public",
                 str(tmp_path / "public.npz"), *common[:4], "--mean", "0.5"]) == 2
    assert "--mean needs --std too" in capsys.readouterr().err


def owner_arch() -> nn.Module:
    """The tests' owner network, for --arch."""
    return mlp(0)


def test_scan_and_evidence_with_a_key_file(setup, tmp_path):
    import safetensors.torch

    from mlguard.ownership import Identity

    key_file = tmp_path / "di.key"
    setup["key"].save(key_file)
    suspects = tmp_path / "suspects"
    suspects.mkdir()
    for name in ("owner", "neither"):
        safetensors.torch.save_file(setup[name].state_dict(), suspects / f"{name}.safetensors")
    rows = mlguard.scan(suspects, [key_file], arch=owner_arch, device="cpu", progress=False)
    by_file = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_file["owner.safetensors"]["detected"]
    assert by_file["owner.safetensors"]["scheme"] == "dataset-inference"
    assert not by_file["neither.safetensors"]["detected"]
    verdict = mlguard.verify(suspects / "owner.safetensors", setup["key"], arch=owner_arch)
    doc = mlguard.evidence([verdict], suspects / "owner.safetensors",
                           opening=reveal(setup["key"]), identity=Identity.generate(),
                           command="test")
    assert mlguard.check_evidence(doc, suspects / "owner.safetensors") == []
