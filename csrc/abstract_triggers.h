// Procedural "abstract" trigger images drawn from a key (Adi et al., 2018, used random
// abstract images; ours are regenerated from the key instead of stored).
//
// An image is a smooth background (bilinear blend of four keyed corner colours) under a few
// keyed shapes: discs, rectangles, rings and striped discs. It looks like a picture, a small
// CNN can learn it, and it lies far from natural data sets. Everything is integer arithmetic
// on a 256-step grid, so the CPU and CUDA kernels agree bit for bit; the only float step is
// the final division by 255, which IEEE rounds identically everywhere.
#pragma once

#include <ATen/core/Tensor.h>

#include "philox.h"

namespace mlguard {

constexpr int kAbstractShapes = 5;

// Counter word 2 says which part of an image is drawn, so parts never share random words.
enum AbstractPart : uint32_t { kGeometry = 0, kCorners = 64, kShapeColours = 128 };

struct AbstractShape {
  int32_t kind;  // 0 disc, 1 rectangle, 2 ring, 3 striped disc
  int32_t cx, cy, rx, ry;
  int32_t sx, sy;  // stripe direction
};

struct AbstractPlane {  // one channel of one image
  AbstractShape shapes[kAbstractShapes];
  int32_t corner[4];
  int32_t colour[kAbstractShapes];
};

// Geometry depends on the image only; colours on the image and the channel.
MLGUARD_HD AbstractPlane abstract_plane(uint64_t seed, int64_t image, int64_t channel) {
  AbstractPlane p;
  const uint32_t n0 = lo32(image), n1 = hi32(image);
  const uint32_t cblock = static_cast<uint32_t>(channel >> 2);
  const int cword = static_cast<int>(channel & 3);
  for (int s = 0; s < kAbstractShapes; ++s) {
    const Words4 g = keyed_block(seed, n0, n1, kGeometry + s, 0);
    AbstractShape& sh = p.shapes[s];
    sh.kind = static_cast<int32_t>(g.v[0] & 3);
    sh.cx = static_cast<int32_t>((g.v[0] >> 8) & 255);
    sh.cy = static_cast<int32_t>((g.v[0] >> 16) & 255);
    sh.rx = 20 + static_cast<int32_t>(g.v[1] % 61);  // 20..80 of 256
    sh.ry = 20 + static_cast<int32_t>(g.v[2] % 61);
    sh.sx = static_cast<int32_t>(g.v[3] % 7) - 3;
    sh.sy = static_cast<int32_t>((g.v[3] >> 8) % 7) - 3;
    if (sh.sx == 0 && sh.sy == 0) sh.sx = 2;
    p.colour[s] = static_cast<int32_t>(
        keyed_block(seed, n0, n1, kShapeColours + s, cblock).v[cword] >> 24);
  }
  for (int k = 0; k < 4; ++k) {
    p.corner[k] =
        static_cast<int32_t>(keyed_block(seed, n0, n1, kCorners + k, cblock).v[cword] >> 24);
  }
  return p;
}

// Pixel (y, x) of an H x W plane, as an integer level 0..255.
MLGUARD_HD int32_t abstract_level(const AbstractPlane& p, int64_t y, int64_t x, int64_t H,
                                  int64_t W) {
  // Pixel centres on a 0..255 grid, whatever the image size.
  const int32_t u = static_cast<int32_t>(((2 * x + 1) * 128) / W);
  const int32_t v = static_cast<int32_t>(((2 * y + 1) * 128) / H);
  const int32_t top = p.corner[0] * (255 - u) + p.corner[1] * u;
  const int32_t bottom = p.corner[2] * (255 - u) + p.corner[3] * u;
  int32_t level = (top * (255 - v) + bottom * v) / (255 * 255);
  for (int s = 0; s < kAbstractShapes; ++s) {  // painter's order: later shapes on top
    const AbstractShape& sh = p.shapes[s];
    const int32_t dx = u - sh.cx, dy = v - sh.cy;
    // Ellipse test scaled to avoid division: (dx/rx)^2 + (dy/ry)^2 < 1.
    const int64_t ex = static_cast<int64_t>(dx) * sh.ry, ey = static_cast<int64_t>(dy) * sh.rx;
    const int64_t e = ex * ex + ey * ey, r = static_cast<int64_t>(sh.rx) * sh.ry;
    bool inside;
    switch (sh.kind) {
      case 0: inside = e < r * r; break;
      case 1: inside = (dx < 0 ? -dx : dx) < sh.rx && (dy < 0 ? -dy : dy) < sh.ry; break;
      case 2: inside = e < r * r && 4 * e >= r * r; break;
      default: inside = e < r * r && (((u * sh.sx + v * sh.sy + 2048) >> 4) & 1); break;
    }
    if (inside) level = p.colour[s];
  }
  return level;
}

// Shared by the CPU and CUDA kernels: one place for the op's argument checks.
void check_abstract_triggers_args(const at::Tensor& indices, int64_t channels, int64_t height,
                                  int64_t width);

}  // namespace mlguard
