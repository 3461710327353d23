"""The paper's experiments (FLOPs, noise tolerance, the 2-D toy, tables, codebook scaling) and the
notebooks' helpers (verdicts, figure paths). Not needed to train or use a tokenizer."""
