"""Image folders and archives decoded once into a uint8 tensor, and the cache behind it."""

import io
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from mlguard.data import cifar10, image_folder


def write_folder(root, classes=("cat", "dog"), per_class=5, size=(8, 6), fmt="PNG"):
    rng = np.random.default_rng(0)
    expected = []
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png", format=fmt)
            expected.append((torch.from_numpy(pixels).permute(2, 0, 1), label))
    (root / "cat" / "notes.txt").write_text("not an image")
    return expected


def test_folder_is_decoded_in_imagefolder_order(tmp_path):
    expected = write_folder(tmp_path / "data" / "train")
    data = image_folder(tmp_path / "data", "train", cache_dir=tmp_path / "cache")
    assert data.classes == ("cat", "dog") and len(data) == 10
    assert data.images.dtype == torch.uint8 and data.images.shape == (10, 3, 6, 8)
    for i, (pixels, label) in enumerate(expected):
        assert torch.equal(data.images[i], pixels) and data.labels[i] == label
    import torchvision
    reference = torchvision.datasets.ImageFolder(tmp_path / "data" / "train")
    assert [t for _, t in reference.samples] == data.labels.tolist()


def test_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    write_folder(tmp_path / "data")
    first = image_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    files = os.listdir(tmp_path / "cache")
    assert len(files) == 1 and files[0].startswith("images-")
    from mlguard.data import image_cache
    monkeypatch.setattr(image_cache, "_decode_all", lambda *a: pytest.fail("decoded again"))
    again = image_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert torch.equal(again.images, first.images) and again.classes == first.classes
    monkeypatch.undo()
    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "data" / "dog" / "new.png")
    changed = image_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert len(changed) == 11 and len(os.listdir(tmp_path / "cache")) == 2


def test_corrupt_cache_is_named(tmp_path):
    write_folder(tmp_path / "data")
    image_folder(tmp_path / "data", cache_dir=tmp_path / "cache")
    (cache,) = (tmp_path / "cache").iterdir()
    cache.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="image cache .* is unreadable.*delete it"):
        image_folder(tmp_path / "data", cache_dir=tmp_path / "cache")


def test_archive_is_read_in_place(tmp_path):
    expected = write_folder(tmp_path / "src" / "set" / "test")
    write_folder(tmp_path / "src" / "set" / "train", per_class=2)
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "set", arcname="set")
    data = image_folder(archive, "test", cache_dir=False)
    assert len(data) == 10 and data.classes == ("cat", "dog")
    assert all(torch.equal(data.images[i], p) for i, (p, _) in enumerate(expected))
    assert len(image_folder(archive, "train", cache_dir=False)) == 4


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="has no class folders"):
        image_folder(tmp_path / "flat", cache_dir=False)
    write_folder(tmp_path / "mixed")
    Image.new("RGB", (5, 5)).save(tmp_path / "mixed" / "cat" / "small.png")
    with pytest.raises(ValueError, match="images have different sizes"):
        image_folder(tmp_path / "mixed", cache_dir=False)
    (tmp_path / "mixed" / "cat" / "small.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match="cannot decode image .*small.png"):
        image_folder(tmp_path / "mixed", cache_dir=False)
    with pytest.raises(ValueError, match="is not CIFAR-10"):
        cifar10(tmp_path / "data" if (tmp_path / "data").exists() else _tiny(tmp_path),
                "train", cache_dir=False)


def _tiny(tmp_path):
    write_folder(tmp_path / "data" / "train")
    return tmp_path / "data"


CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                     "cifar10-jpeg.tar.gz")


@pytest.mark.skipif(not os.path.exists(CIFAR), reason="the CIFAR-10 JPEG archive is not here")
def test_cifar10_test_split_from_the_archive(tmp_path):
    data = cifar10(CIFAR, "test", cache_dir=tmp_path)
    assert data.images.shape == (10000, 3, 32, 32) and len(data.classes) == 10
    assert torch.bincount(data.labels).tolist() == [1000] * 10
    with tarfile.open(CIFAR) as tar:  # spot-check one image against a direct decode
        member = next(m for m in tar.getmembers() if m.name.endswith("test/cat/0000.jpg"))
        im = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
    cat = data.classes.index("cat")
    first_cat = int((data.labels == cat).nonzero()[0])
    assert torch.equal(data.images[first_cat], torch.from_numpy(np.array(im)).permute(2, 0, 1))
