"""permute, rescale and add_dummy_units keep the function (logits equal within float
tolerance in eval mode) while moving the weights; what cannot be moved safely is refused."""

import pytest
import torch
import torchvision
from torch import nn

from mlguard import TriggerKey, attacks, verify
from mlguard.cli.demo import small_cnn
from mlguard.weights.unit_graph import unit_graph

ATTACKS = {
    "permute": lambda m: attacks.permute(m, seed=3),
    "rescale": lambda m: attacks.rescale(m, seed=3),
    "dummy": lambda m: attacks.add_dummy_units(m, n=5, seed=3),
    "stacked": lambda m: attacks.add_dummy_units(attacks.rescale(attacks.permute(m, 1), 2), 4, 3),
}


def randomized(model: nn.Module) -> nn.Module:
    """Fresh BatchNorms are the identity (mean 0, var 1, weight 1): give them values, so a
    wrong permutation of their statistics would show in the logits."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, lo, hi in ((m.running_mean, -.5, .5), (m.running_var, .5, 2),
                                  (m.weight, .5, 1.5), (m.bias, -.2, .2)):
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model.eval()


def tiny_wide_resnet() -> nn.Module:
    """A WideResNet (Zagoruyko & Komodakis) in torchvision's form: bottlenecks twice as wide,
    fewer and narrower stages than wide_resnet50_2 so the test stays fast."""
    from torchvision.models.resnet import Bottleneck, ResNet
    return ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=128, num_classes=10)


MODELS = {
    "small_cnn": (small_cnn, (3, 1, 28, 28)),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), (2, 3, 32, 32)),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None), (1, 3, 32, 32)),
    "vgg11_bn": (lambda: torchvision.models.vgg11_bn(weights=None), (2, 3, 32, 32)),
    "wide_resnet": (tiny_wide_resnet, (2, 3, 32, 32)),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model_and_input(request):
    build, shape = MODELS[request.param]
    torch.manual_seed(0)
    model = randomized(build())
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model, x, model(x)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_same_logits_other_weights(model_and_input, attack):
    model, x, logits = model_and_input
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attacked = ATTACKS[attack](model).eval()
    with torch.no_grad():
        out = attacked(x)
    tol = 1e-5 * max(1.0, float(logits.abs().max()))
    assert (out - logits).abs().max() <= tol, f"{attack} changed the logits"
    for k, v in model.state_dict().items():  # the input is untouched
        assert torch.equal(v, before[k])
    after = attacked.state_dict()
    changed = [k for k in before if k.endswith("weight") and
               (after[k].shape != before[k].shape or not torch.equal(after[k], before[k]))]
    # every hidden layer's weights moved; only what reads the input and writes the logits may not
    hidden = [k for k in before if k.endswith("weight") and before[k].dim() > 1]
    assert len(changed) >= len(hidden) - 1, f"{attack} left weights in place: " \
        f"{sorted(set(hidden) - set(changed))}"
    assert attacked.attack_info["seed"] == 3


def test_dummy_units_widen_the_state_dict(model_and_input):
    model, _, _ = model_and_input
    attacked = attacks.add_dummy_units(model, n=5, seed=0)
    space = unit_graph(model).spaces[0]
    w0, w1 = model.state_dict(), attacked.state_dict()
    assert w1[f"{space.name}.weight"].shape[0] == w0[f"{space.name}.weight"].shape[0] + 5
    assert set(attacked.attack_info["units_added"].values()) == {5}


def test_small_cnn_spaces_and_the_flatten_block():
    graph = unit_graph(small_cnn())
    assert [(s.name, s.size) for s in graph.spaces] == [("0", 16), ("3", 32), ("7", 128)]
    assert graph.spaces[1].consumers == [("7", 49)]  # channel c -> features [49c, 49c + 49)
    assert "9" in graph.kept  # the logits are never permuted


def test_residual_stream_shares_one_permutation():
    graph = unit_graph(torchvision.models.resnet18(weights=None))
    stream = next(s for s in graph.spaces if s.name == "conv1")
    assert set(stream.producers) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    assert stream.rescale_at == "norms"


class Viewed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(self.a(x).view(-1, 3, 2).reshape(-1, 6))


class Branchy(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x  # data-dependent control flow: fx cannot trace it


def test_refuses_what_it_cannot_move_safely():
    with pytest.raises(ValueError, match="no hidden units that can be moved.*view"):
        attacks.permute(Viewed())
    with pytest.raises(ValueError, match="torch.fx could not trace"):
        attacks.permute(Branchy())
    with pytest.raises(ValueError, match="no hidden units"):
        attacks.rescale(nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        attacks.add_dummy_units(small_cnn(), n=0)
    with pytest.raises(ValueError, match="spread must be a finite number > 1, got 1"):
        attacks.rescale(small_cnn(), spread=1)


def test_gelu_is_permuted_not_rescaled():
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 2)).eval()
    x = torch.randn(5, 4)
    assert torch.allclose(attacks.permute(model, 1)(x), model(x), atol=1e-6)


def test_trigger_keys_read_the_same_after_free_transforms():
    torch.manual_seed(0)
    model = small_cnn().eval()
    key = TriggerKey.generate(num_classes=10, size=64, shape=(1, 28, 28), secret=bytes(32))
    before = verify(model, key)
    for attack in ATTACKS.values():
        after = verify(attack(model), key)
        assert after.matches == before.matches and after.p_value == before.p_value


def test_evaluate_runs_the_free_transforms_and_reads_with_and_without_reference():
    from mlguard import WeightKey, evaluate
    from mlguard.weights import embed_weights
    torch.manual_seed(0)
    model = small_cnn().eval()
    key = WeightKey.generate(bits=64, targets=("7.weight",), secret=bytes(range(32)))
    embed_weights(model, key, strength=1.0)
    g = torch.Generator().manual_seed(0)
    test = (torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g))
    report = evaluate(model, {"w": key}, ["permute", "rescale", ("dummy", {"n": 3})], None, test,
                      progress=False, reference=model)
    rows = {(r.attack, r.key): r for r in report.rows}
    for attack in ("permute", "rescale", "add_dummy_units"):
        assert rows[(attack, "w+reference")].detected, attack
        assert rows[(attack, "w")].accuracy == rows[("none", "w")].accuracy
    assert not rows[("permute", "w")].detected  # the plain read, as before
