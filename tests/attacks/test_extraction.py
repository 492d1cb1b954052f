"""Model extraction: a fresh model learns the victim's answers (never the attacker's own
labels), within the budget it records; transfer keeps the victim's features under a new head."""

import pytest
import torch
from torch import nn

from mlguard import attacks


def victim():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(256, 1, 4, 4, generator=g), torch.randint(0, 4, (256,), generator=g)


def agreement(a, b, x):
    with torch.no_grad():
        return float((a(x).argmax(1) == b(x).argmax(1)).float().mean())


@pytest.mark.parametrize("labels", ["hard", "soft"])
def test_retrain_learns_the_victims_answers_not_the_attackers_labels(data, labels):
    model = victim()
    stolen = attacks.retrain(model, data, labels=labels, epochs=12, lr=0.05)
    assert not {p.data_ptr() for p in stolen.parameters()} & \
        {p.data_ptr() for p in model.parameters()}
    assert agreement(stolen, model, data[0]) > 0.8
    relabelled = attacks.retrain(model, (data[0], torch.zeros(256, dtype=torch.long)),
                                 labels=labels, epochs=12, lr=0.05)
    for a, b in zip(stolen.parameters(), relabelled.parameters()):
        assert torch.equal(a, b)  # the attacker's labels are never read
    assert stolen.attack_info["queries"] == 256 * 12
    assert stolen.attack_info["labels"] == labels


def test_cross_architecture_retraining_uses_the_given_student(data):
    def wide():
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    stolen = attacks.retrain(victim(), data, arch=wide, epochs=1)
    assert stolen[1].out_features == 64 and stolen.attack_info["student"] == "wide"
    with pytest.raises(ValueError, match="labels must be"):
        attacks.retrain(victim(), data, labels="argmax")
    with pytest.raises(ValueError, match="arch must look like 'package.module:factory'"):
        attacks.retrain(victim(), data, arch="resnet18")
    with pytest.raises(ValueError, match="cannot be imported"):
        attacks.retrain(victim(), data, arch="mlguard.evaluation.archs:no_such_net")
    with pytest.raises(ValueError, match=r"arch: the student cannot take the attacker's inputs"):
        attacks.retrain(victim(), data, arch="mlguard.evaluation.archs:cifar_cnn")
    with pytest.raises(ValueError, match=r"arch: the student gives outputs of shape \(10,\)"):
        attacks.retrain(victim(), data, arch=lambda: nn.Sequential(nn.Flatten(),
                                                                   nn.LazyLinear(10)))


def wide_student():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def test_a_config_names_the_thiefs_architecture_as_module_colon_factory(data):
    stolen = attacks.retrain(victim(), data, arch=f"{__name__}:wide_student", epochs=1)
    assert stolen[1].out_features == 32
    assert stolen.attack_info["student"] == f"{__name__}:wide_student"


def test_knockoff_defaults_to_posteriors_and_four_epochs(data):
    stolen = attacks.knockoff(victim(), data)
    assert stolen.attack_info["labels"] == "soft" and stolen.attack_info["epochs"] == 4
    assert stolen.attack_info["extraction"] == "knockoff"


def test_transfer_keeps_the_features_under_a_new_head(data):
    model = victim()
    moved = attacks.transfer(model, (data[0], data[1] % 3), num_classes=3, epochs=2)
    assert moved[3].out_features == 3 and moved(data[0][:2]).shape == (2, 3)
    assert torch.equal(moved[1].weight, model[1].weight)  # frozen features
    assert all(p.requires_grad for p in moved.parameters())
    thawed = attacks.transfer(model, data, freeze=False, epochs=1)
    assert not torch.equal(thawed[1].weight, model[1].weight)
    assert thawed.attack_info["num_classes"] == 4


def test_extraction_through_a_dawn_api_needs_the_students_architecture(data):
    from mlguard.schemes.dawn import DawnKey, DawnWrapper

    api = DawnWrapper(victim(), DawnKey.generate(num_classes=4, rate=0.1))
    for attack, argument in ((attacks.retrain, "arch"), (attacks.distill, "student")):
        with pytest.raises(ValueError, match=f"prediction API .*give {argument}="):
            attack(api, data, epochs=1)
    stolen = attacks.retrain(api, data, arch=wide_student, epochs=1)
    assert not isinstance(stolen, DawnWrapper) and api.served >= 256  # it asked the API


@pytest.mark.parametrize("attack", ["retrain", "distill", "fine_tune"])
def test_a_diverged_attack_raises_instead_of_returning_a_broken_model(data, attack):
    # a NaN model reads as "mark removed" in a robustness table: it must be an error that
    # names the learning rate, which the evaluation journals as a failed cell. SGD at lr 1e6
    # diverges; Adam's steps are bounded by its lr, so those attacks get a non-finite image.
    model = victim()
    poisoned = (data[0].clone(), data[1])
    poisoned[0][3, 0, 0, 0] = float("nan")
    run = {"retrain": lambda: attacks.retrain(model, data, epochs=2, lr=1e6),
           "distill": lambda: attacks.distill(model, poisoned, epochs=2),
           "fine_tune": lambda: attacks.fine_tune(model, poisoned, "FTAL", epochs=2)}
    with pytest.raises(attacks.TrainingDiverged, match="loss was not finite.*lower its lr"):
        run[attack]()
