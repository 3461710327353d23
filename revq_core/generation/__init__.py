"""Generation on ReVQ token ids: a token prior (``prior.py``) over the codes a tokenizer writes, sampled into
codes for the detokenizer. A sibling of the tokenizer: it reads codes and the tokenizer's codebook vectors,
never the tokenizer's code, at training time.

- ``pretokenize.py``: cached latents or an image folder -> a codes file (``revq_core.data.codes``) + codebooks;
- ``train_prior.py``: ``train_prior`` and ``PRIOR_PRESETS`` (run directory, checkpoints, exact resume, DDP);
- ``evaluation.py``: held-out bits per token, the unigram baseline, grids, ADM's ``.npz``, gFID / IS;
- ``generate.py``: samples decoded by the prior's tokenizer into PNG files (``python -m revq_core.generate``).

    prior = TokenPrior.from_pretrained()          # the shipped prior, data/embedded_prior
    codes = prior.sample(16, seed=0)              # (16, 512) ids for ReVQ.decode_codes
"""
from revq_core.generation.prior import EMBEDDED_PRIOR_DIR, PriorConfig, PriorInputError, TokenPrior, token_order

__all__ = ["EMBEDDED_PRIOR_DIR", "PriorConfig", "PriorInputError", "TokenPrior", "token_order"]
