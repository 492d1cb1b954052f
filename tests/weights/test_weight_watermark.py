"""Weight-space watermarks: keys, the training regularizer, training-free embedding,
verification and customer fingerprints."""

import pytest
import torch

import mlguard
from mlguard import Fingerprints, WeightKey, WeightWatermark, embed_weights, load_key, verify
from mlguard.ops import keyed_projection_sums
from mlguard.verification import verify_weights_many

SECRET = bytes(range(7, 39))


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(100, 300), torch.nn.ReLU(),
                               torch.nn.Linear(300, 10))


def key(**kw):
    args = dict(bits=64, targets=("0.weight",), secret=SECRET)
    args.update(kw)
    return WeightKey.generate(**args)


def test_generate_defaults_and_message():
    k = key()
    assert len(k.message) == 64 and set(k.message) <= {0, 1}
    assert k.message == key().message  # derived from the secret
    assert 16 < sum(k.message) < 48
    explicit = key(message=[1, 0] * 32)
    assert explicit.message == (1, 0) * 32


@pytest.mark.parametrize("kw,match", [
    (dict(bits=0), "bits must be a positive int, got 0"),
    (dict(targets=()), "targets must be a non-empty sequence"),
    (dict(reduce="median"), "reduce must be one of"),
    (dict(message=[1, 0, 2] + [0] * 61), r"message must be 64 bits \(0 or 1\)"),
    (dict(message=[1] * 10), r"message must be 64 bits \(0 or 1\), got 10 values"),
])
def test_bad_generate_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        key(**kw)


def test_gather_errors():
    model = mlp()
    with pytest.raises(ValueError, match=r"target '0.wieght' is not a parameter of the model"):
        key(targets=("0.wieght",)).gather(model)
    model.register_buffer("counts", torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="target 'counts' must be a floating-point tensor"):
        key(targets=("counts",)).gather(model)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module or a state_dict"):
        key().gather([1, 2])


def test_gather_reductions_and_state_dicts():
    model = mlp()
    w = model[0].weight
    assert torch.equal(key().gather(model), w.reshape(-1))
    assert torch.equal(key(reduce="mean_out").gather(model), w.mean(0))
    both = key(targets=("0.weight", "2.bias")).gather(model.state_dict())
    assert torch.equal(both, torch.cat([w.detach().reshape(-1), model[2].bias.detach()]))


def test_save_load_and_commitment(tmp_path):
    k = key(reduce="mean_out")
    k.save(tmp_path / "w.key")
    loaded = load_key(tmp_path / "w.key")
    assert loaded == k and loaded.commitment() == k.commitment()
    assert key().commitment() != key().commitment()  # fresh nonces
    assert SECRET.hex() not in repr(k)
    text = (tmp_path / "w.key").read_text().replace('"bits": 64', '"bits": 65')
    (tmp_path / "bad.key").write_text(text)
    with pytest.raises(ValueError, match="modified or corrupted"):
        load_key(tmp_path / "bad.key")


def test_regularizer_embeds_the_message_and_extract_reads_it():
    model, k = mlp(), key()
    wm = WeightWatermark(k, strength=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(200):
        opt.zero_grad()
        wm.loss(model).backward()
        opt.step()
    assert torch.equal(wm.extract(model), k.message_tensor())
    v = verify(model, k)
    assert v.detected and v.matches == 64 and v.extra["bit_error_rate"] == 0.0


def test_loss_under_autocast_and_with_data_parallel_names():
    model, k = mlp(), key()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = WeightWatermark(k).loss(model)
    loss.backward()
    assert model[0].weight.grad is not None and loss.dtype == torch.float32
    wrapped = torch.nn.DataParallel(model)  # parameters are named "module.0.weight"
    assert torch.equal(k.gather(wrapped), k.gather(model))


def test_unmarked_model_reads_about_half_and_is_not_detected():
    k = key(bits=256)
    v = verify(mlp(seed=3), k)
    assert not v.detected and 90 < v.matches < 166
    assert v.chance == 0.5 and v.scheme == "weight"


@pytest.mark.parametrize("reduce,bits", [("none", 32), ("mean_out", 4)])
def test_embed_weights_training_free(reduce, bits):
    model, k = mlp(), key(reduce=reduce, bits=bits)
    x = torch.randn(64, 100)
    before = model(x).detach()
    report = embed_weights(model, k, strength=1.0, evaluate=lambda m: 0.5)
    assert report.bit_errors_after == 0 and report.min_margin >= 1.0 - 1e-4
    assert 0 < report.relative_weight_change < 0.5
    assert report.accuracy_change == 0.0
    assert verify(model, k).matches == bits
    assert not torch.equal(model(x), before)


def test_verify_accepts_state_dicts_and_many_keys_at_once():
    model = mlp()
    keys = [key(), key(bits=32), WeightKey.generate(bits=64, targets=("2.weight",))]
    many = verify_weights_many(model, keys)
    for k, v in zip(keys, many):
        single = verify(model.state_dict(), k)
        assert (v.matches, v.commitment, v.model_sha256) == (
            single.matches, single.commitment, single.model_sha256)


def test_fingerprints_name_the_buyer():
    customers = [f"customer-{i}" for i in range(100)]  # each issued a key
    reg = Fingerprints(bytes(range(32)), bits=64, targets=("0.weight",), issued=customers)
    assert reg.key_for("alice") == reg.key_for("alice") != reg.key_for("bob")
    leaked = mlp()
    embed_weights(leaked, reg.key_for("customer-42"))
    found = reg.identify(leaked, customers)
    assert found.customer == "customer-42" and found.adjusted_p_value < 1e-6
    assert found.tried == 100
    nobody = reg.identify(mlp(seed=5), customers)
    assert nobody.customer is None and nobody.adjusted_p_value > 1e-6


def test_fingerprint_errors():
    with pytest.raises(ValueError, match="master_secret must be 32 bytes"):
        Fingerprints(b"short")
    with pytest.raises(ValueError, match="scheme must be one of"):
        Fingerprints(bytes(32), scheme="dna")
    with pytest.raises(ValueError, match="customer_id must be a non-empty str"):
        Fingerprints(bytes(32), bits=8, targets=("a",)).key_for("")


def test_public_names():
    for name in ("WeightKey", "WeightWatermark", "embed_weights", "Fingerprints", "verify_weights"):
        assert hasattr(mlguard, name)


@pytest.mark.cuda
def test_cuda_verdict_equals_cpu():
    model, k = mlp(), key(bits=256)
    embed_weights(model, k)
    cpu = verify(model, k)
    # the raw values a verdict is made from, not only the thresholded matches
    w, seeds = k.gather(model).detach(), torch.tensor([k.seed])
    sums = keyed_projection_sums(w.reshape(1, -1), seeds, 256)
    gpu = verify(model.cuda(), k)
    assert (gpu.matches, gpu.model_sha256) == (cpu.matches, cpu.model_sha256)
    gpu_sums = keyed_projection_sums(w.cuda().reshape(1, -1), seeds.cuda(), 256)
    assert torch.equal(gpu_sums[0].cpu(), sums[0]) and torch.equal(gpu_sums[1].cpu(), sums[1])
