"""mlguard::augment_batch against the plain-PyTorch reference and torchvision, and its contract."""

import pytest
import torch
from PIL import Image
from torchvision import transforms

from mlguard import reference
from mlguard.ops import augment_batch

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def make(n=9, batch=7, pad=3, channels=3, size=(12, 10), seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, *size), dtype=torch.uint8, generator=g)
    index = torch.randint(0, n, (batch,), generator=g)
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=g)
    flip = torch.randint(0, 2, (batch,), generator=g).bool()
    return images, index, offsets, flip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pad", [0, 3, 12])
def test_matches_reference(dtype, channels_last, pad):
    images, index, offsets, flip = make(pad=pad)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    out = augment_batch(images, index, offsets, flip, pad, MEAN, STD, dtype)
    ref = reference.augment_batch(images, index.tolist(), offsets.tolist(), flip.tolist(), pad,
                                  MEAN, STD, dtype)
    assert out.dtype == dtype and out.shape == (7, 3, 12, 10)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, ref)


def test_is_torchvision_to_tensor_normalize_randomcrop_flip():
    images, index, offsets, flip = make(pad=4, size=(32, 32))
    out = augment_batch(images, index, offsets, flip, 4, MEAN, STD)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    for b in range(len(index)):
        padded = transforms.functional.pad(
            Image.fromarray(images[index[b]].permute(1, 2, 0).numpy()), 4, fill=0)
        dy, dx = offsets[b].tolist()
        crop = transforms.functional.crop(padded, dy, dx, 32, 32)
        if flip[b]:
            crop = transforms.functional.hflip(crop)
        assert torch.allclose(out[b], tf(crop), atol=1e-6)


def test_single_channel_and_empty_batch():
    images, index, offsets, flip = make(channels=1)
    out = augment_batch(images, index, offsets, flip, 3, [0.3], [0.4])
    ref = reference.augment_batch(images, index.tolist(), offsets.tolist(), flip.tolist(), 3,
                                  [0.3], [0.4])
    assert torch.equal(out, ref)
    empty = augment_batch(images, index[:0], offsets[:0], flip[:0], 3, [0.3], [0.4])
    assert empty.shape == (0, 1, 12, 10)


def _bad(**changes):
    images, index, offsets, flip = make()
    args = dict(images=images, index=index, offsets=offsets, flip=flip, pad=3, mean=MEAN,
                std=STD)
    args.update(changes)
    return args


@pytest.mark.parametrize("changes,match", [
    (dict(images=torch.zeros(2, 3, 4)), "images must be 4-D"),
    (dict(images=torch.zeros(9, 3, 12, 10)), "images must be uint8, got Float"),
    (dict(index=torch.tensor([0, 1, 2, 3, 4, 5, 9])),
     r"index\[6\] = 9 is out of range for 9 images"),
    (dict(index=torch.zeros(7, dtype=torch.int32)), "index must be 1-D int64"),
    (dict(offsets=torch.zeros(7, 3, dtype=torch.int64)), r"offsets must be int64 \(7, 2\)"),
    (dict(offsets=torch.full((7, 2), 7)), r"offsets\[0\] = \(7, 7\) must lie in \[0, 2 \* pad\]"),
    (dict(flip=torch.zeros(6, dtype=torch.bool)), r"flip must be bool \(7\)"),
    (dict(pad=-1), "pad must be >= 0"),
    (dict(mean=[0.5]), "mean and std need one value per channel"),
    (dict(std=[1.0, 0.0, 1.0]), "std finite and > 0"),
])
def test_bad_inputs(changes, match):
    with pytest.raises(RuntimeError, match=match):
        augment_batch(**_bad(**changes))


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype must be one of"):
        augment_batch(**_bad(), dtype=torch.int32)


def test_opcheck(device):
    images, index, offsets, flip = (t.to(device) for t in make())
    torch.library.opcheck(torch.ops.mlguard.augment_batch.default,
                          (images, index, offsets, flip, 3, MEAN, STD, torch.float32))


def test_traces_under_torch_compile():
    images, index, offsets, flip = make()

    def step(i):
        return augment_batch(images, i, offsets, flip, 3, MEAN, STD) * 2

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(index), step(index))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("pad", [0, 4])
def test_cuda_bit_identical(dtype, pad):
    images, index, offsets, flip = make(n=50, batch=300, pad=pad, size=(32, 32))
    cpu = augment_batch(images, index, offsets, flip, pad, MEAN, STD, dtype)
    gpu = augment_batch(images.cuda(), index.cuda(), offsets.cuda(), flip.cuda(), pad, MEAN, STD,
                        dtype)
    assert torch.equal(gpu.cpu(), cpu) and gpu.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.cuda
def test_cuda_large_batch_takes_the_grid_stride_loop():
    images, index, offsets, flip = make(n=20, batch=70000, pad=2, size=(32, 32))
    cpu = augment_batch(images, index, offsets, flip, 2, MEAN, STD)
    gpu = augment_batch(images.cuda(), index.cuda(), offsets.cuda(), flip.cuda(), 2, MEAN, STD)
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.cuda
def test_cuda_rejects_mixed_devices():
    images, index, offsets, flip = make()
    with pytest.raises(RuntimeError, match="all tensors must be on images' device"):
        augment_batch(images.cuda(), index, offsets.cuda(), flip.cuda(), 3, MEAN, STD)


@pytest.mark.cuda
@pytest.mark.parametrize("changes,match", [
    (dict(index=torch.tensor([0, 1, 2, 3, 4, 5, 9])),
     r"index\[6\] = 9 is out of range for 9 images"),
    (dict(index=torch.tensor([0, 1, 2, 3, -1, 5, 6])),
     r"index\[4\] = -1 is out of range for 9 images"),
    (dict(offsets=torch.full((7, 2), 7)), r"offsets\[0\] = \(7, 7\) must lie in \[0, 2 \* pad\]"),
    (dict(offsets=torch.tensor([[0, 0]] * 6 + [[0, -1]])),
     r"offsets\[6\] = \(0, -1\) must lie in \[0, 2 \* pad\]"),
])
def test_cuda_rejects_bad_values_as_the_cpu_does(changes, match):
    # It used to zero-fill for such offsets and hit a device assert for such an index, which
    # poisons the CUDA context for the rest of the process.
    args = _bad(**changes)
    with pytest.raises(RuntimeError, match=match):
        augment_batch(**args)
    cuda = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with pytest.raises(RuntimeError, match=match):
        augment_batch(**cuda)
    images, index, offsets, flip = make()  # the context still works
    gpu = augment_batch(images.cuda(), index.cuda(), offsets.cuda(), flip.cuda(), 3, MEAN, STD)
    assert torch.equal(gpu.cpu(), augment_batch(images, index, offsets, flip, 3, MEAN, STD))
