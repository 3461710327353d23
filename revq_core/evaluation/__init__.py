"""Evaluation: the paper's and the standard protocol, metrics, VAE quality."""
