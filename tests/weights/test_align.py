"""align: a permuted / rescaled / widened copy comes back to the reference's exact weights,
and what it did is recorded; what is not the reference's architecture is refused."""

import pytest
import torch
import torchvision
from torch import nn

from mlguard import attacks
from mlguard.cli.demo import small_cnn
from mlguard.weights.align import Reference, align

def STACKED(m):
    return attacks.add_dummy_units(attacks.rescale(attacks.permute(m, 1), 2), 4, 3)


def randomized_bn(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + .5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + .5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * .2)
    return model.eval()


def assert_recovered(state, reference: Reference):
    for k, v in reference.state.items():
        assert state[k].shape == v.shape, k
        assert torch.allclose(state[k].double(), v.double(), rtol=1e-5, atol=1e-6), k


@pytest.mark.parametrize("exclude", [(), ("7.weight",)])
@pytest.mark.parametrize("attack", ["permute", "rescale", "dummy", "stacked"])
def test_small_cnn_copies_come_back(attack, exclude):
    torch.manual_seed(0)
    model = small_cnn().eval()
    suspect = {"permute": lambda m: attacks.permute(m, 1),
               "rescale": lambda m: attacks.rescale(m, 1),
               "dummy": lambda m: attacks.add_dummy_units(m, 5, 1),
               "stacked": STACKED}[attack](model)
    ref = Reference(model)
    moved = any(not torch.equal(suspect.state_dict()[k], v) for k, v in ref.state.items()
                if suspect.state_dict()[k].shape == v.shape)
    assert moved or attack in ("dummy", "stacked")  # those change the shapes instead
    state, record = align(suspect, ref, exclude=exclude)
    assert_recovered(state, ref)
    assert record.reference_sha256 == ref.sha256
    assert record.matching_cost < 1e-6
    assert record.excluded == list(exclude)
    assert (record.permuted > 0) == (attack in ("permute", "stacked"))
    assert (record.rescaled > 0) == (attack in ("rescale", "stacked"))
    assert record.dropped == {"dummy": 15, "stacked": 12}.get(attack, 0)


def test_resnet18_stacked_copy_comes_back_from_a_state_dict():
    torch.manual_seed(0)
    model = randomized_bn(torchvision.models.resnet18(weights=None, num_classes=10))
    ref = Reference(model)
    state, record = align(STACKED(model).state_dict(), ref, exclude=["layer4.1.conv2.weight"])
    assert_recovered(state, ref)
    assert record.permuted > 1000 and record.rescaled > 1000 and record.dropped == 4 * 12


def test_unrelated_model_costs_more_than_a_copy():
    torch.manual_seed(0)
    ref = Reference(small_cnn())
    torch.manual_seed(1)
    _, record = align(small_cnn(), ref)
    assert record.matching_cost > 0.1


def test_refuses_another_architecture():
    ref = Reference(small_cnn())
    narrow = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    with pytest.raises(ValueError, match="'0' has 8 units, the reference's 16"):
        align(narrow, ref)
    with pytest.raises(ValueError, match="no tensor '9.bias'"):
        align({k: v for k, v in small_cnn().state_dict().items() if k != "9.bias"}, ref)
    with pytest.raises(ValueError, match="every tensor that tells them apart is excluded"):
        align(small_cnn(), ref, exclude=["7.weight", "7.bias", "9.weight"])
    with pytest.raises(TypeError, match="suspect must be"):
        align(3, ref)


def test_tensors_of_the_wrong_shape_are_a_clear_error():
    state = small_cnn().state_dict()
    state["7.weight"] = state["7.weight"][:, :100]  # columns no flatten of 32 channels gives
    with pytest.raises(ValueError, match="around layer '3' do not fit the reference's"):
        align(state, Reference(small_cnn()))


class TinyResNet(nn.Module):
    """A stem and two residual blocks on one stream: the stream's space has three producers
    and five consumers, of which the first pass can use only the stem and the BatchNorms."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "conv1": nn.Conv2d(8, 8, 3, padding=1, bias=False), "bn1": nn.BatchNorm2d(8),
            "conv2": nn.Conv2d(8, 8, 3, padding=1, bias=False), "bn2": nn.BatchNorm2d(8)})
            for _ in range(2))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        for b in self.blocks:
            x = torch.relu(x + b["bn2"](b["conv2"](torch.relu(b["bn1"](b["conv1"](x))))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


EXCLUDED = ["stem.weight", "fc.weight"]  # a key on both: what the first pass matches on


def test_iterated_matching_recovers_what_one_pass_cannot():
    """With the stem and head excluded (a key on them) and untrained BatchNorms (all units
    alike), the first pass has nothing to tell the stream's units apart; Re-Basin's sweeps match them
    on the blocks' rows and columns and bring the copy back exactly."""
    torch.manual_seed(0)
    model = TinyResNet().eval()
    ref = Reference(model)
    suspect = attacks.permute(model, 3)
    state, record = align(suspect, ref, exclude=EXCLUDED, max_iterations=0)
    assert not torch.equal(state["blocks.0.conv1.weight"], ref.state["blocks.0.conv1.weight"])
    assert record.iterations == 0 and record.to_dict()["units_moved_by_iterations"] == 0
    state, record = align(suspect, ref, exclude=EXCLUDED, max_iterations=10)
    assert_recovered(state, ref)
    assert record.converged and 2 <= record.iterations <= 10
    assert record.to_dict()["units_moved_by_iterations"] > 0
    assert record.to_dict()["max_iterations"] == 10
    assert record.matching_cost < 1e-6
    _, bounded = align(suspect, ref, exclude=EXCLUDED, max_iterations=1)
    assert bounded.iterations == 1 and not bounded.converged  # the bound stopped it


def test_iterated_matching_never_reads_the_excluded_tensors():
    """Changing only the excluded tensors' values cannot change what alignment does."""
    torch.manual_seed(0)
    ref = Reference(TinyResNet().eval())
    torch.manual_seed(1)
    suspect = TinyResNet().eval().state_dict()
    other = dict(suspect)
    other["blocks.0.conv2.weight"] = torch.randn_like(suspect["blocks.0.conv2.weight"])
    a, ra = align(suspect, ref, exclude=["blocks.0.conv2.weight"])
    b, rb = align(other, ref, exclude=["blocks.0.conv2.weight"])
    assert ra.spaces == rb.spaces
    assert all(torch.equal(a[k], b[k]) for k in a if k != "blocks.0.conv2.weight")


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_max_iterations_must_be_a_count(bad):
    with pytest.raises(ValueError, match="max_iterations"):
        align(small_cnn(), Reference(small_cnn()), max_iterations=bad)
