"""Keyed projection ops against the materialized-R reference, and their contract.

keyed_projection (training, float), keyed_projection_sums (the exact read of
docs/projection.md) and keyed_projection_v1 (the legacy fixed float order).
"""

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mlguard
from mlguard import reference
from mlguard.ops import keyed_projection, keyed_projection_batched
from mlguard.ops.keyed_projection import keyed_projection_sums, read_bits
from mlguard.reference import philox

SEED = -0x1234_5678_9ABC
NUMELS = [1, 127, 128, 129, 1000, 16384, 16385, 40000]


@pytest.mark.parametrize("numel", NUMELS)
@pytest.mark.parametrize("bits", [1, 8, 13, 70])
def test_training_forward_matches_materialized_reference(numel, bits):
    w = torch.randn(numel, dtype=torch.float64)
    expected = reference.keyed_projection(w, SEED, bits)
    got = keyed_projection(w, SEED, bits)
    assert got.dtype == torch.float64 and got.shape == (bits,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    got32 = keyed_projection(w.float(), SEED, bits)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected, rtol=1e-5, atol=1e-5)


def test_R_entries_are_plus_minus_one_over_sqrt_m_and_balanced():
    R = reference.projection_matrix(SEED, 16, 4096)
    assert set(R.unique().tolist()) == {-1 / 64, 1 / 64}
    # Read R back through the ops, one column at a time: exact, since one term is nonzero.
    for m in (0, 1, 130, 4095):
        e = torch.zeros(4096)
        e[m] = 1.0
        assert torch.equal(keyed_projection(e, SEED, 16), R[:, m].float())
        sums, shift = keyed_projection_sums(e.reshape(1, -1), torch.tensor([SEED]), 16)
        assert int(shift) == 1 - 16 and torch.equal(sums[0, 0], (R[:, m] * 64 * 2**15).long())
    assert abs(R.sign().mean().item()) < 0.02


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_accumulate_in_float32(dtype):
    w = torch.randn(3000).to(dtype)
    got = keyed_projection(w, 3, 32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference.keyed_projection(w.double(), 3, 32),
                               rtol=1e-5, atol=1e-5)


def test_any_shape_and_non_contiguous():
    w = torch.randn(64, 32, 3, 3)
    flat = keyed_projection(w.reshape(-1), 5, 16)
    assert torch.equal(keyed_projection(w, 5, 16), flat)
    wt = w.transpose(0, 1)  # projects the elements in the view's logical order
    assert torch.equal(keyed_projection(wt, 5, 16), keyed_projection(wt.contiguous(), 5, 16))
    W = torch.randn(300, 2).T  # non-contiguous rows
    assert torch.equal(keyed_projection_sums(W, torch.tensor([4]), 9)[0],
                       keyed_projection_sums(W.contiguous(), torch.tensor([4]), 9)[0])


def test_empty_weights_project_to_zero():
    assert torch.equal(keyed_projection(torch.empty(0), 1, 4), torch.zeros(4))
    sums, shift = keyed_projection_sums(torch.empty(2, 0), torch.tensor([1, 2]), 4)
    assert torch.equal(sums, torch.zeros(2, 2, 4, dtype=torch.long))
    assert torch.equal(shift, torch.zeros(2, dtype=torch.long))
    assert keyed_projection_sums(torch.empty(0, 5), torch.tensor([1]), 4)[0].shape == (0, 1, 4)
    assert keyed_projection_sums(torch.empty(2, 5), torch.empty(0, dtype=torch.long),
                                 4)[0].shape == (2, 0, 4)


def test_backward_is_R_transpose():
    w = torch.randn(3000, dtype=torch.float64, requires_grad=True)
    g = torch.randn(24, dtype=torch.float64)
    keyed_projection(w, SEED, 24).backward(g)
    expected = reference.projection_matrix(SEED, 24, 3000).T @ g
    torch.testing.assert_close(w.grad, expected, rtol=1e-12, atol=1e-12)


def test_backward_float32_and_many_rows():
    g = torch.randn(300)  # more than one block of drawn rows
    back = torch.ops.mlguard._keyed_projection_backward(g, SEED, 1000)
    expected = reference.projection_matrix(SEED, 300, 1000).T @ g.double()
    torch.testing.assert_close(back.double(), expected, rtol=1e-5, atol=1e-5)


def test_gradcheck():
    w = torch.randn(300, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: keyed_projection(t, 9, 7), (w,))


def test_gradient_keeps_shape_and_dtype():
    w = torch.randn(8, 5, requires_grad=True)
    keyed_projection(w, 1, 3).sum().backward()
    assert w.grad.shape == (8, 5) and w.grad.dtype == torch.float32


# ---- the exact read (projection 2) -------------------------------------------------------

@pytest.mark.parametrize("numel", NUMELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_sums_match_the_definition_exactly(numel, dtype):
    w = torch.randn(3, numel).to(dtype)
    w[1] *= 1e-3
    seeds = [SEED, 7]
    sums, shift = keyed_projection_sums(w, torch.tensor(seeds), 13)
    ref_sums, ref_shift = reference.keyed_projection_sums(w, seeds, 13)
    assert sums.dtype == torch.int64 and torch.equal(shift, ref_shift)
    assert torch.equal(sums, ref_sums)


@pytest.fixture(params=["native", "tables"])
def sums_kernel(request, monkeypatch):
    """Runs a test with this CPU's kernel for the exact read, then with the lookup tables
    forced (the bit-plane kernel needs AVX-512 VPOPCNTDQ; other CPUs always use the tables)."""
    if request.param == "tables":
        monkeypatch.setenv("MLGUARD_PROJECTION_TABLES", "1")
    return torch.ops.mlguard._projection_sums_cpu_kernel()


@pytest.mark.parametrize("scale", [1e-310, 1e-300, 1e-40, 1.0, 1e37, 1e300])
def test_sums_exact_at_the_ends_of_the_exponent_range(scale, sums_kernel):
    # 1e-310: float64 subnormals, whose 2^-shift is not a finite double (the ldexp form)
    dtype = torch.float32 if 1e-40 <= scale <= 1e37 else torch.float64
    w = (torch.randn(1, 2000, dtype=torch.float64) * scale).to(dtype)
    w[0, 5] = 0.0
    if dtype == torch.float32:
        w[0, 7] = 1e-45  # a subnormal
    sums, shift = keyed_projection_sums(w, torch.tensor([3]), 40)
    ref_sums, ref_shift = reference.keyed_projection_sums(w, [3], 40)
    assert torch.equal(shift, ref_shift) and torch.equal(sums, ref_sums)


def test_rounding_is_half_to_even(sums_kernel):
    # amax = 1 -> shift = 1 - 16: q = w * 2^15, so k + 1/2 ulps are exact ties.
    ties = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.25]) / 2**15
    w = torch.cat([torch.tensor([1.0]), ties]).double()
    q, shift = reference.fixed_point(w)
    assert shift == -15 and q.tolist() == [32768, 0, 2, 2, 0, -2, -2, 3]
    sums, _ = keyed_projection_sums(w.reshape(1, -1), torch.tensor([11]), 50)
    signs = reference.projection_matrix(11, 50, w.numel()).sign().long()
    assert torch.equal(sums[0, 0], signs @ q)


def test_sums_do_not_depend_on_batching_or_threads(sums_kernel):
    w = torch.randn(5, 30000)  # large enough for both threads; one model, one seed is not
    seeds = torch.tensor([1, -2, 2**62])
    batched = keyed_projection_sums(w, seeds, 33)[0]
    for n in range(5):
        for k in range(3):
            single = keyed_projection_sums(w[n:n + 1], seeds[k:k + 1], 33)[0]
            assert torch.equal(single[0, 0], batched[n, k])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(keyed_projection_sums(w, seeds, 33)[0], batched)
    finally:
        torch.set_num_threads(threads)


def test_integer_weights_are_their_own_image_and_sums_do_not_overflow(sums_kernel):
    # Integers below 2^16 with amax >= 2^15 have shift 0, so q = w and S = signs @ w exactly;
    # all terms of row 0 positive makes S[0] = M (2^16 - 1) > 2^32: int64 across tiles.
    M = 100_000
    signs = reference.projection_matrix(21, 3, M).sign().long()
    w = signs[0] * (2**16 - 1)
    sums, shift = keyed_projection_sums(w.double().reshape(1, -1), torch.tensor([21]), 3)
    assert int(shift) == 0 and sums[0, 0, 0].item() == M * (2**16 - 1)
    assert torch.equal(sums[0, 0], signs @ w)
    r = torch.randint(-2**15, 2**15, (M,))
    r[7] = 2**15
    sums, shift = keyed_projection_sums(r.float().reshape(1, -1), torch.tensor([21]), 3)
    assert int(shift) == 0 and torch.equal(sums[0, 0], signs @ r)


def test_sums_at_the_largest_fixed_point_values(sums_kernel):
    # max |w| just below a power of two rounds to |q| = 2^16: the top of the 18-bit range
    top = 1 - 2**-20
    w = torch.randn(1, 3000, dtype=torch.float64).clamp(-0.9, 0.9)
    w[0, 0], w[0, 1], w[0, 2999] = -top, top, -top
    q, shift = reference.fixed_point(w[0])
    assert shift == -16 and q[0] == -2**16 and q[1] == 2**16
    sums, got_shift = keyed_projection_sums(w, torch.tensor([SEED]), 21)
    assert int(got_shift) == -16
    assert torch.equal(sums, reference.keyed_projection_sums(w, [SEED], 21)[0])


@pytest.mark.parametrize("models,numel,bits", [
    (1, 1, 1), (1, 4095, 16), (1, 4097, 17), (3, 40000, 70),  # tiles of 32 chunks, 16 rows
    (130, 300, 33),                                           # many models: 1-chunk tiles
    (1, 300_000, 64), (2, 70_000, 130)])                      # split across threads
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cpu_kernels_give_the_same_sums(models, numel, bits, dtype, monkeypatch):
    w = torch.randn(models, numel).to(dtype)
    w[0] *= 1e-3
    seeds = torch.tensor([SEED, 7])
    native = keyed_projection_sums(w, seeds, bits)
    monkeypatch.setenv("MLGUARD_PROJECTION_TABLES", "1")
    tables = keyed_projection_sums(w, seeds, bits)
    assert torch.equal(native[1], tables[1]) and torch.equal(native[0], tables[0])


def test_cpu_kernel_follows_the_cpu(monkeypatch):
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split())
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags on this system")
    expected = "bitplanes" if {"avx512f", "avx512_vpopcntdq"} <= flags else "tables"
    assert torch.ops.mlguard._projection_sums_cpu_kernel() == expected
    assert mlguard.build_info()["cpu_projection_kernel"] == expected
    monkeypatch.setenv("MLGUARD_PROJECTION_TABLES", "1")
    assert torch.ops.mlguard._projection_sums_cpu_kernel() == "tables"


def test_read_bits_and_batched_values():
    w = torch.randn(2, 7000)
    seeds = torch.tensor([SEED, 5])
    sums, shift = keyed_projection_sums(w, seeds, 64)
    assert torch.equal(read_bits(w, seeds, 64), sums > 0)
    y = keyed_projection_batched(w, seeds, 64)
    assert y.dtype == torch.float64 and torch.equal(y > 0, sums > 0)
    exact = torch.stack([torch.stack([reference.keyed_projection(w[n].double(), int(s), 64)
                                      for s in seeds]) for n in range(2)])
    quantum = 2.0 ** shift.double().max() / 7000 ** 0.5  # y is within M/2 quanta of R w
    assert (y - exact).abs().max() < 7000 ** 0.5 * quantum


def test_non_finite_weights_are_refused():
    w = torch.randn(3, 100)
    w[1, 4] = float("nan")
    with pytest.raises((ValueError, RuntimeError), match="finite.*model"):
        keyed_projection_sums(w, torch.tensor([1]), 8)
    w[1, 4] = float("inf")
    with pytest.raises((ValueError, RuntimeError), match="finite.*model"):
        read_bits(w, torch.tensor([1]), 8)


# ---- projection 1 (keys made before the exact read) --------------------------------------

def _documented_order(w: torch.Tensor, seed: int, bits: int) -> torch.Tensor:
    """keyed_projection_v1's summation order, one float32 operation at a time."""
    f32 = np.float32
    w = w.numpy().astype(np.float32)
    numel = len(w)
    chunks = max((numel + 127) // 128, 1)
    out = []
    for t in range(bits):
        level = []
        for c in range(chunks):
            words = philox.keyed_block(seed, *philox.split64(c), t, 0x70726A31)
            acc = f32(0)
            for j in range(min(128, numel - c * 128)):
                v = w[c * 128 + j]
                acc = f32(acc + (-v if (words[j >> 5] >> (j & 31)) & 1 else v))
            level.append(acc)
        while True:  # tree levels, groups of 128, a[i] += a[i + s]
            nodes = []
            for g in range(0, len(level), 128):
                a = level[g:g + 128] + [f32(0)] * (128 - len(level[g:g + 128]))
                s = 64
                while s:
                    for i in range(s):
                        a[i] = f32(a[i] + a[i + s])
                    s //= 2
                nodes.append(a[0])
            level = nodes
            if len(level) == 1:
                break
        out.append(f32(level[0] * f32(1.0 / np.sqrt(np.float64(max(numel, 1))))))
    return torch.tensor(np.array(out, dtype=np.float32))


@pytest.mark.parametrize("numel", [1, 300, 20000])
def test_projection_1_follows_the_documented_order_bit_for_bit(numel):
    w = torch.randn(numel)
    got = keyed_projection_batched(w.reshape(1, -1), torch.tensor([SEED]), 3, projection=1)
    assert got.dtype == torch.float32
    assert torch.equal(got[0, 0], _documented_order(w, SEED, 3))
    assert torch.equal(read_bits(w.reshape(1, -1), torch.tensor([SEED]), 3, 1)[0, 0],
                       _documented_order(w, SEED, 3) > 0)


def test_projection_1_matches_reference_in_float64():
    w = torch.randn(2, 5000, dtype=torch.float64)
    got = keyed_projection_batched(w, torch.tensor([1, -2]), 10, projection=1)
    for n in range(2):
        for k, s in enumerate((1, -2)):
            torch.testing.assert_close(got[n, k], reference.keyed_projection(w[n], s, 10),
                                       rtol=1e-12, atol=1e-12)


def test_bad_projection_version():
    with pytest.raises(ValueError, match="projection must be one of"):
        keyed_projection_batched(torch.zeros(1, 5), torch.tensor([1]), 4, projection=3)


# ---- registration and arguments ----------------------------------------------------------

@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad, device):
    w = torch.randn(500, device=device, requires_grad=requires_grad)
    models, seeds = torch.randn(2, 300, device=device), torch.tensor([1, 2], device=device)
    torch.library.opcheck(torch.ops.mlguard.keyed_projection.default, (w, 4, 9))
    torch.library.opcheck(torch.ops.mlguard.keyed_projection_sums.default, (models, seeds, 5))
    torch.library.opcheck(torch.ops.mlguard.keyed_projection_v1.default, (models, seeds, 5))
    torch.library.opcheck(torch.ops.mlguard._keyed_projection_backward.default,
                          (torch.randn(9, device=device), 4, 500))


@pytest.mark.parametrize("call,match", [
    (lambda: keyed_projection(torch.zeros(5, dtype=torch.int64), 1, 4),
     "w must be float32, float64, float16 or bfloat16, got Long"),
    (lambda: keyed_projection(torch.zeros(5), 1, 0), r"bits must be in \[1, 2\^31\], got 0"),
    (lambda: keyed_projection_sums(torch.zeros(5), torch.tensor([1]), 4),
     "w must be 2-D \\(models, weights\\), got 1-D"),
    (lambda: keyed_projection_sums(torch.zeros(2, 5), torch.tensor([1.0]), 4),
     "seeds must be a 1-D int64 tensor"),
    (lambda: torch.ops.mlguard._keyed_projection_backward(torch.zeros(3, 2), 1, 5),
     "grad_y must be 1-D, got 2-D"),
])
def test_bad_inputs(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


FLOAT8 = [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)]


@pytest.mark.parametrize("dtype", FLOAT8)
def test_float8_is_refused_with_a_clear_message(dtype):
    w = torch.randn(200).to(dtype)
    match = "float8 is not supported: convert with w.float\\(\\)"
    with pytest.raises(RuntimeError, match=match):
        keyed_projection(w, 1, 4)
    with pytest.raises(RuntimeError, match=match):
        keyed_projection_sums(w.reshape(1, -1), torch.tensor([1]), 4)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.mlguard.keyed_projection_v1(w.reshape(1, -1), torch.tensor([1]), 4)
    with FakeTensorMode() as mode:  # the fake kernels refuse it too
        fw = mode.from_tensor(w)
        with pytest.raises(RuntimeError, match=match):
            torch.ops.mlguard.keyed_projection(fw, 1, 4)
        with pytest.raises(RuntimeError, match=match):
            torch.ops.mlguard.keyed_projection_sums(fw.reshape(1, -1),
                                                    mode.from_tensor(torch.tensor([1])), 4)


# ---- CUDA (skipped without a device) -----------------------------------------------------

CUDA_SHAPES = [(1, 1), (1, 129), (3, 16385), (1, 3_000_000), (9, 4000), (70, 1000)]


@pytest.mark.cuda
@pytest.mark.parametrize("models,numel", CUDA_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bits", [1, 33, 300])
def test_cuda_sums_bit_identical(models, numel, dtype, bits):
    # Large sizes take the grid-stride loop; 9 and 70 models take the model groups.
    w = torch.randn(models, numel).to(dtype)
    seeds = torch.tensor([5, SEED])
    cpu = keyed_projection_sums(w, seeds, bits)
    gpu = keyed_projection_sums(w.cuda(), seeds.cuda(), bits)
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])
    assert torch.equal(read_bits(w.cuda(), seeds.cuda(), bits).cpu(), cpu[0] > 0)


@pytest.mark.cuda
@pytest.mark.parametrize("kernel", ["0", "1"])
@pytest.mark.parametrize("models,numel", [(1, 129), (9, 4000), (70, 1000), (20, 1_100_000)])
@pytest.mark.parametrize("bits", [1, 33, 300])
def test_cuda_sums_either_kernel_bit_identical(monkeypatch, kernel, models, numel, bits):
    # MLGUARD_PROJECTION_MMA forces the table kernel (0) or the int8 tensor-core GEMM (1,
    # cuda/keyed_projection_mma_kernel.cuh); both give the CPU op's sums.
    if kernel == "1" and torch.cuda.get_device_capability() < (7, 5):
        pytest.skip("no int8 tensor cores before compute capability 7.5")
    monkeypatch.setenv("MLGUARD_PROJECTION_MMA", kernel)
    w = torch.randn(models, numel) * 0.01
    seeds = torch.tensor([5, SEED, -3])
    cpu = keyed_projection_sums(w, seeds, bits)
    gpu = keyed_projection_sums(w.cuda(), seeds.cuda(), bits)
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])
    monkeypatch.setenv("MLGUARD_PROJECTION_MMA", "2")
    with pytest.raises(RuntimeError, match="MLGUARD_PROJECTION_MMA must be 0, 1 or auto"):
        keyed_projection_sums(w.cuda(), seeds.cuda(), bits)


@pytest.mark.cuda
@pytest.mark.parametrize("numel", [1, 129, 16385, 3_000_000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_training_path_close_to_cpu(numel, dtype):
    w = torch.randn(numel).to(dtype)
    cpu = keyed_projection(w, SEED, 33)
    gpu = keyed_projection(w.cuda(), SEED, 33).cpu()
    assert gpu.dtype == cpu.dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(gpu, cpu, rtol=tol, atol=tol)
    g = torch.randn(33, dtype=cpu.dtype)
    back = torch.ops.mlguard._keyed_projection_backward
    torch.testing.assert_close(back(g.cuda(), SEED, numel).cpu(), back(g, SEED, numel),
                               rtol=tol, atol=tol)


@pytest.mark.cuda
def test_cuda_autograd_and_empty():
    w = torch.randn(5000, dtype=torch.float64, device="cuda", requires_grad=True)
    g = torch.randn(24, dtype=torch.float64, device="cuda")
    keyed_projection(w, SEED, 24).backward(g)
    expected = reference.projection_matrix(SEED, 24, 5000).T @ g.cpu()
    torch.testing.assert_close(w.grad.cpu(), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(keyed_projection(torch.empty(0, device="cuda"), 1, 4).cpu(), torch.zeros(4))
    sums, shift = keyed_projection_sums(torch.empty(2, 0, device="cuda"),
                                        torch.tensor([1], device="cuda"), 4)
    assert not sums.any() and not shift.any()
    with pytest.raises(ValueError, match="finite"):
        keyed_projection_sums(torch.full((1, 10), float("nan"), device="cuda"),
                              torch.tensor([1], device="cuda"), 4)


@pytest.mark.cuda
def test_cuda_ops_capture_in_a_graph():
    # Capture proves the ops neither synchronize with the host nor leave the current stream.
    w = torch.randn(2, 70000, device="cuda")
    seeds = torch.tensor([3, 4], device="cuda")
    grad = torch.randn(64, device="cuda")
    back = torch.ops.mlguard._keyed_projection_backward
    expected = (torch.ops.mlguard.keyed_projection_sums(w, seeds, 64),
                torch.ops.mlguard.keyed_projection(w[0], 3, 64), back(grad, 3, 70000))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sums, shift = torch.ops.mlguard.keyed_projection_sums(w, seeds, 64)
        y = torch.ops.mlguard.keyed_projection(w[0], 3, 64)
        gw = back(grad, 3, 70000)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(sums, expected[0][0]) and torch.equal(shift, expected[0][1])
    torch.testing.assert_close(y, expected[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, expected[2], rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
def test_cuda_training_forward_reports_its_nondeterminism():
    # Float atomics: torch.use_deterministic_algorithms(True) must hear of it.
    w = torch.randn(5000, device="cuda")
    seeds = torch.tensor([SEED], device="cuda")
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        with pytest.raises(RuntimeError, match="mlguard::keyed_projection on CUDA"):
            keyed_projection(w, SEED, 33)
        keyed_projection_sums(w.reshape(1, -1), seeds, 33)  # integer sums: deterministic
        torch.use_deterministic_algorithms(True, warn_only=True)
        with pytest.warns(UserWarning, match="mlguard::keyed_projection on CUDA"):
            keyed_projection(w, SEED, 33)
    finally:
        torch.use_deterministic_algorithms(previous)
