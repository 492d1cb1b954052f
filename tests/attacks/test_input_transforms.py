"""WRT's input-side attacks: each model sees exactly the transformed query (checked against
numpy/scipy written independently), in pixel space between the normalization, and keeps
its weights."""

import numpy as np
import pytest
import torch
from scipy.ndimage import median_filter, uniform_filter

from mlguard import attacks
from mlguard.cli.demo import small_cnn

MEAN, STD = (0.3,), (0.35,)


class Capture(torch.nn.Module):
    """Returns its input, so the attacked 'model' shows what the network would be given."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.w


@pytest.fixture
def pixels():
    g = torch.Generator().manual_seed(3)
    return torch.rand(4, 3, 9, 11, generator=g)


def seen(attacked, pixels):
    """The pixels the network of `attacked` receives for `pixels`, through normalization."""
    m, s = torch.tensor(MEAN * 3)[:, None, None], torch.tensor(STD * 3)[:, None, None]
    with torch.no_grad():
        return attacked((pixels - m) / s) * s + m


def attack(fn, **params):
    return fn(Capture(), mean=MEAN * 3, std=STD * 3, **params)


def test_mean_smoothing_is_a_zero_padded_box_filter(pixels):
    got = seen(attack(attacks.mean_smoothing, kernel_size=3), pixels)
    padded = np.pad(pixels.numpy(), [(0, 0), (0, 0), (1, 1), (1, 1)])
    expected = uniform_filter(padded, size=(1, 1, 3, 3), mode="constant")[:, :, 1:-1, 1:-1]
    assert torch.allclose(got, torch.from_numpy(expected), atol=1e-5)


@pytest.mark.parametrize("k", [3, 5])
def test_median_smoothing_is_scipys_median_filter(pixels, k):
    got = seen(attack(attacks.median_smoothing, kernel_size=k), pixels)
    expected = median_filter(pixels.numpy(), size=(1, 1, k, k), mode="reflect")
    assert torch.allclose(got, torch.from_numpy(expected), atol=1e-5)


def test_input_quantization_maps_every_bin_to_its_midpoint(pixels):
    edges = torch.tensor([[[[0.0, 0.0624, 0.0625, 0.5, 0.9375, 0.99, 1.0]]]]).expand(1, 3, 1, 7)
    got = seen(attack(attacks.input_quantization, divisions=16), edges.clone())
    expected = torch.tensor([1, 1, 3, 17, 31, 31, 31]) / 32
    assert torch.allclose(got[0, 0, 0], expected, atol=1e-5)


def test_feature_squeezing_rounds_to_the_bit_depth(pixels):
    got = seen(attack(attacks.feature_squeezing, bit_depth=4), pixels)
    expected = np.rint(pixels.numpy() * 15) / 15
    assert torch.allclose(got, torch.from_numpy(expected), atol=1e-5)


def test_input_flipping_mirrors_left_right_and_top_bottom(pixels):
    assert torch.allclose(seen(attack(attacks.input_flipping), pixels), pixels.flip(-1),
                          atol=1e-5)
    assert torch.allclose(seen(attack(attacks.input_flipping, flip="vertical"), pixels),
                          pixels.flip(-2), atol=1e-5)


def test_input_noising_adds_seeded_fresh_noise_of_the_given_std(pixels):
    grey = torch.full((64, 3, 16, 16), 0.5)
    first = seen(attack(attacks.input_noising, noise_std=0.05, seed=1), grey)
    again = seen(attack(attacks.input_noising, noise_std=0.05, seed=1), grey)
    assert torch.allclose(first, again)  # the same seed repeats the run
    noisy = attack(attacks.input_noising, noise_std=0.05, seed=1)
    assert not torch.allclose(seen(noisy, grey), seen(noisy, grey))  # fresh per query
    assert abs(float((first - 0.5).std()) - 0.05) < 0.003
    assert float(seen(attack(attacks.input_noising, noise_std=5.0), grey).min()) >= -1e-6


def test_weights_are_untouched_and_bad_parameters_are_named():
    model = small_cnn()
    for fn in (attacks.mean_smoothing, attacks.median_smoothing, attacks.input_noising,
               attacks.input_quantization, attacks.feature_squeezing, attacks.input_flipping):
        attacked = fn(model, mean=MEAN, std=STD)
        for (name, a), b in zip(attacked.state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), f"{fn.__name__} changed {name}"
        assert attacked(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        attacks.mean_smoothing(model, 4)
    with pytest.raises(ValueError, match="divisions"):
        attacks.input_quantization(model, 1)
    with pytest.raises(ValueError, match="noise_std"):
        attacks.input_noising(model, -0.1)
    with pytest.raises(ValueError, match="flip must be"):
        attacks.input_flipping(model, "diagonal")
    with pytest.raises(ValueError, match="larger than twice"):
        attacks.median_smoothing(model, 61, mean=MEAN, std=STD)(torch.zeros(1, 1, 28, 28))


def test_wrt_names_are_accepted():
    from mlguard.attacks.registry import get_attack
    assert get_attack("input_gaussian_smoothing").name == "blur"
    assert get_attack("input_median_smoothing").name == "median_smoothing"


def test_input_reconstruction_learns_the_attackers_images_and_serves_reconstructions():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(256, 3, 16, 16, generator=g), 5, 1, 2)
    data = ((smooth - 0.3) / 0.35, torch.zeros(256, dtype=torch.long))
    short = attacks.input_reconstruction(Capture(), data, epochs=1, width=8, mean=MEAN * 3,
                                         std=STD * 3)
    long = attacks.input_reconstruction(Capture(), data, epochs=15, width=8, mean=MEAN * 3,
                                        std=STD * 3)
    assert long.attack_info["reconstruction_mse"] < short.attack_info["reconstruction_mse"]
    got = seen(long, smooth[:8])
    assert got.shape == (8, 3, 16, 16) and not torch.allclose(got, smooth[:8], atol=1e-3)
    assert float((got - smooth[:8]).pow(2).mean()) < 0.01  # close to, not equal to, the query
    assert list(long.state_dict()) == ["w"]  # the autoencoder is not in the model's weights
