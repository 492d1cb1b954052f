"""mlguard::keyed_words: raw key-controlled random words (csrc/keyed_words.cpp)."""

from __future__ import annotations

import torch

from ._args import as_seed, check_tensor


def keyed_words(index: torch.Tensor, seed: int, stream: int = 0) -> torch.Tensor:
    """Philox-4x32-10 blocks for a batch of indices.

    Row i holds the four 32-bit words (as int64 in [0, 2**32)) of Philox with key `seed` and
    counter (index[i] low, index[i] high, stream low, stream high). The same on every device.
    """
    check_tensor(index, "index")
    return torch.ops.mlguard.keyed_words(index, as_seed(seed), as_seed(stream, "stream"))


@torch.library.register_fake("mlguard::keyed_words")
def _(index, seed, stream):
    torch._check(index.dim() == 1, lambda: f"keyed_words: index must be 1-D, got {index.dim()}-D")
    torch._check(index.dtype == torch.int64,
                 lambda: f"keyed_words: index must be int64, got {index.dtype}")
    return index.new_empty((index.shape[0], 4))
