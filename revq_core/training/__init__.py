"""The training recipe: config and presets, the trainer, checkpoints, run directories (DDP helpers: utils.distributed)."""
