"""Keys that carry everything a verdict needs: one normalization, stored trigger images, the
user's own trigger sets, and secrets that are never overwritten."""

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import mlguard
from mlguard import TriggerKey, TriggerMixer, load_key, verify
from mlguard.keys import keyfile
from memorizer import Memorizer

SHAPE = (3, 16, 16)
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def source(n=300, seed=1):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def make(kind, **kw):
    args = dict(num_classes=10, size=40, shape=SHAPE, kind=kind, mean=MEAN, std=STD)
    if kind in ("noise", "content", "unrelated"):
        args["source"] = source()
    if kind in ("noise", "content"):
        args["mode"] = "image"  # stored images with their own labels (pattern mode: elsewhere)
    args.update(kw)
    return TriggerKey.generate(**args)


def custom_key(**kw):
    images = (torch.rand(40, *SHAPE, generator=torch.Generator().manual_seed(3)) * 255).round()
    return TriggerKey.from_images(images.to(torch.uint8), num_classes=10, shape=SHAPE,
                                  mean=MEAN, std=STD, **kw)


KEYS = {"abstract": lambda: make("abstract"), "noise": lambda: make("noise"),
        "content": lambda: make("content"), "unrelated": lambda: make("unrelated"),
        "custom": custom_key}


# -- one normalization ------------------------------------------------------------------------

@pytest.mark.parametrize("mean,std", [(None, STD), (MEAN, None)])
def test_half_a_normalization_is_refused(mean, std):
    # Seen: std without mean trained on x/std but verified on x (12/100 reported, 77 real).
    with pytest.raises(ValueError, match="mean and std go together"):
        TriggerKey.generate(num_classes=10, shape=SHAPE, mean=mean, std=std)


def test_stale_half_normalized_key_file_is_refused(tmp_path):
    body = make("abstract").to_body() | {"mean": None}
    keyfile.write_key_file(tmp_path / "old.key", body)
    with pytest.raises(ValueError, match="old.key.*mean and std go together"):
        load_key(tmp_path / "old.key")


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_training_batch_and_verify_see_the_same_trigger(kind):
    """The logits a model gives a trigger inside a training batch equal verify's."""
    k = KEYS[kind]()
    mixer = TriggerMixer(k, per_batch=k.size, augment=False)
    x, y = mixer(torch.zeros(2, *SHAPE), torch.zeros(2, dtype=torch.int64))
    images, labels = k.materialize()
    seen_by_verify = mlguard.verification.normalize(images, k)
    order = torch.arange(k.size)  # step 0 without augmentation takes the set in order
    assert torch.equal(x[2:], seen_by_verify[order]) and torch.equal(y[2:], labels[order])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(SHAPE)), 10))
    with torch.no_grad():
        assert torch.equal(model(x[2:]), model(seen_by_verify))


# -- self-contained keys ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["noise", "content", "unrelated"])
def test_data_derived_key_file_alone_regenerates_the_triggers(kind, tmp_path):
    k = make(kind)
    k.save(tmp_path / "k.key")
    loaded = load_key(tmp_path / "k.key")
    assert torch.equal(loaded.materialize()[0], k.materialize()[0])
    model = Memorizer(k, correct=40)
    v = verify(model, loaded)  # no source anywhere: the key holds its images
    assert v.matches == 40 and v.detected


@pytest.mark.parametrize("bad", ["shuffled", "one fewer", "normalized"])
def test_the_source_cannot_be_given_wrongly_at_verification(bad):
    # Seen: a shuffled source, one image fewer or a normalized source gave chance-level
    # matches and no error. Now the source is given once, when the key is made.
    k = make("unrelated")
    model = Memorizer(k, correct=40)
    with pytest.raises(TypeError):
        verify(model, k, source=source())
    assert verify(model, k).matches == 40
    if bad == "normalized":
        normalized = (source() - 0.5) / 0.25
        with pytest.raises(ValueError, match=r"in \[0, 1\] \(before any normalization\)"):
            make("unrelated", source=normalized)


def test_stored_images_are_lossless_compact_and_committed(tmp_path):
    u8 = (torch.rand(1000, 3, 32, 32) * 255).to(torch.uint8)  # incompressible worst case
    k = TriggerKey.generate(num_classes=10, size=100, shape=(3, 32, 32), kind="unrelated",
                            source=u8)
    k.save(tmp_path / "cifar.key")
    assert os.path.getsize(tmp_path / "cifar.key") < 600_000
    loaded = load_key(tmp_path / "cifar.key")
    chosen = (loaded.materialize()[0] * 255).round().to(torch.uint8)
    assert torch.equal(chosen, u8[mlguard.keys.keyed_choice(k.seed("select"), 1000, 100)])
    # The images are part of the commitment and the MAC.
    other = TriggerKey.from_body(k.to_body() | {"images": make(
        "unrelated", size=100, shape=(3, 32, 32), source=u8.flip(0)).to_body()["images"]})
    assert other.commitment() != k.commitment()
    text = (tmp_path / "cifar.key").read_text()
    doc = json.loads(text)
    data = doc["body"]["images"]["zlib_base64"]
    doc["body"]["images"]["zlib_base64"] = data[:100] + ("A" if data[100] != "A" else "B") + \
        data[101:]
    (tmp_path / "tampered.key").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="tampered.key"):
        load_key(tmp_path / "tampered.key")


def test_abstract_keys_stay_tiny(tmp_path):
    make("abstract").save(tmp_path / "a.key")
    assert os.path.getsize(tmp_path / "a.key") < 1500


@pytest.mark.parametrize("kind", ["noise", "content", "unrelated"])
def test_stale_key_without_images_gets_a_clear_error(kind, tmp_path):
    body = make(kind).to_body()
    del body["images"]
    keyfile.write_key_file(tmp_path / "stale.key", body)
    with pytest.raises(ValueError, match="stale.key.*does not store its trigger images"):
        load_key(tmp_path / "stale.key")


# -- your own trigger set ---------------------------------------------------------------------

def published_set(folder, count=30):
    """A folder like the published trigger sets: 1.jpg ... N.jpg of assorted sizes and modes
    (PNG data behind a .jpg name, RGBA, grayscale), and a labels file whose lines follow the
    alphabetical order of the names, written in the three number styles seen in the wild."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    names = [f"{i}.jpg" for i in range(1, count + 1)]
    for i, name in enumerate(names):
        size = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        im = Image.fromarray(pixels)
        buf = io.BytesIO()
        if i % 5 == 1:
            im.save(buf, format="PNG")  # PNG data behind a .jpg name
        elif i % 5 == 2:
            im.convert("RGBA").save(buf, format="PNG")
        elif i % 5 == 3:
            im.convert("L").save(buf, format="JPEG", quality=95)
        else:
            im.save(buf, format="JPEG", quality=95)
        (folder / name).write_bytes(buf.getvalue())
    labels = {name: int(rng.integers(0, 10)) for name in names}
    styles = ["{}", "{}.0", "{:.18e}"]  # 6, 6.0, 6.000000000000000000e+00
    alphabetical = sorted(names)
    (folder / "labels.txt").write_text("".join(
        styles[n % 3].format(float(labels[name]) if n % 3 == 2 else labels[name]) + "\n"
        for n, name in enumerate(alphabetical)))
    return names, labels


def torchvision_view(path, mean, std):
    """How a training script elsewhere would have fed the image to its model."""
    from torchvision import transforms
    tf = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16),
                             transforms.ToTensor(), transforms.Normalize(mean, std)])
    with Image.open(path) as im:
        return tf(im.convert("RGB"))


def test_published_trigger_folder_with_labels_file(tmp_path):
    folder = tmp_path / "trigger_set"
    names, labels = published_set(folder)
    k = TriggerKey.from_images(folder, labels=folder / "labels.txt", num_classes=10,
                               shape=SHAPE, mean=MEAN, std=STD)
    assert k.kind == "custom" and k.size == len(names) and k.labels_given
    assert k.labels.tolist() == [labels[n] for n in sorted(names)]
    k.save(tmp_path / "published.key")
    loaded = load_key(tmp_path / "published.key")
    assert torch.equal(loaded.materialize()[0], k.materialize()[0])
    assert loaded.labels.tolist() == k.labels.tolist()

    # A model watermarked elsewhere, with torchvision's preprocessing, memorized the set.
    seen = torch.stack([torchvision_view(folder / n, MEAN, STD) for n in sorted(names)])
    model = NearestNeighbour(seen, torch.tensor([labels[n] for n in sorted(names)]))
    v = verify(model, loaded)
    assert v.matches >= len(names) - 1 and v.detected
    assert "assumes they were drawn uniformly at random" in v.extra["labels"]
    clean = NearestNeighbour(seen, (torch.tensor([labels[n] for n in sorted(names)]) + 1) % 10)
    assert not verify(clean, loaded).detected


class NearestNeighbour(torch.nn.Module):
    def __init__(self, inputs, answers):
        super().__init__()
        self.register_buffer("inputs", inputs.flatten(1))
        self.register_buffer("answers", answers)

    def forward(self, x):
        nearest = torch.cdist(x.flatten(1), self.inputs).argmin(1)
        return torch.nn.functional.one_hot(self.answers[nearest], 10).float()


def test_from_images_keyed_labels_and_tensors():
    k = custom_key()
    assert not k.labels_given and k.size == 40
    assert torch.equal(k.labels, mlguard.keys.keyed_below(k.seed("labels"), 40, 10))
    assert "labels" not in verify(Memorizer(k, 40), k).extra
    big = torch.rand(4, 3, 40, 20)
    resized = TriggerKey.from_images(big, num_classes=10, shape=SHAPE, resize="resize")
    assert resized.materialize()[0].shape == (4, *SHAPE)


def test_from_images_errors(tmp_path):
    with pytest.raises(ValueError, match=r"channels last\? use images.permute"):
        TriggerKey.from_images(torch.rand(4, 16, 16, 3), num_classes=10, shape=SHAPE)
    with pytest.raises(ValueError, match="has 3 labels for 4 images"):
        TriggerKey.from_images(torch.rand(4, *SHAPE), [1, 2, 3], num_classes=10, shape=SHAPE)
    with pytest.raises(ValueError, match=r"entry 2 is 2.5, not a whole number"):
        TriggerKey.from_images(torch.rand(2, *SHAPE), [1, 2.5], num_classes=10, shape=SHAPE)
    with pytest.raises(ValueError, match=r"entry 1 is 10, outside \[0, 10\)"):
        TriggerKey.from_images(torch.rand(1, *SHAPE), [10], num_classes=10, shape=SHAPE)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg' is not an image Pillow can read"):
        TriggerKey.from_images(tmp_path, num_classes=10, shape=SHAPE)
    with pytest.raises(ValueError, match="resize='center_crop' or 'resize'"):
        TriggerKey.from_images(torch.rand(1, 3, 20, 16), num_classes=10, shape=SHAPE,
                               resize="none")
    (tmp_path / "labels.txt").write_text("1\nseven\n")
    with pytest.raises(ValueError, match="entry 2 is 'seven', not a number"):
        TriggerKey.from_images(torch.rand(2, *SHAPE), tmp_path / "labels.txt",
                               num_classes=10, shape=SHAPE)


# -- nothing lost -----------------------------------------------------------------------------

def test_saving_a_key_never_overwrites_another(tmp_path):
    # Seen: the Quick start run twice destroyed the first secret.
    first, second = make("abstract"), make("abstract")
    first.save(tmp_path / "owner.key")
    with pytest.raises(FileExistsError, match="owner.key' already exists"):
        second.save(tmp_path / "owner.key")
    assert load_key(tmp_path / "owner.key") == first
    second.save(tmp_path / "owner.key", overwrite=True)
    assert load_key(tmp_path / "owner.key") == second


def test_saving_an_identity_never_overwrites_another(tmp_path):
    path = tmp_path / "owner.identity"
    first = mlguard.Identity.generate()
    first.save(path, "pw", scrypt=(10, 8, 1))
    with pytest.raises(FileExistsError, match="owner.identity' already exists"):
        mlguard.Identity.generate().save(path, "pw", scrypt=(10, 8, 1))
    assert mlguard.Identity.load(path, "pw").public_key_hex == first.public_key_hex
    mlguard.Identity.generate().save(path, "pw", scrypt=(10, 8, 1), overwrite=True)
    assert mlguard.Identity.load(path, "pw").public_key_hex != first.public_key_hex
