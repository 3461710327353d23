"""Generation on ReVQ token ids: a token prior (``prior.py``) over the codes a tokenizer writes, sampled into
codes for the detokenizer. A sibling of the tokenizer: it reads codes and the tokenizer's codebook vectors,
never the tokenizer's code."""
from revq_core.generation.prior import PriorConfig, TokenPrior, token_order

__all__ = ["PriorConfig", "TokenPrior", "token_order"]
