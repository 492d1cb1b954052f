"""WRT's model-modification attacks do what their papers say, on a tiny model: each is
reproduced by a plain loop written here, or shown by what it must change."""

import pytest
import torch
import torch.nn.functional as F

from mlguard import attacks
from mlguard.cli.demo import small_cnn


@pytest.fixture
def model():
    torch.manual_seed(0)
    return small_cnn()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)


def plain_fine_tune(model, data, loss, lr, batch_size=64, seed=0):
    """One epoch of Adam over the attack's batches (the same seeded shuffle)."""
    import copy
    m = copy.deepcopy(model)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    batches = attacks._data.Batches(data, batch_size, seed)
    m.train()
    for x, y in batches:
        opt.zero_grad()
        loss(m, x, y).backward()
        opt.step()
    return m


def same_weights(a, b, atol=0.0):
    return all(torch.allclose(p, q, atol=atol, rtol=0) for p, q in
               zip(a.state_dict().values(), b.state_dict().values()))


def test_label_smoothing_is_fine_tuning_with_smoothed_targets(model, data):
    got = attacks.label_smoothing(model, data, epsilon=0.3, epochs=1, labels="data")
    want = plain_fine_tune(model, data, lambda m, x, y: F.cross_entropy(
        m(x), y, label_smoothing=0.3), lr=1e-3)
    assert same_weights(got, want, atol=1e-6)
    assert got.attack_info == {"epsilon": 0.3, "labels": "data", "epochs": 1, "lr": 1e-3,
                               "attacker_samples": 64}


def test_label_smoothing_trains_on_the_victims_answers_by_default(model, data):
    with torch.no_grad():
        answers = model.eval()(data[0]).argmax(1)
    got = attacks.label_smoothing(model, data, epochs=1)
    want = attacks.label_smoothing(model, (data[0], answers), epochs=1, labels="data")
    assert same_weights(got, want, atol=1e-6)


def test_label_noise_without_noise_is_plain_fine_tuning_and_with_it_is_not(model, data):
    clean = attacks.label_noise(model, data, epsilon=0.0, epochs=1, labels="data")
    want = plain_fine_tune(model, data, lambda m, x, y: F.cross_entropy(m(x), y), lr=1e-3)
    assert same_weights(clean, want, atol=1e-6)
    noisy = attacks.label_noise(model, data, epsilon=0.5, epochs=1, labels="data")
    assert not same_weights(noisy, want, atol=1e-4)


def test_weight_shifting_moves_every_conv_kernel_by_its_mean_filter(model, data):
    # lr ~ 0: what is left is the shift itself (no noise with lmbda2 = 0)
    got = attacks.weight_shifting(model, data, lmbda=1.5, lmbda2=0.0, epochs=1, lr=1e-12)
    for name in ("0", "3"):
        w = model.get_submodule(name).weight
        assert torch.allclose(got.get_submodule(name).weight, w - 1.5 * w.mean(0), atol=1e-6)
    assert got.attack_info["shifted"] == ["0", "3"]
    noised = attacks.weight_shifting(model, data, lmbda=0.0, lmbda2=1.0, epochs=1, lr=1e-12)
    change = (noised.get_submodule("0").weight - model.get_submodule("0").weight).detach()
    assert 0.5 < float(change.std() / model.get_submodule("0").weight.detach().std()) < 1.5
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        attacks.weight_shifting(torch.nn.Sequential(torch.nn.Flatten(),
                                                    torch.nn.Linear(784, 10)), data)


def test_regularization_shrinks_the_weights_then_fine_tunes_with_patience(model, data):
    shrunk = attacks.regularization(model, data, l2_decay=5.0, reg_epochs=2,
                                    max_ft_epochs=0, lr=0.01)
    norm = lambda m: sum(float(p.detach().norm()) for n, p in m.named_parameters() if "weight" in n)
    assert norm(shrunk) < 0.95 * norm(model)
    assert shrunk.attack_info["ft_epochs"] == 0
    tuned = attacks.regularization(model, data, l2_decay=0.1, reg_epochs=1, max_ft_epochs=6,
                                   patience=2)
    assert 1 <= tuned.attack_info["ft_epochs"] <= 6
    with pytest.raises(ValueError, match="patience"):
        attacks.regularization(model, data, patience=0)


def test_pgd_stays_within_eps_in_pixel_space_and_raises_the_loss(model, data):
    from mlguard.attacks.adversarial_training import _pgd, _Pixels
    mean, std = (0.3,), (0.35,)
    pixels = _Pixels(mean, std, torch.device("cpu"))
    x = pixels.to_inputs(torch.rand(16, 1, 28, 28))
    y = model.eval()(x).argmax(1)
    adv = _pgd(model, pixels, x, y, eps=0.1, step=0.02, iters=10)
    diff = pixels.to_pixels(adv) - pixels.to_pixels(x)
    assert float(diff.abs().max()) <= 0.1 + 1e-5
    assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)


def test_adversarial_training_records_its_budget(model, data):
    got = attacks.adversarial_training(model, data, epochs=1, eps=(0.05, 0.1), max_iter=2,
                                       n_max=20, mean=(0.3,), std=(0.35,))
    assert got.attack_info["n_max"] == 20 and got.attack_info["eps"] == [0.05, 0.1]
    assert not same_weights(got, model)
    with pytest.raises(ValueError, match="mean and std go together"):
        attacks.adversarial_training(model, data, mean=(0.3,))


def test_occlusions_are_noise_rectangles_within_the_bounds():
    from mlguard.attacks.random_occlusion import occlude
    x = torch.full((50, 1, 20, 20), -5.0)  # outside [low, high]: every changed pixel shows
    out = occlude(x, 0.25, torch.Generator().manual_seed(0), torch.tensor(-1.0),
                  torch.tensor(2.0))
    for image in out:
        changed = (image[0] != -5.0).nonzero()
        rows, cols = changed[:, 0], changed[:, 1]
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert len(changed) == h * w and h < 10 and w < 10  # one rectangle, sides < 2 * 0.25
        assert float(image[image != -5.0].min()) >= -1.0 and float(image.max()) < 2.0


def test_random_occlusion_fine_tunes_on_occluded_copies(model, data):
    got = attacks.random_occlusion(model, data, epochs=1, mean=(0.3,), std=(0.35,))
    assert got.attack_info["occluded_copies"] == 64 and not same_weights(got, model)
