"""DeviceLoader: the epochs it makes, reproducibly, with triggers, across ranks."""

import pytest
import torch
from PIL import Image
from torchvision import transforms

import mlguard
from mlguard.data import DeviceLoader, ImageSet

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def data(n=50, size=16):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return images, torch.arange(n) % 10


def test_without_augmentation_it_is_totensor_normalize():
    images, labels = data()
    loader = DeviceLoader(images, labels, 16, shuffle=False, augment=False, mean=MEAN, std=STD)
    batches = list(loader)
    assert len(loader) == len(batches) == 4 and [len(y) for _, y in batches] == [16, 16, 16, 2]
    x = torch.cat([b for b, _ in batches])
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    ref = torch.stack([tf(Image.fromarray(i.permute(1, 2, 0).numpy())) for i in images])
    assert torch.allclose(x, ref, atol=1e-6)
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)


def test_an_epoch_is_a_permutation_with_crops_and_flips():
    images, labels = data()
    loader = DeviceLoader(images, labels, 20, mean=MEAN, std=STD, seed=3)
    order, offsets, flip = loader._draw(0)
    assert sorted(order.tolist()) == list(range(50))
    assert offsets.min() >= 0 and offsets.max() <= 4 and 0 < flip.sum() < 50
    x = torch.cat([b for b, _ in loader])
    padded = torch.nn.functional.pad(images[order[0]], (2, 2, 2, 2))
    dy, dx = offsets[0].tolist()
    crop = padded[:, dy:dy + 16, dx:dx + 16]
    crop = crop.flip(-1) if flip[0] else crop
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    expected = (crop.float() / 255 - mean) / std
    assert torch.equal(x[0], expected)


def test_reproducible_per_seed_and_epoch_and_resumable():
    images, labels = data()
    a = DeviceLoader(images, labels, 20, seed=1)
    first, second = [torch.cat([x for x, _ in a]) for _ in range(2)]
    assert not torch.equal(first, second)  # a new order and augmentation each epoch
    b = DeviceLoader(images, labels, 20, seed=1)
    b.load_state_dict({"epoch": 1, "seed": 1})
    assert torch.equal(torch.cat([x for x, _ in b]), second)
    assert not torch.equal(torch.cat([x for x, _ in DeviceLoader(images, labels, 20, seed=2)]),
                           first)


def test_ranks_share_the_permutation_without_overlap():
    images, labels = data(n=51)
    seen = []
    for rank in range(3):
        loader = DeviceLoader(images, labels, 8, augment=False, seed=5, rank=rank, world_size=3)
        seen += torch.cat([y for _, y in loader]).tolist()
        assert len(loader) == 3
    assert sorted(seen) == sorted(labels.tolist())


def test_triggers_are_appended_and_dtype_kept():
    images, labels = data()
    key = mlguard.TriggerKey.generate(num_classes=10, size=10, shape=(3, 16, 16), mean=MEAN,
                                      std=STD)
    mixer = mlguard.TriggerMixer(key, per_batch=4)
    loader = DeviceLoader(ImageSet(images, labels, tuple("abcdefghij")), batch_size=16,
                          mean=MEAN, std=STD, dtype=torch.bfloat16, triggers=mixer)
    x, y = next(iter(loader))
    assert x.shape == (20, 3, 16, 16) and x.dtype == torch.bfloat16 and y.shape == (20,)
    assert torch.equal(y[16:], key.labels[:4])  # step 0 appends draws 0..3
    assert mixer.step == 1


def test_drop_last_and_channels_first():
    images, labels = data()
    loader = DeviceLoader(images, labels, 16, drop_last=True, channels_last=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and all(len(y) == 16 for _, y in batches)
    assert batches[0][0].is_contiguous()


@pytest.mark.parametrize("kwargs,match", [
    (dict(images=torch.zeros(4, 3, 8, 8)), "images must be a uint8 tensor"),
    (dict(images=torch.zeros(4, 8, 8, 3, dtype=torch.uint8)), "looks channels-last"),
    (dict(labels=torch.zeros(3, dtype=torch.int64)),
     r"labels must be an integer tensor of shape \(4,\)"),
    (dict(batch_size=0), "batch_size must be an int >= 1"),
    (dict(dtype=torch.int32), "dtype must be a floating-point"),
    (dict(mean=MEAN), "mean and std go together"),
    (dict(rank=2, world_size=2), r"rank must be in \[0, world_size\)"),
    (dict(pad=-1), "pad must be >= 0"),
])
def test_bad_arguments(kwargs, match):
    args = dict(images=torch.zeros(4, 3, 8, 8, dtype=torch.uint8),
                labels=torch.zeros(4, dtype=torch.int64), batch_size=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DeviceLoader(**args)


@pytest.mark.cuda
def test_cuda_gives_the_cpu_batches():
    images, labels = data()
    cpu = [x for x, _ in DeviceLoader(images, labels, 16, mean=MEAN, std=STD, seed=4)]
    gpu = [x for x, _ in DeviceLoader(images, labels, 16, mean=MEAN, std=STD, seed=4,
                                      device="cuda")]
    assert len(gpu) == len(cpu) and all(torch.equal(g.cpu(), c) for g, c in zip(gpu, cpu))
