// A k x k depthwise convolution over NHWC float32 for XLA:CPU, forward and backward,
// called through jax.ffi (depthwise_ffi.py; cpu_kernels.py builds and loads it).
//
// Channels are innermost, so every inner loop is a contiguous multiply-add over C
// that the compiler vectorizes. Work is split into chunks (rows forward, images
// backward) shared with XLA's intra-op thread pool (parallel_for.h).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using mobilenet_jax::ParallelFor;

struct Shape {
  int64_t n, h, w, c, k, stride, pad_top, pad_left, out_h, out_w;
};

// One output row (n, oh): out[ow, c] = sum over taps of x[ih, iw, c] * k[i, j, c].
void ForwardRow(const float* x, const float* k, float* out, const Shape& s, int64_t n,
                int64_t oh) {
  const int64_t C = s.c;
  float* row = out + ((n * s.out_h + oh) * s.out_w) * C;
  std::memset(row, 0, sizeof(float) * s.out_w * C);
  for (int64_t i = 0; i < s.k; ++i) {
    const int64_t ih = oh * s.stride + i - s.pad_top;
    if (ih < 0 || ih >= s.h) continue;
    const float* xrow = x + ((n * s.h + ih) * s.w) * C;
    for (int64_t j = 0; j < s.k; ++j) {
      const float* tap = k + (i * s.k + j) * C;
      for (int64_t ow = 0; ow < s.out_w; ++ow) {
        const int64_t iw = ow * s.stride + j - s.pad_left;
        if (iw < 0 || iw >= s.w) continue;
        const float* xp = xrow + iw * C;
        float* op = row + ow * C;
        for (int64_t c = 0; c < C; ++c) op[c] += xp[c] * tap[c];
      }
    }
  }
}

// One image n: dx[n] (gathered per input pixel) and its share of dk, dk_n[tap, c].
void BackwardImage(const float* x, const float* k, const float* g, float* dx,
                   float* dk_n, const Shape& s, int64_t n) {
  const int64_t C = s.c;
  std::memset(dk_n, 0, sizeof(float) * s.k * s.k * C);
  std::vector<float> row_sum(C);
  float* dx_n = dx + n * s.h * s.w * C;
  std::memset(dx_n, 0, sizeof(float) * s.h * s.w * C);
  for (int64_t oh = 0; oh < s.out_h; ++oh) {
    const float* grow = g + ((n * s.out_h + oh) * s.out_w) * C;
    for (int64_t i = 0; i < s.k; ++i) {
      const int64_t ih = oh * s.stride + i - s.pad_top;
      if (ih < 0 || ih >= s.h) continue;
      const float* xrow = x + ((n * s.h + ih) * s.w) * C;
      float* dxrow = dx_n + ih * s.w * C;
      for (int64_t j = 0; j < s.k; ++j) {
        const float* tap = k + (i * s.k + j) * C;
        std::fill(row_sum.begin(), row_sum.end(), 0.0f);
        float* rs = row_sum.data();
        for (int64_t ow = 0; ow < s.out_w; ++ow) {
          const int64_t iw = ow * s.stride + j - s.pad_left;
          if (iw < 0 || iw >= s.w) continue;
          const float* gp = grow + ow * C;
          const float* xp = xrow + iw * C;
          float* dxp = dxrow + iw * C;
          for (int64_t c = 0; c < C; ++c) {
            dxp[c] += gp[c] * tap[c];
            rs[c] += xp[c] * gp[c];
          }
        }
        float* dkp = dk_n + (i * s.k + j) * C;
        for (int64_t c = 0; c < C; ++c) dkp[c] += rs[c];
      }
    }
  }
}

Shape MakeShape(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k, int64_t stride,
                int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w) {
  auto d = x.dimensions();
  return Shape{d[0], d[1], d[2], d[3], k.dimensions()[0], stride, pad_top, pad_left,
               out_h, out_w};
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                   ffi::Buffer<ffi::F32> k, ffi::ResultBuffer<ffi::F32> out,
                   int64_t stride, int64_t pad_top, int64_t pad_left) {
  auto od = out->dimensions();
  const Shape s = MakeShape(x, k, stride, pad_top, pad_left, od[1], od[2]);
  const float* xd = x.typed_data();
  const float* kd = k.typed_data();
  float* o = out->typed_data();
  ParallelFor(pool, s.n * s.out_h,
              [&](int64_t r) { ForwardRow(xd, kd, o, s, r / s.out_h, r % s.out_h); });
  return ffi::Error::Success();
}

// dx, and dk per image (summed over the batch by the caller, in JAX).
ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                    ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> g,
                    ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dk,
                    int64_t stride, int64_t pad_top, int64_t pad_left) {
  auto gd = g.dimensions();
  const Shape s = MakeShape(x, k, stride, pad_top, pad_left, gd[1], gd[2]);
  const float* xd = x.typed_data();
  const float* kd = k.typed_data();
  const float* gdata = g.typed_data();
  float* dxd = dx->typed_data();
  float* dkd = dk->typed_data();
  ParallelFor(pool, s.n, [&](int64_t n) {
    BackwardImage(xd, kd, gdata, dxd, dkd + n * s.k * s.k * s.c, s, n);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MobilenetDepthwiseForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(MobilenetDepthwiseBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));
