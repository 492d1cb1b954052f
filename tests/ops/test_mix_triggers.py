"""mlguard::mix_triggers against the plain-PyTorch reference, and its contract."""

import pytest
import torch

from mlguard import reference
from mlguard.ops import abstract_triggers, mix_triggers

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def make(batch=6, dtype=torch.float32, channels_last=False, bank_size=5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 16, 16, generator=g).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=g)
    bank = abstract_triggers(torch.arange(bank_size), 11, (3, 16, 16))
    labels = torch.randint(0, 10, (bank_size,), generator=g)
    return x, y, bank, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("step,per_batch,pad,flip", [(0, 3, 0, False), (5, 4, 2, True),
                                                     (7, 0, 2, True), (123, 9, 16, True)])
def test_matches_reference(dtype, channels_last, step, per_batch, pad, flip):
    x, y, bank, labels = make(dtype=dtype, channels_last=channels_last)
    out, out_y = mix_triggers(x, y, bank, labels, step, per_batch, 99, pad, flip, MEAN, STD)
    ref, ref_y = reference.mix_triggers(x, y, bank, labels, step, per_batch, 99, pad, flip,
                                        MEAN, STD)
    assert out.dtype == dtype and out.shape == (6 + per_batch, 3, 16, 16)
    assert torch.equal(out, ref) and torch.equal(out_y, ref_y)
    assert torch.equal(out[:6], x) and torch.equal(out_y[:6], y)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)


def test_cycles_through_the_bank():
    x, y, bank, labels = make(bank_size=5)
    seen = [mix_triggers(x, y, bank, labels, step, 2, 1)[1][6:] for step in range(5)]
    expected = labels[torch.arange(10) % 5]
    assert torch.equal(torch.cat(seen), expected)


def test_without_augmentation_triggers_are_the_normalized_bank():
    x, y, bank, labels = make()
    out, _ = mix_triggers(x, y, bank, labels, 1, 3, 5, 0, False, MEAN, STD)
    mean = torch.tensor(MEAN)[:, None, None]
    std = torch.tensor(STD)[:, None, None]
    assert torch.equal(out[6:], (bank[[3, 4, 0]] - mean) / std)


def test_augmentation_is_a_function_of_the_step():
    x, y, bank, labels = make()
    a = mix_triggers(x, y, bank, labels, 3, 4, 5, 2, True)[0]
    b = mix_triggers(x, y, bank, labels, 3, 4, 5, 2, True)[0]
    c = mix_triggers(x, y, bank, labels, 3, 4, 6, 2, True)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_non_contiguous_inputs():
    x, y, bank, labels = make()
    xt = x.transpose(2, 3)  # neither contiguous nor channels_last
    out, _ = mix_triggers(xt, y, bank, labels, 0, 2, 1, 1, True)
    ref, _ = reference.mix_triggers(xt.contiguous(), y, bank, labels, 0, 2, 1, 1, True)
    assert torch.equal(out, ref)
    out2, _ = mix_triggers(x, y[::1], bank[::1], labels, 0, 2, 1)
    assert torch.equal(out2[:6], x)


def test_empty_batch():
    x, y, bank, labels = make(batch=0)
    out, out_y = mix_triggers(x, y, bank, labels, 0, 2, 1)
    assert out.shape == (2, 3, 16, 16) and out_y.shape == (2,)


def test_gradient_flows_to_the_batch_only():
    x, y, bank, labels = make(dtype=torch.float64)
    x.requires_grad_(True)
    out, _ = mix_triggers(x, y, bank, labels, 0, 2, 1, 1, True)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    assert torch.equal(x.grad, weights[:6])
    assert torch.autograd.gradcheck(
        lambda t: mix_triggers(t, y, bank, labels, 0, 2, 1, 1, True)[0], (x,))


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(requires_grad, channels_last, device):
    x, y, bank, labels = (t.to(device) for t in make(channels_last=channels_last))
    x.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.mlguard.mix_triggers.default,
                          (x, y, bank, labels, 2, 3, 7, 2, True, MEAN, STD))


def _bad(**changes):
    x, y, bank, labels = make()
    args = dict(x=x, y=y, bank=bank, bank_labels=labels, step=0, per_batch=2, seed=1, pad=1,
                flip=True, mean=MEAN, std=STD)
    args.update(changes)
    return args


@pytest.mark.parametrize("changes,match", [
    (dict(x=torch.zeros(2, 3, 16)), r"x must be 4-D \(N, C, H, W\), got 3-D"),
    (dict(x=torch.zeros(6, 3, 16, 16, dtype=torch.int64)), "x must be float32, float64, float16 or bfloat16, got Long"),
    (dict(y=torch.zeros(5, dtype=torch.int64)), "y must be 1-D with one label per sample of x"),
    (dict(y=torch.zeros(6, dtype=torch.int32)), "y must be int64, got Int"),
    (dict(bank=torch.zeros(5, 3, 8, 8)), "bank must be \\(S, C, H, W\\) with x's image shape"),
    (dict(bank=torch.zeros(5, 3, 16, 16, dtype=torch.float64)), "bank must be float32, got Double"),
    (dict(bank_labels=torch.zeros(4, dtype=torch.int64)), "bank_labels must be 1-D with one label"),
    (dict(step=-1), "step must be >= 0, got -1"),
    (dict(per_batch=-2), "per_batch must be >= 0, got -2"),
    (dict(pad=17), r"pad must be in \[0, min\(H, W\)\], got 17"),
    (dict(mean=[0.5]), r"mean and std need one value per channel \(3\), got 1 and 3"),
    (dict(std=[1.0, 0.0, 1.0]), r"std finite and > 0, got mean\[1\] = 0.48, std\[1\] = 0"),
    (dict(bank=torch.zeros(0, 3, 16, 16), bank_labels=torch.zeros(0, dtype=torch.int64)),
     "bank is empty"),
])
def test_bad_inputs(changes, match):
    with pytest.raises(RuntimeError, match=match):
        mix_triggers(**_bad(**changes))


def test_too_many_channels():
    x = torch.zeros(2, 17, 4, 4)
    with pytest.raises(RuntimeError, match="at most 16 channels are supported, got 17"):
        mix_triggers(x, torch.zeros(2, dtype=torch.int64), torch.zeros(1, 17, 4, 4),
                     torch.zeros(1, dtype=torch.int64), 0, 1, 1)


@pytest.mark.parametrize("dtype", [d for d in (getattr(torch, "float8_e4m3fn", None),
                                                getattr(torch, "float8_e5m2", None)) if d])
def test_float8_is_refused_with_a_clear_message(dtype):
    x, y, bank, labels = make()
    match = r"x must be float32, float64, float16 or bfloat16 \(float8 is not supported"
    with pytest.raises(RuntimeError, match=match):
        mix_triggers(x.to(dtype), y, bank, labels, 0, 2, 1)
    from torch._subclasses.fake_tensor import FakeTensorMode
    x8 = x.to(dtype)
    with FakeTensorMode() as mode, pytest.raises(RuntimeError, match=match):
        torch.ops.mlguard.mix_triggers(*(mode.from_tensor(t) for t in (x8, y, bank, labels)),
                                       0, 2, 1, 0, False, [0.0] * 3, [1.0] * 3)


def test_empty_images_still_return_labels():
    x, y, _, labels = make()
    x0, bank0 = x[:, :, :0], torch.zeros(5, 3, 0, 16)
    out, out_y = mix_triggers(x0, y, bank0, labels, 2, 3, 1)
    assert out.shape == (9, 3, 0, 16)
    assert torch.equal(out_y, torch.cat([y, labels[torch.arange(6, 9) % 5]]))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_bit_identical(dtype, channels_last):
    x, y, bank, labels = make(dtype=dtype, channels_last=channels_last)
    cpu = mix_triggers(x, y, bank, labels, 9, 5, 3, 2, True, MEAN, STD)
    gpu = mix_triggers(x.cuda(), y.cuda(), bank.cuda(), labels.cuda(), 9, 5, 3, 2, True, MEAN, STD)
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert gpu[0].is_contiguous(memory_format=fmt)


@pytest.mark.cuda
def test_cuda_rejects_mixed_devices():
    x, y, bank, labels = make()
    with pytest.raises(RuntimeError, match="all tensors must be on x's device"):
        mix_triggers(x.cuda(), y.cuda(), bank, labels.cuda(), 0, 1, 1)


def test_traces_under_torch_compile():
    x, y, bank, labels = make()

    def step(x, y):
        out, out_y = mix_triggers(x, y, bank, labels, 4, 3, 8, 2, True, MEAN, STD)
        return out * 2, out_y

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got, expected = compiled(x, y), step(x, y)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def _cuda_same(x, y, bank, labels, *args):
    cpu = mix_triggers(x, y, bank, labels, *args)
    gpu = mix_triggers(x.cuda(), y.cuda(), bank.cuda(), labels.cuda(), *args)
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


@pytest.mark.cuda
@pytest.mark.parametrize("batch,per_batch", [(0, 3), (6, 0), (0, 0)])
def test_cuda_empty_batch_or_no_triggers(batch, per_batch):
    x, y, bank, labels = make(batch=batch)
    _cuda_same(x, y, bank, labels, 3, per_batch, 5, 2, True, MEAN, STD)


@pytest.mark.cuda
def test_cuda_empty_images_still_return_labels():
    x, y, _, labels = make()
    _cuda_same(x[:, :, :0], y, torch.zeros(5, 3, 0, 16), labels, 2, 3, 1)


@pytest.mark.cuda
def test_cuda_large_step_and_grid_stride():
    # step * per_batch >= 2^32 (the draw's high word) and more elements than one grid covers
    # (65536 blocks x 256 threads), so the grid-stride loop runs more than once.
    x, y, bank, labels = make(batch=2)
    _cuda_same(x, y, bank, labels, 2**31 + 5, 3, 9, 2, True, MEAN, STD)
    g = torch.Generator().manual_seed(1)
    big = torch.randn(90, 3, 256, 256, generator=g)
    bank = torch.rand(4, 3, 256, 256, generator=g)
    _cuda_same(big, torch.zeros(90, dtype=torch.int64), bank, torch.arange(4), 1, 6, 3, 4, True)


@pytest.mark.cuda
def test_cuda_autograd_and_graph_capture():
    x, y, bank, labels = (t.cuda() for t in make(dtype=torch.float64))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t: mix_triggers(t, y, bank, labels, 0, 2, 1, 1, True)[0], (x,))
    x = x.detach()
    expected = mix_triggers(x, y, bank, labels, 4, 3, 7, 2, True, MEAN, STD)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()  # capture fails on a host sync or a side stream
    with torch.cuda.graph(graph):
        out, out_y = mix_triggers(x, y, bank, labels, 4, 3, 7, 2, True, MEAN, STD)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, expected[0]) and torch.equal(out_y, expected[1])
