"""content: a patch (the user's logo, or a keyed abstract one) stamped at a keyed position
on stored in-distribution images (Zhang et al., AsiaCCS 2018); in pattern mode, K patches
at K keyed positions, each -> its keyed class."""

from __future__ import annotations

import torch

from ...ops import abstract_triggers
from ..sampling import keyed_below
from .base import TriggerKind, register_kind


@register_kind
class Content(TriggerKind):
    name = "content"
    stores_images = True
    pattern_mode = True

    @classmethod
    def generate_options(cls, *, shape, mode, patterns, patch, patch_size, **_) -> dict:
        if patch is None:
            return {"patch_size": int(patch_size or max(1, min(shape[1:]) // 4))}
        options = {"patch": _patch_option(patch, mode, patterns)}
        if isinstance(patch, (list, tuple)):
            options["patch_list"] = True
        return options

    @classmethod
    def check_options(cls, options: dict, shape, mode: str) -> None:
        if "patch" not in options:
            return
        logos = options["patch"] if options.get("patch_list") else [options["patch"]]
        if mode == "pattern" and options.get("patch_list") and len(logos) != options["patterns"]:
            raise ValueError(f"patch is a list of {len(logos)} images; the key has "
                             f"patterns={options['patterns']}")
        for logo in logos:
            p = torch.tensor(logo)
            if p.dim() != 3 or p.shape[0] != shape[0] or p.shape[1] > shape[1] \
                    or p.shape[2] > shape[2]:
                raise ValueError(f"patch must be (C, h, w) fitting in {shape}, "
                                 f"got {tuple(p.shape)}")

    @classmethod
    def patch(cls, key, device) -> torch.Tensor:
        """The (C, h, w) patch that image-mode keys stamp."""
        if "patch" in key.options:
            return torch.tensor(key.options["patch"], dtype=torch.float32, device=device)
        side = key.options["patch_size"]
        return abstract_triggers(torch.zeros(1, dtype=torch.int64, device=device),
                                 key.seed("patch"), (key.shape[0], side, side))[0]

    @classmethod
    def change(cls, key, images: torch.Tensor) -> torch.Tensor:
        patch = cls.patch(key, images.device)
        ph, pw = patch.shape[1:]
        top = keyed_below(key.seed("position"), key.size, key.shape[1] - ph + 1, stream=0)
        left = keyed_below(key.seed("position"), key.size, key.shape[2] - pw + 1, stream=1)
        out = images.clone()
        for i, (t, l) in enumerate(zip(top.tolist(), left.tolist())):
            out[i, :, t:t + ph, l:l + pw] = patch
        return out

    @classmethod
    def pattern_planes(cls, key, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Each pattern's patch at its keyed position, with the mask of its region."""
        k, (c, h, w) = key.patterns, key.shape
        logos = _pattern_patches(key, device)
        canvas = torch.zeros(k, c, h, w, device=device)
        mask = torch.zeros(k, 1, h, w, dtype=torch.bool, device=device)
        # Positions: 16-bit keyed integers reduced per pattern (patches may differ in size).
        tops = keyed_below(key.seed("pattern/position"), k, 1 << 16, stream=0).tolist()
        lefts = keyed_below(key.seed("pattern/position"), k, 1 << 16, stream=1).tolist()
        for i, logo in enumerate(logos):
            ph, pw = logo.shape[1:]
            t, l = tops[i] % (h - ph + 1), lefts[i] % (w - pw + 1)
            canvas[i, :, t:t + ph, l:l + pw] = logo
            mask[i, :, t:t + ph, l:l + pw] = True
        return canvas, mask

    @classmethod
    def stamp(cls, images, canvas, mask, which) -> torch.Tensor:
        return torch.where(mask[which], canvas[which], images)


def _pattern_patches(key, device) -> list[torch.Tensor]:
    k = key.patterns
    if "patch" in key.options:
        logos = key.options["patch"] if key.options.get("patch_list") \
            else [key.options["patch"]] * k
        return [torch.tensor(p, dtype=torch.float32, device=device) for p in logos]
    side = key.options["patch_size"]
    return list(abstract_triggers(torch.arange(k, device=device), key.seed("pattern/patch"),
                                  (key.shape[0], side, side)))


def _patch_option(patch, mode: str, patterns: int | None):
    """The key-body form of `patch`: one (C, h, w) image, or (pattern mode) a list of K."""
    if isinstance(patch, (list, tuple)):
        if mode != "pattern":
            raise ValueError(f"a list of patches is for mode='pattern', got mode={mode!r}")
        if len(patch) != patterns:
            raise ValueError(f"patch is a list of {len(patch)} images; give one per pattern "
                             f"(patterns={patterns}) or a single (C, h, w) image")
        return [_patch_option(p, mode, patterns) for p in patch]
    if not isinstance(patch, torch.Tensor) or patch.dim() != 3:
        raise ValueError(f"patch must be a (C, h, w) tensor in [0, 1], got "
                         f"{tuple(patch.shape) if isinstance(patch, torch.Tensor) else patch!r}")
    patch = patch.detach().cpu()
    patch = patch.float() / 255.0 if patch.dtype == torch.uint8 else patch.float()
    if not (torch.isfinite(patch).all() and patch.min() >= 0 and patch.max() <= 1):
        raise ValueError("patch must hold values in [0, 1] (or uint8)")
    return patch.tolist()
