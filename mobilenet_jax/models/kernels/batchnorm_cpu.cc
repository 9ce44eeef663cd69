// BatchNorm's reductions over [groups, pixels, C] float32 for XLA:CPU, called through
// jax.ffi (batchnorm_ffi.py; cpu_kernels.py builds and loads it).
//
// XLA:CPU's reductions (YNN fusions) cannot fuse the elementwise work in front of
// them, so `mean((x - mean)^2)` wrote x - mean as a full array, and the backward's
// sum(g) and sum(g * normalized) wrote the masked gradient and the normalized input
// before reading them back. Here each statistic is one read of its inputs.
//
// Each chunk of rows (about 256 KiB, so it stays in L2) is reduced on its own, in
// parallel (parallel_for.h); chunks are then merged in a fixed order, in double, so
// results do not depend on the thread count. Moments: two passes per chunk (the
// second from cache) and Chan et al.'s merge of (count, mean, M2): as stable as the
// two-pass formula, whatever |mean| / std is.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using mobilenet_jax::ParallelFor;

constexpr int64_t kChunkFloats = 65536;  // 256 KiB: measured fastest of 16-1024 KiB.

struct Layout {
  int64_t groups, pixels, c, rows, chunks_per_group;

  int64_t chunks() const { return groups * chunks_per_group; }
  int64_t group(int64_t chunk) const { return chunk / chunks_per_group; }
  int64_t first_row(int64_t chunk) const { return (chunk % chunks_per_group) * rows; }
  int64_t row_count(int64_t chunk) const {
    return std::min(rows, pixels - first_row(chunk));
  }
  // Offset of the chunk's first element in the [groups, pixels, C] array.
  int64_t offset(int64_t chunk) const {
    return (group(chunk) * pixels + first_row(chunk)) * c;
  }
};

// dims: [groups, ...pixels..., C].
Layout MakeLayout(ffi::Span<const int64_t> dims) {
  Layout l{dims[0], 1, dims[dims.size() - 1], 0, 0};
  for (size_t i = 1; i + 1 < dims.size(); ++i) l.pixels *= dims[i];
  l.rows = std::max<int64_t>(8, kChunkFloats / std::max<int64_t>(l.c, 1));
  l.chunks_per_group = std::max<int64_t>(1, (l.pixels + l.rows - 1) / l.rows);
  return l;
}

// Rows summed in float before their block's sum is added to a double total: float
// sums of a few rows stay accurate, and the double totals make every sum as accurate
// as a pairwise reduction (sequential float sums of thousands of rows were 10x less
// accurate than XLA's; with Adam-style updates that rounding of near-zero gradients
// becomes full-size steps).
constexpr int64_t kBlockRows = 64;

// For each term: total[c] = sum over `rows` rows p of term(p, c, value), where the
// terms are computed together, from one read of each row.
template <int kTerms, typename Terms>
void BlockedSums(int64_t rows, int64_t C, double* const (&totals)[kTerms],
                 const Terms& terms) {
  std::vector<float> blocks(kTerms * C);
  for (int t = 0; t < kTerms; ++t) std::fill(totals[t], totals[t] + C, 0.0);
  for (int64_t start = 0; start < rows; start += kBlockRows) {
    std::fill(blocks.begin(), blocks.end(), 0.0f);
    for (int64_t p = start; p < std::min(start + kBlockRows, rows); ++p) {
      terms(p, blocks.data());
    }
    for (int t = 0; t < kTerms; ++t) {
      for (int64_t c = 0; c < C; ++c) totals[t][c] += blocks[t * C + c];
    }
  }
}

// The mean and M2 (sum of squared deviations) per channel of `rows` rows of C: the
// corrected two-pass algorithm (the second pass's sum of deviations, zero in exact
// arithmetic, corrects the first pass's rounded mean).
void ChunkMoments(const float* __restrict x, int64_t rows, int64_t C,
                  double* __restrict mean, double* __restrict m2) {
  BlockedSums<1>(rows, C, {mean}, [x, C](int64_t p, float* __restrict sum) {
    const float* __restrict row = x + p * C;
    for (int64_t c = 0; c < C; ++c) sum[c] += row[c];
  });
  std::vector<float> mean32(C);
  for (int64_t c = 0; c < C; ++c) mean32[c] = static_cast<float>(mean[c] / rows);
  std::vector<double> deviation_sum(C);
  const float* __restrict m = mean32.data();
  BlockedSums<2>(rows, C, {deviation_sum.data(), m2},
                 [x, C, m](int64_t p, float* __restrict sums) {
    const float* __restrict row = x + p * C;
    float* __restrict d_sum = sums;
    float* __restrict d2_sum = sums + C;
    for (int64_t c = 0; c < C; ++c) {
      const float d = row[c] - m[c];
      d_sum[c] += d;
      d2_sum[c] += d * d;
    }
  });
  for (int64_t c = 0; c < C; ++c) {
    const double correction = deviation_sum[c] / rows;
    mean[c] = m[c] + correction;
    m2[c] -= deviation_sum[c] * correction;
  }
}

// mean[g, c] and the biased variance var[g, c] of x[g, :, c].
ffi::Error Moments(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                   ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> var) {
  const Layout l = MakeLayout(x.dimensions());
  const int64_t C = l.c;
  std::vector<double> chunk_mean(l.chunks() * C), chunk_m2(l.chunks() * C);
  const float* data = x.typed_data();
  ParallelFor(pool, l.chunks(), [&](int64_t chunk) {
    ChunkMoments(data + l.offset(chunk), l.row_count(chunk), C,
                 chunk_mean.data() + chunk * C, chunk_m2.data() + chunk * C);
  });
  for (int64_t g = 0; g < l.groups; ++g) {
    for (int64_t c = 0; c < C; ++c) {
      double count = 0, mu = 0, m2 = 0;
      for (int64_t k = 0; k < l.chunks_per_group; ++k) {
        const int64_t chunk = g * l.chunks_per_group + k;
        const double n = static_cast<double>(l.row_count(chunk));
        const double delta = chunk_mean[chunk * C + c] - mu, total = count + n;
        mu += delta * n / total;
        m2 += chunk_m2[chunk * C + c] + delta * delta * count * n / total;
        count = total;
      }
      mean->typed_data()[g * C + c] = static_cast<float>(mu);
      var->typed_data()[g * C + c] = static_cast<float>(m2 / count);
    }
  }
  return ffi::Error::Success();
}

// Whether the activation passes gradient at pre-activation a (jax.nn's convention:
// 0 at the kinks). Bitwise & keeps the comparison branch-free, so it vectorizes.
enum Activation : int64_t { kNone = 0, kRelu = 1, kRelu6 = 2 };

template <int64_t kActivation>
inline bool Passes(float a) {
  if (kActivation == kRelu) return a > 0.0f;
  if (kActivation == kRelu6) return (a > 0.0f) & (a < 6.0f);
  return true;
}

// Over `rows` rows: sum of g and of g * normalized per channel, where g is the
// incoming gradient masked by the activation's derivative.
template <int64_t kActivation>
void ChunkGradientSums(const float* __restrict g_out, const float* __restrict x,
                       const float* __restrict mean, const float* __restrict inv,
                       const float* __restrict scale, const float* __restrict bias,
                       int64_t rows, int64_t C, double* __restrict g_sum,
                       double* __restrict g_normalized_sum) {
  BlockedSums<2>(rows, C, {g_sum, g_normalized_sum},
                 [=](int64_t p, float* __restrict sums) {
    const float* __restrict g_row = g_out + p * C;
    const float* __restrict x_row = x + p * C;
    float* __restrict sum = sums;
    float* __restrict normalized_sum = sums + C;
    for (int64_t c = 0; c < C; ++c) {
      const float normalized = (x_row[c] - mean[c]) * inv[c];
      const float g_in = g_row[c];  // Loaded unconditionally: a select vectorizes.
      const float g = Passes<kActivation>(normalized * scale[c] + bias[c]) ? g_in : 0.0f;
      sum[c] += g;
      normalized_sum[c] += g * normalized;
    }
  });
}

using ChunkGradientSumsFn = decltype(&ChunkGradientSums<kNone>);

ChunkGradientSumsFn GradientSumsFor(int64_t activation) {
  if (activation == kRelu6) return ChunkGradientSums<kRelu6>;
  if (activation == kRelu) return ChunkGradientSums<kRelu>;
  return ChunkGradientSums<kNone>;
}

// g_sum[g, c] (d bias) and g_normalized_sum[g, c] (d scale) of BatchNorm + activation.
ffi::Error GradientSums(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g_out,
                        ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> mean,
                        ffi::Buffer<ffi::F32> inv, ffi::Buffer<ffi::F32> scale,
                        ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> g_sum,
                        ffi::ResultBuffer<ffi::F32> g_normalized_sum, int64_t activation) {
  const Layout l = MakeLayout(x.dimensions());
  const int64_t C = l.c;
  if (activation < kNone || activation > kRelu6) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "unknown activation code");
  }
  const ChunkGradientSumsFn sums = GradientSumsFor(activation);
  std::vector<double> chunk_sum(l.chunks() * C), chunk_normalized_sum(l.chunks() * C);
  ParallelFor(pool, l.chunks(), [&](int64_t chunk) {
    const int64_t g = l.group(chunk);
    sums(g_out.typed_data() + l.offset(chunk), x.typed_data() + l.offset(chunk),
         mean.typed_data() + g * C, inv.typed_data() + g * C, scale.typed_data(),
         bias.typed_data(), l.row_count(chunk), C, chunk_sum.data() + chunk * C,
         chunk_normalized_sum.data() + chunk * C);
  });
  for (int64_t g = 0; g < l.groups; ++g) {
    for (int64_t c = 0; c < C; ++c) {
      double total = 0, normalized_total = 0;
      for (int64_t k = 0; k < l.chunks_per_group; ++k) {
        const int64_t chunk = g * l.chunks_per_group + k;
        total += chunk_sum[chunk * C + c];
        normalized_total += chunk_normalized_sum[chunk * C + c];
      }
      g_sum->typed_data()[g * C + c] = static_cast<float>(total);
      g_normalized_sum->typed_data()[g * C + c] = static_cast<float>(normalized_total);
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(MobilenetBatchNormMoments, Moments,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MobilenetBatchNormGradientSums, GradientSums,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("activation"));
