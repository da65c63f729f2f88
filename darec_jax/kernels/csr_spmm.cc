// CPU kernels exposed to XLA through its FFI.
//
// DarecCsrSpmm:  out[n, :] = sum_{e in [indptr[n], indptr[n+1])} w[e] * x[cols[e], :]
// DarecRowTopK:  idx[b, :] = the k column indices of the largest scores[b, :], best first
//                (equal scores: the lower index first; NaN ranks below everything).
// DarecScoreTopK: the same top-k of the scores u[b, :] . item[j, :] with the row's masked
//                columns set to -1e8, without materialising the [B, n] score matrix: scores of
//                8 rows at a time are computed in register tiles into a cache-resident buffer,
//                masked, and ranked there.
//
// Rows are split between a few threads. Each output row is written by exactly one thread, in a
// fixed order, so results are deterministic.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

int64_t ThreadCount(int64_t work);

// One output row at a time, accumulated in a local array the compiler keeps in vector
// registers when the width D is a compile-time constant (the common embedding widths), instead
// of reading and writing the output row once per edge.
typedef float Vec8 __attribute__((vector_size(32)));

template <int D>
void RowRangeFixed(const int32_t* __restrict indptr, const int32_t* __restrict cols,
                   const float* __restrict w, const float* __restrict x, float* __restrict out,
                   int64_t row_begin, int64_t row_end) {
  constexpr int Q = D / 8;
  for (int64_t n = row_begin; n < row_end; ++n) {
    Vec8 acc[Q];
    for (int q = 0; q < Q; ++q) acc[q] = Vec8{};
    for (int32_t e = indptr[n]; e < indptr[n + 1]; ++e) {
      const float we = w[e];
      const Vec8 wv = {we, we, we, we, we, we, we, we};
      const float* xr = x + static_cast<int64_t>(cols[e]) * D;
      for (int q = 0; q < Q; ++q) {
        Vec8 xv;
        __builtin_memcpy(&xv, xr + 8 * q, sizeof(Vec8));
        acc[q] += wv * xv;
      }
    }
    float* o = out + n * D;
    for (int q = 0; q < Q; ++q) __builtin_memcpy(o + 8 * q, &acc[q], sizeof(Vec8));
  }
}

void RowRange(const int32_t* indptr, const int32_t* cols, const float* w, const float* x,
              float* out, int64_t d, int64_t row_begin, int64_t row_end) {
  switch (d) {
    case 16:
      return RowRangeFixed<16>(indptr, cols, w, x, out, row_begin, row_end);
    case 32:
      return RowRangeFixed<32>(indptr, cols, w, x, out, row_begin, row_end);
    case 64:
      return RowRangeFixed<64>(indptr, cols, w, x, out, row_begin, row_end);
    default:
      break;
  }
  for (int64_t n = row_begin; n < row_end; ++n) {
    float* o = out + n * d;
    std::fill(o, o + d, 0.0f);
    for (int32_t e = indptr[n]; e < indptr[n + 1]; ++e) {
      const float we = w[e];
      const float* xr = x + static_cast<int64_t>(cols[e]) * d;
      for (int64_t k = 0; k < d; ++k) o[k] += we * xr[k];
    }
  }
}

ffi::Error CsrSpmmImpl(ffi::Buffer<ffi::S32> indptr, ffi::Buffer<ffi::S32> cols,
                       ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> x,
                       ffi::ResultBuffer<ffi::F32> out) {
  auto xdims = x.dimensions();
  if (xdims.size() != 2) return ffi::Error::InvalidArgument("x must be 2-D [N, d]");
  const int64_t n_rows = indptr.element_count() - 1;
  const int64_t d = xdims[1];
  if (out->dimensions()[0] != n_rows) return ffi::Error::InvalidArgument("bad output rows");
  const int32_t* ip = indptr.typed_data();
  const int32_t* cc = cols.typed_data();
  const float* ww = w.typed_data();
  const float* xx = x.typed_data();
  float* oo = out->typed_data();
  const int64_t n_edges = ip[n_rows];
  const int64_t n_threads = ThreadCount(n_edges * d);
  if (n_threads <= 1) {
    RowRange(ip, cc, ww, xx, oo, d, 0, n_rows);
    return ffi::Error::Success();
  }
  // Cut rows so that every thread gets about the same number of edges.
  std::vector<int64_t> bounds(n_threads + 1, n_rows);
  bounds[0] = 0;
  for (int64_t t = 1; t < n_threads; ++t) {
    const int64_t target = n_edges * t / n_threads;
    bounds[t] = std::upper_bound(ip, ip + n_rows + 1, static_cast<int32_t>(target)) - ip - 1;
    bounds[t] = std::max(bounds[t], bounds[t - 1]);
  }
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < n_threads; ++t) {
    workers.emplace_back(RowRange, ip, cc, ww, xx, oo, d, bounds[t], bounds[t + 1]);
  }
  RowRange(ip, cc, ww, xx, oo, d, bounds[0], bounds[1]);
  for (auto& worker : workers) worker.join();
  return ffi::Error::Success();
}

int64_t ThreadCount(int64_t work) {
  unsigned hw = std::thread::hardware_concurrency();
  int64_t n = std::min<int64_t>(hw == 0 ? 1 : hw, 8);
  return work < (int64_t{1} << 20) ? 1 : n;
}

constexpr int kGroup = 8;   // rows scored together (they share each item vector load)
constexpr int kTile = 16;   // items per register tile: 2 vectors of 8
constexpr float kMaskScore = -1e8f;
typedef int32_t IVec8 __attribute__((vector_size(32)));

// Insert v (column j) into the descending k-slot list vals/idx holding `count` entries.
inline void Offer(float v, int32_t j, int64_t k, int64_t* count, float* vals, int32_t* idx) {
  if (*count == k && !(v > vals[k - 1])) return;
  int64_t pos = *count < k ? (*count)++ : k - 1;
  while (pos > 0 && vals[pos - 1] < v) {
    vals[pos] = vals[pos - 1];
    idx[pos] = idx[pos - 1];
    --pos;
  }
  vals[pos] = v;
  idx[pos] = j;
}

// A row's k best columns of scores[0, n) into out[0, k), best first (ties to the lower
// index, NaN last). Once k entries are held, 8 columns at a time are skipped unless one of them
// beats the k-th best (a NaN never does).
void TopKOfRow(const float* row, int64_t n_cols, int64_t k, float* vals, int32_t* idx,
               int32_t* out) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  int64_t count = 0, j = 0;
  for (; j < n_cols && count < k; ++j) {
    const float v = row[j] != row[j] ? neg_inf : row[j];
    Offer(v, static_cast<int32_t>(j), k, &count, vals, idx);
  }
  for (; j + 8 <= n_cols; j += 8) {
    Vec8 v;
    __builtin_memcpy(&v, row + j, sizeof(Vec8));
    const float t = vals[k - 1];
    const Vec8 tv = {t, t, t, t, t, t, t, t};
    const IVec8 above = v > tv;
    int any = 0;
    for (int l = 0; l < 8; ++l) any |= above[l];
    if (!any) continue;
    for (int l = 0; l < 8; ++l) {
      if (v[l] > vals[k - 1]) Offer(v[l], static_cast<int32_t>(j + l), k, &count, vals, idx);
    }
  }
  for (; j < n_cols; ++j) {
    const float v = row[j];
    if (v > vals[k - 1]) Offer(v, static_cast<int32_t>(j), k, &count, vals, idx);
  }
  for (int64_t q = 0; q < k; ++q) out[q] = q < count ? idx[q] : 0;
}

// Rows [row_begin, row_end) of a score matrix [*, n_cols]: each row's top k.
void TopKRows(const float* scores, int32_t* out, int64_t n_cols, int64_t k, int64_t row_begin,
              int64_t row_end) {
  std::vector<float> vals(k);
  std::vector<int32_t> idx(k);
  for (int64_t b = row_begin; b < row_end; ++b) {
    TopKOfRow(scores + b * n_cols, n_cols, k, vals.data(), idx.data(), out + b * k);
  }
}

ffi::Error RowTopKImpl(ffi::Buffer<ffi::F32> scores, ffi::ResultBuffer<ffi::S32> out) {
  auto dims = scores.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("scores must be 2-D [B, n]");
  const int64_t n_rows = dims[0], n_cols = dims[1];
  const int64_t k = out->dimensions()[1];
  if (k < 1 || k > n_cols) return ffi::Error::InvalidArgument("need 1 <= k <= n");
  const float* ss = scores.typed_data();
  int32_t* oo = out->typed_data();
  const int64_t n_threads = std::min<int64_t>(ThreadCount(n_rows * n_cols), n_rows);
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < n_threads; ++t) {
    workers.emplace_back(TopKRows, ss, oo, n_cols, k, n_rows * t / n_threads,
                         n_rows * (t + 1) / n_threads);
  }
  TopKRows(ss, oo, n_cols, k, 0, n_rows / std::max<int64_t>(n_threads, 1));
  for (auto& worker : workers) worker.join();
  return ffi::Error::Success();
}

// Rows [row_begin, row_end): scores against the item tiles (tiles [T][d][16], zero-padded past
// n_items), mask, top-k.
void ScoreTopKRows(const float* users, const float* tiles, const int32_t* indptr,
                   const int32_t* masked, int32_t* out, int64_t d, int64_t n_tiles,
                   int64_t n_items, int64_t k, int64_t row_begin, int64_t row_end) {
  const int64_t width = n_tiles * kTile;
  std::vector<float> buf(kGroup * width);
  std::vector<float> ut(d * kGroup);  // the group's rows, transposed: ut[c][g]
  std::vector<float> vals(k);
  std::vector<int32_t> idx(k);
  for (int64_t b0 = row_begin; b0 < row_end; b0 += kGroup) {
    const int64_t rows = std::min<int64_t>(kGroup, row_end - b0);
    for (int g = 0; g < kGroup; ++g) {
      const float* u = users + (b0 + std::min<int64_t>(g, rows - 1)) * d;
      for (int64_t c = 0; c < d; ++c) ut[c * kGroup + g] = u[c];
    }
    for (int64_t t = 0; t < n_tiles; ++t) {
      const float* it = tiles + t * d * kTile;
      Vec8 acc[kGroup][2];
      for (int g = 0; g < kGroup; ++g) acc[g][0] = acc[g][1] = Vec8{};
      for (int64_t c = 0; c < d; ++c) {
        Vec8 i0, i1;
        __builtin_memcpy(&i0, it + c * kTile, sizeof(Vec8));
        __builtin_memcpy(&i1, it + c * kTile + 8, sizeof(Vec8));
        const float* uc = &ut[c * kGroup];
        for (int g = 0; g < kGroup; ++g) {
          const float s = uc[g];
          const Vec8 sv = {s, s, s, s, s, s, s, s};
          acc[g][0] += sv * i0;
          acc[g][1] += sv * i1;
        }
      }
      for (int g = 0; g < kGroup; ++g) {
        __builtin_memcpy(&buf[g * width + t * kTile], &acc[g][0], sizeof(Vec8));
        __builtin_memcpy(&buf[g * width + t * kTile + 8], &acc[g][1], sizeof(Vec8));
      }
    }
    for (int g = 0; g < rows; ++g) {
      const int64_t b = b0 + g;
      float* row = &buf[g * width];
      for (int32_t p = indptr[b]; p < indptr[b + 1]; ++p) {
        if (masked[p] >= 0 && masked[p] < n_items) row[masked[p]] = kMaskScore;
      }
      TopKOfRow(row, n_items, k, vals.data(), idx.data(), out + b * k);
    }
  }
}

ffi::Error ScoreTopKImpl(ffi::Buffer<ffi::F32> users, ffi::Buffer<ffi::F32> tiles,
                         ffi::Buffer<ffi::S32> indptr, ffi::Buffer<ffi::S32> masked,
                         ffi::ResultBuffer<ffi::S32> out, int64_t n_items) {
  auto udims = users.dimensions();
  auto tdims = tiles.dimensions();
  if (udims.size() != 2 || tdims.size() != 3 || tdims[1] != udims[1] || tdims[2] != kTile) {
    return ffi::Error::InvalidArgument("need users [B, d] and item tiles [T, d, 16]");
  }
  const int64_t n_rows = udims[0], d = udims[1], n_tiles = tdims[0];
  const int64_t k = out->dimensions()[1];
  if (n_items < 1 || n_items > n_tiles * kTile) return ffi::Error::InvalidArgument("bad n_items");
  if (k < 1 || k > n_items) return ffi::Error::InvalidArgument("need 1 <= k <= n_items");
  if (indptr.element_count() != n_rows + 1) return ffi::Error::InvalidArgument("bad indptr");
  const int64_t n_threads = std::max<int64_t>(
      1, std::min<int64_t>(ThreadCount(n_rows * n_items * d), n_rows / kGroup));
  std::vector<int64_t> bounds(n_threads + 1);
  for (int64_t t = 0; t <= n_threads; ++t) bounds[t] = n_rows * t / n_threads;
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < n_threads; ++t) {
    workers.emplace_back(ScoreTopKRows, users.typed_data(), tiles.typed_data(),
                         indptr.typed_data(), masked.typed_data(), out->typed_data(), d, n_tiles,
                         n_items, k, bounds[t], bounds[t + 1]);
  }
  ScoreTopKRows(users.typed_data(), tiles.typed_data(), indptr.typed_data(), masked.typed_data(),
                out->typed_data(), d, n_tiles, n_items, k, bounds[0], bounds[1]);
  for (auto& worker : workers) worker.join();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DarecRowTopK, RowTopKImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // scores [B, n]
                                  .Ret<ffi::Buffer<ffi::S32>>()  // top-k indices [B, k]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(DarecScoreTopK, ScoreTopKImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // users [B, d]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // item tiles [T, d, 16]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // indptr [B + 1] of masked
                                  .Arg<ffi::Buffer<ffi::S32>>()  // masked columns [P]
                                  .Ret<ffi::Buffer<ffi::S32>>()  // top-k indices [B, k]
                                  .Attr<int64_t>("n_items"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(DarecCsrSpmm, CsrSpmmImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S32>>()  // indptr [N + 1]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // cols [E]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w [E]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x [N, d]
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out [N, d]
);
