"""Data: the embedded photos, image folders, latent caches, the codes file."""
