"""Evaluate a tokenizer on an image folder (ImageNet val) as the paper does, and the standard way beside it.

    python -m revq_core.evaluate --model runs/512T/model --vae mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers \\
        --data /path/to/imagenet/val --with-vae --output results.json
    torchrun --nproc_per_node=8 -m revq_core.evaluate ...     # each rank evaluates a shard; the sums are reduced

The images stream through VAE -> ReVQ -> VAE in batches (DataLoader workers, a progress bar): memory
is bounded by the batch, never by the data set. Each image is preprocessed as the authors do
(``revq_core.data.images.resize_center_crop``: short side resized to 256, bilinear and antialiased, centre
crop), kept as its exact 8-bit levels, and fed to the VAE as ``x / 255 * 2 - 1``. ``--with-vae`` also
scores the VAE alone (its reconstruction ceiling) in the same pass; ``--vae-only`` scores only it.

Two protocols, both computed unless ``--protocol`` says otherwise, every number labelled with its own:

- ``paper``: the authors' computation, to be set beside the paper's numbers. Reconstructions are
  clamped to [0, 1] and rounded to 8 bits; its **PSNR is the PSNR of the red channel alone**
  (``metrics.paper_psnr``) and its **SSIM the SSIM of the YIQ luma** in 8-bit levels over the valid
  window positions (``metrics.paper_ssim``), averaged per image.
- ``standard``: PSNR and SSIM on RGB and on BT.601 luma (Y), with torchmetrics' definitions, on the
  unrounded reconstructions (``metrics.psnr_per_image`` / ``ssim_per_image``). BT.601 Y-PSNR is a few
  dB above the paper protocol's red-channel PSNR on the same images.

Shared by both (computed once, reported under each): LPIPS (AlexNet, v0.1, inputs in [-1, 1]), rFID
(torch-fidelity's Inception-v3, 2048-d pool features, the originals' statistics against the
reconstructions') and the Inception Score of the reconstructions (one split), with the originals as
exact uint8 and the reconstructions rounded to 8 bits, as the paper. Their weights are never
downloaded: without them (or without torchvision / torch-fidelity) PSNR and SSIM are still computed,
and the results say which metrics are missing and where to put the weights files.

The JSON written by the CLI holds every number, the protocols' descriptions, the image count, the
skipped (unreadable) files by name, the software versions and the sha256 of every weights file used.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from revq_core.autoencoders.adapters import as_latent_autoencoder
from revq_core.data.images import ImageFolderDataset
from revq_core.evaluation.metrics import (ALEXNET_URL, ALEXNET_WEIGHTS, INCEPTION_URL, INCEPTION_WEIGHTS,
                                          FeatureMoments, MissingDependencyError, MissingWeightsError, check_images,
                                          find_weights, frechet_distance, import_backend, inception_network,
                                          inception_score, lpips_network, paper_psnr, paper_ssim, psnr_per_image,
                                          round_to_8_bits, ssim_per_image, to_uint8, to_unit_range)
from revq_core.evaluation.rate import code_report
from revq_core.utils import distributed
from revq_core.utils.checks import check_num_workers, first_line

PROTOCOLS = ("paper", "standard")
PROTOCOL_DESCRIPTIONS = {
    "paper": "the authors' computation, to compare with the paper: reconstructions clamped and rounded to 8 bits; "
             "psnr = PSNR of the red channel only (values in [0, 1], 1e-8 added to the MSE, 80 dB for identical "
             "images); ssim = SSIM of the YIQ luma 0.299 R + 0.587 G + 0.114 B in 8-bit levels (rounded), 11 x 11 "
             "Gaussian window (sigma 1.5), valid positions only, float64; both averaged per image",
    "standard": "PSNR and SSIM on RGB and on BT.601 studio-swing luma Y, torchmetrics' definitions (data range 1, "
                "SSIM with reflect padding), on the unrounded reconstructions, averaged per image",
}
SHARED_DESCRIPTION = ("lpips, rfid and inception_score are shared by both protocols: LPIPS v0.1 AlexNet on inputs in "
                      "[-1, 1]; rFID and IS from torch-fidelity's Inception-v3 (2048-d pool features, 1008 logits) "
                      "with the originals as exact uint8 and the reconstructions rounded to 8 bits; rFID pairs "
                      "the originals' feature statistics with the reconstructions'; IS over one split")
PROTOCOL_KEYS = {"paper": ("psnr", "ssim"), "standard": ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")}
SHARED_KEYS = ("lpips", "rfid", "inception_score")
PREPROCESSING = ("short side resized to image_size (PIL bilinear, antialiased; torchvision Resize's sizes), centre "
                 "crop image_size x image_size (revq_core.data.images.resize_center_crop); 8-bit RGB; "
                 "VAE input x / 255 * 2 - 1")

# The paper's Table 2 (ImageNet 256 x 256): (model, tokens, codes per codebook K, SSIM, PSNR, LPIPS, rFID);
# None where the paper gives no number. Its PSNR and SSIM are the paper protocol's.
PAPER_TABLE2 = (
    ("ReVQ", 512, 16384, 0.690, 23.70, 0.092, 1.06),
    ("ReVQ", 256, 65536, 0.620, 21.69, 0.129, 2.57),
    ("ReVQ", 256, 262144, 0.640, 21.96, 0.121, 2.05),
    ("MaskBit (from scratch)", 256, 4096, None, None, None, 1.61),
    ("TiTok-S-128", 128, 4096, None, None, None, 1.71),
    ("TokenBridge (frozen VAE)", 4096, 64, None, None, None, 1.11),
    ("CODA (fine-tuned VAE)", 2560, 65536, 0.602, 22.20, None, 1.34),
    ("ViT-VQGAN", None, None, None, None, None, 1.28),
    ("Mo-VQGAN", None, None, None, None, None, 1.12),
    ("ImageFolder", None, None, None, None, None, 0.80),
    ("VQGAN", None, None, None, None, None, 3.64),
    ("MaskGIT", None, None, None, None, None, 2.28),
    ("RQ-VAE", None, None, None, None, None, 3.20),
    ("COSMOS", None, None, None, None, None, 2.52),
    ("VQGAN-LC", None, None, None, None, None, 2.62),
    ("LlamaGen-L", None, None, None, None, None, 2.19),
)


# ---------------------------------------------------------------------------------------------------
# The accumulator


class Evaluator:
    """Every metric of both protocols as sums over images, for one or more reconstruction sources.

    ``update(originals, {"revq": reconstructions, "vae": ...})`` with images (B, 3, H, W) in [0, 1]:
    originals as their exact 8-bit values (k / 255), reconstructions as the decoder gives them (mapped
    to [0, 1] and clamped; the paper protocol and the shared metrics round them to 8 bits themselves).
    The state is sums (per-image scores, image count, Inception feature moments and class-probability
    sums), so ``reduce()`` combines the shards of all ranks exactly by adding them, and ``compute()``
    returns the means: ``{"protocols": {"paper": {source: {...}}, "standard": {...}}, "num_images": N, ...}``.

    lpips: None or a network called as ``net(pred, target)`` on images in [-1, 1] returning (B, ...)
    distances (``metrics.lpips_network``). inception: None or a network taking uint8 images (B, 3, H, W)
    and returning ``(features (B, D), logits (B, L))`` (``metrics.inception_network``).
    """

    def __init__(self, sources: Sequence[str] = ("revq",), protocols: Sequence[str] = PROTOCOLS,
                 lpips: nn.Module | None = None, inception: nn.Module | None = None):
        unknown = [name for name in protocols if name not in PROTOCOLS]
        if unknown or not protocols:
            raise ValueError(f"protocols must be a non-empty subset of {PROTOCOLS}, got {tuple(protocols)}.")
        if not sources:
            raise ValueError("sources must name at least one reconstruction, e.g. ('revq',) or ('vae', 'revq').")
        self.sources, self.protocols = tuple(sources), tuple(protocols)
        self.lpips, self.inception = lpips, inception
        score_keys = [f"{protocol}/{key}" for protocol in self.protocols for key in PROTOCOL_KEYS[protocol]]
        score_keys += ["lpips"] if lpips is not None else []
        self.sums = {source: {key: torch.zeros((), dtype=torch.float64) for key in score_keys}
                     for source in self.sources}
        self.num_images = torch.zeros((), dtype=torch.int64)
        self.real_features = FeatureMoments()
        self.fake_features = {source: FeatureMoments() for source in self.sources}
        self.class_probabilities = {source: [None, None] for source in self.sources}  # sums of p and p log p

    @torch.no_grad()
    def update(self, originals: torch.Tensor, reconstructions: dict[str, torch.Tensor]) -> None:
        """Add a batch: originals (B, 3, H, W) in [0, 1] and, for each source, its reconstructions of them."""
        missing = [source for source in self.sources if source not in reconstructions]
        if missing:
            raise ValueError(f"reconstructions has no entry for {missing}: pass one (B, 3, H, W) batch per source "
                             f"{self.sources}.")
        originals = originals.float()
        if self.inception is not None:
            self.real_features.add(self.inception(to_uint8(originals))[0])
        for source in self.sources:
            pred = reconstructions[source].float()
            check_images(pred, originals)
            sums = self.sums[source]
            if "paper" in self.protocols:
                sums["paper/psnr"] += paper_psnr(pred, originals).double().sum().cpu()
                sums["paper/ssim"] += paper_ssim(pred, originals).double().sum().cpu()
            if "standard" in self.protocols:
                for channel in ("rgb", "y"):
                    sums[f"standard/psnr_{channel}"] += psnr_per_image(pred, originals, channel).double().sum().cpu()
                    sums[f"standard/ssim_{channel}"] += ssim_per_image(pred, originals, channel).double().sum().cpu()
            rounded = round_to_8_bits(pred)  # the paper scores LPIPS, rFID and IS on 8-bit reconstructions
            if self.lpips is not None:
                sums["lpips"] += self.lpips(rounded * 2 - 1, originals * 2 - 1).double().sum().cpu()
            if self.inception is not None:
                features, logits = self.inception(to_uint8(rounded))
                self.fake_features[source].add(features)
                probabilities = torch.softmax(logits.double(), dim=-1)  # (B, L)
                p_log_p = probabilities * torch.log(probabilities + 1e-16)
                sums_of_p = self.class_probabilities[source]
                sums_of_p[0] = probabilities.sum(0) if sums_of_p[0] is None else sums_of_p[0] + probabilities.sum(0)
                sums_of_p[1] = p_log_p.sum(0) if sums_of_p[1] is None else sums_of_p[1] + p_log_p.sum(0)
        self.num_images += originals.shape[0]

    def reduce(self) -> None:
        """Sum the state over all ranks (every rank then holds the totals); nothing without a process group."""
        if not distributed.is_distributed():
            return
        distributed.all_reduce_sum(self.num_images)
        for source in self.sources:
            for total in self.sums[source].values():
                distributed.all_reduce_sum(total)
        if self.inception is None:
            return
        for moments in (self.real_features, *self.fake_features.values()):
            moments.total, moments.outer = _sum_over_ranks(moments.total), _sum_over_ranks(moments.outer)
            moments.count = int(distributed.all_reduce_sum(torch.tensor(moments.count, dtype=torch.int64)))
        for sums_of_p in self.class_probabilities.values():
            sums_of_p[0], sums_of_p[1] = _sum_over_ranks(sums_of_p[0]), _sum_over_ranks(sums_of_p[1])

    def compute(self) -> dict:
        """``{"protocols": {protocol: {source: {metric: value}}}, "num_images": N, "missing_metrics": {...}}``.

        The shared metrics (lpips, rfid, inception_score) appear under every protocol; rFID needs at
        least 2 images (a covariance), and is listed in ``missing_metrics`` with the reason otherwise.
        """
        count = int(self.num_images)
        if count == 0:
            raise ValueError("no images seen: call update(originals, reconstructions) before compute().")
        results = {protocol: {} for protocol in self.protocols}
        missing = {}
        for source in self.sources:
            shared = {}
            if self.lpips is not None:
                shared["lpips"] = float(self.sums[source]["lpips"]) / count
            if self.inception is not None:
                if count >= 2:
                    shared["rfid"] = frechet_distance(self.real_features, self.fake_features[source])
                else:
                    missing["rfid"] = f"rFID needs at least 2 images (a covariance), got {count}."
                shared["inception_score"] = inception_score(*self.class_probabilities[source], count)
            for protocol in self.protocols:
                scores = {key: float(self.sums[source][f"{protocol}/{key}"]) / count for key in PROTOCOL_KEYS[protocol]}
                results[protocol][source] = {**scores, **shared}
        return {"protocols": results, "num_images": count, "missing_metrics": missing}


def _sum_over_ranks(tensor: torch.Tensor | None) -> torch.Tensor:
    """``all_reduce_sum`` of a float64 state that a rank without images may not have made yet (None)."""
    shapes = [shape for shape in distributed.gather_objects(None if tensor is None else tuple(tensor.shape))
              if shape is not None]
    if not shapes:
        raise ValueError("no rank has seen any image.")
    if tensor is None:
        tensor = torch.zeros(shapes[0], dtype=torch.float64)
    return distributed.all_reduce_sum(tensor)


# ---------------------------------------------------------------------------------------------------
# LPIPS and Inception, when their weights and packages are here


def perceptual_networks(lpips: bool | nn.Module = True, inception: bool | nn.Module = True,
                        lpips_weights: str | Path | None = None, rfid_weights: str | Path | None = None,
                        ) -> tuple[nn.Module | None, nn.Module | None, dict[str, str]]:
    """The LPIPS and Inception networks that can run here, and why the others cannot.

    Returns ``(lpips_net or None, inception_net or None, missing)``: ``missing`` maps each metric that
    will not be computed (lpips, rfid, inception_score) to one line saying why: every weights file that
    is absent and where to put it, and the package that is missing. A module passed as ``lpips`` /
    ``inception`` is used as it is (stand-ins for tests); False skips the metric ("not requested").
    """
    missing: dict[str, str] = {}
    lpips_net = lpips if isinstance(lpips, nn.Module) else None
    if lpips is False:
        missing["lpips"] = "not requested."
    elif lpips_net is None:
        reason = _why_unavailable(ALEXNET_WEIGHTS, lpips_weights, "LPIPS AlexNet", "lpips_weights", ALEXNET_URL,
                                  "LPIPS", ("torchvision", "torchmetrics.functional.image.lpips"))
        if reason:
            missing["lpips"] = reason
        else:
            lpips_net = lpips_network(lpips_weights)
    inception_net = inception if isinstance(inception, nn.Module) else None
    if inception is False:
        missing["rfid"] = missing["inception_score"] = "not requested."
    elif inception_net is None:
        reason = _why_unavailable(INCEPTION_WEIGHTS, rfid_weights, "rFID Inception-v3", "rfid_weights",
                                  INCEPTION_URL, "rFID", ("torchvision", "torch_fidelity"))
        if reason:
            missing["rfid"] = missing["inception_score"] = reason
        else:
            inception_net = inception_network(rfid_weights)
    return lpips_net, inception_net, missing


def _why_unavailable(filename, path, what, argument, url, metric, modules) -> str:
    """One line naming every reason a network cannot be built here ('' when it can)."""
    reasons = []
    try:
        find_weights(filename, path, what, argument, url)
    except MissingWeightsError as error:
        reasons.append(str(error))
    for module in modules:
        try:
            import_backend(module, metric)
        except MissingDependencyError as error:
            reasons.append(str(error))
            break
    return " ".join(reasons)


# ---------------------------------------------------------------------------------------------------
# Streaming an image folder


class _ShardOfImages(torch.utils.data.Dataset):
    """The images at ``indices`` of an ``ImageFolderDataset`` as (index, uint8 (3, S, S) or None, error or None)."""

    def __init__(self, folder: ImageFolderDataset, indices: Sequence[int]):
        self.folder, self.indices = folder, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = self.indices[position]
        try:
            return index, self.folder.load_uint8(index), None
        except (OSError, ValueError, SyntaxError) as error:  # what PIL raises on a corrupt or truncated file
            return index, None, first_line(error)


def _collate(items) -> tuple[torch.Tensor | None, list[tuple[int, str]]]:
    """(images (B, 3, S, S) uint8 of the readable items or None, [(index, error)] of the others)."""
    images = [image for _, image, _ in items if image is not None]
    failures = [(index, error) for index, image, error in items if image is None]
    return (torch.stack(images) if images else None), failures


def default_image_size(vae, model=None) -> int:
    """The image side that encodes to ``model``'s latent (latent side x the VAE's factor); 256 without a model."""
    from revq_core.autoencoders.adapters import downsampling_factor

    factor = downsampling_factor(vae)
    if model is None or factor is None:
        return 256
    return int(model.latent_shape[1]) * factor


def evaluate_image_folder(data: str | os.PathLike, vae, model=None, include_vae: bool = False,
                          protocols: Sequence[str] = PROTOCOLS, image_size: int | None = None,
                          limit: int | None = None, batch_size: int = 32, num_workers: int = 4,
                          device: str | torch.device | None = None, lpips: bool | nn.Module = True,
                          inception: bool | nn.Module = True, lpips_weights=None, rfid_weights=None,
                          progress: bool = True) -> dict:
    """Stream an image folder through VAE -> ReVQ -> VAE and score the reconstructions under both protocols.

    Args:
        data: an ImageNet-layout folder (``val/<class>/<image>``) or a flat folder of images, read in sorted order.
        vae: the frozen VAE (``load_vae``); model: a ``ReVQ`` (None scores the VAE alone).
        include_vae: also score the VAE alone (its ceiling) in the same pass, under the source name "vae".
        protocols: a subset of ("paper", "standard").
        image_size: side of the preprocessed images (default: what encodes to the model's latent; 256 without one).
        limit: only the first ``limit`` images of the sorted folder.
        batch_size, num_workers: DataLoader batch (memory is bounded by it) and decoding workers.
        device: where the VAE, the model and the metrics run (default: the VAE's device).
        lpips, inception: True (the real networks, when their weights and packages are here), False (skip)
            or a module to use instead (see ``Evaluator``).

    Under a process group of several ranks each rank takes every world_size-th image, and all sums are
    reduced, so every rank returns the same results as one process would. Files that cannot be decoded
    are skipped with a warning naming them and listed in ``skipped_files``.

    Returns a dict: codes (the model's rate, ``rate.code_report``: bits_per_image, entropy_bits, usage; None
    without a model), protocols (each with its description and ``metrics[source][metric]``), shared_metrics
    (a sentence), num_images, skipped_files ([{"path", "reason"}]), missing_metrics ({metric: why}),
    sources, image_size, limit, preprocessing, world_size.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    check_num_workers(num_workers)
    sources = (["vae"] if include_vae or model is None else []) + (["revq"] if model is not None else [])
    vae = as_latent_autoencoder(vae)
    device = torch.device(device) if device is not None else next(vae.parameters()).device
    vae = vae.to(device).eval()
    if model is not None:
        model = model.to(device).eval()
    image_size = image_size or default_image_size(vae, model)
    _check_model_fits_vae(model, vae, image_size)

    folder = ImageFolderDataset(data, size=image_size, check_files=False)  # unreadable files surface when decoded
    total = len(folder) if limit is None else min(limit, len(folder))
    shard = _ShardOfImages(folder, range(distributed.rank(), total, distributed.world_size()))
    loader = torch.utils.data.DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=_collate, pin_memory=device.type == "cuda")
    lpips_net, inception_net, missing = perceptual_networks(lpips, inception, lpips_weights, rfid_weights)
    evaluator = Evaluator(sources, protocols, lpips=None if lpips_net is None else lpips_net.to(device).eval(),
                          inception=None if inception_net is None else inception_net.to(device).eval())
    skipped = [(str(path), reason) for path, reason in folder.skipped]
    all_codes = []  # the model's codes of every image, for the rate report (rate.code_report)
    for images, failures in tqdm(loader, desc="evaluate", unit="batch",
                                 disable=not (progress and distributed.is_main_process())):
        for index, reason in failures:
            path = str(folder.samples[index][0])
            warnings.warn(f"Skipping {path}: cannot decode it ({reason}).", stacklevel=2)
            skipped.append((path, f"cannot decode it ({reason})"))
        if images is None:
            continue
        with torch.no_grad():
            originals = images.to(device, non_blocking=True).float() / 255  # the exact 8-bit values, as ToTensor
            latents = vae.encode(originals * 2 - 1)
            reconstructions = {}
            if "vae" in sources:
                reconstructions["vae"] = to_unit_range(vae.decode(latents, clamp=False))
            if "revq" in sources:
                codes = model.tokenize(latents.to(model.normalizer.mean))  # (B, T)
                all_codes.append(codes.cpu().to(torch.int32))  # ids stay below 2 ** 31 (MAX_VOCABULARY)
                revq_latents = model.detokenize(codes)
                reconstructions["revq"] = to_unit_range(vae.decode(revq_latents, clamp=False))
            evaluator.update(originals, reconstructions)
    evaluator.reduce()
    skipped = sorted({item for per_rank in distributed.gather_objects(skipped) for item in per_rank})
    if int(evaluator.num_images) == 0:
        raise ValueError(f"none of the {total} image(s) of {data} could be decoded: see the warnings for each file.")
    computed = evaluator.compute()
    missing.update(computed["missing_metrics"])
    codes = None
    if model is not None:
        gathered = [part for per_rank in distributed.gather_objects(all_codes) for part in per_rank]
        codes = code_report(model, torch.cat(gathered)) if gathered else None
    return {
        "codes": codes,
        "protocols": {protocol: {"description": PROTOCOL_DESCRIPTIONS[protocol],
                                 "metrics": computed["protocols"][protocol]} for protocol in evaluator.protocols},
        "shared_metrics": SHARED_DESCRIPTION,
        "num_images": computed["num_images"],
        "skipped_files": [{"path": path, "reason": reason} for path, reason in skipped],
        "missing_metrics": missing,
        "sources": sources,
        "image_size": image_size,
        "limit": limit,
        "preprocessing": PREPROCESSING,
        "world_size": distributed.world_size(),
    }


def _check_model_fits_vae(model, vae, image_size: int) -> None:
    """Raise (one line) if images of ``image_size`` through ``vae`` do not give ``model``'s latent shape."""
    vae = as_latent_autoencoder(vae)
    factor = vae.downsampling_factor
    if model is None or factor is None:
        return
    channels = vae.latent_channels
    expected = (channels, image_size // factor, image_size // factor)
    if image_size % factor or (channels is not None and tuple(model.latent_shape) != expected):
        raise ValueError(f"images of {image_size} x {image_size} through this VAE (factor {factor}, {channels} latent "
                         f"channels) give latents {expected}, but the model quantizes {tuple(model.latent_shape)}: "
                         f"pass the VAE the model was trained with, or image_size = latent side x {factor}.")


# ---------------------------------------------------------------------------------------------------
# Provenance: weights hashes and software versions


def sha256_of_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".json")


def weights_hashes(source: str | os.PathLike | None, kind: str) -> dict[str, str]:
    """sha256 of the files behind a model or VAE: {file name: digest}, or {"unavailable": why}.

    source: a directory, a Hugging Face Hub id (its files are looked up in the local cache, never
    downloaded), or None / the name of an embedded VAE ("embedded-v2", "embedded"). kind: "model" or "vae"
    (only for messages).
    """
    from revq_core.autoencoders.embedded import embedded_vae_path, is_embedded_vae

    if is_embedded_vae(source):
        directory = embedded_vae_path(source)
    elif Path(source).expanduser().is_dir():
        directory = Path(source).expanduser()
    else:
        directory = _hub_snapshot_dir(str(source))
        if directory is None:
            return {"unavailable": f"the {kind} {source!r} is neither a directory nor in the Hugging Face cache."}
    files = sorted(path for path in directory.iterdir() if path.is_file() and path.suffix in _WEIGHT_SUFFIXES)
    if not files:
        return {"unavailable": f"no weights files in {directory}."}
    return {path.name: sha256_of_file(path) for path in files}


def _hub_snapshot_dir(repo_id: str) -> Path | None:
    """The local snapshot directory of a hub repository (from its cached config.json), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id huggingface_hub rejects, or no cache at all
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def software_versions() -> dict[str, str | None]:
    """Versions of Python, the packages the numbers depend on (None: not installed), and the accelerator."""
    from revq_core import __version__

    versions = {"python": platform.python_version(), "revq": __version__}
    for package in ("torch", "diffusers", "torchmetrics", "numpy", "pillow", "torchvision", "torch-fidelity",
                    "huggingface_hub", "safetensors"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["cuda"] = torch.version.cuda
    versions["accelerator"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions["platform"] = platform.platform()
    return versions


# ---------------------------------------------------------------------------------------------------
# The table of results


def format_scores(scores: dict[str, dict[str, float]], columns: Sequence[str], digits: int = 4) -> str:
    """An aligned text table of scores ``{source: {metric: value}}``: one row per source, one column per metric
    of ``columns`` that every source has (in that order), values with ``digits`` decimals.

    The one table of evaluation results: ``revq_core.evaluate`` prints one per protocol
    (``results["protocols"][protocol]["metrics"]``, columns ``PROTOCOL_KEYS[protocol] + SHARED_KEYS``), the
    training notebook ``pipeline.evaluate_tokenizer``'s (``pipeline.RESULT_COLUMNS``), ``vae_quality`` a VAE's
    beside bicubic.
    """
    if not scores:
        raise ValueError("no scores to format: pass {source: {metric: value}} with at least one source.")
    shown = [column for column in columns if all(column in row for row in scores.values())]
    cells = {source: [f"{row[column]:.{digits}f}" for column in shown] for source, row in scores.items()}
    widths = [max([len(column)] + [len(values[index]) for values in cells.values()])
              for index, column in enumerate(shown)]
    label = max(len(source) for source in scores)
    lines = [" " * label + "".join(f"  {column:>{width}s}" for column, width in zip(shown, widths))]
    lines += [f"{source:{label}s}" + "".join(f"  {value:>{width}s}" for value, width in zip(values, widths))
              for source, values in cells.items()]
    return "\n".join(lines)
