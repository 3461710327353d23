"""Generic helpers below every other layer: files (paths, atomic writes), moments (streaming mean / variance),
distributed (torch.distributed), checks (input checks), threads (the CPU thread count)."""
