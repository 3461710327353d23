"""revq_core's training epoch against the authors' own training loop (github.com/Neur-IO/ReVQ), same latents,
same configuration, same initial weights.

Usage (2-core CPU, ~2 minutes; PATH is a checkout of their repository you fetched yourself):
    git clone https://github.com/Neur-IO/ReVQ /tmp/revq_authors
    .venv/bin/python benchmarks/vs_authors.py --authors-repo /tmp/revq_authors --rounds 3 --threads 2
    .venv/bin/python benchmarks/vs_authors.py --authors-repo /tmp/revq_authors --authors-site-packages \
        /tmp/revq_authors_venv/lib/python3.11/site-packages     # omegaconf from a small side venv
    .venv/bin/python benchmarks/vs_authors.py --authors-repo /tmp/revq_authors --device cuda   # B = 256

Their code is imported from PATH at run time (``PATH/src`` on ``sys.path``), nothing of it is copied here.
Their ``xvq.models`` needs ``omegaconf``; if this environment lacks it, install it here or pass
``--authors-site-packages DIR`` (e.g. the site-packages of a small venv holding it). Their
``xvq.dataset`` (which holds their ``Preprocessor``) imports ``webdataset`` and ``torchvision`` at the top
but the preprocessor uses neither: where they are missing, empty placeholder modules stand in for them.

Configuration: their ``configs/512T_NC=16384.yaml`` (T = G = 512 codebooks of K = 16384 codes of D = 4,
ViT rectifier ``DCAEDecoder`` of width 512 and depth 3; lr 0.01, 100 epochs; the YAML's values, not their
``config.py`` command-line defaults), built by their ``setup_models``; ours is ``preset("paper_512T")`` with
the same batch size, built from their initial weights by
``revq_core.modeling.authors_format.convert_authors_checkpoint``.
B = 32 on the CPU, 256 on CUDA (``--batch``); N = steps x B random latents (N, 32, 8, 8).

One epoch = ``--steps`` training steps over the N latents (shuffled, drop_last) + the end-of-epoch code reset
+ the scheduler step, on each side:
  theirs: their ``scripts/train.py`` loop body driving their modules (``Preprocessor``, ``Viewer.shuffle``,
    ``Quantizer.forward`` (cdist search + usage counts), ``DCAEDecoder`` on the detached quantized latent, both
    MSE losses, backward, two ``clip_grad_norm_`` at 1, torch's default ``AdamW`` as they build it, the two
    losses read with ``.item()`` as their progress bar does), then ``quantizer.reset()`` and
    ``ExponentialLR.step()``; a ``DataLoader(TensorDataset, shuffle=True, drop_last=True)`` with
    ``num_workers=0`` (theirs asks for 8 workers and pinned memory for a GPU; with latents in memory that
    only adds processes here). Not run: their tensorboard logging and tqdm bar.
  ours: what ``revq_core.training.trainer.train`` runs per epoch (``train_epoch`` with ``train_step``: forward
    with usage counts, finite-loss check, backward, clipping, AdamW (foreach), three ``.item()``; then
    ``end_of_epoch`` and ``scheduler.step()``), on a model set up as ``train()`` sets it up.
Excluded from both: one-time setup (building the models, their ``prepare_codebook``, the optimizers),
printed separately, and validation (no validation set on either side). Before timing, each side runs one
untimed step on the same batch (first-call costs, AdamW state); its losses and codes are compared.
Rounds are interleaved, the order alternating (theirs, ours, ours, theirs, ...); medians are reported, and
the ratio theirs / ours (> 1: ours is faster).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revq_core.modeling.authors_format import convert_authors_checkpoint  # noqa: E402
from revq_core.training.config import preset, speed_settings  # noqa: E402
from revq_core.training.trainer import (compile_rectifier, end_of_epoch, optimizer_and_scheduler,  # noqa: E402
                                        train_epoch, train_step)

AUTHORS_CONFIG = "configs/512T_NC=16384.yaml"
LATENT_SHAPE = (32, 8, 8)


def import_authors_modules(authors_repo: Path, site_packages: str | None) -> types.SimpleNamespace:
    """Their ``OmegaConf``, ``setup_models`` and ``Preprocessor``, imported from ``authors_repo/src``."""
    source = authors_repo / "src"
    if not (source / "xvq" / "models" / "quantizer.py").is_file():
        raise SystemExit(f"{authors_repo} is not a checkout of github.com/Neur-IO/ReVQ (no "
                         "src/xvq/models/quantizer.py); pass --authors-repo PATH of a clone of it.")
    if site_packages:
        sys.path.append(site_packages)  # after ours: only what this environment lacks comes from there
    sys.path.insert(0, str(source))
    if importlib.util.find_spec("omegaconf") is None:
        raise SystemExit("their xvq.models imports omegaconf, which this environment lacks: `pip install omegaconf`, "
                         "or pass --authors-site-packages DIR of an environment that has it.")
    for name in ("webdataset", "torchvision"):  # imported by xvq.dataset, unused by its Preprocessor
        if importlib.util.find_spec(name) is None:
            placeholder = types.ModuleType(name)
            placeholder.datasets = placeholder.transforms = None  # `from torchvision import datasets, transforms`
            sys.modules[name] = placeholder
    from omegaconf import OmegaConf
    from xvq.dataset import Preprocessor
    from xvq.models import setup_models
    return types.SimpleNamespace(OmegaConf=OmegaConf, Preprocessor=Preprocessor, setup_models=setup_models)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class AuthorsLoop:
    """Their models, optimizer and scheduler as their ``scripts/train.py`` sets them up, and one epoch of their loop."""

    def __init__(self, authors, authors_repo: Path, latents: torch.Tensor, code_bank: torch.Tensor, batch: int,
                 device: torch.device):
        self.config = authors.OmegaConf.load(authors_repo / AUTHORS_CONFIG)
        self.device, self.batch, self.latents = device, batch, latents
        flat = latents.reshape(latents.shape[0], -1).double()
        self.preprocessor = authors.Preprocessor(input_data_size=list(LATENT_SHAPE)).to(device)
        self.preprocessor.prepare(flat.mean(0).float(), flat.var(0, unbiased=False).float())
        self.preprocessor.eval()
        torch.manual_seed(self.config.seed)
        self.quantizer, self.decoder, self.viewer = authors.setup_models(self.config.model, device)
        self.quantizer.prepare_codebook(self.viewer.shuffle(self.preprocessor(code_bank.to(device))), method="random")
        lr, epochs = self.config.train.lr, self.config.train.num_epochs
        self.optimizer = torch.optim.AdamW(params=[
            {"params": self.quantizer.parameters(), "lr": lr, "weight_decay": 0.0},
            {"params": self.decoder.parameters(), "lr": lr * 0.05, "weight_decay": 1e-4}])
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=math.pow(0.05, 1 / epochs))
        self.loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(latents), batch_size=batch,
                                                  shuffle=True, drop_last=True, num_workers=0)

    def initial_state(self) -> dict:
        """Their weights before any step, in their checkpoint layout ({"quantizer": ..., "decoder": ...})."""
        return {"quantizer": {key: value.detach().cpu().clone() for key, value in self.quantizer.state_dict().items()},
                "decoder": {key: value.detach().cpu().clone() for key, value in self.decoder.state_dict().items()}}

    def step(self, latent: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """Their loop body on a raw latent batch (B, 32, 8, 8); returns (codes (B, T), [loss_quant, loss_rect])."""
        self.optimizer.zero_grad()
        data = self.preprocessor(latent.to(self.device))
        data_tokens = self.viewer.shuffle(data)  # (B, T, D)
        quantizer_output = self.quantizer(data_tokens)  # nearest codes, usage counts
        quantized = self.viewer.unshuffle(quantizer_output["x_quant"])
        rectified = self.decoder(quantized.detach())
        loss_quant = F.mse_loss(data_tokens, quantizer_output["x_quant"])
        loss_rect = F.mse_loss(data, rectified)
        (loss_quant + loss_rect).backward()
        torch.nn.utils.clip_grad_norm_(self.quantizer.parameters(), max_norm=1)
        torch.nn.utils.clip_grad_norm_(self.decoder.parameters(), max_norm=1)
        self.optimizer.step()
        return quantizer_output["indices"], [loss_quant.item(), loss_rect.item()]  # their progress bar's .item()s

    def epoch(self) -> None:
        self.quantizer.train()
        self.decoder.train()
        for (latent,) in self.loader:
            self.step(latent)
        self.quantizer.reset()
        self.scheduler.step()


class RevqEpoch:
    """revq_core's model set up as ``train()`` sets it up (from given initial weights), and one ``train()`` epoch."""

    def __init__(self, initial_state: dict, preprocessor_state: dict, latents: torch.Tensor, batch: int,
                 epochs: int, device: torch.device, overrides: dict):
        self.config = preset("paper_512T", batch_size=batch, epochs=epochs, init_latents=None, device=str(device),
                             **overrides)
        self.device, self.latents, self.epoch_index = device, latents, 0
        self.model = convert_authors_checkpoint(initial_state, preprocessor_state).to(device)
        self.model.quantizer.prepare_training(device)
        self.optimizer, self.scheduler = optimizer_and_scheduler(self.model, self.config)
        compile_rectifier(self.model, self.config)
        self.model.train()

    def step(self, latent: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """``train_step`` on a raw latent batch (B, 32, 8, 8); returns (codes (B, T), [loss_quant, loss_rect])."""
        quantizer_params, rectifier_params = self.model.parameter_groups()
        output = train_step(self.model, self.model, self.model.normalizer.normalize(latent.to(self.device)),
                            self.optimizer, quantizer_params, rectifier_params, self.config)
        return output.codes, [output.loss_quant.item(), output.loss_rect.item()]

    def epoch(self) -> None:
        train_epoch(self.model, self.optimizer, self.config, self.latents, self.epoch_index, self.device)
        end_of_epoch(self.model, self.config, self.epoch_index)
        self.scheduler.step()
        self.epoch_index += 1


def _timed(action, device: torch.device) -> float:
    _synchronize(device)
    started = time.perf_counter()
    action()
    _synchronize(device)
    return time.perf_counter() - started


def cpu_description() -> dict:
    """lscpu's model name and whether the CPU flags include avx512f."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        lscpu = ""
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    model = fields.get("Model name", "").strip() or "unknown"
    flags = fields.get("Flags", "").split()
    if not flags and Path("/proc/cpuinfo").is_file():
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    return {"cpu": model, "avx512f": "avx512f" in flags}


def run(authors_repo: Path, site_packages: str | None, device: torch.device, batch: int, steps: int, rounds: int,
        overrides: dict) -> dict:
    authors = import_authors_modules(authors_repo, site_packages)
    generator = torch.Generator().manual_seed(2)
    latents = torch.randn(steps * batch, *LATENT_SHAPE, generator=generator)  # (N, 32, 8, 8)
    code_bank = torch.randn(16384, *LATENT_SHAPE, generator=generator)  # their prepare_codebook asserts N >= K

    started = time.perf_counter()
    theirs = AuthorsLoop(authors, authors_repo, latents, code_bank, batch, device)
    theirs_setup_s = time.perf_counter() - started
    started = time.perf_counter()
    preprocessor_state = {key: value.cpu() for key, value in theirs.preprocessor.state_dict().items()}
    ours = RevqEpoch(theirs.initial_state(), preprocessor_state, latents, batch, theirs.config.train.num_epochs,
                     device, overrides)
    ours_setup_s = time.perf_counter() - started
    del code_bank

    first_batch = latents[:batch]
    theirs_codes, theirs_losses = theirs.step(first_batch)  # untimed: same weights, same batch
    ours_codes, ours_losses = ours.step(first_batch)
    theirs_times, ours_times = [], []
    contenders = [(theirs, theirs_times), (ours, ours_times)]
    for round_index in range(rounds):  # interleaved, order alternating: the machine's load hits both alike
        for side, times in contenders if round_index % 2 == 0 else contenders[::-1]:
            times.append(_timed(side.epoch, device))
    result = {
        "device": str(device), "B": batch, "steps_per_epoch": steps, "N": steps * batch, "rounds": rounds,
        "G": 512, "K": 16384, "D": 4, "rectifier": "vit 512 x 3", "ours_speed_settings": overrides,
        "torch": torch.__version__, "threads": torch.get_num_threads(), **cpu_description(),
        "theirs_s": statistics.median(theirs_times), "ours_s": statistics.median(ours_times),
        "theirs_times_s": theirs_times, "ours_times_s": ours_times,
        "theirs_setup_s": theirs_setup_s, "ours_setup_s": ours_setup_s,
        "first_step_codes_differing": int((theirs_codes.cpu() != ours_codes.cpu()).sum()),
        "first_step_losses_theirs": theirs_losses, "first_step_losses_ours": ours_losses,
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    result["ratio"] = result["theirs_s"] / result["ours_s"]
    # the same round's times share the machine's load: the median of per-round ratios is the steadier figure
    result["ratio_round_median"] = statistics.median(t / o for t, o in zip(theirs_times, ours_times))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors-repo", type=Path, required=True, help="a checkout of github.com/Neur-IO/ReVQ")
    parser.add_argument("--authors-site-packages", help="extra site-packages dir for what their code needs and this "
                        "environment lacks (omegaconf); searched after this environment's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 32 on the CPU, 256 on CUDA")
    parser.add_argument("--steps", type=int, default=10, help="training steps per epoch (N = steps x batch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fast", action="store_true", help="ours with speed_settings(device) (CUDA: bf16 autocast, "
                        "fused AdamW, CUDA graphs; CPU: none)")
    parser.add_argument("--bf16", action="store_true", help="ours with bf16 autocast of the rectifier and losses "
                        "(TrainConfig.autocast_bf16), also on the CPU: an opt-in that changes results; it pays on CPUs "
                        "with native bf16 (AVX512-BF16, AMX)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} asked for, but CUDA is not available here; use --device cpu.")
    batch = args.batch or (256 if device.type == "cuda" else 32)
    torch.set_flush_denormal(True)  # as train() does on the CPU; process-wide, so for both sides
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {**(speed_settings(str(device)) if args.fast else {}), **({"autocast_bf16": True} if args.bf16 else {})}
    result = run(args.authors_repo.resolve(), args.authors_site_packages, device, batch, args.steps, args.rounds,
                 overrides)
    print(f"torch {result['torch']}, {result['threads']} threads, CPU {result['cpu']} "
          f"(avx512f: {'yes' if result['avx512f'] else 'no'})" + (f", GPU {result['gpu']}" if "gpu" in result else ""))
    print(f"512T training epoch on {result['device']}: {result['steps_per_epoch']} steps of B={result['B']} "
          f"(G=512, K=16384, D=4, ViT rectifier 512 x 3) + code reset + scheduler step, "
          f"median of {result['rounds']} interleaved rounds; setup excluded")
    print(f"  authors' loop  {result['theirs_s']:8.2f} s   {result['N'] / result['theirs_s']:6.1f} latents/s")
    print(f"  revq_core      {result['ours_s']:8.2f} s   {result['N'] / result['ours_s']:6.1f} latents/s"
          + (f"   (settings {result['ours_speed_settings']})" if result["ours_speed_settings"] else ""))
    print(f"  ratio theirs / ours x{result['ratio']:.2f} "
          f"(median of per-round ratios x{result['ratio_round_median']:.2f}); "
          f"rounds theirs {[round(t, 2) for t in result['theirs_times_s']]} s, "
          f"ours {[round(t, 2) for t in result['ours_times_s']]} s")
    print(f"  one-time setup (not timed above): authors {result['theirs_setup_s']:.1f} s (their prepare_codebook "
          f"included), revq_core {result['ours_setup_s']:.1f} s (from their initial weights)")
    print(f"  first step, same weights and batch: {result['first_step_codes_differing']} of {result['B'] * 512} codes "
          f"differ; losses (quant, rect) authors {result['first_step_losses_theirs']} vs revq_core "
          f"{result['first_step_losses_ours']}")
    print("  json " + json.dumps(result))


if __name__ == "__main__":
    main()
