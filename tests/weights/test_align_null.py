"""A fast version of benchmarks/bench_align_null.py: models that never saw the owner's key,
aligned to the watermarked reference, must not read as carrying it (issue 20)."""

import torch
import torch.nn.functional as F
from scipy import stats

from mlguard import WeightKey, data
from mlguard.cli.demo import batches, small_cnn
from mlguard.verification.verify import verify_weights_many
from mlguard.weights import embed_weights
from mlguard.weights.align import Reference


def trained(seed: int, images, labels) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for x, y in batches(images, labels, 64, torch.Generator().manual_seed(seed)):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def test_aligned_unrelated_models_read_as_chance():
    images, labels = data.fashion_mnist("test")
    owner = WeightKey.generate(bits=128, targets=("7.weight",), secret=bytes(range(32)))
    reference = trained(0, images[:512], labels[:512])
    embed_weights(reference, owner, strength=3.0)  # a strong mark: any copying would show
    ref = Reference(reference)
    fresh = [WeightKey.generate(bits=128, targets=("7.weight",), secret=bytes([i]) * 32)
             for i in range(1, 6)]
    owner_bits, counts = 0, []
    for seed in range(1, 9):
        lo = 512 * seed
        model = trained(seed, images[lo:lo + 512], labels[lo:lo + 512])
        verdicts = verify_weights_many(model, [owner, *fresh], reference=ref)
        assert not any(v.detected for v in verdicts), seed
        assert verdicts[0].extra["alignment"]["excluded"] == ["7.weight"]
        owner_bits += verdicts[0].matches
        counts += [v.matches for v in verdicts]
    # all owner bits pooled: 1024 bits, a leak of even 5% of them would show here
    assert stats.binomtest(owner_bits, 8 * 128, 0.5).pvalue > 1e-3, owner_bits
    assert stats.binomtest(sum(counts), 48 * 128, 0.5).pvalue > 1e-3
