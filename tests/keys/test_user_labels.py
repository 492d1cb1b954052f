"""Hand-made trigger labels (issue 18, item 3): label sets implausible as uniform draws are
refused, and labels can be paired with their images by file name.

`from_images(..., labels=[2] * 40)` used to be accepted: a model that never saw the images
but answers class 2 for them then "matches" far more than 1/10, and the exact test, which
assumes uniform secret labels, reports a tiny p-value for an innocent model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mlguard import TriggerKey, load_key, verify
from mlguard.keys import user_labels

SHAPE = (3, 8, 8)


def _images(n=40, seed=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *SHAPE, generator=g) * 255).round().to(torch.uint8)


def _uniform(n, classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n).tolist()


def test_all_one_class_is_refused_saying_why_and_what_to_do():
    with pytest.raises(ValueError, match=r"all 40 labels are class 2.*drawn uniformly at "
                                         r"random.*labels=None"):
        TriggerKey.from_images(_images(), labels=[2] * 40, num_classes=10, shape=SHAPE)


@pytest.mark.parametrize("n", [40, 200])  # 4 per class (simulated null), 20 (scipy's)
def test_a_skewed_label_set_is_refused_and_uniform_draws_are_kept(n):
    skewed = [0] * (n // 2) + _uniform(n - n // 2)
    with pytest.raises(ValueError, match=r"class 0 has \d+ of \d+ labels.*p = .* < 0.001"):
        TriggerKey.from_images(_images(n), labels=skewed, num_classes=10, shape=SHAPE)
    fair = _uniform(n, seed=n)
    key = TriggerKey.from_images(_images(n), labels=fair, num_classes=10, shape=SHAPE)
    assert key.labels.tolist() == fair


def test_the_level_is_what_it_says_for_uniform_labels():
    """Uniform draws are refused about once in 1000 (the stated level), in both regimes
    (benchmarks/bench_label_uniformity.py measures the rate on many more draws)."""
    for n, classes in [(30, 10), (200, 10)]:  # simulated, scipy
        refused = sum(user_labels.uniformity_p_value(
            np.bincount(_uniform(n, classes, seed), minlength=classes)) < user_labels.LEVEL
            for seed in range(200))
        assert refused <= 2, (n, classes, refused)
    # ... and a mild real skew is not refused for being a little uneven.
    assert user_labels.uniformity_p_value(np.array([6, 4, 5, 5, 3, 7, 5, 5, 4, 6])) > 0.5


def test_a_key_made_before_the_check_still_loads_and_verifies(tmp_path, monkeypatch):
    monkeypatch.setattr(user_labels, "check_plausibly_uniform", lambda *a: None)
    old = TriggerKey.from_images(_images(), labels=[2] * 40, num_classes=10, shape=SHAPE)
    old.save(tmp_path / "old.key")
    monkeypatch.undo()
    loaded = load_key(tmp_path / "old.key")
    assert loaded.labels.tolist() == [2] * 40
    always_two = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    with torch.no_grad():
        always_two[1].weight.zero_()
        always_two[1].bias.copy_(torch.arange(10) == 2)
    assert verify(always_two, loaded).matches == 40


def _folder(tmp_path, count=12):
    """1.png ... 12.png: sorted by name, 10.png comes before 2.png."""
    folder = tmp_path / "triggers"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(1, count + 1):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    return folder


def test_labels_by_file_name_from_a_dict_or_a_csv(tmp_path):
    folder = _folder(tmp_path)
    by_number = {f"{i}.png": (i * 7) % 10 for i in range(1, 13)}
    from_dict = TriggerKey.from_images(folder, labels=by_number, num_classes=10, shape=SHAPE)
    names = sorted(by_number)  # the folder's order: 1, 10, 11, 12, 2, ...
    assert names[:3] == ["1.png", "10.png", "11.png"]
    assert from_dict.labels.tolist() == [by_number[n] for n in names]

    csv = tmp_path / "labels.csv"
    rows = [f"{name},{label}" for name, label in reversed(by_number.items())]
    csv.write_text("file,label\n" + "\n".join(rows) + "\n")
    from_csv = TriggerKey.from_images(folder, labels=csv, num_classes=10, shape=SHAPE)
    assert from_csv.labels.tolist() == from_dict.labels.tolist()
    listed = TriggerKey.from_images([folder / "2.png", folder / "1.png"],
                                    labels={"1.png": 1, "2.png": 2}, num_classes=10,
                                    shape=SHAPE)
    assert listed.labels.tolist() == [2, 1]  # the order the files were given in


def test_label_mapping_errors(tmp_path):
    folder = _folder(tmp_path, 3)
    with pytest.raises(ValueError, match=r"no label for 1 image\(s\) \['3.png'\]; 1 "
                                         r"entry\(ies\) name no image \['4.png'\]"):
        TriggerKey.from_images(folder, labels={"1.png": 0, "2.png": 1, "4.png": 2},
                               num_classes=10, shape=SHAPE)
    with pytest.raises(ValueError, match="needs images given as files or a folder"):
        TriggerKey.from_images(_images(2), labels={"1.png": 0, "2.png": 1}, num_classes=10,
                               shape=SHAPE)
    csv = tmp_path / "labels.csv"
    csv.write_text("1.png,0\n2.png\n")
    with pytest.raises(ValueError, match="row 2 has 1 columns, expected 2"):
        TriggerKey.from_images(folder, labels=csv, num_classes=10, shape=SHAPE)
    csv.write_text("1.png,0\n2.png,one\n3.png,2\n")
    with pytest.raises(ValueError, match="the label of '2.png' is 'one', not a number"):
        TriggerKey.from_images(folder, labels=csv, num_classes=10, shape=SHAPE)
    txt = tmp_path / "labels.txt"
    txt.write_text("1.png,0\n2.png,1\n3.png,2\n")
    with pytest.raises(ValueError, match=r"not a number \(file name,label rows are read from "
                                         r"a .csv file\)"):
        TriggerKey.from_images(folder, labels=txt, num_classes=10, shape=SHAPE)
