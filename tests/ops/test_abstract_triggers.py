"""mlguard::abstract_triggers against the plain-PyTorch reference, and its contract."""

import pytest
import torch

from mlguard import reference
from mlguard.ops import abstract_triggers


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (6, 7, 13), (2, 1, 1)])
def test_matches_reference(shape):
    indices = torch.tensor([0, 1, 7, 2**35, -4])
    expected = reference.abstract_triggers(indices.tolist(), 0x5EED, shape)
    assert torch.equal(abstract_triggers(indices, 0x5EED, shape), expected)


def test_output_contract():
    images = abstract_triggers(torch.arange(20), 42, (3, 32, 32))
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    # Each image is the same function of (seed, index): order and batching do not matter.
    again = abstract_triggers(torch.tensor([19, 3]), 42, (3, 32, 32))
    assert torch.equal(again[0], images[19]) and torch.equal(again[1], images[3])


def test_images_depend_on_seed_and_index_and_are_not_noise():
    a = abstract_triggers(torch.arange(10), 1, (3, 32, 32))
    b = abstract_triggers(torch.arange(10), 2, (3, 32, 32))
    assert not torch.equal(a, b)
    assert len({img.numpy().tobytes() for img in a}) == 10
    # Picture-like: neighbouring pixels are mostly close, unlike white noise.
    step = (a[..., 1:] - a[..., :-1]).abs().mean()
    assert step < 0.05
    assert a.std() > 0.15  # ...but with real contrast


def test_non_contiguous_and_empty_indices():
    idx = torch.arange(12)[::4]
    assert torch.equal(abstract_triggers(idx, 3, (1, 8, 8)),
                       abstract_triggers(idx.contiguous(), 3, (1, 8, 8)))
    assert abstract_triggers(torch.empty(0, dtype=torch.int64), 3, (3, 4, 4)).shape == (0, 3, 4, 4)


def test_opcheck(device):
    torch.library.opcheck(torch.ops.mlguard.abstract_triggers.default,
                          (torch.arange(3, device=device), 7, 3, 8, 8))


@pytest.mark.parametrize("indices,shape,match", [
    (torch.zeros(2, 2, dtype=torch.int64), (3, 8, 8), "indices must be 1-D, got 2-D"),
    (torch.zeros(2, dtype=torch.float32), (3, 8, 8), "indices must be int64, got Float"),
    (torch.zeros(2, dtype=torch.int64), (0, 8, 8), r"channels must be in \[1, 64\], got 0"),
    (torch.zeros(2, dtype=torch.int64), (3, 0, 8), "height and width must be in"),
])
def test_bad_inputs(indices, shape, match):
    with pytest.raises(RuntimeError, match=match):
        abstract_triggers(indices, 1, shape)
    with pytest.raises(ValueError, match=r"shape must be \(C, H, W\)"):
        abstract_triggers(torch.arange(2), 1, (8, 8))


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (6, 7, 13)])
def test_cuda_bit_identical(shape):
    idx = torch.tensor([0, 3, 99, 2**40])
    assert torch.equal(abstract_triggers(idx.cuda(), 77, shape).cpu(),
                       abstract_triggers(idx, 77, shape))
