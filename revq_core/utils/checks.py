"""Input checks shared by every public entry point.

Each check raises a ``ValueError`` whose message says what is wrong and how to fix it,
so users never meet a bare shape error deep inside a matmul.
"""
from __future__ import annotations

import sys

import torch


def check_device(device) -> None:
    """Raise a one-line error if ``device`` cannot run here: ValueError for a string torch does not know or
    the 'meta' device, RuntimeError for CUDA / MPS on a machine without it (or a CUDA index past the last GPU)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a torch device ({first_line(error)}); use 'cpu', "
                         f"'cuda' or 'cuda:<index>'.") from None
    if parsed.type == "meta":
        raise ValueError("device 'meta' holds no data and cannot train; use 'cpu' or 'cuda'.")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a build without CUDA")
            raise RuntimeError(f"device {device!r} was asked for, but CUDA is not available on this machine ({build}); "
                               f"use device 'cpu', or install a CUDA build of torch on a machine with an NVIDIA GPU.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} was asked for, but this machine has {torch.cuda.device_count()} "
                               f"CUDA device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1}).")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {device!r} was asked for, but MPS (Apple GPU) is not available on this machine; "
                           f"use device 'cpu'.")


def check_num_workers(num_workers) -> None:
    """Raise a one-line ValueError unless ``num_workers`` (DataLoader processes decoding images) is an int >= 0."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers (--num-workers) must be 0 (decode in this process) or a positive number of "
                         f"worker processes, got {num_workers!r}.")


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none (for one-line errors)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_latents(latents: torch.Tensor, latent_shape: tuple[int, int, int], name: str = "latents") -> None:
    """Check a batch of latents of shape (B, C, H, W) against the expected (C, H, W), and for NaN/Inf.

    For public entry points (tokenize, train's inputs, ...): the NaN/Inf check reads every value (a host
    sync on a GPU). Inside a training step's forward, ``check_latent_shape`` checks what is free to check."""
    check_latent_shape(latents, latent_shape, name)
    check_finite(latents, name)


def check_latent_shape(latents: torch.Tensor, latent_shape: tuple[int, int, int], name: str = "latents") -> None:
    """``check_latents`` without reading the values: type, shape (B, C, H, W) and dtype only (no host sync)."""
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, {', '.join(map(str, latent_shape))}), "
                        f"got {type(latents).__name__}.")
    check_has_data(latents, name)
    if latents.ndim == 3 and tuple(latents.shape) == tuple(latent_shape):
        raise ValueError(f"{name} has shape {tuple(latents.shape)}, a single latent without a batch dimension; "
                         f"use {name}.unsqueeze(0) to make a batch of one.")
    if latents.ndim != 4:
        raise ValueError(f"{name} must have 4 dimensions (B, C, H, W) = (B, {', '.join(map(str, latent_shape))}), "
                         f"got {latents.ndim} dimensions with shape {tuple(latents.shape)}.")
    if tuple(latents.shape[1:]) != tuple(latent_shape):
        channels, height, width = latent_shape
        hint = ""
        if latents.shape[1] != channels:
            hint = (f" The channel count differs ({latents.shape[1]} vs {channels}): was this latent made by a VAE "
                    f"with another latent_channels, or is it channels-last?")
        raise ValueError(f"{name} has per-sample shape {tuple(latents.shape[1:])}, expected (C, H, W) = "
                         f"{tuple(latent_shape)}.{hint} Build the model with latent_shape={tuple(latents.shape[1:])} "
                         f"if that is the latent you mean to quantize.")
    if not latents.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {latents.dtype}.")


def check_has_data(tensor: torch.Tensor, name: str) -> None:
    """Raise if ``tensor`` lives on the 'meta' device: it has a shape but no values to compute with."""
    if tensor.is_meta:
        raise ValueError(f"{name} is on device 'meta': it has a shape {tuple(tensor.shape)} but holds no data. "
                         f"Pass a materialized tensor (load the real values onto 'cpu' or 'cuda'); a model built "
                         f"under torch.device('meta') needs model.to_empty(device=...) and its real weights loaded.")


def check_not_empty(tensor: torch.Tensor, name: str) -> None:
    """Raise if the batch ``tensor`` (B, ...) holds no item (B = 0)."""
    if tensor.ndim and tensor.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(tensor.shape)}, B = 0): pass at least one item.")


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise if ``tensor`` holds NaN or Inf, saying how many and where the first one is."""
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0].tolist()
        count = int((~finite).sum())
        raise ValueError(f"{name} contains {count} NaN/Inf value(s) (first at index {bad}). "
                         f"Check the VAE encoding and the normalization statistics (a zero std gives Inf).")


def check_codes(codes: torch.Tensor, tokens_per_image: int, codes_per_group: int, name: str = "codes") -> None:
    """Check token ids of shape (B, T): integer dtype, right length, each in [0, K)."""
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, {tokens_per_image}), got {type(codes).__name__}.")
    if codes.is_floating_point() or codes.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (token ids), got dtype {codes.dtype}.")
    check_has_data(codes, name)
    if codes.ndim != 2 or codes.shape[1] != tokens_per_image:
        raise ValueError(f"{name} must have shape (B, {tokens_per_image}) (one id per token), got {tuple(codes.shape)}.")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codes_per_group):
        raise ValueError(f"{name} holds ids outside [0, {codes_per_group}): min {int(codes.min())}, "
                         f"max {int(codes.max())}. Were they made by a model with another codebook size?")


def run_cli(main_function, argv) -> int:
    """Run a command line's body; known input errors (a bad argument, a missing or unreadable file, a VAE not
    found: ValueError, OSError, RuntimeError and their subclasses) become one line on stderr and exit status 2."""
    try:
        main_function(argv)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {first_line(error)}", file=sys.stderr)
        return 2
    return 0
