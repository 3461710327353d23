"""The fused GPU search kernel (revq_core.ops.gpu_search): exact on a CUDA GPU, and the same kernel run by
Triton's CPU interpreter where Triton is installed but no GPU is (skipped on CPU-only torch builds)."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from revq_core.ops import gpu_search
from revq_core.ops.search import brute_force_nearest_codes, nearest_codes

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_triton = pytest.mark.skipif(gpu_search.triton is None, reason="needs Triton (CUDA builds of torch)")


def _tied_inputs(groups, rows, codes, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    tokens, codebook = torch.randn(groups, rows, dim, generator=generator), torch.randn(groups, codes, dim, generator=generator)
    codebook[:, -1] = codebook[:, 0]  # an exact duplicate: rows nearest to it must get id 0
    tokens[:, 0] = codebook[:, 0]
    return tokens, codebook


@needs_cuda
@needs_triton
@pytest.mark.parametrize("groups,rows,codes,dim", [(512, 64, 16384, 4), (7, 100, 1000, 8), (3, 5, 1, 4),
                                                   (2, 70, 300, 33), (4, 3, 129, 64)])
def test_cuda_search_is_exact(groups, rows, codes, dim):
    tokens, codebook = _tied_inputs(groups, rows, codes, dim, seed=groups + codes)
    fused = nearest_codes(tokens.cuda(), codebook.cuda())
    matmul = nearest_codes(tokens.cuda(), codebook.cuda(), use_kernel=False)
    expected = brute_force_nearest_codes(tokens, codebook)
    assert torch.equal(fused.cpu(), expected)
    assert torch.equal(matmul.cpu(), expected)


@needs_cuda
@needs_triton
def test_cuda_kernel_scores_and_fallbacks():
    tokens, codebook = _tied_inputs(3, 50, 200, 4, seed=5)
    best, ids, runner_up, largest = gpu_search.best_two_codes(tokens.cuda(), codebook.cuda())
    scores = (codebook.double() ** 2).sum(-1)[:, None] - 2 * torch.einsum("gnd,gkd->gnk", tokens.double(), codebook.double())
    two = scores.topk(2, dim=-1, largest=False).values
    torch.testing.assert_close(best.cpu().double(), two[..., 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(runner_up.cpu().double(), two[..., 1], atol=1e-4, rtol=0)
    assert gpu_search.best_two_codes(tokens, codebook) is None  # CPU tensors: not this kernel
    assert gpu_search.best_two_codes(tokens.cuda().double(), codebook.cuda().double()) is None


@needs_triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the compiled kernel is tested instead")
def test_kernel_in_triton_interpreter():
    """The same kernel on CPU tensors through TRITON_INTERPRET=1 (a subprocess: the flag is read at import)."""
    script = textwrap.dedent("""
        import torch
        from revq_core.ops import gpu_search
        from revq_core.ops.search import brute_force_nearest_codes
        from tests.ops.test_gpu_search import _tied_inputs
        for groups, rows, codes, dim in [(3, 70, 300, 4), (2, 5, 1, 8), (2, 33, 129, 8), (2, 9, 50, 64)]:
            tokens, codebook = _tied_inputs(groups, rows, codes, dim, seed=rows)
            best, ids, runner_up, largest = gpu_search.best_two_codes(tokens, codebook, interpret=True)
            distances = ((tokens.double()[:, :, None] - codebook.double()[:, None]) ** 2).sum(-1)
            exact = ids == brute_force_nearest_codes(tokens, codebook)
            # where the float32 winner differs from the exact one, the runner-up must flag it as a near tie
            assert bool((exact | (runner_up - best <= 1e-4)).all()), (groups, rows, codes, dim)
            assert torch.allclose(largest, (codebook ** 2).sum(-1).amax(1))
        print("ok")
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=root)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
