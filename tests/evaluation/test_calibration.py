"""A small run of benchmarks/bench_calibration.py: models that never saw a key give match
counts distributed as the verdict's null, and no detection."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from mlguard import data
from mlguard.evaluation import binomial_fit

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fashion_models  # shared with the benchmark


def test_binomial_fit_accepts_binomial_counts_and_rejects_others():
    rng = np.random.default_rng(0)
    good = binomial_fit(rng.binomial(100, 0.1, size=400), 100, 0.1)
    assert good.p_value > 0.01 and good.dof >= 5
    assert all(b[3] >= 5 for b in good.bins) and sum(b[2] for b in good.bins) == 400
    assert abs(good.mean - 10) < 0.5
    # a detector that is right 12% of the time instead of 10%: the test must notice
    assert binomial_fit(rng.binomial(100, 0.12, size=400), 100, 0.1).p_value < 1e-3
    # too little spread (e.g. labels balanced instead of drawn independently)
    assert binomial_fit(np.full(400, 10), 100, 0.1).p_value < 1e-6
    with pytest.raises(ValueError, match="counts must lie in"):
        binomial_fit([5, 101], 100, 0.1)


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                    reason="needs Debian's dataset-fashion-mnist (make setup installs it)")
def test_models_that_never_saw_a_key_match_the_binomial_null():
    images, labels = data.fashion_mnist("train")
    test_x, _ = data.fashion_mnist("test")
    unrelated = fashion_models.cifar_gray(300)
    source = fashion_models.sources(test_x[:300], unrelated)
    counts: dict[str, list] = {}
    for i in range(3):
        model = fashion_models.train_clean(i, images, labels, subset=800, epochs=1)
        tuned = fashion_models.fine_tuned(model, i, images, labels, subset=400)
        for m, index in ((model, i), (tuned, 100 + i)):
            for scheme, rows in fashion_models.null_counts(m, index, keys_per_kind=3,
                                                           triggers=100, bits=256,
                                                           source=source).items():
                counts.setdefault(scheme, []).extend(rows)
    expected = {"abstract", "noise", "content", "weight"} | ({"unrelated"} if unrelated
                                                             is not None else set())
    assert set(counts) == expected
    for scheme, rows in counts.items():
        assert len(rows) == 18
        assert not any(r[3] for r in rows), f"{scheme}: a model that never saw the key detected"
        fit = binomial_fit([r[0] for r in rows], rows[0][1], 0.5 if scheme == "weight" else 0.1)
        print(scheme, fit.mean, fit.variance, fit.chi2, fit.dof, fit.p_value)
        assert fit.p_value > 1e-3, (scheme, fit)
