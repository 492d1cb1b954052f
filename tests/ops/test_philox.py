"""The keyed generator: published known answers, the op against the pure-Python reference."""

import pytest
import torch

import mlguard
from mlguard import reference
from mlguard.reference import philox
from mlguard.ops import keyed_words

# Random123's kat_vectors for philox4x32-10: counter, key -> output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_python_reference_matches_published_vectors(counter, key, expected):
    assert philox.philox4x32_10(counter, key) == expected


def test_op_matches_published_vector_through_mlguard_conventions():
    # index = counter words 0-1, stream = words 2-3, seed = key with its low word first.
    index = 0x85A308D3_243F6A88
    stream = 0x03707344_13198A2E
    seed = 0x299F31D0_A4093822
    signed = index - 2**64 if index >= 2**63 else index
    words = keyed_words(torch.tensor([signed]), seed, stream)
    assert tuple(words[0].tolist()) == KNOWN_ANSWERS[2][2]


@pytest.mark.parametrize("seed", [0, 1, -1, 2**63 - 1, -(2**63), 0xDEADBEEF_CAFEF00D])
@pytest.mark.parametrize("stream", [0, 7, -5, 2**40])
def test_op_matches_reference(seed, stream):
    index = torch.tensor([0, 1, 2, 3, 1000, -1, 2**33 + 5, -(2**62)])
    expected = reference.keyed_words(index.tolist(), seed, stream)
    assert torch.equal(keyed_words(index, seed, stream), expected)


def test_words_are_32_bit_and_look_uniform():
    words = keyed_words(torch.arange(20000), 12345)
    assert words.min() >= 0 and words.max() < 2**32
    assert abs(words.float().mean().item() / 2**32 - 0.5) < 0.01
    assert len(torch.unique(words[:, 0])) == 20000  # no collisions expected at this size


def test_non_contiguous_and_empty_index():
    index = torch.arange(40)[::3]
    assert torch.equal(keyed_words(index, 9), keyed_words(index.contiguous(), 9))
    assert keyed_words(torch.empty(0, dtype=torch.int64), 9).shape == (0, 4)


def test_opcheck(device):
    torch.library.opcheck(torch.ops.mlguard.keyed_words.default,
                          (torch.arange(10, device=device), 5, 3))


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(2, 2, dtype=torch.int64), "index must be 1-D, got 2-D"),
    (torch.zeros(3, dtype=torch.int32), "index must be int64, got Int"),
])
def test_bad_index(bad, match):
    with pytest.raises(RuntimeError, match=match):
        keyed_words(bad, 1)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed must fit in 64 bits"):
        keyed_words(torch.arange(3), 2**64)
    with pytest.raises(TypeError, match="seed must be an int"):
        keyed_words(torch.arange(3), 1.5)
    with pytest.raises(TypeError, match="index must be a torch.Tensor"):
        keyed_words([1, 2], 1)


def test_seed_signed_and_unsigned_forms_agree():
    idx = torch.arange(5)
    assert torch.equal(keyed_words(idx, 2**64 - 1), keyed_words(idx, -1))


@pytest.mark.cuda
def test_cuda_bit_identical():
    index = torch.tensor([0, 5, -1, 2**40, 123456789])
    cpu = keyed_words(index, -987654321, 11)
    assert torch.equal(keyed_words(index.cuda(), -987654321, 11).cpu(), cpu)


def test_build_info_reports_the_build():
    info = mlguard.build_info()
    assert info["torch_running"] == torch.__version__
    assert info["cuda_kernels"] == (info["cuda_built"] is not None)


def test_build_info_says_which_gpus_the_kernels_run_on():
    from mlguard._extension import _runs_on
    assert _runs_on(None) is None
    assert _runs_on("7.0;7.5;8.0;9.0+PTX") == "compute capability 7.0 and newer"
    old = _runs_on("8.0;9.0+PTX")
    assert "not T4 (7.5)" in old and 'TORCH_CUDA_ARCH_LIST="7.5;' in old
    # CUDA 13 cannot compile for a V100 (7.0): the advice is what works, a CUDA 12 build.
    for archs in ("8.0;9.0+PTX", "7.5;8.0;8.6;9.0;10.0;12.0+PTX"):
        note = _runs_on(archs)
        assert "V100 (7.0)" in note and "CUDA 12" in note, note
        assert "7.0;7.5;8.0" not in note
    info = mlguard.build_info()
    assert info["cuda_runs_on"] == _runs_on(info["cuda_archs"])


def test_cpu_kernels_are_built_with_openmp():
    # ATen's at::parallel_for is inline: compiled without OpenMP it runs every mlguard CPU
    # kernel on one core, whatever torch.get_num_threads() says.
    assert mlguard.build_info()["cpu_parallel"] == "openmp"
