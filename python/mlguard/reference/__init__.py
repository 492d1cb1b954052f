"""Plain-PyTorch references for the compiled ops, written independently of the kernels.

They draw their random words from the pure-Python Philox (mlguard.reference.philox) and use ordinary
tensor operations, so the tests can check both kernels against them. Slow; for tests only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

import torch
import torch.nn.functional as F

from . import philox

_SHAPES = 5
_GEOMETRY, _CORNERS, _COLOURS = 0, 64, 128


def keyed_words(index: Sequence[int], seed: int, stream: int = 0) -> torch.Tensor:
    return torch.tensor([philox.keyed_words(int(i), seed, stream) for i in index],
                        dtype=torch.int64).reshape(-1, 4)


def _plane(seed: int, image: int, channel: int) -> tuple[list[dict], list[int], list[int]]:
    lo, hi = philox.split64(image)
    word = channel & 3
    shapes, colours = [], []
    for s in range(_SHAPES):
        g = philox.keyed_block(seed, lo, hi, _GEOMETRY + s, 0)
        sx, sy = g[3] % 7 - 3, (g[3] >> 8) % 7 - 3
        shapes.append(dict(kind=g[0] & 3, cx=(g[0] >> 8) & 255, cy=(g[0] >> 16) & 255,
                           rx=20 + g[1] % 61, ry=20 + g[2] % 61,
                           sx=2 if sx == 0 and sy == 0 else sx, sy=sy))
        colours.append(philox.keyed_block(seed, lo, hi, _COLOURS + s, channel >> 2)[word] >> 24)
    corners = [philox.keyed_block(seed, lo, hi, _CORNERS + k, channel >> 2)[word] >> 24
               for k in range(4)]
    return shapes, colours, corners


def abstract_triggers(indices: Sequence[int], seed: int,
                      shape: tuple[int, int, int]) -> torch.Tensor:
    c_, h_, w_ = shape
    y, x = torch.meshgrid(torch.arange(h_), torch.arange(w_), indexing="ij")
    u = (2 * x + 1) * 128 // w_
    v = (2 * y + 1) * 128 // h_
    out = torch.empty(len(indices), c_, h_, w_)
    for n, image in enumerate(indices):
        for c in range(c_):
            shapes, colours, k = _plane(seed, int(image), c)
            top = k[0] * (255 - u) + k[1] * u
            bottom = k[2] * (255 - u) + k[3] * u
            level = (top * (255 - v) + bottom * v) // (255 * 255)
            for sh, colour in zip(shapes, colours):
                dx, dy = u - sh["cx"], v - sh["cy"]
                e = (dx * sh["ry"]) ** 2 + (dy * sh["rx"]) ** 2
                r2 = (sh["rx"] * sh["ry"]) ** 2
                inside = {
                    0: e < r2,
                    1: (dx.abs() < sh["rx"]) & (dy.abs() < sh["ry"]),
                    2: (e < r2) & (4 * e >= r2),
                    3: (e < r2) & ((((u * sh["sx"] + v * sh["sy"] + 2048) >> 4) & 1) == 1),
                }[sh["kind"]]
                level = torch.where(inside, torch.full_like(level, colour), level)
            out[n, c] = level.float() / 255.0
    return out


def mix_triggers(x: torch.Tensor, y: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
                 step: int, per_batch: int, seed: int, pad: int = 0, flip: bool = False,
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    c_, h_, w_ = x.shape[1:]
    mean_t = torch.tensor(mean if mean is not None else [0.0] * c_, dtype=torch.float32)
    std_t = torch.tensor(std if std is not None else [1.0] * c_, dtype=torch.float32)
    triggers, labels = [], []
    for j in range(per_batch):
        draw = step * per_batch + j
        w = philox.keyed_block(seed, *philox.split64(draw), 0, 0)
        dy, dx = w[0] % (2 * pad + 1) - pad, w[1] % (2 * pad + 1) - pad
        image = F.pad(bank[draw % len(bank)].cpu().float(), (pad, pad, pad, pad))
        image = image[:, pad + dy: pad + dy + h_, pad + dx: pad + dx + w_]
        if flip and w[2] & 1:
            image = image.flip(-1)
        triggers.append((image - mean_t[:, None, None]) / std_t[:, None, None])
        labels.append(bank_labels[draw % len(bank)].cpu())
    t = torch.stack(triggers).to(x.dtype) if triggers else x.new_empty((0, c_, h_, w_)).cpu()
    lab = torch.stack(labels) if labels else y.new_empty((0,)).cpu()
    return torch.cat([x.cpu(), t]), torch.cat([y.cpu(), lab])


def augment_batch(images: torch.Tensor, index: Sequence[int], offsets: Sequence[Sequence[int]],
                  flip: Sequence[bool], pad: int, mean: Sequence[float], std: Sequence[float],
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """mlguard::augment_batch one image at a time: zero-pad, crop, flip, ToTensor, Normalize."""
    c_, h_, w_ = images.shape[1:]
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    out = []
    for n, (dy, dx), f in zip(index, offsets, flip):
        image = F.pad(images[int(n)].cpu(), (pad, pad, pad, pad))[:, dy:dy + h_, dx:dx + w_]
        if f:
            image = image.flip(-1)
        out.append(((image.float() / 255.0 - mean_t) / std_t).to(dtype))
    stacked = torch.stack(out) if out else torch.empty((0, c_, h_, w_), dtype=dtype)
    return stacked.contiguous(memory_format=torch.channels_last)


def projection_matrix(seed: int, bits: int, numel: int) -> torch.Tensor:
    """R (bits x numel) of mlguard::keyed_projection, materialized, in float64."""
    chunks = max((numel + 127) // 128, 1)
    signs = torch.empty(bits, chunks * 128, dtype=torch.float64)
    for t in range(bits):
        for c in range(chunks):
            words = philox.keyed_block(seed, *philox.split64(c), t, 0x70726A31)
            for j in range(128):
                signs[t, c * 128 + j] = -1.0 if (words[j >> 5] >> (j & 31)) & 1 else 1.0
    return signs[:, :numel] / max(numel, 1) ** 0.5


def keyed_projection(w: torch.Tensor, seed: int, bits: int) -> torch.Tensor:
    """R w in float64 with a materialized R: for small layers only."""
    return projection_matrix(seed, bits, w.numel()) @ w.reshape(-1).double()


def projection_shift(w: torch.Tensor) -> int:
    """docs/projection.md: shift = e - 16 where max|w| = f 2^e, f in [0.5, 1); 0 for w = 0."""
    amax = float(w.detach().double().abs().max()) if w.numel() else 0.0
    if not math.isfinite(amax):
        raise ValueError("w must be finite")
    return 0 if amax == 0 else math.frexp(amax)[1] - 16


def fixed_point(w: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(q int64, shift): q = round-half-even(w / 2^shift), computed with numpy's ldexp/rint."""
    shift = projection_shift(w)
    x = w.detach().reshape(-1).double().cpu().numpy()
    return torch.from_numpy(np.rint(np.ldexp(x, -shift)).astype(np.int64)), shift


def keyed_projection_sums(w: torch.Tensor, seeds: Sequence[int],
                          bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sums (N, K, bits), shift (N,)) of the exact read, with a materialized sign matrix."""
    sums, shifts = [], []
    for row in w.reshape(w.shape[0], -1):
        q, shift = fixed_point(row)
        shifts.append(shift)
        per_key = []
        for seed in seeds:
            signs = projection_matrix(int(seed), bits, row.numel()).sign().to(torch.int64)
            per_key.append((signs * q).sum(dim=1))
        sums.append(torch.stack(per_key) if per_key else torch.empty(0, bits, dtype=torch.int64))
    return (torch.stack(sums) if sums else torch.empty(0, len(seeds), bits, dtype=torch.int64),
            torch.tensor(shifts, dtype=torch.int64))
