"""Neural laundering reconstructs a planted backdoor's trigger, resets the units it excites
and retrains; it weakens the backdoor more than plain fine-tuning of the same budget."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlguard import attacks


def stamp(x):
    x = x.clone()
    x[:, :, :2, :2] = 1.0  # a white 2x2 corner patch
    return x


def images(n, g):
    y = torch.randint(0, 4, (n,), generator=g)
    x = (0.2 + 0.2 * y.float())[:, None, None, None] + 0.05 * torch.randn(n, 1, 8, 8, generator=g)
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def backdoored():
    return train_backdoored()


def train_backdoored():
    """A small net on a 4-class task (the image's brightness level) whose white corner patch
    sends anything to class 0 (the darkest)."""
    g = torch.Generator().manual_seed(0)
    x, y = images(1200, g)
    data_x = torch.cat([x, stamp(x[:240])])
    data_y = torch.cat([y, torch.zeros(240, dtype=torch.long)])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 64, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        for idx in torch.randperm(len(data_x), generator=g).split(128):
            opt.zero_grad()
            F.cross_entropy(model(data_x[idx]), data_y[idx]).backward()
            opt.step()
    return model.eval(), (x, y), images(400, g)[0]


def backdoor_rate(model, test):
    with torch.no_grad():
        hit = model(stamp(test)).argmax(1) == 0
        already = model(test).argmax(1) == 0
    return float(hit[~already].float().mean())


def test_laundering_weakens_the_backdoor_more_than_fine_tuning(backdoored):
    model, data, test = backdoored
    before = backdoor_rate(model, test)
    assert before > 0.9
    state = {k: v.clone() for k, v in model.state_dict().items()}
    laundered = attacks.neural_laundering(model, data, epochs=3, n_samples=600,
                                          extract_epochs=6, labels="data")
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"the attack changed its input's {k}"
    info = laundered.attack_info
    assert info["trigger_class"] == 0  # the planted target has the smallest trigger
    assert info["retrain_samples"] == 1200 and info["epochs"] == 3
    # the deeper half of the conv/dense layers, the head left alone
    assert set(info["reset_units"]) == {"2", "5"}
    assert sum(n for n, _ in info["reset_units"].values()) > 0
    # plain fine-tuning of the same samples at the same rate (Adam 1e-4) for as many steps
    # (the laundering set holds each sample twice, clean and stamped: 6 epochs, not 3)
    tuned = attacks.fine_tune(model, (data[0][:600], data[1][:600]), mode="FTAL", epochs=6,
                              lr=1e-4, batch_size=64)
    laundered_rate, tuned_rate = backdoor_rate(laundered, test), backdoor_rate(tuned, test)
    assert laundered_rate < before - 0.5
    assert laundered_rate < tuned_rate - 0.3


def test_reset_units_are_zero_before_retraining_and_layers_are_checked(backdoored):
    model, data, _ = backdoored
    with pytest.raises(ValueError, match="not conv/linear layers"):
        attacks.neural_laundering(model, data, layers=["7"], n_samples=32, extract_epochs=1)
    with pytest.raises(ValueError, match="conv_threshold"):
        attacks.neural_laundering(model, data, conv_threshold=-1)
    with pytest.raises(ValueError, match="mean and std go together"):
        attacks.neural_laundering(model, data, mean=(0.5,))
    # a zero threshold resets every unit whose activation rises at all; lr tiny so the
    # retraining cannot bring them back: the reset units are the zero rows
    laundered = attacks.neural_laundering(model, data, layers=["2"], conv_threshold=0.0,
                                          n_samples=64, extract_epochs=1, epochs=1, lr=1e-12,
                                          labels="data")
    count, total = laundered.attack_info["reset_units"]["2"]
    zero_rows = int((laundered[2].weight.detach().flatten(1).abs().sum(1) < 1e-6).sum())
    assert total == 8 and count == zero_rows
