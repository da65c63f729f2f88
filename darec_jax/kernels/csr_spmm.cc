// CPU kernels exposed to XLA through its FFI.
//
// DarecCsrSpmm:  out[n, :] = sum_{e in [indptr[n], indptr[n+1])} w[e] * x[cols[e], :]
// DarecRowTopK:  idx[b, :] = the k column indices of the largest scores[b, :], best first
//                (equal scores: the lower index first; NaN ranks below everything).
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

void RowRange(const int32_t* indptr, const int32_t* cols, const float* w, const float* x,
              float* out, int64_t d, int64_t row_begin, int64_t row_end) {
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

void TopKRows(const float* scores, int32_t* out, int64_t n_cols, int64_t k, int64_t row_begin,
              int64_t row_end) {
  std::vector<float> vals(k);
  std::vector<int32_t> idx(k);
  for (int64_t b = row_begin; b < row_end; ++b) {
    const float* row = scores + b * n_cols;
    int64_t count = 0;
    // vals[0..count) sorted descending; a new value enters if strictly greater than the last.
    for (int64_t j = 0; j < n_cols; ++j) {
      float v = row[j];
      if (v != v) v = -std::numeric_limits<float>::infinity();  // NaN ranks last
      if (count == k && !(v > vals[k - 1])) continue;
      int64_t pos = count < k ? count++ : k - 1;
      while (pos > 0 && vals[pos - 1] < v) {
        vals[pos] = vals[pos - 1];
        idx[pos] = idx[pos - 1];
        --pos;
      }
      vals[pos] = v;
      idx[pos] = static_cast<int32_t>(j);
    }
    for (int64_t j = 0; j < k; ++j) out[b * k + j] = j < count ? idx[j] : 0;
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

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DarecRowTopK, RowTopKImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // scores [B, n]
                                  .Ret<ffi::Buffer<ffi::S32>>()  // top-k indices [B, k]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(DarecCsrSpmm, CsrSpmmImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S32>>()  // indptr [N + 1]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // cols [E]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w [E]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x [N, d]
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out [N, d]
);
