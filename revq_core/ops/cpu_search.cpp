// The fused nearest-code search kernel of revq_core/ops/cpu_search.py (built there with load_inline;
// the build is named by a hash of this file and the compiler flags, so an edit always rebuilds).
// Registered as torch operators (TORCH_LIBRARY, no pybind11) so that only these few headers are compiled:
// <torch/extension.h> alone took 15.7 s of a 19 s first build on a Zen 5 core, these 3.7 s.
#include <torch/library.h>
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {
// Codes side by side in one hardware vector (GCC/Clang vector extensions): 16 with AVX-512, 8 elsewhere
// (AVX2). A wider-than-hardware vector would work too, but GCC scalarises its selects (``a < b ? a : b``
// becomes 16 vminss on AVX2: measured 12x slower than AVX-512 at D = 4 on the same core).
#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
#else
constexpr int64_t kLanes = 8;
#endif
typedef float Vec __attribute__((vector_size(kLanes * 4)));
typedef float UnalignedVec __attribute__((vector_size(kLanes * 4), aligned(4)));
constexpr int64_t kVectorsPerChunk = 128 / kLanes;        // the runner-up is checked once per 128 codes
constexpr int64_t kChunk = kLanes * kVectorsPerChunk;
constexpr int64_t kRows = 8;                              // tokens sharing each load of codes
constexpr int64_t kTileFloats = 8 * 1024;                 // codes scanned by all row blocks in turn (L1-sized)
constexpr float kInf = std::numeric_limits<float>::infinity();

// Codes per cache tile for code dimension ``dim`` (a multiple of kChunk), and ``count`` rounded up to chunks.
inline int64_t tile_codes(int64_t dim) { return std::max(kChunk, kTileFloats / (dim + 1) / kChunk * kChunk); }
constexpr int64_t kMaxTileChunks = kTileFloats / 2 / kChunk;  // tile_codes(1) / kChunk, the most chunks in a tile
inline int64_t padded_to_chunks(int64_t count) { return (count + kChunk - 1) / kChunk * kChunk; }

inline Vec load(const float* address) { return *reinterpret_cast<const UnalignedVec*>(address); }

// Smallest lane (AVX-512: one reduction; elsewhere a loop).
inline float lane_min(Vec values) {
#if defined(__AVX512F__)
  return _mm512_reduce_min_ps(reinterpret_cast<__m512&>(values));
#else
  float smallest = values[0];
  for (int64_t lane = 1; lane < kLanes; ++lane) smallest = values[lane] < smallest ? values[lane] : smallest;
  return smallest;
#endif
}

inline bool any_below(Vec values, float threshold) {
#if defined(__AVX512F__)
  return _mm512_cmp_ps_mask(reinterpret_cast<__m512&>(values), _mm512_set1_ps(threshold), _CMP_LT_OQ) != 0;
#else
  return lane_min(values) < threshold;
#endif
}

typedef int32_t Ids __attribute__((vector_size(kLanes * 4)));  // kLanes code ids, lane by lane

inline int32_t lane_min(Ids values) {
#if defined(__AVX512F__)
  return _mm512_reduce_min_epi32(reinterpret_cast<__m512i&>(values));
#else
  int32_t smallest = values[0];
  for (int64_t lane = 1; lane < kLanes; ++lane) smallest = std::min(smallest, values[lane]);
  return smallest;
#endif
}

// Scores ||c||^2 - 2 x.c of one token (scaled = -2x, D numbers) against kLanes codes starting at ``code``
// of a transposed codebook (D rows of ``stride`` numbers, then the squared norms).
template <int64_t kDim>
inline Vec scores(const float* scaled, const float* codes_t, const float* sq_norms, int64_t stride, int64_t code,
                  int64_t runtime_dim) {
  const int64_t dim = kDim > 0 ? kDim : runtime_dim;
  Vec score = load(sq_norms + code);
  for (int64_t d = 0; d < dim; ++d) score += scaled[d] * load(codes_t + d * stride + code);
  return score;
}

// Scores one chunk (kChunk codes from ``chunk``) for one token with full bookkeeping and folds it into the
// token's best, runner-up and best id, without data-dependent branches (which the CPU mispredicts: the
// chunks that need this are few and random). Each lane keeps its best, runner-up and best code over the
// chunk's vectors; the lanes are then merged. The chunk's codes all come after the codes seen so far, so
// ties keep the earlier best; inside the chunk a tie goes to the lowest id. A NaN score changes nothing.
// Not inlined: it runs rarely, and inlined it crowds the hot loop's registers.
template <int64_t kDim>
__attribute__((noinline)) void rescore_chunk(const float* scaled, const float* codes_t, const float* sq_norms,
                                             int64_t stride, int64_t chunk, int64_t first_id, int64_t runtime_dim,
                                             float& best, float& second, int64_t& best_id) {
  Ids lane_ids, chunk_ids = Ids{};
  for (int32_t lane = 0; lane < kLanes; ++lane) lane_ids[lane] = lane;
  Vec lane_best = kInf - Vec{}, lane_second = lane_best;
  for (int64_t v = 0; v < kVectorsPerChunk; ++v) {
    const Vec score = scores<kDim>(scaled, codes_t, sq_norms, stride, chunk + v * kLanes, runtime_dim);
    const Ids lower = score < lane_best;
    const Vec larger = lane_best > score ? lane_best : score;  // max(best, score); NaN score: NaN
    lane_second = larger < lane_second ? larger : lane_second;  // a NaN is not below: unchanged
    lane_best = lower ? score : lane_best;
    chunk_ids = lower ? lane_ids + int32_t(v * kLanes) : chunk_ids;
  }
  const float chunk_best = lane_min(lane_best);
  const Ids at_best = lane_best == (Vec{} + chunk_best);
  const int32_t chunk_best_id = lane_min(at_best ? chunk_ids : Ids{} + kChunk);  // the lowest id among ties
  const Vec others = at_best & (chunk_ids == (Ids{} + chunk_best_id)) ? kInf - Vec{} : lane_best;
  const float chunk_second = std::min(lane_min(lane_second), lane_min(others));
  // The new runner-up is min(max(best, chunk best), second, chunk runner-up).
  const float new_second = std::min(std::max(best, chunk_best), std::min(second, chunk_second));
  best_id = chunk_best < best ? first_id + chunk + chunk_best_id : best_id;
  best = std::min(best, chunk_best);
  second = new_second;
}

// Brings the codes scanned next into L2 a few 64-byte lines at a time while the current tile is scanned, so
// the next transposition reads them from cache instead of waiting on memory (the hardware prefetcher
// stops following the codes once the transposition stops reading them).
struct LinePrefetcher {
  const char* next = nullptr;
  int64_t lines_left = 0, lines_per_step = 0;
  LinePrefetcher() = default;
  LinePrefetcher(const float* start, int64_t floats, int64_t steps)
      : next(reinterpret_cast<const char*>(start)), lines_left(start == nullptr ? 0 : (floats + 15) / 16),
        lines_per_step((lines_left + steps - 1) / std::max<int64_t>(1, steps)) {}
  inline void step() {
    for (int64_t i = 0; i < lines_per_step && lines_left > 0; ++i, --lines_left, next += 64)
      __builtin_prefetch(next, 0, 2);
  }
};

// Each row's minimum over each chunk of kLanes x kVectorsPerChunk codes from ``chunk``: the hot loop, D
// multiply-adds and one min per kLanes scores, codes loaded once for kRows tokens.
template <int64_t kDim>
inline void chunk_minima(const float* scaled, const float* codes_t, const float* sq_norms, int64_t stride,
                         int64_t chunk, int64_t dim, Vec* chunk_min) {
  for (int64_t r = 0; r < kRows; ++r) chunk_min[r] = kInf - Vec{};
  for (int64_t v = 0; v < kVectorsPerChunk; ++v) {
    for (int64_t r = 0; r < kRows; ++r) {
      const Vec score = scores<kDim>(scaled + r * dim, codes_t, sq_norms, stride, chunk + v * kLanes, dim);
      chunk_min[r] = score < chunk_min[r] ? score : chunk_min[r];
    }
  }
}

// Folds one tile into row r's best two, given each chunk's lane-wise minimum for that row (minima[j][r],
// ``chunks`` chunks from ``begin``): only the chunk holding the tile's smallest score is re-scored (the
// first such chunk: on ties the lowest id), and the runner-up is then also compared with the smallest
// minimum of the other chunks. That is exact: every other score of the tile is at least that minimum,
// so none of them can be among the two smallest. Not inlined: it runs rarely (and on a random row).
template <int64_t kDim>
__attribute__((noinline)) void fold_tile(const Vec (*minima)[kRows], int64_t chunks, int64_t r, const float* scaled,
                                         const float* codes_t, const float* sq_norms, int64_t stride, int64_t begin,
                                         int64_t first_id, int64_t dim, float& best, float& second, int64_t& best_id) {
  int64_t smallest = 0;
  float smallest_min = lane_min(minima[0][r]), others = kInf;
  for (int64_t j = 1; j < chunks; ++j) {
    const float chunk_min = lane_min(minima[j][r]);
    others = std::min(others, chunk_min < smallest_min ? smallest_min : chunk_min);
    smallest = chunk_min < smallest_min ? j : smallest;
    smallest_min = std::min(smallest_min, chunk_min);
  }
  rescore_chunk<kDim>(scaled, codes_t, sq_norms, stride, begin + smallest * kChunk, first_id, dim, best, second,
                      best_id);
  second = std::min(second, others);
}

// Codes [begin, end) (multiples of kChunk, at most one tile) against rows [0, rows) of a block of kRows
// scaled tokens. best/second/best_id: each row's best score so far, its id, the runner-up. The hot loop
// keeps only each chunk's minimum; a row whose smallest score in the tile beats its runner-up folds the
// tile in with ``fold_tile``, which re-scores one chunk: once per row in a codebook's first tile, rarely
// after (about 2 ln(tiles) times per codebook). Tiles come in increasing id order: ties keep the lowest id.
template <int64_t kDim>
void scan_block(const float* scaled, int64_t rows, const float* codes_t, const float* sq_norms, int64_t stride,
                int64_t begin, int64_t end, int64_t first_id, int64_t runtime_dim, float* best, float* second,
                int64_t* best_id, LinePrefetcher& prefetcher) {
  const int64_t dim = kDim > 0 ? kDim : runtime_dim;
  const int64_t chunks = (end - begin) / kChunk;
  Vec minima[kMaxTileChunks][kRows], tile_min[kRows];
  for (int64_t r = 0; r < kRows; ++r) tile_min[r] = kInf - Vec{};
  for (int64_t j = 0; j < chunks; ++j) {
    prefetcher.step();
    Vec chunk_min[kRows];  // in registers during the hot loop, then stored
    chunk_minima<kDim>(scaled, codes_t, sq_norms, stride, begin + j * kChunk, dim, chunk_min);
    for (int64_t r = 0; r < kRows; ++r) {
      minima[j][r] = chunk_min[r];
      tile_min[r] = chunk_min[r] < tile_min[r] ? chunk_min[r] : tile_min[r];
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    if (!any_below(tile_min[r], second[r])) continue;
    fold_tile<kDim>(minima, chunks, r, scaled + r * dim, codes_t, sq_norms, stride, begin, first_id, dim, best[r],
                    second[r], best_id[r]);
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
               int64_t first_id, int64_t runtime_dim, float* best, int64_t* best_id, float* second,
               LinePrefetcher& prefetcher) {
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
                       second + row0, best_id + row0, prefetcher);
    }
  }
}

void start_rows(int64_t rows, float* best, int64_t* best_id, float* second) {
  for (int64_t r = 0; r < rows; ++r) { best[r] = kInf; second[r] = kInf; best_id[r] = 0; }
}

// All rows of one group against its codebook (K, D), prepared and scanned one L1-sized tile at a time so
// the codes are read from memory once; ``buffer`` holds a tile's (D + 1) x tile numbers. While a tile is
// scanned the next one is prefetched: this group's, or the first of ``next_codes`` (the codebook this
// thread searches next, or null). Returns max ||c||^2.
template <int64_t kDim>
float search_group(const float* x, int64_t rows, const float* codes, int64_t num_codes, int64_t runtime_dim,
                   const float* next_codes, float* buffer, float* best, int64_t* best_id, float* second) {
  const int64_t dim = kDim > 0 ? kDim : runtime_dim;
  const int64_t tile = tile_codes(dim);
  const int64_t row_blocks = (rows + kRows - 1) / kRows;
  start_rows(rows, best, best_id, second);
  float largest = 0.0f;
  for (int64_t first = 0; first < num_codes; first += tile) {
    const int64_t count = std::min(tile, num_codes - first);
    const int64_t padded = padded_to_chunks(count);
    largest = std::max(largest, prepare_group<kDim>(codes + first * dim, dim, count, padded, buffer,
                                                     buffer + dim * padded));
    const bool last_tile = first + tile >= num_codes;
    const float* next = last_tile ? next_codes : codes + (first + tile) * dim;
    const int64_t next_count = std::min(tile, last_tile ? num_codes : num_codes - first - tile);
    LinePrefetcher prefetcher(next, next_count * dim, row_blocks * padded / kChunk);
    scan_rows<kDim>(x, rows, buffer, buffer + dim * padded, padded, first, dim, best, best_id, second, prefetcher);
  }
  return largest;
}

// Exact nearest code of one token x (D numbers) in one codebook (K, D): the first minimum of
// sum_d (x_d - c_d)^2 computed in float64 (ties go to the lowest index).
int64_t exact_nearest_in(const float* x, const float* book, int64_t num_codes, int64_t dim) {
  double token[64];
  for (int64_t d = 0; d < dim; ++d) token[d] = x[d];
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
  return best_id;
}

// Makes the float32 winners of one group's rows exact: a row whose runner-up lies within the rounding
// bound of its best score (the check of search._rerank_near_ties: two scores closer than
// 4 (D + 2) u (||x||^2 + max ||c||^2) can be in the wrong order) gets its float64 nearest code, read
// while the group's codes are still in cache. unit_roundoff <= 0: nothing is re-ranked.
void rerank_near_ties(const float* x, int64_t rows, const float* book, int64_t num_codes, int64_t dim,
                      float largest_sq_norm, double unit_roundoff, const float* best, const float* second,
                      int64_t* best_id) {
  if (unit_roundoff <= 0) return;
  for (int64_t r = 0; r < rows; ++r) {
    double token_sq_norm = 0.0;
    for (int64_t d = 0; d < dim; ++d) token_sq_norm += double(x[r * dim + d]) * x[r * dim + d];
    const double tolerance = 4.0 * (dim + 2) * unit_roundoff * (token_sq_norm + largest_sq_norm);
    if (double(second[r]) <= double(best[r]) + tolerance)
      best_id[r] = exact_nearest_in(x + r * dim, book, num_codes, dim);
  }
}

struct Dispatch {
  float (*prepare)(const float*, int64_t, int64_t, int64_t, float*, float*);
  void (*scan)(const float*, int64_t, const float*, const float*, int64_t, int64_t, int64_t, float*, int64_t*,
               float*, LinePrefetcher&);
  float (*search_group)(const float*, int64_t, const float*, int64_t, int64_t, const float*, float*, float*, int64_t*,
                        float*);
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
// Scores are ||c||^2 - 2 x.c. unit_roundoff > 0: the ids of rows whose runner-up is within the rounding
// bound are replaced by their exact float64 nearest code (rerank_near_ties), so the ids are exact.
// Many groups: threads claim runs of whole groups, each preparing its codebook one cache-sized tile at a
// time; few groups: all codebooks are prepared first and threads split the rows.
std::vector<at::Tensor> best_two(at::Tensor tokens, at::Tensor codes, double unit_roundoff) {
  TORCH_CHECK(tokens.dim() == 3 && codes.dim() == 3, "tokens (G, N, D) and codes (G, K, D) expected");
  TORCH_CHECK(tokens.scalar_type() == at::kFloat && codes.scalar_type() == at::kFloat, "float32 only");
  TORCH_CHECK(tokens.is_contiguous() && codes.is_contiguous(), "contiguous tensors only");
  const int64_t groups = tokens.size(0), rows = tokens.size(1), dim = tokens.size(2), num_codes = codes.size(1);
  TORCH_CHECK(dim <= 64 && codes.size(2) == dim && codes.size(0) == groups, "shape mismatch or D > 64");
  TORCH_CHECK(num_codes >= 1 && num_codes < (int64_t(1) << 40), "K out of range");
  auto best = at::empty({groups, rows}, tokens.options());
  auto second = at::empty({groups, rows}, tokens.options());
  auto ids = at::empty({groups, rows}, tokens.options().dtype(at::kLong));
  auto largest = at::empty({groups}, tokens.options());
  const float* x = tokens.data_ptr<float>();
  const float* c = codes.data_ptr<float>();
  float* best_p = best.data_ptr<float>();
  float* second_p = second.data_ptr<float>();
  int64_t* ids_p = ids.data_ptr<int64_t>();
  float* largest_p = largest.data_ptr<float>();
  const Dispatch kernels = dispatch(dim);
  if (groups >= 2 * at::get_num_threads()) {
    // Threads claim runs of groups as they go, so a thread slowed by other work on the machine does
    // not hold up the others (a static split waits for the slowest).
    std::atomic<int64_t> next_run{0};
    const int64_t run_length = std::max<int64_t>(1, std::min<int64_t>(8, groups / (4 * at::get_num_threads())));
    at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
      std::vector<float> buffer((dim + 1) * tile_codes(dim));
      int64_t begin;
      while ((begin = next_run.fetch_add(run_length)) < groups) {
        const int64_t end = std::min(groups, begin + run_length);
        for (int64_t g = begin; g < end; ++g) {
          const float* next_codes = g + 1 < end ? c + (g + 1) * num_codes * dim : nullptr;
          largest_p[g] = kernels.search_group(x + g * rows * dim, rows, c + g * num_codes * dim, num_codes, dim,
                                              next_codes, buffer.data(), best_p + g * rows, ids_p + g * rows,
                                              second_p + g * rows);
          rerank_near_ties(x + g * rows * dim, rows, c + g * num_codes * dim, num_codes, dim, largest_p[g],
                           unit_roundoff, best_p + g * rows, second_p + g * rows, ids_p + g * rows);
        }
      }
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
      LinePrefetcher none;  // the prepared codebooks are read in order: the hardware prefetcher follows
      for (int64_t item = begin; item < end; ++item) {
        const int64_t g = item / items_per_group, row0 = (item % items_per_group) * rows_per_item;
        const int64_t out = g * rows + row0;
        const int64_t item_rows = std::min(rows_per_item, rows - row0);
        start_rows(item_rows, best_p + out, ids_p + out, second_p + out);
        kernels.scan(x + out * dim, item_rows, codes_t.data() + g * dim * stride, sq_norms.data() + g * stride,
                     stride, 0, dim, best_p + out, ids_p + out, second_p + out, none);
        rerank_near_ties(x + out * dim, item_rows, c + g * num_codes * dim, num_codes, dim, largest_p[g],
                         unit_roundoff, best_p + out, second_p + out, ids_p + out);
      }
    });
  }
  return {best, ids, second, largest};
}

// Exact float64 nearest code for selected tokens: tokens (A, D) float32, codes (G, K, D) float32,
// groups (A,) int64 (the codebook of each token). Returns (A,) int64 ids, the first minimum of
// sum_d (x_d - c_d)^2 computed in float64 (ties go to the lowest index).
at::Tensor exact_nearest(at::Tensor tokens, at::Tensor codes, at::Tensor groups) {
  TORCH_CHECK(tokens.dim() == 2 && codes.dim() == 3 && groups.dim() == 1 && groups.size(0) == tokens.size(0),
              "tokens (A, D), codes (G, K, D) and groups (A,) expected");
  TORCH_CHECK(tokens.scalar_type() == at::kFloat && codes.scalar_type() == at::kFloat &&
              groups.scalar_type() == at::kLong, "float32 tokens and codes, int64 groups expected");
  TORCH_CHECK(tokens.is_contiguous() && codes.is_contiguous() && groups.is_contiguous(), "contiguous tensors only");
  TORCH_CHECK(tokens.size(1) == codes.size(2), "tokens and codes differ in D");
  TORCH_CHECK(tokens.size(1) <= 64, "D > 64");
  const int64_t count = tokens.size(0), dim = tokens.size(1), num_codes = codes.size(1), num_groups = codes.size(0);
  auto ids = at::empty({count}, groups.options());
  const float* x = tokens.data_ptr<float>();
  const float* c = codes.data_ptr<float>();
  const int64_t* group_p = groups.data_ptr<int64_t>();
  int64_t* ids_p = ids.data_ptr<int64_t>();
  for (int64_t a = 0; a < count; ++a) TORCH_CHECK(group_p[a] >= 0 && group_p[a] < num_groups, "group out of range");
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t a = begin; a < end; ++a)
      ids_p[a] = exact_nearest_in(x + a * dim, c + group_p[a] * num_codes * dim, num_codes, dim);
  });
  return ids;
}

// The operators' namespace is the build's name (REVQ_OPS_NAMESPACE, set by cpu_search.py), so two builds of
// the kernel (benchmarks/kernel_ab.py) load side by side. The indirection lets the macro expand first.
#define REVQ_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
REVQ_LIBRARY(REVQ_OPS_NAMESPACE, m) {
  m.def("best_two", &best_two);
  m.def("exact_nearest", &exact_nearest);
}
