"""revq_core.evaluate: the accumulator (Evaluator), the paper's preprocessing, streaming an image folder (== one shot),
--limit, corrupt files, 2 gloo ranks == 1 rank, the offline path (no LPIPS / Inception weights) and the CLI writing its
JSON."""
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import tiny_autoencoder_dc
from PIL import Image
from torch import nn

from revq_core.autoencoders.loading import load_vae
from revq_core.data.images import ImageFolderDataset, resize_center_crop
from revq_core.evaluation.metrics import (PSNR_CAP_DB, paper_psnr, paper_ssim, psnr_per_image, round_to_8_bits,
                                          ssim_per_image, to_unit_range)
from revq_core.evaluation.protocol import (PROTOCOL_KEYS, PROTOCOLS, SHARED_KEYS, Evaluator, evaluate_image_folder,
                                           format_scores, perceptual_networks, sha256_of_file)
from revq_core.modeling.revq import ReVQ

REPO_ROOT = Path(__file__).resolve().parents[2]
# The folder's text file is skipped with a warning wherever it is listed; the tests that check that catch it.
pytestmark = pytest.mark.filterwarnings("ignore:Skipping .*(notes.txt|2_broken.png)")


# ---- stand-ins and fixtures --------------------------------------------------------------------------

class MeanAbsDistance(nn.Module):
    """Stand-in for LPIPS: mean absolute difference, (B, 3, H, W) x 2 in [-1, 1] -> (B, 1, 1, 1)."""

    def forward(self, pred, target):
        return (pred - target).abs().mean(dim=(1, 2, 3), keepdim=True)


class TinyInception(nn.Module):
    """Stand-in for Inception: uint8 (B, 3, H, W) -> (features (B, 4), logits (B, 5)) of fixed random layers."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("conv", torch.randn(4, 3, 3, 3, generator=generator))
        self.register_buffer("head", torch.randn(4, 5, generator=generator))

    def forward(self, images):
        assert images.dtype == torch.uint8
        features = torch.tanh(torch.nn.functional.conv2d(images.float() / 255, self.conv)).mean(dim=(2, 3))
        return features, 3 * features @ self.head


def _tiny_revq() -> ReVQ:
    torch.manual_seed(1)
    model = ReVQ(latent_shape=(4, 8, 8), tokens_per_image=64, codes_per_group=8, rectifier="identity")
    model.normalizer.fit(torch.randn(32, 4, 8, 8))
    return model.eval()


def _write_folder(root: Path) -> Path:
    """root/<class>/<name>.png: 7 smooth colour images of several sizes, a corrupt .png and a text file."""
    rng = np.random.default_rng(0)
    sizes = [(20, 24), (24, 20), (16, 16), (30, 17), (17, 17), (22, 40), (16, 21)]
    for index, (width, height) in enumerate(sizes):
        folder = root / ("cat" if index < 4 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        small.resize((width, height), Image.Resampling.BILINEAR).save(folder / f"{index}.png")
    (root / "cat" / "2_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png body")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def folder(tmp_path):
    return _write_folder(tmp_path / "val")


@pytest.fixture
def tiny_vae():
    return tiny_autoencoder_dc().eval().requires_grad_(False)


def _evaluate(folder, vae, model, **options):
    settings = dict(include_vae=True, batch_size=2, num_workers=0, lpips=MeanAbsDistance(),
                    inception=TinyInception(), progress=False)
    settings.update(options)
    with pytest.warns(UserWarning, match="2_broken.png"):
        return evaluate_image_folder(folder, vae, model, **settings)


# ---- the accumulator ----------------------------------------------------------------------------------

def _pair(batch: int = 12, size: int = 32, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstructions, originals), both (B, 3, size, size) in [0, 1]: smooth random originals as exact 8-bit
    levels, and noisy copies of them."""
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(batch, 3, 8, 8, generator=generator), size=size,
                                             mode="bilinear")
    originals = round_to_8_bits(smooth)
    pred = (originals + noise * torch.randn(originals.shape, generator=generator)).clamp(0, 1)
    return pred, originals


def test_evaluator_over_uneven_batches_equals_the_formulas_on_all_images():
    pred, originals = _pair()
    evaluator = Evaluator(("revq",), lpips=MeanAbsDistance(), inception=TinyInception())
    for chunk in (slice(0, 5), slice(5, 7), slice(7, 12)):  # uneven batches
        evaluator.update(originals[chunk], {"revq": pred[chunk]})
    computed = evaluator.compute()
    assert computed["num_images"] == 12 and computed["missing_metrics"] == {}
    expected = _expected_scores(pred, originals)
    for protocol in PROTOCOLS:
        scores = computed["protocols"][protocol]["revq"]
        assert scores.keys() == {**expected[protocol], **expected["shared"]}.keys(), protocol
        for key, value in {**expected[protocol], **expected["shared"]}.items():
            assert scores[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (protocol, key)
    assert scores["rfid"] > 0 and scores["lpips"] > 0


def test_evaluator_scores_identical_images_as_perfect():
    _, originals = _pair(batch=8)
    evaluator = Evaluator(("revq",), lpips=MeanAbsDistance(), inception=TinyInception())
    evaluator.update(originals, {"revq": to_unit_range(2 * originals - 1)})  # a decoder's [-1, 1], mapped to [0, 1]
    scores = evaluator.compute()["protocols"]
    standard, paper = scores["standard"]["revq"], scores["paper"]["revq"]
    assert standard["psnr_rgb"] == standard["psnr_y"] == PSNR_CAP_DB
    assert paper["psnr"] == pytest.approx(80.0)  # 10 log10(1 / 1e-8): the authors' epsilon
    for value in (standard["ssim_rgb"], standard["ssim_y"], paper["ssim"]):
        assert value == pytest.approx(1.0, abs=1e-6)
    assert paper["lpips"] == 0.0 and abs(paper["rfid"]) < 1e-4


def test_evaluator_clamps_reconstructions_to_zero_one():
    pred, originals = _pair(batch=4)
    overshoot = pred * 1.4 - 0.2  # a decoder's output overshoots [0, 1]
    assert (overshoot < 0).any() and (overshoot > 1).any()
    results = []
    for reconstructions in (overshoot, overshoot.clamp(0, 1)):
        evaluator = Evaluator(("revq",), lpips=MeanAbsDistance(), inception=TinyInception())
        evaluator.update(originals, {"revq": reconstructions})
        results.append(evaluator.compute())
    assert results[0] == results[1]


def test_evaluator_without_networks_and_with_too_few_images():
    pred, originals = _pair(batch=2)
    evaluator = Evaluator()
    with pytest.raises(ValueError, match="no images seen"):
        evaluator.compute()
    evaluator.update(originals, {"revq": pred})
    computed = evaluator.compute()
    assert computed["num_images"] == 2 and computed["missing_metrics"] == {}
    assert set(computed["protocols"]["paper"]["revq"]) == {"psnr", "ssim"}
    assert set(computed["protocols"]["standard"]["revq"]) == {"psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y"}
    one_image = Evaluator(inception=TinyInception())
    one_image.update(originals[:1], {"revq": pred[:1]})
    computed = one_image.compute()
    assert "rfid" not in computed["protocols"]["paper"]["revq"]
    assert "inception_score" in computed["protocols"]["paper"]["revq"]
    assert computed["missing_metrics"]["rfid"].startswith("rFID needs at least 2 images")


def test_evaluator_rejects_nan_and_missing_reconstructions():
    pred, originals = _pair(batch=2)
    with pytest.raises(ValueError, match=r"reconstructions has no entry for \['vae'\]"):
        Evaluator(("vae", "revq")).update(originals, {"revq": pred})
    pred[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"pred contains 1 NaN/Inf value\(s\) \(first at index \[1, 2, 3, 4\]\)"):
        Evaluator().update(originals, {"revq": pred})


# ---- the paper's preprocessing ----------------------------------------------------------------------

def test_resize_center_crop_follows_torchvision_resize_and_center_crop():
    rng = np.random.default_rng(1)
    # 383 x 300: the long side becomes int(256 * 383 / 300) = int(326.83) = 326 (truncated, not rounded),
    # resized bilinearly by PIL, then the crop starts at round((326 - 256) / 2) = 35.
    image = Image.fromarray(rng.integers(0, 256, (300, 383, 3), dtype=np.uint8))
    expected = image.resize((326, 256), Image.Resampling.BILINEAR).crop((35, 0, 291, 256))
    assert np.array_equal(np.asarray(resize_center_crop(image, 256)), np.asarray(expected))
    # 256 x 343 (portrait): already 256 on the short side, so not resampled; the crop starts at
    # round(87 / 2) = round(43.5) = 44 (Python rounds halves to even), not 43.
    pixels = rng.integers(0, 256, (343, 256, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(resize_center_crop(Image.fromarray(pixels), 256)), pixels[44:300])


def test_image_folder_gives_exact_8_bit_images_and_lists_skipped_files(folder):
    with pytest.warns(UserWarning, match="notes.txt"):
        dataset = ImageFolderDataset(folder, size=16)
    assert [(path.name, reason.split(" (")[0]) for path, reason in dataset.skipped] == \
        [("2_broken.png", "PIL cannot read it as an image"), ("notes.txt", "not an image file")]
    image = dataset.load_uint8(0)
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16)
    torch.testing.assert_close(dataset.load(0), image.float() / 127.5 - 1)  # the same pixels as float


# ---- streaming == one shot, --limit, corrupt files ---------------------------------------------------

def _expected_scores(pred: torch.Tensor, originals: torch.Tensor) -> dict:
    """Every metric of reconstructions ``pred`` of ``originals`` (all images at once, (N, 3, H, W) in [0, 1]) from
    direct formulas, with the stand-in networks: {"paper": {...}, "standard": {...}, "shared": {...}}."""
    inception = TinyInception()
    real_features, _ = inception((originals * 255).round().to(torch.uint8))
    rounded = round_to_8_bits(pred)
    fake_features, logits = inception((rounded * 255).round().to(torch.uint8))
    real, fake = real_features.double().numpy(), fake_features.double().numpy()
    covariance_root = scipy.linalg.sqrtm(np.cov(real, rowvar=False) @ np.cov(fake, rowvar=False)).real
    fid = float(((real.mean(0) - fake.mean(0)) ** 2).sum() + np.trace(np.cov(real, rowvar=False))
                + np.trace(np.cov(fake, rowvar=False)) - 2 * np.trace(covariance_root))
    probabilities = torch.softmax(logits.double(), dim=-1)
    kl = (probabilities * (probabilities.log() - probabilities.mean(0, keepdim=True).log())).sum(1)
    return {
        "paper": {"psnr": float(paper_psnr(pred, originals).mean()),
                  "ssim": float(paper_ssim(pred, originals).mean())},
        "standard": {f"{metric}_{channel}": float(function(pred, originals, channel).mean())
                     for metric, function in (("psnr", psnr_per_image), ("ssim", ssim_per_image))
                     for channel in ("rgb", "y")},
        "shared": {"lpips": float((rounded - originals).abs().mul(2).mean()), "rfid": fid,
                   "inception_score": math.exp(float(kl.mean()))},
    }


def _one_shot(folder, vae, model) -> dict:
    """Every readable image at once through VAE -> ReVQ -> VAE, scored with direct formulas."""
    dataset = ImageFolderDataset(folder, size=16, check_files=False)
    readable = [index for index, (path, _) in enumerate(dataset.samples) if path.name != "2_broken.png"]
    originals = torch.stack([dataset.load_uint8(index) for index in readable]).float() / 255
    with torch.no_grad():
        latents = vae.encode(originals * 2 - 1).latent
        decoded = {"vae": vae.decode(latents).sample, "revq": vae.decode(model.reconstruct_latent(latents)).sample}
    expected = {source: _expected_scores(((images + 1) / 2).clamp(0, 1), originals)
                for source, images in decoded.items()}
    return {"count": len(readable), "scores": expected}


def test_streaming_equals_one_shot_and_skips_the_corrupt_file(folder, tiny_vae):
    model = _tiny_revq()
    with pytest.warns(UserWarning, match="notes.txt"):
        results = _evaluate(folder, tiny_vae, model)
    reference = _one_shot(folder, tiny_vae, model)
    assert results["num_images"] == reference["count"] == 7
    assert results["sources"] == ["vae", "revq"] and results["image_size"] == 16
    rate = results["codes"]  # the rate of the model's codes over the 7 decoded images (evaluation.rate)
    assert rate["quantizer"] == "revq" and rate["num_images"] == 7
    assert rate["bits_per_image"] == model.bits_per_image and 0 < rate["entropy_bits"] <= rate["entropy_cap_bits"]
    assert 0 < rate["usage"] <= 1
    assert [Path(item["path"]).name for item in results["skipped_files"]] == ["2_broken.png", "notes.txt"]
    assert results["missing_metrics"] == {}
    for protocol in PROTOCOLS:
        for source, expected in reference["scores"].items():
            scores = results["protocols"][protocol]["metrics"][source]
            for key, value in {**expected[protocol], **expected["shared"]}.items():
                assert scores[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (protocol, source, key)
    revq_scores = results["protocols"]["paper"]["metrics"]["revq"]
    vae_scores = results["protocols"]["paper"]["metrics"]["vae"]
    assert revq_scores["psnr"] != vae_scores["psnr"]  # the tokens lose information: not a copy of the VAE row
    table = format_scores(results["protocols"]["paper"]["metrics"], PROTOCOL_KEYS["paper"] + SHARED_KEYS)
    assert table.splitlines()[0].split() == ["psnr", "ssim", "lpips", "rfid", "inception_score"]
    assert table.splitlines()[2].split() == ["revq"] + [f"{revq_scores[key]:.4f}" for key in
                                                        ("psnr", "ssim", "lpips", "rfid", "inception_score")]


def test_limit_takes_the_first_images_and_the_vae_alone_needs_no_model(folder, tiny_vae):
    limited = evaluate_image_folder(folder, tiny_vae, _tiny_revq(), limit=2, batch_size=1, num_workers=0,
                                    lpips=False, inception=False, progress=False, protocols=("paper",))
    assert limited["num_images"] == 2 and list(limited["protocols"]) == ["paper"]
    assert set(limited["missing_metrics"]) == {"lpips", "rfid", "inception_score"}
    first_two = ImageFolderDataset(folder, size=16, check_files=False)
    originals = torch.stack([first_two.load_uint8(index) for index in range(2)]).float() / 255
    with torch.no_grad():
        pred = ((tiny_vae.decode(tiny_vae.encode(originals * 2 - 1).latent).sample + 1) / 2).clamp(0, 1)
    vae_alone = evaluate_image_folder(folder, tiny_vae, None, image_size=16, limit=2, num_workers=0, lpips=False,
                                      inception=False, progress=False)
    assert vae_alone["sources"] == ["vae"] and vae_alone["codes"] is None
    assert vae_alone["protocols"]["paper"]["metrics"]["vae"]["psnr"] == pytest.approx(
        float(paper_psnr(pred, originals).mean()), rel=1e-6)


def test_inputs_that_cannot_work_fail_at_once(folder, tiny_vae):
    with pytest.raises(ValueError, match="limit must be a positive"):
        evaluate_image_folder(folder, tiny_vae, limit=0)
    with pytest.raises(ValueError, match=r"give latents \(4, 16, 16\), but the model quantizes \(4, 8, 8\)"):
        evaluate_image_folder(folder, tiny_vae, _tiny_revq(), image_size=32)
    with pytest.raises(ValueError, match="protocols must be a non-empty subset"):
        Evaluator(protocols=("paper", "fancy"))
    with pytest.raises(ValueError, match="no images seen"):
        Evaluator().compute()


# ---- offline: no LPIPS / Inception weights, no torchvision ---------------------------------------------

def test_offline_psnr_ssim_are_computed_and_the_missing_metrics_say_where_the_weights_go(folder, tiny_vae, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no weights there
    lpips_net, inception_net, missing = perceptual_networks()
    assert lpips_net is None and inception_net is None
    assert set(missing) == {"lpips", "rfid", "inception_score"}
    assert "alexnet-owt-7be5be79.pth" in missing["lpips"] and str(tmp_path / "torch_home" / "hub" / "checkpoints") \
        in missing["lpips"]
    assert "weights-inception-2015-12-05-6726825d.pth" in missing["rfid"] and "rfid_weights=" in missing["rfid"]
    results = _evaluate(folder, tiny_vae, _tiny_revq(), lpips=True, inception=True, include_vae=False)
    assert set(results["missing_metrics"]) == {"lpips", "rfid", "inception_score"}
    scores = results["protocols"]["paper"]["metrics"]["revq"]
    assert set(scores) == {"psnr", "ssim"} and math.isfinite(scores["psnr"])
    assert set(results["protocols"]["standard"]["metrics"]["revq"]) == {"psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y"}


# ---- 2 gloo ranks == 1 rank ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_worker(rank: int, port: int, folder: str, vae_dir: str, model_dir: str, result_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        import warnings

        warnings.simplefilter("ignore")  # the corrupt file's warning, on the rank that reads it
        results = evaluate_image_folder(folder, load_vae(vae_dir), ReVQ.from_pretrained(model_dir), include_vae=True,
                                        batch_size=2, num_workers=0, lpips=MeanAbsDistance(),
                                        inception=TinyInception(), progress=False)
        Path(f"{result_path}.rank{rank}").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_give_the_results_of_one(folder, tiny_vae, tmp_path):
    tiny_vae.save_pretrained(tmp_path / "vae")
    _tiny_revq().save_pretrained(tmp_path / "model")
    vae, model = load_vae(tmp_path / "vae"), ReVQ.from_pretrained(tmp_path / "model")
    with pytest.warns(UserWarning, match="notes.txt"):
        single = _evaluate(folder, vae, model)
    mp.spawn(_rank_worker, args=(_free_port(), str(folder), str(tmp_path / "vae"), str(tmp_path / "model"),
                                 str(tmp_path / "result")), nprocs=2, join=True)
    ranks = [json.loads(Path(f"{tmp_path / 'result'}.rank{rank}").read_text()) for rank in range(2)]
    assert ranks[0] == ranks[1]  # every rank holds the reduced totals
    assert ranks[0]["world_size"] == 2 and single["world_size"] == 1
    for key in ("num_images", "skipped_files", "missing_metrics", "sources"):
        assert ranks[0][key] == single[key], key
    # Each rank decodes its own batches: convolutions over batches of other sizes may take other kernels, whose
    # float32 results differ in the last bits, and that moves a float32 SSIM by ~1e-6 relative (1.2e-6 seen on an
    # Intel AVX-512 CPU); a wrong reduction over ranks would be off by far more.
    for protocol in PROTOCOLS:
        for source, scores in single["protocols"][protocol]["metrics"].items():
            assert ranks[0]["protocols"][protocol]["metrics"][source] == pytest.approx(scores, rel=1e-5), source


# ---- the table and the command line ----------------------------------------------------------------------

def test_format_scores_aligns_the_columns_every_source_has():
    scores = {"vae": {"psnr": 31.5301, "ssim": 0.8571, "lpips": 0.05}, "revq": {"psnr": 28.71, "ssim": 0.81849}}
    table = format_scores(scores, ("psnr", "ssim", "lpips", "rfid"), digits=3)
    assert table.splitlines() == ["        psnr   ssim",
                                  "vae   31.530  0.857",
                                  "revq  28.710  0.818"]
    assert format_scores({"vae": {"a_long_name": 1.0}}, ["a_long_name"]).splitlines()[1] == "vae       1.0000"
    with pytest.raises(ValueError, match="no scores"):
        format_scores({}, ["psnr"])



def test_cli_writes_the_json_and_says_where_the_weights_go(folder, tiny_vae, tmp_path):
    tiny_vae.save_pretrained(tmp_path / "vae")
    _tiny_revq().save_pretrained(tmp_path / "model")
    output = tmp_path / "out" / "results.json"
    environment = {**os.environ, "TORCH_HOME": str(tmp_path / "torch_home"), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "revq_core.evaluate", "--model", str(tmp_path / "model"), "--vae", str(tmp_path / "vae"),
         "--data", str(folder), "--limit", "3", "--batch-size", "2", "--num-workers", "0", "--with-vae",
         "--output", str(output), "--no-progress", "--device", "cpu"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=environment, timeout=120)
    assert completed.returncode == 0, completed.stderr
    results = json.loads(output.read_text())
    assert results["num_images"] == 3 and results["limit"] == 3 and results["sources"] == ["vae", "revq"]
    assert [Path(item["path"]).name for item in results["skipped_files"]] == ["notes.txt"]
    assert results["protocols"]["paper"]["description"].startswith("the authors' computation")
    assert {"psnr", "ssim"} <= set(results["protocols"]["paper"]["metrics"]["revq"])
    assert {"psnr_y", "ssim_rgb"} <= set(results["protocols"]["standard"]["metrics"]["vae"])
    assert set(results["missing_metrics"]) == {"lpips", "rfid", "inception_score"}
    model_hashes = results["weights_sha256"]["model"]
    assert model_hashes["model.safetensors"] == sha256_of_file(tmp_path / "model" / "model.safetensors")
    assert results["software"]["torch"] in (torch.__version__, torch.__version__.split("+")[0])
    assert "revq_core.evaluate" in results["command"]
    lines = completed.stdout.splitlines()  # a table per protocol, each headed by its protocol and what it measures
    paper = lines.index(next(line for line in lines if line.startswith("paper protocol (3 images): the authors'")))
    assert "red channel" in lines[paper] and "YIQ luma" in lines[paper]
    assert lines[paper + 1].split() == ["psnr", "ssim"] and lines[paper + 2].split()[0] == "vae"
    assert lines[paper + 3].split() == ["revq"] + [f"{results['protocols']['paper']['metrics']['revq'][key]:.4f}"
                                                   for key in ("psnr", "ssim")]
    assert lines[paper + 4].startswith("standard protocol (3 images): PSNR and SSIM on RGB")
    assert lines[paper + 5].split() == ["psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y"]
    assert "lpips not computed" in completed.stdout and "--lpips-weights" in completed.stdout
    assert "hub/checkpoints/alexnet-owt-7be5be79.pth" in completed.stdout
    assert f"wrote {output}" in completed.stdout


# ---- the real networks at random weights (only where torchvision and torch-fidelity import) ---------------

def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # ImportError, or RuntimeError from a torchvision that does not match torch
        return False


@pytest.mark.skipif(not (_importable("torchvision") and _importable("torch_fidelity")),
                    reason="needs an importable torchvision and torch-fidelity")
def test_real_networks_plumbing_with_random_weights(tmp_path, monkeypatch):
    import torchvision
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity

    from revq_core.evaluation import metrics

    with monkeypatch.context() as patch:  # torch-fidelity's Inception at random weights, no download
        patch.setattr(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *args, **kwargs: None)
        torch.manual_seed(0)
        random_inception = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(random_inception.state_dict(), tmp_path / metrics.INCEPTION_WEIGHTS)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / metrics.ALEXNET_WEIGHTS)
    lpips_net, inception_net, missing = perceptual_networks(lpips_weights=tmp_path / metrics.ALEXNET_WEIGHTS,
                                                            rfid_weights=tmp_path / metrics.INCEPTION_WEIGHTS)
    assert missing == {}
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    features, logits = inception_net(images)
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    evaluator = Evaluator(("revq",), lpips=lpips_net)  # the 2048-d Frechet distance takes ~40 s on a CPU: not here
    originals = images.float() / 255
    evaluator.update(originals, {"revq": originals})
    assert evaluator.compute()["protocols"]["paper"]["revq"]["lpips"] == pytest.approx(0.0, abs=1e-6)
