"""Data: the embedded photos, image folders, latent caches, file locations."""
