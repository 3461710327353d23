"""ReVQ: normalizer + quantizer + rectifier on top of a frozen VAE (the paper's pipeline, step 4).

    reconstruction = VAE.decode(denormalize(rectifier(quantize(normalize(VAE.encode(x))))))

The model holds no VAE weights: attach one with ``attach_vae`` (the VAE stays frozen and is not
saved). ``save_pretrained`` / ``from_pretrained`` (huggingface_hub's ``PyTorchModelHubMixin``)
write and read a directory of ``config.json`` + ``model.safetensors``; ``push_to_hub`` comes free.

``tokenize``, ``detokenize``, ``encode_images`` and ``decode_codes`` take a batch of at least one item:
an empty batch (B = 0) raises a ValueError (the VAE cannot encode or decode one), as does a tensor on
the 'meta' device, which holds no data.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin

from revq_core.modeling.config import ModelConfig
from revq_core.modeling.normalizer import LatentNormalizer
from revq_core.modeling.pretrained import check_pretrained_dir, check_weights_fit, is_hub_id, refuse_authors_format
from revq_core.modeling.quantizers import build_quantizer
from revq_core.modeling.quantizers.base import check_codes_in_vocabulary
from revq_core.modeling.rectifiers import build_rectifier
from revq_core.utils.checks import check_codes, check_has_data, check_latent_shape, check_latents, check_not_empty


class ReVQOutput(NamedTuple):
    rectified: torch.Tensor  # (B, C, H, W) normalized latent after the rectifier
    quantized: torch.Tensor  # (B, C, H, W) normalized quantized latent
    codes: torch.Tensor  # (B, T) int64
    loss: torch.Tensor  # loss_quant + loss_rect (+ commitment with a pre-encoder)
    loss_quant: torch.Tensor  # the quantizer's own loss (ReVQ: MSE(tokens, codes), trains the codebook only)
    loss_rect: torch.Tensor  # MSE(latent, rectified): trains the rectifier only


class ReVQ(nn.Module, PyTorchModelHubMixin, library_name="revq", repo_url="https://github.com/Neur-IO/ReVQ",
           tags=["revq", "vq-vae", "image-tokenizer"]):
    """A VQ tokenizer made from a frozen VAE's latent space: normalizer -> quantizer -> rectifier.

    ``ReVQ(config)`` with a ``ModelConfig`` (modeling/config.py lists every field), or ``ReVQ(**fields)`` with
    that config's fields as keywords (``ReVQ(tokens_per_image=256, codes_per_group=65536)``); ``vae`` names
    the VAE whose latents this model quantizes (recorded in config.json, not loaded). The quantizer is
    ``QUANTIZERS[config.quantizer]`` (the paper's channel multi-group one by default), used only through
    the quantizer contract (``modeling/quantizers/base.py``); the rectifier is ``RECTIFIERS[config.rectifier]``.
    With ``config.pre_encoder`` (the paper's "extra encoder" ablation) a second rectifier sits before the
    quantizer, trained through a straight-through estimator with a ``commitment_weight`` term.
    """

    def __init__(self, config: ModelConfig | None = None, vae: str | None = None, **fields):
        super().__init__()
        if config is not None and fields:
            raise TypeError(f"pass a ModelConfig or its fields as keywords, not both (got config and {sorted(fields)}).")
        if config is not None and not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}; for a dict (config.json) "
                            f"use ModelConfig.from_dict(values).")
        self.config = config if config is not None else ModelConfig(**fields)
        self.vae_name = vae
        self.normalizer = LatentNormalizer(self.config.latent_shape)
        self.quantizer = build_quantizer(self.config)
        self.rectifier = build_rectifier(self.config)
        self.pre_encoder = None if self.config.pre_encoder is None else build_rectifier(
            self.config, kind=self.config.pre_encoder, residual=False)
        self.__dict__["vae"] = None  # attached, never a submodule: not trained, not saved
        # config.json: the config's fields and the VAE's name, flat (as every saved ReVQ has been written)
        self._hub_mixin_config = {**self.config.to_dict(), "vae": vae}

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.config.latent_shape

    @property
    def tokens_per_image(self) -> int:
        return self.config.tokens_per_image

    @property
    def codes_per_group(self) -> int:
        return self.config.codes_per_group

    @property
    def vocabulary_size(self) -> int:
        """Every token id is below this (the quantizer's largest per-position vocabulary)."""
        return self.quantizer.vocabulary_size

    @property
    def bits_per_image(self) -> float:
        return self.quantizer.bits_per_image

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(quantizer parameters, everything else: rectifier and pre-encoder), the recipe's two optimizer
        groups (own learning rates, weight decay and gradient clipping)."""
        quantizer_params = list(self.quantizer.parameters())
        rectifier_params = [param for name, param in self.named_parameters() if not name.startswith("quantizer.")]
        return quantizer_params, rectifier_params

    # ---- training-time forward on normalized latents ------------------------------------------
    def forward(self, latent: torch.Tensor) -> ReVQOutput:
        """Normalized latent (B, C, H, W) -> ``ReVQOutput`` with both losses (the paper's "Rectifier" section).

        The training step's forward: its input's shape is checked, its values are not (``train`` checks its
        latents once at the start, and stops on a non-finite loss)."""
        check_latent_shape(latent, self.latent_shape)
        if self.pre_encoder is None:
            quantized, codes, loss_quant = self.quantizer(latent)
            rectified = self.rectifier(quantized.detach())
            loss_rect = F.mse_loss(rectified, latent)
            return ReVQOutput(rectified, quantized, codes, loss_quant + loss_rect, loss_quant, loss_rect)
        encoded = self.quantizer_input(latent)
        quantized, codes, loss_quant = self.quantizer(encoded)
        commitment = F.mse_loss(encoded, quantized.detach())
        straight_through = encoded + (quantized - encoded).detach()
        rectified = self.rectifier(straight_through)
        loss_rect = F.mse_loss(rectified, latent)
        loss = loss_quant + loss_rect + self.config.commitment_weight * commitment
        return ReVQOutput(rectified, quantized, codes, loss, loss_quant, loss_rect)

    # ---- tokenizer API on VAE latents ----------------------------------------------------------
    @torch.no_grad()
    def tokenize(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE latent (B, C, H, W) -> token ids (B, T) int64; B >= 1 (an empty batch raises ValueError)."""
        check_latents(latent, self.latent_shape)
        check_not_empty(latent, "latent")
        self._check_weights_have_data()
        normalized = self.normalizer.normalize(latent.to(self.normalizer.mean))
        return self.quantizer.encode(self.quantizer_input(normalized))

    def quantizer_input(self, normalized: torch.Tensor) -> torch.Tensor:
        """What the quantizer sees of a normalized latent (B, C, H, W): the latent itself (the paper), or the
        pre-encoder's output in the "extra encoder" ablation."""
        return normalized if self.pre_encoder is None else self.pre_encoder(normalized)

    @torch.no_grad()
    def detokenize(self, codes: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> VAE latent (B, C, H, W), rectified and denormalized; B >= 1 (an empty batch
        raises ValueError)."""
        self._check_codes(codes)
        check_not_empty(codes, "codes")
        self._check_weights_have_data()
        return self.normalizer.denormalize(self.rectifier(self.quantizer.decode(codes)))

    @torch.no_grad()
    def reconstruct_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE latent (B, C, H, W) -> its tokenized-and-back VAE latent (B, C, H, W)."""
        return self.detokenize(self.tokenize(latent))

    def _check_codes(self, codes: torch.Tensor) -> None:
        """Token ids (B, T): integers, T per item, each inside its position's vocabulary."""
        check_codes(codes, self.tokens_per_image, self.vocabulary_size)
        sizes = self.quantizer.vocabulary_sizes
        if bool((sizes != sizes[0]).any()):
            check_codes_in_vocabulary(codes, sizes)

    def _check_weights_have_data(self) -> None:
        """Raise if the model's own weights are on the 'meta' device (built there, never loaded)."""
        if any(tensor.is_meta for tensor in (*self.parameters(), *self.buffers())):
            raise ValueError("this ReVQ's weights are on device 'meta': they have shapes but hold no data. Load real "
                             "weights: ReVQ.from_pretrained(<directory>), or model.to_empty(device='cpu') followed by "
                             "model.load_state_dict(<state dict>).")

    # ---- images, with a VAE attached -----------------------------------------------------------
    def attach_vae(self, vae: nn.Module) -> "ReVQ":
        """Attach the frozen VAE whose latents this model quantizes, for ``encode_images`` / ``decode_codes``: a
        ``LatentAutoencoder`` (what ``load_vae`` returns) or a diffusers ``AutoencoderDC`` / ``AutoencoderKL``
        (wrapped in its adapter, ``revq_core.autoencoders.as_latent_autoencoder``)."""
        from revq_core.autoencoders.adapters import as_latent_autoencoder

        vae = as_latent_autoencoder(vae).requires_grad_(False).eval()
        self.__dict__["vae"] = vae
        return self

    def _require_vae(self) -> nn.Module:
        if self.vae is None:
            from revq_core.autoencoders.embedded import DEFAULT_EMBEDDED_VAE

            default = self.vae_name in (None, DEFAULT_EMBEDDED_VAE)
            load_call = "load_vae()" if default else f"load_vae({self.vae_name!r})"
            source = "the embedded VAE" if default else f"the VAE {self.vae_name!r}"
            raise RuntimeError(f"No VAE attached. Attach the VAE these latents come from ({source}): "
                               f"from revq_core.autoencoders import load_vae; model.attach_vae({load_call})")
        return self.vae

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> token ids (B, T); B >= 1 (an empty batch raises ValueError).

        H and W must be the VAE's downsampling factor f times the latent's (h, w): 128 x 128 for the
        embedded f16 VAE v2 and a (32, 8, 8) latent, 256 x 256 for a DC-AE f32."""
        vae = self._require_vae()
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}.")
        check_has_data(images, "images")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}.")
        check_not_empty(images, "images")
        self._check_image_size(vae, images)
        if float(images.min()) < -1.5 or float(images.max()) > 1.5:
            raise ValueError(f"images must be scaled to [-1, 1], got values in [{float(images.min()):.3g}, "
                             f"{float(images.max()):.3g}]; use images * 2 - 1 for [0, 1] input.")
        return self.tokenize(vae.encode(images).to(self.normalizer.mean))

    def _check_image_size(self, vae: nn.Module, images: torch.Tensor) -> None:
        """Raise if images (B, 3, H, W) do not encode to this model's latent (C, h, w): H = h * f, W = w * f."""
        vae.check_image_size(images)
        factor = vae.downsampling_factor
        _, latent_height, latent_width = self.latent_shape
        expected = (latent_height * factor, latent_width * factor) if factor else None
        if expected is not None and tuple(images.shape[-2:]) != expected:
            raise ValueError(f"images are {images.shape[-2]} x {images.shape[-1]} pixels, but this model's latent is "
                             f"{self.latent_shape} (C, h, w) and the VAE downsamples by {factor}: resize or "
                             f"centre-crop the images to {expected[0]} x {expected[1]}.")

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> images (B, 3, H, W) in [-1, 1] (clamped); B >= 1 (an empty batch raises
        ValueError)."""
        vae = self._require_vae()
        self._check_codes(codes)
        check_not_empty(codes, "codes")
        latent = self.detokenize(codes.to(self.normalizer.mean.device))
        return vae.decode(latent)

    # ---- loading with clear errors -------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "ReVQ":
        """Load a directory (or hub id) written by ``save_pretrained``; clear errors when it is not one. The
        authors' released models (their own format) load with
        ``revq_core.modeling.authors_format.load_authors_model``."""
        name = str(pretrained_model_name_or_path)
        path = Path(name).expanduser()
        refuse_authors_format(name, path)
        if path.is_dir():
            architecture, stored = check_pretrained_dir(path)
            with torch.device("meta"):  # shapes only: nothing allocated
                expected = {key: tuple(value.shape) for key, value in ReVQ(architecture).state_dict().items()}
            check_weights_fit(path, architecture, stored, expected)
        elif path.exists():
            raise NotADirectoryError(f"{name!r} is a file, not a directory: pass the directory written by "
                                     "ReVQ.save_pretrained (config.json + model.safetensors).")
        elif not is_hub_id(name):
            raise FileNotFoundError(f"{name!r} is not a directory and not a Hugging Face Hub id ('owner/name'): no "
                                    "such directory exists. Pass the directory written by ReVQ.save_pretrained "
                                    "(config.json + model.safetensors).")
        elif path.parent != Path(".") and path.parent.is_dir():  # 'runs/x' with runs/ here: a path, not a hub id
            raise FileNotFoundError(f"{name!r} does not exist: the folder {str(path.parent)!r} holds no "
                                    f"{path.name!r}. Pass the directory written by ReVQ.save_pretrained (config.json "
                                    "+ model.safetensors), e.g. a run's <output_dir>/model.")
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except Exception as error:  # hub, safetensors and state-dict errors: say what and how to fix
            raise ValueError(f"Could not load a ReVQ model from {str(pretrained_model_name_or_path)!r}: "
                             f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}. "
                             "Pass a directory written by ReVQ.save_pretrained (config.json + model.safetensors), "
                             "or a hub id with network access.") from error

    @classmethod
    def _from_pretrained(cls, *, config=None, vae: str | None = None, strict: bool = True, **kwargs) -> "ReVQ":
        """huggingface_hub's builder, given config.json's values (flat: the ``ModelConfig`` fields and ``vae``,
        also passed one by one as keywords): the model is built from ``ModelConfig.from_dict`` (files written
        before a field existed take its default) and the weights are loaded strictly (a checkpoint of another
        quantizer or shape is an error, not a half-loaded model)."""
        download = {key: kwargs.pop(key) for key in ("model_id", "revision", "cache_dir", "force_download",
                                                    "local_files_only", "token", "map_location") if key in kwargs}
        values = {**(config if isinstance(config, dict) else {}), **kwargs}
        values.pop("vae", None)
        model_config = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(values)
        return super()._from_pretrained(config=model_config, vae=vae, strict=strict, **download)

