"""Neural Cleanse finds a planted backdoor's target as the class with the smallest trigger,
and unlearning or pruning with the reversed trigger weakens the backdoor."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlguard import attacks


def stamp(x):
    x = x.clone()
    x[:, :, :2, :2] = 1.0  # a white 2x2 corner patch
    return x


@pytest.fixture(scope="module")
def backdoored():
    """A small net on a 4-class task (the image's brightness level: a natural trigger must
    change most pixels) whose white corner patch sends anything to class 0 (the darkest)."""
    g = torch.Generator().manual_seed(0)
    x, y = images(1200, g)
    poisoned = stamp(x[:240])
    data_x, data_y = torch.cat([x, poisoned]), torch.cat([y, torch.zeros(240, dtype=torch.long)])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 64, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        for idx in torch.randperm(len(data_x), generator=g).split(128):
            opt.zero_grad()
            F.cross_entropy(model(data_x[idx]), data_y[idx]).backward()
            opt.step()
    return model.eval(), (x, y), images(400, g)[0]


def images(n, g):
    y = torch.randint(0, 4, (n,), generator=g)
    x = (0.2 + 0.2 * y.float())[:, None, None, None] + 0.05 * torch.randn(n, 1, 8, 8, generator=g)
    return x.clamp(0, 1), y


def backdoor_rate(model, test):
    with torch.no_grad():
        hit = model(stamp(test)).argmax(1) == 0
        already = model(test).argmax(1) == 0
    return float(hit[~already].float().mean())


@pytest.mark.parametrize("mode", ["unlearn", "prune"])
def test_the_planted_target_is_found_and_the_backdoor_weakened(backdoored, mode):
    model, data, test = backdoored
    before = backdoor_rate(model, test)
    assert before > 0.9
    cleansed = attacks.neural_cleanse(model, data, mode=mode, n_samples=600,
                                      extract_epochs=6, lmbda=0.01, epochs=3, lr=1e-3,
                                      labels="data", layer="0" if mode == "prune" else None,
                                      ratio=0.25)
    info = cleansed.attack_info
    assert min(range(4), key=lambda t: info["mask_l1"][t]) == 0
    assert info["unlearned"] == [0]
    assert backdoor_rate(cleansed, test) < before - 0.3
    if mode == "prune":
        assert len(info["pruned_channels"]) == 2
        assert float(cleansed[0].weight.detach()[info["pruned_channels"]].abs().sum()) == 0.0


def test_bad_arguments_are_named(backdoored):
    model, data, _ = backdoored
    with pytest.raises(ValueError, match="mode must be"):
        attacks.neural_cleanse(model, data, mode="erase")
    with pytest.raises(ValueError, match="mean and std go together"):
        attacks.neural_cleanse(model, data, mean=(0.5,))
