"""A fused CPU kernel for the nearest-code search: best and runner-up score per token in one pass.

With code dimensions as small as the paper's (D = 4 at 512 tokens), the matmul form of the search
spends its time writing and re-reading a (G, N, K) score tensor: a batched GEMM with an inner
dimension of 4 runs far below the machine's matmul rate. This kernel computes each score
``||c||^2 - 2 x.c`` in registers and keeps, per token, the best score, its code id and the
runner-up score, so nothing of size K is ever stored. ``search.nearest_codes`` turns the runner-up
into its exactness check (rows whose runner-up is within the float32 error bound are re-ranked in
float64), so the result is still exactly the brute-force argmin.

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
#include <limits>
#include <vector>

namespace {
constexpr int64_t kLanes = 16;  // codes scored side by side (vectorised by the compiler)
constexpr int64_t kRows = 4;    // tokens sharing each load of codes

// Scores of tokens [row0, row0 + rows) of group g against all K codes; keeps best, its id, runner-up.
// kDim > 0: the code dimension known at compile time (loops unrolled); kDim == 0: ``dim`` at run time.
template <int64_t kDim>
void search_block(const float* x, const float* codes_t, const float* sq_norms, int64_t rows, int64_t runtime_dim,
                  int64_t num_codes, float* best_out, int64_t* id_out, float* second_out) {
  const int64_t dim = kDim > 0 ? kDim : runtime_dim;
  const float inf = std::numeric_limits<float>::infinity();
  float scaled[kRows][64];
  float best[kRows][kLanes], second[kRows][kLanes];
  int32_t best_id[kRows][kLanes];
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t d = 0; d < dim; ++d) scaled[r][d] = 0.0f;  // rows past the end score zeros, unused
    for (int64_t l = 0; l < kLanes; ++l) { best[r][l] = inf; second[r][l] = inf; best_id[r][l] = 0; }
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t d = 0; d < dim; ++d) scaled[r][d] = -2.0f * x[r * dim + d];
  }
  const int64_t full = num_codes - num_codes % kLanes;
  for (int64_t k0 = 0; k0 < full; k0 += kLanes) {
    for (int64_t r = 0; r < kRows; ++r) {
      float score[kLanes];
      for (int64_t l = 0; l < kLanes; ++l) score[l] = sq_norms[k0 + l];
      for (int64_t d = 0; d < dim; ++d) {
        const float xd = scaled[r][d];
        const float* cd = codes_t + d * num_codes + k0;
        for (int64_t l = 0; l < kLanes; ++l) score[l] += xd * cd[l];
      }
      for (int64_t l = 0; l < kLanes; ++l) {
        const float s = score[l], b = best[r][l];
        second[r][l] = std::min(second[r][l], std::max(s, b));
        best_id[r][l] = s < b ? static_cast<int32_t>(k0 + l) : best_id[r][l];  // strict: earlier id kept
        best[r][l] = std::min(s, b);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float b = inf, s2 = inf;
    int64_t id = 0;
    for (int64_t l = 0; l < kLanes; ++l) {  // lanes hold ids l, l + 16, ...: merge by (score, id)
      const float v = best[r][l];
      if (v < b || (v == b && best_id[r][l] < id)) { s2 = std::min(s2, b); b = v; id = best_id[r][l]; }
      else { s2 = std::min(s2, v); }
      s2 = std::min(s2, second[r][l]);
    }
    for (int64_t k = full; k < num_codes; ++k) {  // the last K % 16 codes
      float v = sq_norms[k];
      for (int64_t d = 0; d < dim; ++d) v += scaled[r][d] * codes_t[d * num_codes + k];
      if (v < b) { s2 = b; b = v; id = k; } else { s2 = std::min(s2, v); }
    }
    best_out[r] = b; id_out[r] = id; second_out[r] = s2;
  }
}

// Codes (K, D) of one group -> codes_t (D, K) and squared norms (K,); returns the largest norm.
float prepare_group(const float* codes, int64_t dim, int64_t num_codes, float* codes_t, float* sq_norms) {
  float largest = 0.0f;
  for (int64_t k = 0; k < num_codes; ++k) {
    float norm = 0.0f;
    for (int64_t d = 0; d < dim; ++d) {
      const float value = codes[k * dim + d];
      codes_t[d * num_codes + k] = value;
      norm += value * value;
    }
    sq_norms[k] = norm;
    largest = std::max(largest, norm);
  }
  return largest;
}

void search_rows(const float* x, const float* codes_t, const float* sq_norms, int64_t rows, int64_t dim,
                 int64_t num_codes, float* best_out, int64_t* id_out, float* second_out) {
  switch (dim) {
    case 4: search_block<4>(x, codes_t, sq_norms, rows, dim, num_codes, best_out, id_out, second_out); break;
    case 8: search_block<8>(x, codes_t, sq_norms, rows, dim, num_codes, best_out, id_out, second_out); break;
    case 16: search_block<16>(x, codes_t, sq_norms, rows, dim, num_codes, best_out, id_out, second_out); break;
    default: search_block<0>(x, codes_t, sq_norms, rows, dim, num_codes, best_out, id_out, second_out);
  }
}
}  // namespace

// tokens (G, N, D), codes (G, K, D): float32, contiguous.
// Returns best score (G, N), best code id (G, N) int64, runner-up score (G, N), largest ||c||^2 (G,).
// Scores are ||c||^2 - 2 x.c. Many groups: threads take whole groups, each transposing its codebook
// into a cache-sized buffer; few groups: all codebooks are prepared first and threads split the rows.
std::vector<torch::Tensor> best_two(torch::Tensor tokens, torch::Tensor codes) {
  TORCH_CHECK(tokens.dim() == 3 && codes.dim() == 3, "tokens (G, N, D) and codes (G, K, D) expected");
  TORCH_CHECK(tokens.scalar_type() == torch::kFloat && codes.scalar_type() == torch::kFloat, "float32 only");
  TORCH_CHECK(tokens.is_contiguous() && codes.is_contiguous(), "contiguous tensors only");
  const int64_t groups = tokens.size(0), rows = tokens.size(1), dim = tokens.size(2), num_codes = codes.size(1);
  TORCH_CHECK(dim <= 64 && codes.size(2) == dim && codes.size(0) == groups, "shape mismatch or D > 64");
  TORCH_CHECK(num_codes >= 1 && num_codes < (int64_t(1) << 31), "K out of range");
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
  const int64_t blocks_per_group = (rows + kRows - 1) / kRows;
  if (groups >= 4 * at::get_num_threads()) {
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> codes_t(dim * num_codes), sq_norms(num_codes);
      for (int64_t g = begin; g < end; ++g) {
        largest_p[g] = prepare_group(c + g * num_codes * dim, dim, num_codes, codes_t.data(), sq_norms.data());
        for (int64_t row0 = 0; row0 < rows; row0 += kRows) {
          const int64_t out = g * rows + row0;
          search_rows(x + out * dim, codes_t.data(), sq_norms.data(), std::min(kRows, rows - row0), dim, num_codes,
                      best_p + out, ids_p + out, second_p + out);
        }
      }
    });
  } else {
    std::vector<float> codes_t(groups * dim * num_codes), sq_norms(groups * num_codes);
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g)
        largest_p[g] = prepare_group(c + g * num_codes * dim, dim, num_codes, codes_t.data() + g * dim * num_codes,
                                     sq_norms.data() + g * num_codes);
    });
    at::parallel_for(0, groups * blocks_per_group, 1, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block) {
        const int64_t g = block / blocks_per_group, row0 = (block % blocks_per_group) * kRows;
        const int64_t out = g * rows + row0;
        search_rows(x + out * dim, codes_t.data() + g * dim * num_codes, sq_norms.data() + g * num_codes,
                    std::min(kRows, rows - row0), dim, num_codes, best_p + out, ids_p + out, second_p + out);
      }
    });
  }
  return {best, ids, second, largest};
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

                _module = load_inline(name="revq_cpu_search_v6", cpp_sources=[_SOURCE], functions=["best_two"],
                                      extra_cflags=["-O3", "-march=native", "-fopenmp"],
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
