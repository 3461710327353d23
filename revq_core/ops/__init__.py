"""Speed: the nearest-code search (dispatch, the CPU kernel, the Triton kernel) and its helpers."""
