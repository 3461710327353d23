"""A fused CPU kernel for the nearest-code search: best and runner-up score per token in one pass.

With code dimensions as small as the paper's (D = 4 at 512 tokens), the matmul form of the search
spends its time writing and re-reading a (G, N, K) score tensor: a batched GEMM with an inner
dimension of 4 runs far below the machine's matmul rate. This kernel computes each score
``||c||^2 - 2 x.c`` in registers and keeps, per token, the best score, its code id and the
runner-up score, so nothing of size K is ever stored. ``search.nearest_codes`` turns the runner-up
into its exactness check (rows whose runner-up is within the float32 error bound are re-ranked in
float64 by ``exact_nearest_codes``), so the result is still exactly the brute-force argmin.

How it is fast (benchmarks/README.md has the measurements):
- codes are scored 16 at a time (one vector) for 8 tokens sharing each load of codes;
- the hot loop keeps only a running minimum per token over a chunk of 128 codes; the chunk is
  scored again with full best / id / runner-up bookkeeping only when that minimum beats the token's
  runner-up so far, which becomes rare after the first chunks (about 2 ln(K / 128) times per token);
- each group's codebook is transposed once to (D, K) and scanned in L1-sized tiles, every tile by
  all tokens of the group in turn, so the codes stream from memory once per group.

The kernel is C++ built once with ``torch.utils.cpp_extension.load_inline`` (needs a C++ compiler
and ninja; the build is cached under ``TORCH_EXTENSIONS_DIR``, by default ~/.cache/torch_extensions).
Where it cannot be built, ``best_two_codes`` returns None and the search uses the matmul form.
Set ``REVQ_CPU_KERNEL=0`` to turn the kernel off.
"""
from __future__ import annotations

import os
import threading
import warnings

import torch

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <limits>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {
// 16 codes side by side in one vector (GCC/Clang vector extensions: AVX-512, two AVX2 halves, or SSE).
typedef float Vec __attribute__((vector_size(64)));
typedef float UnalignedVec __attribute__((vector_size(64), aligned(4)));
constexpr int64_t kLanes = 16;
constexpr int64_t kVectorsPerChunk = 8;                   // the runner-up is checked once per 128 codes
constexpr int64_t kChunk = kLanes * kVectorsPerChunk;
constexpr int64_t kRows = 8;                              // tokens sharing each load of codes
constexpr int64_t kTileFloats = 8 * 1024;                 // codes scanned by all row blocks in turn (L1-sized)
constexpr float kInf = std::numeric_limits<float>::infinity();

// Codes per cache tile for code dimension ``dim`` (a multiple of kChunk), and ``count`` rounded up to chunks.
inline int64_t tile_codes(int64_t dim) { return std::max(kChunk, kTileFloats / (dim + 1) / kChunk * kChunk); }
inline int64_t padded_to_chunks(int64_t count) { return (count + kChunk - 1) / kChunk * kChunk; }

inline Vec load(const float* address) { return *reinterpret_cast<const UnalignedVec*>(address); }

inline bool any_below(Vec values, float threshold) {
#if defined(__AVX512F__)
  return _mm512_cmp_ps_mask(reinterpret_cast<__m512&>(values), _mm512_set1_ps(threshold), _CMP_LT_OQ) != 0;
#else
  float smallest = values[0];
  for (int64_t lane = 1; lane < kLanes; ++lane) smallest = std::min(smallest, values[lane]);
  return smallest < threshold;
#endif
}

// Folds 16 scores of codes code, code + 1, ... into a row's best, runner-up and best id, in id order
// (a tie keeps the lower id). Only lanes below the runner-up can change anything.
inline void update_best_two(Vec score, int64_t code, float& best, float& second, int64_t& best_id) {
#if defined(__AVX512F__)
  const __m512 values = reinterpret_cast<__m512&>(score);
  uint32_t lanes = _mm512_cmp_ps_mask(values, _mm512_set1_ps(second), _CMP_LT_OQ);
  while (lanes) {
    const int lane = __builtin_ctz(lanes);
    const float value = score[lane];
    if (value < best) { second = best; best = value; best_id = code + lane; }
    else second = value;
    lanes &= lanes - 1;
    lanes &= _mm512_cmp_ps_mask(values, _mm512_set1_ps(second), _CMP_LT_OQ);
  }
#else
  for (int64_t lane = 0; lane < kLanes; ++lane) {
    const float value = score[lane];
    if (value < second) {
      if (value < best) { second = best; best = value; best_id = code + lane; }
      else second = value;
    }
  }
#endif
}

// Scores ||c||^2 - 2 x.c of one token (scaled = -2x, D numbers) against 16 codes starting at ``code``
// of a transposed codebook (D rows of ``stride`` numbers, then the squared norms).
template <int64_t kDim>
inline Vec scores(const float* scaled, const float* codes_t, const float* sq_norms, int64_t stride, int64_t code,
                  int64_t runtime_dim) {
  const int64_t dim = kDim > 0 ? kDim : runtime_dim;
  Vec score = load(sq_norms + code);
  for (int64_t d = 0; d < dim; ++d) score += scaled[d] * load(codes_t + d * stride + code);
  return score;
}

// Codes [begin, end) (multiples of kChunk) against rows [0, rows) of a block of kRows scaled tokens.
// best/second/best_id: each row's best score so far, its id, the runner-up. The hot loop keeps only each
// chunk's minimum; a chunk is re-scored with full bookkeeping when it holds a score below the runner-up,
// i.e. rarely once a few chunks are seen (a chunk is visited in increasing id order: ties keep the lowest id).
template <int64_t kDim>
void scan_block(const float* scaled, int64_t rows, const float* codes_t, const float* sq_norms, int64_t stride,
                int64_t begin, int64_t end, int64_t first_id, int64_t runtime_dim, float* best, float* second,
                int64_t* best_id) {
  const int64_t dim = kDim > 0 ? kDim : runtime_dim;
  for (int64_t chunk = begin; chunk < end; chunk += kChunk) {
    Vec chunk_min[kRows];
    for (int64_t r = 0; r < kRows; ++r) chunk_min[r] = kInf - Vec{};
    for (int64_t v = 0; v < kVectorsPerChunk; ++v) {
      for (int64_t r = 0; r < kRows; ++r) {
        const Vec score = scores<kDim>(scaled + r * dim, codes_t, sq_norms, stride, chunk + v * kLanes, dim);
        chunk_min[r] = score < chunk_min[r] ? score : chunk_min[r];
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      if (!any_below(chunk_min[r], second[r])) continue;
      for (int64_t v = 0; v < kVectorsPerChunk; ++v) {
        const int64_t code = chunk + v * kLanes;
        const Vec score = scores<kDim>(scaled + r * dim, codes_t, sq_norms, stride, code, dim);
        update_best_two(score, first_id + code, best[r], second[r], best_id[r]);
      }
    }
  }
}

#if defined(__AVX512F__)
// Lane permutations for transpose_16_codes_of_8 (index i < 16: lane i of the first input, else of the second).
struct TransposeIndices {
  alignas(64) int32_t stage1[2][16], stage2[2][16], stage3[2][16];
  TransposeIndices() {
    for (int h = 0; h < 2; ++h)
      for (int lane = 0; lane < 16; ++lane) {
        const int c4 = lane / 4, e4 = lane % 4, c8 = lane / 2, e8 = lane % 2;
        stage1[h][lane] = (c4 / 2) * 16 + (c4 % 2) * 8 + 4 * h + e4;  // 4 codes x dims 4h..4h+3
        stage2[h][lane] = (c8 / 4) * 16 + (c8 % 4) * 4 + 2 * h + e8;  // 8 codes x 2 dims
        stage3[h][lane] = (lane / 8) * 16 + (lane % 8) * 2 + h;       // 16 codes x 1 dim
      }
  }
};

// 16 codes of D = 8 (128 numbers, code-major) -> their 8 dimensions, 16 codes each, at out + d * stride.
inline void transpose_16_codes_of_8(const float* codes, float* out, int64_t stride) {
  static const TransposeIndices indices;
  __m512 in[8], four[8], two[8];
  for (int j = 0; j < 8; ++j) in[j] = _mm512_loadu_ps(codes + 16 * j);  // codes 2j, 2j + 1
  for (int h = 0; h < 2; ++h) {
    const __m512i index = _mm512_load_si512(indices.stage1[h]);
    for (int m = 0; m < 4; ++m) four[2 * m + h] = _mm512_permutex2var_ps(in[2 * m], index, in[2 * m + 1]);
  }
  for (int r = 0; r < 2; ++r) {  // four[2m + h]: codes 4m..4m+3, dims 4h..4h+3
    const __m512i index = _mm512_load_si512(indices.stage2[r]);
    for (int q = 0; q < 2; ++q)
      for (int h = 0; h < 2; ++h)
        two[4 * q + 2 * h + r] = _mm512_permutex2var_ps(four[4 * q + h], index, four[4 * q + 2 + h]);
  }
  for (int e = 0; e < 2; ++e) {  // two[4q + 2h + r]: codes 8q..8q+7, dims 4h+2r, 4h+2r+1
    const __m512i index = _mm512_load_si512(indices.stage3[e]);
    for (int hr = 0; hr < 4; ++hr)
      _mm512_storeu_ps(out + (2 * hr + e) * stride, _mm512_permutex2var_ps(two[2 * (hr / 2) + (hr % 2)], index,
                                                                            two[4 + 2 * (hr / 2) + (hr % 2)]));
  }
}

// 16 codes of D = 4 (64 numbers, code-major) -> their 4 dimensions, 16 codes each, at out + d * stride.
// in[j]: codes 4j..4j+3 (lane 4c + e: code 4j + c, dim e); two stages of two-input permutes.
inline void transpose_16_codes_of_4(const float* codes, float* out, int64_t stride) {
  struct Indices {
    alignas(64) int32_t pair[2][16], half[2][16];
    Indices() {
      for (int lane = 0; lane < 16; ++lane) {
        const int code = lane % 8;  // pair[h]: dims 2h (lanes 0-7) and 2h + 1 (lanes 8-15) of 8 codes
        for (int h = 0; h < 2; ++h) pair[h][lane] = (code / 4) * 16 + 4 * (code % 4) + 2 * h + lane / 8;
        half[0][lane] = lane < 8 ? lane : 16 + lane - 8;  // the first halves of both inputs
        half[1][lane] = lane < 8 ? 8 + lane : 16 + lane;  // the second halves
      }
    }
  };
  static const Indices indices;
  __m512 in[4], pairs[2][2];  // pairs[codes 0-7 / 8-15][h]
  for (int j = 0; j < 4; ++j) in[j] = _mm512_loadu_ps(codes + 16 * j);
  for (int h = 0; h < 2; ++h) {
    const __m512i index = _mm512_load_si512(indices.pair[h]);
    pairs[0][h] = _mm512_permutex2var_ps(in[0], index, in[1]);
    pairs[1][h] = _mm512_permutex2var_ps(in[2], index, in[3]);
  }
  for (int h = 0; h < 2; ++h)
    for (int e = 0; e < 2; ++e)
      _mm512_storeu_ps(out + (2 * h + e) * stride,
                       _mm512_permutex2var_ps(pairs[0][h], _mm512_load_si512(indices.half[e]), pairs[1][h]));
}
#endif

// Codes (K, D) of one group -> codes_t (D, stride) and squared norms (stride,), padded to ``stride`` with
// zero codes of infinite norm (their scores are +inf: never best). Returns the largest real ||c||^2.
template <int64_t kDim>
float prepare_group(const float* __restrict codes, int64_t runtime_dim, int64_t num_codes, int64_t stride,
                    float* __restrict codes_t, float* __restrict sq_norms) {
  const int64_t dim = kDim > 0 ? kDim : runtime_dim;
  int64_t k = 0;
#if defined(__AVX512F__)
  if (dim == 8) {  // GCC leaves this transposition scalar; three shuffle stages per 16 codes
    for (; k + kLanes <= num_codes; k += kLanes) transpose_16_codes_of_8(codes + k * 8, codes_t + k, stride);
  } else if (dim == 4) {  // GCC's vectorisation of the loop below costs ~4.5 cycles per code; this ~0.5
    for (; k + kLanes <= num_codes; k += kLanes) transpose_16_codes_of_4(codes + k * 4, codes_t + k, stride);
  }
#endif
  for (; k < num_codes; ++k) {
    for (int64_t d = 0; d < dim; ++d) codes_t[d * stride + k] = codes[k * dim + d];
  }
  for (int64_t d = 0; d < dim; ++d) std::fill(codes_t + d * stride + num_codes, codes_t + (d + 1) * stride, 0.0f);
  Vec largest = Vec{};
  for (int64_t k = 0; k < stride; k += kLanes) {  // stride is a multiple of kChunk
    Vec norm = Vec{};
    for (int64_t d = 0; d < dim; ++d) {
      const Vec value = load(codes_t + d * stride + k);
      norm += value * value;
    }
    *reinterpret_cast<UnalignedVec*>(sq_norms + k) = norm;
    largest = norm > largest ? norm : largest;  // padded codes are zeros: norm 0
  }
  std::fill(sq_norms + num_codes, sq_norms + stride, kInf);
  float result = 0.0f;
  for (int64_t lane = 0; lane < kLanes; ++lane) result = std::max(result, largest[lane]);
  return result;
}

// Rows [0, rows) of one group (tokens x: rows x D) against codes [0, stride) of a prepared codebook whose
// first code has id ``first_id``; folds them into the rows' best, id and runner-up. The codes are scanned in
// L1-sized tiles, each tile by all blocks of rows in turn.
template <int64_t kDim>
void scan_rows(const float* x, int64_t rows, const float* codes_t, const float* sq_norms, int64_t stride,
               int64_t first_id, int64_t runtime_dim, float* best, int64_t* best_id, float* second) {
  const int64_t dim = kDim > 0 ? kDim : runtime_dim;
  const int64_t tile = tile_codes(dim);
  float scaled[kRows * 64];
  for (int64_t begin = 0; begin < stride; begin += tile) {
    const int64_t end = std::min(stride, begin + tile);
    for (int64_t row0 = 0; row0 < rows; row0 += kRows) {
      const int64_t block_rows = std::min(kRows, rows - row0);
      std::fill(scaled, scaled + kRows * dim, 0.0f);  // rows past the end score zeros, unused
      for (int64_t i = 0; i < block_rows * dim; ++i) scaled[i] = -2.0f * x[row0 * dim + i];
      scan_block<kDim>(scaled, block_rows, codes_t, sq_norms, stride, begin, end, first_id, dim, best + row0,
                       second + row0, best_id + row0);
    }
  }
}

void start_rows(int64_t rows, float* best, int64_t* best_id, float* second) {
  for (int64_t r = 0; r < rows; ++r) { best[r] = kInf; second[r] = kInf; best_id[r] = 0; }
}

// All rows of one group against its codebook (K, D), prepared and scanned one L1-sized tile at a time so
// the codes are read from memory once; ``buffer`` holds a tile's (D + 1) x tile numbers. Returns max ||c||^2.
template <int64_t kDim>
float search_group(const float* x, int64_t rows, const float* codes, int64_t num_codes, int64_t runtime_dim,
                   float* buffer, float* best, int64_t* best_id, float* second) {
  const int64_t dim = kDim > 0 ? kDim : runtime_dim;
  const int64_t tile = tile_codes(dim);
  start_rows(rows, best, best_id, second);
  float largest = 0.0f;
  for (int64_t first = 0; first < num_codes; first += tile) {
    const int64_t count = std::min(tile, num_codes - first);
    const int64_t padded = padded_to_chunks(count);
    largest = std::max(largest, prepare_group<kDim>(codes + first * dim, dim, count, padded, buffer,
                                                     buffer + dim * padded));
    scan_rows<kDim>(x, rows, buffer, buffer + dim * padded, padded, first, dim, best, best_id, second);
  }
  return largest;
}

struct Dispatch {
  float (*prepare)(const float*, int64_t, int64_t, int64_t, float*, float*);
  void (*scan)(const float*, int64_t, const float*, const float*, int64_t, int64_t, int64_t, float*, int64_t*,
               float*);
  float (*search_group)(const float*, int64_t, const float*, int64_t, int64_t, float*, float*, int64_t*, float*);
};

Dispatch dispatch(int64_t dim) {
  switch (dim) {
    case 4: return {prepare_group<4>, scan_rows<4>, search_group<4>};
    case 8: return {prepare_group<8>, scan_rows<8>, search_group<8>};
    case 16: return {prepare_group<16>, scan_rows<16>, search_group<16>};
    default: return {prepare_group<0>, scan_rows<0>, search_group<0>};
  }
}
}  // namespace

// tokens (G, N, D), codes (G, K, D): float32, contiguous.
// Returns best score (G, N), best code id (G, N) int64, runner-up score (G, N), largest ||c||^2 (G,).
// Scores are ||c||^2 - 2 x.c. Many groups: threads take whole groups, each preparing its codebook one
// cache-sized tile at a time; few groups: all codebooks are prepared first and threads split the rows.
std::vector<torch::Tensor> best_two(torch::Tensor tokens, torch::Tensor codes) {
  TORCH_CHECK(tokens.dim() == 3 && codes.dim() == 3, "tokens (G, N, D) and codes (G, K, D) expected");
  TORCH_CHECK(tokens.scalar_type() == torch::kFloat && codes.scalar_type() == torch::kFloat, "float32 only");
  TORCH_CHECK(tokens.is_contiguous() && codes.is_contiguous(), "contiguous tensors only");
  const int64_t groups = tokens.size(0), rows = tokens.size(1), dim = tokens.size(2), num_codes = codes.size(1);
  TORCH_CHECK(dim <= 64 && codes.size(2) == dim && codes.size(0) == groups, "shape mismatch or D > 64");
  TORCH_CHECK(num_codes >= 1 && num_codes < (int64_t(1) << 40), "K out of range");
  auto best = torch::empty({groups, rows}, tokens.options());
  auto second = torch::empty({groups, rows}, tokens.options());
  auto ids = torch::empty({groups, rows}, tokens.options().dtype(torch::kLong));
  auto largest = torch::empty({groups}, tokens.options());
  const float* x = tokens.data_ptr<float>();
  const float* c = codes.data_ptr<float>();
  float* best_p = best.data_ptr<float>();
  float* second_p = second.data_ptr<float>();
  int64_t* ids_p = ids.data_ptr<int64_t>();
  float* largest_p = largest.data_ptr<float>();
  const Dispatch kernels = dispatch(dim);
  if (groups >= 2 * at::get_num_threads()) {
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> buffer((dim + 1) * tile_codes(dim));
      for (int64_t g = begin; g < end; ++g)
        largest_p[g] = kernels.search_group(x + g * rows * dim, rows, c + g * num_codes * dim, num_codes, dim,
                                            buffer.data(), best_p + g * rows, ids_p + g * rows, second_p + g * rows);
    });
  } else {
    const int64_t stride = padded_to_chunks(num_codes);
    std::vector<float> codes_t(groups * dim * stride), sq_norms(groups * stride);
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g)
        largest_p[g] = kernels.prepare(c + g * num_codes * dim, dim, num_codes, stride,
                                       codes_t.data() + g * dim * stride, sq_norms.data() + g * stride);
    });
    const int64_t rows_per_item = 64;
    const int64_t items_per_group = (rows + rows_per_item - 1) / rows_per_item;
    at::parallel_for(0, groups * items_per_group, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t g = item / items_per_group, row0 = (item % items_per_group) * rows_per_item;
        const int64_t out = g * rows + row0;
        const int64_t item_rows = std::min(rows_per_item, rows - row0);
        start_rows(item_rows, best_p + out, ids_p + out, second_p + out);
        kernels.scan(x + out * dim, item_rows, codes_t.data() + g * dim * stride, sq_norms.data() + g * stride,
                     stride, 0, dim, best_p + out, ids_p + out, second_p + out);
      }
    });
  }
  return {best, ids, second, largest};
}

// Exact float64 nearest code for selected tokens: tokens (A, D) float32, codes (G, K, D) float32,
// groups (A,) int64 (the codebook of each token). Returns (A,) int64 ids, the first minimum of
// sum_d (x_d - c_d)^2 computed in float64 (ties go to the lowest index).
torch::Tensor exact_nearest(torch::Tensor tokens, torch::Tensor codes, torch::Tensor groups) {
  TORCH_CHECK(tokens.dim() == 2 && codes.dim() == 3 && groups.dim() == 1 && groups.size(0) == tokens.size(0),
              "tokens (A, D), codes (G, K, D) and groups (A,) expected");
  TORCH_CHECK(tokens.scalar_type() == torch::kFloat && codes.scalar_type() == torch::kFloat &&
              groups.scalar_type() == torch::kLong, "float32 tokens and codes, int64 groups expected");
  TORCH_CHECK(tokens.is_contiguous() && codes.is_contiguous() && groups.is_contiguous(), "contiguous tensors only");
  TORCH_CHECK(tokens.size(1) == codes.size(2), "tokens and codes differ in D");
  const int64_t count = tokens.size(0), dim = tokens.size(1), num_codes = codes.size(1), num_groups = codes.size(0);
  auto ids = torch::empty({count}, groups.options());
  const float* x = tokens.data_ptr<float>();
  const float* c = codes.data_ptr<float>();
  const int64_t* group_p = groups.data_ptr<int64_t>();
  int64_t* ids_p = ids.data_ptr<int64_t>();
  for (int64_t a = 0; a < count; ++a) TORCH_CHECK(group_p[a] >= 0 && group_p[a] < num_groups, "group out of range");
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> token(dim);
    for (int64_t a = begin; a < end; ++a) {
      for (int64_t d = 0; d < dim; ++d) token[d] = x[a * dim + d];
      const float* book = c + group_p[a] * num_codes * dim;
      double best = std::numeric_limits<double>::infinity();
      int64_t best_id = 0;
      for (int64_t k = 0; k < num_codes; ++k) {
        double distance = 0.0;
        for (int64_t d = 0; d < dim; ++d) {
          const double difference = token[d] - static_cast<double>(book[k * dim + d]);
          distance += difference * difference;
        }
        if (distance < best) { best = distance; best_id = k; }
      }
      ids_p[a] = best_id;
    }
  });
  return ids;
}
"""

_lock = threading.Lock()
_module = None
_failed = False
MAX_CODE_DIM = 64


def _load():
    """Build (first time) or load the extension; None where that is impossible."""
    global _module, _failed
    if _module is not None or _failed:
        return _module
    with _lock:
        if _module is None and not _failed:
            try:
                from torch.utils.cpp_extension import load_inline

                _module = load_inline(name="revq_cpu_search_v14", cpp_sources=[_SOURCE],
                                      functions=["best_two", "exact_nearest"], extra_cflags=["-O3", "-march=native", "-fopenmp"],
                                      extra_ldflags=["-fopenmp"], verbose=False)
            except Exception as error:  # no compiler, no ninja, read-only cache...: fall back, say why once
                _failed = True
                warnings.warn(f"revq: the fused CPU search kernel could not be built ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}); using the slower matmul "
                              "search. Install a C++ compiler and ninja, or set REVQ_CPU_KERNEL=0 to silence this.",
                              RuntimeWarning, stacklevel=3)
    return _module


def kernel_enabled() -> bool:
    """Whether the fused kernel is wanted (``REVQ_CPU_KERNEL`` is not 0) and can be built here."""
    if os.environ.get("REVQ_CPU_KERNEL", "1") == "0":
        return False
    return _load() is not None


def best_two_codes(tokens: torch.Tensor, codes: torch.Tensor):
    """Best score, its code id and the runner-up score for every token, or None when not applicable.

    Args:
        tokens: (G, N, D) float32 CPU tokens.
        codes: (G, K, D) float32 CPU codebook.
    Returns:
        (best (G, N) float32, best_ids (G, N) int64, runner_up (G, N) float32, largest_sq_norm (G,)
        float32), scores being ``||c||^2 - 2 x.c`` and largest_sq_norm each group's max ``||c||^2``;
        or None if the inputs are not float32 CPU tensors with D <= 64, or the kernel is off or
        cannot be built.
    """
    if (tokens.device.type != "cpu" or codes.device.type != "cpu" or tokens.dtype != torch.float32
            or codes.dtype != torch.float32 or tokens.shape[-1] > MAX_CODE_DIM or codes.shape[1] == 0
            or not kernel_enabled()):
        return None
    return tuple(_module.best_two(tokens.contiguous(), codes.contiguous()))


def exact_nearest_codes(tokens: torch.Tensor, codes: torch.Tensor, group_ids: torch.Tensor):
    """Float64 nearest code (first minimum of the squared difference) for selected tokens, or None.

    Args:
        tokens: (A, D) float32 CPU tokens.
        codes: (G, K, D) float32 CPU codebook.
        group_ids: (A,) the codebook of each token.
    Returns:
        (A,) int64 code ids, or None where the kernel does not apply (as ``best_two_codes``).
    """
    if (tokens.device.type != "cpu" or codes.device.type != "cpu" or tokens.dtype != torch.float32
            or codes.dtype != torch.float32 or not kernel_enabled()):
        return None
    return _module.exact_nearest(tokens.contiguous(), codes.contiguous(), group_ids.long().contiguous())
