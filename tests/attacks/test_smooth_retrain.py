"""Smooth retraining trains on the smoothed victim's labels, not on its plain answers."""

import pytest
import torch
from torch import nn

from mlguard import attacks
from mlguard.attacks.extraction import smoothed_answers


class Rough(nn.Module):
    """Class 1 when pixels stray from grey by 0.1 on average, else class 0: a clean grey
    image is class 0, the same with Gaussian noise of sigma 0.5 (clamped to [0, 1]: a mean
    distance near 0.3) class 1."""

    def forward(self, x):
        score = 50 * ((x - 0.5).abs().flatten(1).mean(1) - 0.1)
        return torch.stack([-score, score], 1)


def student():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 2))


@pytest.fixture
def blank():
    return torch.full((64, 1, 4, 4), 0.5), torch.zeros(64, dtype=torch.long)


@pytest.mark.parametrize("vote", ["mean", "majority"])
def test_the_student_learns_the_smoothed_victims_labels(blank, vote):
    victim = Rough()
    assert (victim(blank[0]).argmax(1) == 0).all()
    g = torch.Generator().manual_seed(0)
    smoothed = smoothed_answers(victim, blank[0], 0.5, 5, "gaussian", vote, g)
    assert smoothed.shape == (64, 2) and torch.allclose(smoothed.sum(1), torch.ones(64))
    assert (smoothed.argmax(1) == 1).all()
    stolen = attacks.smooth_retrain(victim, blank, arch=student, sigma=0.5, n_queries=5,
                                    noise="gaussian", vote=vote, epochs=3, lr=0.05,
                                    batch_size=16)
    plain = attacks.retrain(victim, blank, arch=student, epochs=3, lr=0.05, batch_size=16)
    with torch.no_grad():
        assert (stolen(blank[0]).argmax(1) == 1).all()  # the smoothed victim's label
        assert (plain(blank[0]).argmax(1) == 0).all()  # the plain victim's
    info = stolen.attack_info
    assert info["extraction"] == "smooth_retrain" and info["vote"] == vote
    assert info["queries"] == 64 * 3 * 5


def test_without_noise_it_is_the_victims_posterior(blank):
    torch.manual_seed(0)
    victim = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(8, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        expected = victim(x).softmax(1)
    assert torch.allclose(smoothed_answers(victim, x, 0.0, 3, "gaussian", "mean", g), expected)
    # normalization: noise is added in pixel space and the victim sees normalized inputs
    flipped = smoothed_answers(victim, x, 0.0, 2, "gaussian", "mean", g, mean=(0.5,),
                               std=(0.25,))
    assert torch.allclose(flipped, expected, atol=1e-6)


def test_bad_arguments_are_named(blank):
    victim = Rough()
    with pytest.raises(ValueError, match="noise must be"):
        attacks.smooth_retrain(victim, blank, arch=student, noise="salt")
    with pytest.raises(ValueError, match="vote must be"):
        attacks.smooth_retrain(victim, blank, arch=student, vote="median")
    with pytest.raises(ValueError, match="sigma"):
        attacks.smooth_retrain(victim, blank, arch=student, sigma=-1)
    with pytest.raises(ValueError, match="n_queries"):
        attacks.smooth_retrain(victim, blank, arch=student, n_queries=0)
