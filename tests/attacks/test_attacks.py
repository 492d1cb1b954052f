"""Each attack does what it says, returns a new model and leaves its input untouched."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms.functional import gaussian_blur

from mlguard import WeightKey, attacks, verify
from mlguard.attacks.registry import NEEDS, get_attack, list_attacks, register_attack
from mlguard.cli.demo import small_cnn
from mlguard.evaluation import attacker_key
from mlguard.evaluation.evaluate import PROVIDERS


@pytest.fixture
def model():
    torch.manual_seed(0)
    return small_cnn()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(96, 1, 28, 28, generator=g), torch.randint(0, 10, (96,), generator=g)


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, model.training,
            [p.requires_grad for p in model.parameters()])


def assert_unchanged(model, before):
    state, training, grads = before
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k in state:
        assert torch.equal(now[k], state[k]), f"the attack changed its input's {k}"
    assert model.training == training
    assert [p.requires_grad for p in model.parameters()] == grads


def assert_no_shared_tensor(a, b):
    ptrs = {t.data_ptr() for t in list(a.parameters()) + list(a.buffers())}
    assert not ptrs & {t.data_ptr() for t in list(b.parameters()) + list(b.buffers())}


def run_attack(attack, model, data, **params):
    """Runs a registry entry as evaluate() would: its fixed params, then what it needs."""
    supplied = {"data": {"data": data},
                "normalization": {"mean": (0.3,), "std": (0.35,)},
                "key": {"key": attacker_key({"owner": WeightKey.generate(
                    bits=32, targets=("9.weight",))})}}
    assert set(supplied) == set(NEEDS), "a new need: supply it here and in evaluate.PROVIDERS"
    for need in attack.needs:
        params = {**supplied[need], **params}
    return attack.fn(model, **attack.fixed, **params)


# every registered attack with its example parameters, plus variants worth a run of their own
CASES = {name: (name, {}) for name in list_attacks()} | {
    "prune_layer": ("prune", {"scope": "layer", "amount": 0.3}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attack_returns_a_new_model_and_leaves_its_input_unchanged(case, model, data):
    name, extra = CASES[case]
    attack = get_attack(name)
    before = snapshot(model)
    attacked = run_attack(attack, model, data, **{**attack.example, **extra})
    assert isinstance(attacked, nn.Module) and attacked is not model
    assert_unchanged(model, before)
    assert_no_shared_tensor(model, attacked)
    assert attacked(data[0][:4]).shape == (4, 10)
    assert isinstance(attacked.attack_info, dict)


@pytest.mark.parametrize("name", list_attacks())
def test_every_registered_attack_is_exported_and_evaluate_supplies_its_needs(name):
    attack = get_attack(name)
    assert getattr(attacks, attack.fn.__name__) is attack.fn
    assert set(attack.needs) <= set(PROVIDERS)
    assert get_attack(name.upper()) is attack
    for alias in attack.aliases:
        assert get_attack(alias) is attack


def test_register_attack_refuses_a_taken_name_an_unknown_need_and_a_wrong_main_param():
    with pytest.raises(ValueError, match="'noise' is taken by 'weight_noise'"):
        register_attack("other", main_param="x", aliases=("noise",))
    with pytest.raises(ValueError, match="needs \\['gpu'\\]"):
        register_attack("other", main_param="x", needs=("gpu",))
    with pytest.raises(ValueError, match="main_param 'sigma' is not a parameter"):
        register_attack("other", main_param="sigma")(lambda model, amount: model)
    assert "other" not in list_attacks()


def test_get_attack_names_the_unknown_attack_and_the_known_ones():
    with pytest.raises(ValueError, match="unknown attack 'pruune'.*'prune'"):
        get_attack("pruune")


@pytest.mark.parametrize("amount", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_global_prune_zeroes_exactly_the_fraction(model, amount):
    pruned = attacks.prune(model, amount)
    weights = [p for p in pruned.parameters() if p.dim() >= 2]
    n = sum(p.numel() for p in weights)
    zeros = sum(int((p == 0).sum()) for p in weights)
    assert zeros == round(amount * n) == pruned.attack_info["pruned"]
    assert pruned.attack_info["pruned_fraction"] == zeros / n
    # the smallest magnitudes went: every kept weight is at least as large as every pruned one
    orig = torch.cat([p.detach().abs().flatten() for p in model.parameters() if p.dim() >= 2])
    kept = torch.cat([p.detach().flatten() for p in weights]) != 0
    if 0 < amount < 1:
        assert orig[kept].min() >= orig[~kept].max()
    for a, b in zip(model.parameters(), pruned.parameters()):  # biases are not weights
        if a.dim() < 2:
            assert torch.equal(a, b)


def test_prune_is_exact_with_ties():
    m = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        m.weight.fill_(1.0)  # every magnitude ties: a threshold would take all or nothing
    assert int((attacks.prune(m, 0.37).weight == 0).sum()) == 37


def test_layer_prune_zeroes_the_fraction_of_every_tensor(model):
    pruned = attacks.prune(model, 0.3, scope="layer")
    for p in pruned.parameters():
        if p.dim() >= 2:
            assert int((p == 0).sum()) == round(0.3 * p.numel())


@pytest.mark.parametrize("bad", [-0.1, 1.5, "half", None, True])
def test_prune_refuses_a_bad_amount(model, bad):
    with pytest.raises(ValueError, match="amount"):
        attacks.prune(model, bad)
    with pytest.raises(ValueError, match="scope"):
        attacks.prune(model, 0.5, scope="net")


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_per_channel_leaves_at_most_2_to_the_bits_levels(model, bits):
    q = attacks.quantize(model, bits)
    for orig, p in zip(model.parameters(), q.parameters()):
        rows = p.reshape(p.shape[0], -1) if p.dim() >= 2 else p.reshape(1, -1)
        for row in rows:
            assert row.unique().numel() <= 2 ** bits
        step = (orig.max() - orig.min()) / (2 ** bits - 1)  # per-tensor step bounds per-row
        assert (p - orig).abs().max() <= step / 2 + 1e-6
    assert not torch.equal(q.state_dict()["0.weight"], model.state_dict()["0.weight"])


def test_quantize_per_tensor(model):
    q = attacks.quantize(model, 3, per_channel=False)
    for p in q.parameters():
        assert p.unique().numel() <= 8


def test_cast_round_trip_is_representable(model):
    for dtype, torch_dtype in (("fp16", torch.float16), ("bfloat16", torch.bfloat16)):
        c = attacks.cast(model, dtype)
        for p in c.parameters():
            assert torch.equal(p.to(torch_dtype).float(), p)
    with pytest.raises(ValueError, match="dtype"):
        attacks.cast(model, "int8")


def test_weight_noise_is_scaled_to_each_tensors_spread(model):
    noisy = attacks.weight_noise(model, 0.5)
    for a, b in zip(model.parameters(), noisy.parameters()):
        if a.numel() >= 1000:  # enough entries for the sample std to be near its value
            ratio = float((b - a).detach().std() / a.detach().std())
            assert 0.45 < ratio < 0.55, ratio
        assert not torch.equal(a, b)
    assert torch.equal(attacks.weight_noise(model, 0.5).state_dict()["0.weight"],
                       noisy.state_dict()["0.weight"])  # seeded
    with pytest.raises(ValueError, match="sigma"):
        attacks.weight_noise(model, -1)


def test_last_layer_is_the_final_linear_or_the_named_one(model):
    assert attacks.last_linear(model)[0] == "9"
    assert attacks.last_linear(model, "7")[0] == "7"
    with pytest.raises(ValueError, match="last_layer='nope'"):
        attacks.last_linear(model, "nope")
    with pytest.raises(ValueError, match="no nn.Linear"):
        attacks.last_linear(nn.Sequential(nn.Conv2d(1, 2, 3)))


@pytest.mark.parametrize("mode", ["RTLL", "RTAL"])
def test_rt_modes_reinitialize_the_last_layer(model, data, mode):
    # a vanishing learning rate leaves the re-initialized head as reset_parameters made it
    attacked = attacks.fine_tune(model, data, mode, lr=1e-12, seed=7)
    expected = nn.Linear(128, 10)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        expected.reset_parameters()
    assert torch.allclose(attacked[9].weight, expected.weight, atol=1e-8)
    assert torch.allclose(attacked[9].bias, expected.bias, atol=1e-8)
    assert not torch.allclose(attacked[9].weight, model[9].weight)


def test_ll_modes_train_only_the_last_layer(model, data):
    for mode in ("FTLL", "RTLL"):
        attacked = attacks.fine_tune(model, data, mode, lr=1e-2)
        for name, p in attacked.named_parameters():
            same = torch.equal(p, model.get_parameter(name))
            assert same == (not name.startswith("9.")), (mode, name)
    ftal = attacks.fine_tune(model, data, "FTAL", lr=1e-2)
    assert not torch.equal(ftal[0].weight, model[0].weight)


def test_fine_tune_accepts_a_named_head_and_every_data_form(model, data):
    x, y = data
    for d in (data, TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=32)):
        a = attacks.fine_tune(model, d, "FTLL", last_layer="7", lr=1e-2)
        assert a.attack_info["last_layer"] == "7" and a.attack_info["attacker_samples"] == 96
        assert not torch.equal(a[7].weight, model[7].weight)
        assert torch.equal(a[9].weight, model[9].weight)


@pytest.mark.parametrize("bad, error, match", [
    ([1, 2, 3], TypeError, "data must be"), ((torch.zeros(4, 1, 28, 28), torch.zeros(3)),
                                             ValueError, "data as"),
    ((torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)),
     ValueError, "float")])
def test_bad_attacker_data_is_a_clear_error(model, bad, error, match):
    with pytest.raises(error, match=match):
        attacks.fine_tune(model, bad)


def test_fine_tune_refuses_an_unknown_mode(model, data):
    with pytest.raises(ValueError, match="mode must be one of"):
        attacks.fine_tune(model, data, "FTXX")


def test_fine_prune_zeroes_the_least_active_channels_and_keeps_them_zero(model, data):
    attacked = attacks.fine_prune(model, data, 0.25, epochs=1, lr=1e-2)
    dead = attacked.attack_info["pruned_channels"]
    assert len(dead) == round(0.25 * 32) == 8
    conv = attacked[3]
    assert torch.all(conv.weight[dead] == 0) and torch.all(conv.bias[dead] == 0)
    alive = [c for c in range(32) if c not in dead]
    assert torch.all(conv.weight[alive].abs().sum(dim=(1, 2, 3)) > 0)
    # the pruned ones are the least active on the data
    acts = torch.relu(model[:4](data[0])).mean(dim=(0, 2, 3))
    assert acts[dead].max() <= acts[alive].min()


def test_distilled_student_is_fresh_and_learns_from_soft_labels(model, data):
    student = attacks.distill(model, data, epochs=1)
    assert_no_shared_tensor(model, student)
    for a, b in zip(model.parameters(), student.parameters()):
        assert not torch.equal(a, b)  # re-initialized, then trained: nothing carried over
    x, _ = data
    random_labels = (x, torch.randint(0, 10, (96,)))
    # labels are not used: any labels give the same student
    other = attacks.distill(model, random_labels, epochs=1)
    assert torch.equal(other[9].weight, student[9].weight)
    made = []

    def factory():
        made.append(1)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    small = attacks.distill(model, data, student=factory, epochs=1)
    assert made and small[1].weight.shape == (10, 784)


def test_overwrite_embeds_the_attackers_weight_key(model, data):
    thief = WeightKey.generate(bits=32, targets=("9.weight",))
    assert verify(model, thief).matches < 32
    attacked = attacks.overwrite(model, data, thief, epochs=5, lr=1e-2, strength=1.0)
    assert verify(attacked, thief).matches == 32
    with pytest.raises(TypeError, match="key must be"):
        attacks.overwrite(model, data, "mine")


def test_query_transforms_change_inputs_not_weights(model, data):
    x = data[0][:8].clamp(-0.8, 2.0)
    mean, std = (0.3,), (0.35,)
    blurred = attacks.blur(model, 1.0, mean=mean, std=std)
    assert_unchanged(blurred, snapshot(model))  # same weights: weight keys read the same
    images = x * 0.35 + 0.3
    expected = model((gaussian_blur(images.clamp(0, 1), [7, 7], [1.0, 1.0]) - 0.3) / 0.35)
    assert torch.allclose(blurred(x), expected, atol=1e-5)
    compressed = attacks.jpeg(model, 10, mean=mean, std=std)
    assert not torch.allclose(compressed(x), model(x))
    with pytest.raises(ValueError, match="quality"):
        attacks.jpeg(model, 0)
    with pytest.raises(ValueError, match="mean and std go together"):
        attacks.jpeg(model, 50, mean=mean)
