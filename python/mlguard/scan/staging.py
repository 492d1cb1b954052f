"""Moving a decoded state_dict to the scan device without stalling the compute stream.

On CUDA each reader thread packs the tensors into its own pinned host buffer and copies the
whole buffer to the device in one non-blocking transfer on a side stream, so the copy of
model i+1 overlaps the forward pass of model i on the compute stream. The reader waits for
its own copy to finish before it hands the model over (and before it reuses its buffer), so
the compute stream never reads a half-copied tensor. On the CPU this is a no-op.
"""

from __future__ import annotations

import threading

import torch

_ALIGN = 64  # byte alignment of each tensor in the packed buffer (any dtype can be viewed)


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


Layout = list[tuple[str, torch.dtype, torch.Size, int]]  # name, dtype, shape, byte offset


def layout_of(state_dict: dict[str, torch.Tensor]) -> tuple[Layout, int]:
    """Where each tensor goes in one flat byte buffer, and the buffer's size."""
    layout, total = [], 0
    for name, t in state_dict.items():
        layout.append((name, t.dtype, t.shape, total))
        total = _aligned(total + t.numel() * t.element_size())
    return layout, total


def views(flat: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """The tensors of `layout` as views into the flat uint8 buffer `flat`."""
    out = {}
    for name, dtype, shape, offset in layout:
        nbytes = shape.numel() * dtype.itemsize
        out[name] = flat[offset:offset + nbytes].view(dtype).view(shape)
    return out


def pack(state_dict: dict[str, torch.Tensor], flat: torch.Tensor, layout: Layout) -> None:
    """Copies the tensors into `flat` (torch copies release the GIL)."""
    for name, view in views(flat, layout).items():
        view.copy_(state_dict[name])


class DeviceStager:
    """``stager(state_dict) -> state_dict`` on `device`; safe to call from many threads."""

    def __init__(self, device: torch.device):
        self.device = device
        self._local = threading.local()
        if device.type == "cuda":
            self._copy_stream = torch.cuda.Stream(device)
            self._compute_stream = torch.cuda.current_stream(device)

    def __call__(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type != "cuda":
            return state_dict
        layout, total = layout_of(state_dict)
        host = self._pinned(total)
        pack(state_dict, host, layout)
        with torch.cuda.stream(self._copy_stream):
            flat = torch.empty(total, dtype=torch.uint8, device=self.device)
            flat.copy_(host[:total], non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._copy_stream)
        # The compute stream uses `flat` next: keep the allocator from reusing it early.
        flat.record_stream(self._compute_stream)
        done.synchronize()  # blocks this reader thread only; then `host` may be reused
        return views(flat, layout)

    def _pinned(self, nbytes: int) -> torch.Tensor:
        """This thread's pinned staging buffer, grown when a larger model comes along."""
        buf = getattr(self._local, "buffer", None)
        if buf is None or buf.numel() < nbytes:
            buf = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=True)
            self._local.buffer = buf
        return buf

    def module(self, module: torch.nn.Module) -> torch.nn.Module:
        """A (trusted TorchScript) module on the device."""
        return module.to(self.device) if self.device.type == "cuda" else module
