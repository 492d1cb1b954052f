"""Pure-Python Philox-4x32-10: the reference for the C++/CUDA generator in csrc/philox.h.

Slow and obviously correct; tests check it against the published known-answer vectors and
then check the compiled kernels against it.
"""

from __future__ import annotations

_MASK = 0xFFFFFFFF
_MUL0, _MUL1 = 0xD2511F53, 0xCD9E8D57
_WEYL0, _WEYL1 = 0x9E3779B9, 0xBB67AE85


def philox4x32_10(counter: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, ...]:
    """Philox-4x32 with 10 rounds, Random123's (counter, key) order, words as Python ints."""
    c0, c1, c2, c3 = (w & _MASK for w in counter)
    k0, k1 = (w & _MASK for w in key)
    for r in range(10):
        if r:
            k0, k1 = (k0 + _WEYL0) & _MASK, (k1 + _WEYL1) & _MASK
        p0, p1 = _MUL0 * c0, _MUL1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0, p1 & _MASK, (p0 >> 32) ^ c3 ^ k1, p0 & _MASK)
    return c0, c1, c2, c3


def split64(x: int) -> tuple[int, int]:
    """A signed or unsigned 64-bit integer as (low word, high word)."""
    x &= 0xFFFFFFFFFFFFFFFF
    return x & _MASK, x >> 32


def keyed_block(seed: int, c0: int, c1: int, c2: int, c3: int) -> tuple[int, ...]:
    """mlguard's convention (csrc/philox.h): the 64-bit seed is the key, low word first."""
    return philox4x32_10((c0, c1, c2, c3), split64(seed))


def keyed_words(index: int, seed: int, stream: int) -> tuple[int, ...]:
    """What the op ``mlguard::keyed_words`` returns for one index."""
    return keyed_block(seed, *split64(index), *split64(stream))
