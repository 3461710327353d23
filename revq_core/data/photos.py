"""Image data: the embedded offline photo corpora, cut into seeded random crops.

Two corpora, both split by *source photo* (the validation and test photos are never cropped for training):

- ``v2`` (the default): 97 real photographs committed under ``data/photos/<split>/`` (source, author and
  licence of each in ``data/photos/manifest.csv``), cut into 128 x 128 crops: the embedded VAE v2 turns
  128 x 128 x 3 into a 32 x 8 x 8 latent.
- ``v1``: the 12 colour photographs that ship inside pip packages (scikit-image, matplotlib,
  scikit-learn), cut into 64 x 64 crops for the first embedded VAE (kept to reproduce earlier runs).

A seeded builder cuts random square crops at several scales from each photo, resizes them to
``size x size`` and flips half of them. Crops are cached as uint8 ``.npy`` under ``.cache/`` (or ``$REVQ_CACHE``).

    python -m revq_core.data.photos build            # build and cache train/val/test, print a summary

Images returned by this module are float32 tensors in [-1, 1], shape (N, 3, H, W).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from revq_core.utils.files import REPO_ROOT, atomic_write, cache_dir

# ---------------------------------------------------------------------------------------------
# Source photos
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoSource:
    """One photograph bundled in an installed pip package."""

    name: str  # short name used in splits and reports
    package: str  # pip package that ships the file
    relative_path: str  # path of the file inside the package
    scene: str  # photos of the same scene share a scene and always land in the same split
    licence: str  # licence as stated by the package


PHOTO_SOURCES: tuple[PhotoSource, ...] = (
    PhotoSource("astronaut", "scikit-image", "skimage/data/astronaut.png", "astronaut", "public domain (NASA)"),
    PhotoSource("chelsea", "scikit-image", "skimage/data/chelsea.png", "chelsea", "CC0 (Stefan van der Walt)"),
    PhotoSource("coffee", "scikit-image", "skimage/data/coffee.png", "coffee", "CC0 (Rachel Michetti)"),
    PhotoSource("hubble_deep_field", "scikit-image", "skimage/data/hubble_deep_field.jpg", "hubble",
                "public domain (NASA)"),
    PhotoSource("immunohistochemistry", "scikit-image", "skimage/data/ihc.png", "ihc",
                "no known copyright restrictions (CMMI)"),
    PhotoSource("motorcycle_left", "scikit-image", "skimage/data/motorcycle_left.png", "motorcycle",
                "Middlebury 2014 stereo benchmark, free for research use"),
    PhotoSource("motorcycle_right", "scikit-image", "skimage/data/motorcycle_right.png", "motorcycle",
                "Middlebury 2014 stereo benchmark, free for research use"),
    PhotoSource("retina", "scikit-image", "skimage/data/retina.jpg", "retina", "CC0 (Mikael Haggstrom)"),
    PhotoSource("rocket", "scikit-image", "skimage/data/rocket.jpg", "rocket", "public domain (SpaceX)"),
    PhotoSource("grace_hopper", "matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "grace_hopper",
                "public domain (US Navy)"),
    PhotoSource("china", "scikit-learn", "sklearn/datasets/images/china.jpg", "china",
                "CC BY 2.0 (danielbuechele, Flickr)"),
    PhotoSource("flower", "scikit-learn", "sklearn/datasets/images/flower.jpg", "flower",
                "CC BY 2.0 (vultilion, Flickr)"),
)

# Whole scenes held out: validation and test photos are never cropped for training.
SPLIT_SCENES: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "hubble", "ihc", "motorcycle", "retina", "rocket", "china", "flower"),
    "val": ("chelsea",),
    "test": ("coffee", "grace_hopper"),
}

# Crop sides in pixels of the source photo (capped at the photo's short side) of the corpus v1's 64 x 64 crops.
DEFAULT_CROP_SCALES: tuple[int, ...] = (64, 96, 128, 192, 256)


def _site_packages_root() -> Path:
    """Directory holding the installed packages (where ``skimage/`` and ``sklearn/`` live)."""
    import skimage

    return Path(skimage.__file__).resolve().parent.parent


def photo_sources(split: str) -> list[PhotoSource]:
    """The source photos of one split ("train", "val" or "test")."""
    if split not in SPLIT_SCENES:
        raise ValueError(f"Unknown split {split!r}; choose one of {sorted(SPLIT_SCENES)}.")
    scenes = SPLIT_SCENES[split]
    return [source for source in PHOTO_SOURCES if source.scene in scenes]


def load_photo(source: PhotoSource) -> np.ndarray:
    """Read one bundled photo as a uint8 array of shape (H, W, 3)."""
    import matplotlib
    import sklearn

    roots = {"scikit-image": _site_packages_root(), "matplotlib": Path(matplotlib.__file__).resolve().parent.parent,
             "scikit-learn": Path(sklearn.__file__).resolve().parent.parent}
    path = roots[source.package] / source.relative_path
    if not path.is_file():
        raise FileNotFoundError(f"Photo {source.name!r} not found at {path}. It ships with the pip package "
                                f"{source.package!r}; reinstall it with `pip install --force-reinstall {source.package}`.")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------------------------------------
# Crop builder
# ---------------------------------------------------------------------------------------------


# The photo corpus v2: real photographs committed under data/photos/<split>/*.jpg (listed with source,
# author and licence in data/photos/manifest.csv), used by the embedded default v2 (128 x 128 crops).
PHOTO_CORPUS_DIR = REPO_ROOT / "data" / "photos"
# Crop sides (source pixels, capped at the short side, <= 512 in the corpus) for 128 x 128 crops.
CORPUS_V2_CROP_SCALES: tuple[int, ...] = (128, 192, 256, 384, 512)


@dataclass(frozen=True)
class CorpusCrops:
    """How a corpus is cut by default: crop side, crop scales (source pixels), crops per split."""

    size: int
    scales: tuple[int, ...]
    num_crops: dict[str, int]


# v2's 8192 training crops (not 16384 as v1's) keep the main job within its CPU budget: a 128 x 128 crop
# costs ~7 ms to encode with the VAE v2 on 2 cores (batch 16), four times the pixels of a v1 crop (data/README.md).
CORPUS_CROPS: dict[str, CorpusCrops] = {
    "v1": CorpusCrops(64, DEFAULT_CROP_SCALES, {"train": 16384, "val": 1024, "test": 1024}),
    "v2": CorpusCrops(128, CORPUS_V2_CROP_SCALES, {"train": 8192, "val": 1024, "test": 1024}),
}
CORPUS_NAMES = tuple(CORPUS_CROPS)
DEFAULT_CORPUS = "v2"


def corpus_photo_paths(split: str) -> list[Path]:
    """The photo files of one split of the corpus v2 (``data/photos/<split>/*.jpg``), sorted by name."""
    if split not in SPLIT_SCENES:
        raise ValueError(f"Unknown split {split!r}; choose one of {sorted(SPLIT_SCENES)}.")
    paths = sorted((PHOTO_CORPUS_DIR / split).glob("*.jpg"))
    if not paths:
        raise FileNotFoundError(f"No photos in {PHOTO_CORPUS_DIR / split}: the corpus v2 ships with the repository; "
                                f"restore it with `git checkout -- data/photos` or rebuild it with "
                                f"`python scripts/build_photo_corpus.py`.")
    return paths


def load_corpus_photo(path: Path) -> np.ndarray:
    """Read one photo of the corpus v2 as a uint8 array of shape (H, W, 3)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _split_seed(split: str, seed: int) -> int:
    """A seed distinct for each split, so val/test crops do not follow the train crop positions."""
    return (seed * 1_000_003 + zlib.crc32(split.encode())) % (2**32)


def random_crops(photo: np.ndarray, num_crops: int, rng: np.random.Generator, size: int = 64,
                 scales: tuple[int, ...] = DEFAULT_CROP_SCALES, flip: bool = True) -> np.ndarray:
    """Cut ``num_crops`` random square crops from ``photo`` (H, W, 3) uint8.

    Each crop has a side drawn from ``scales`` (capped at the photo's short side), a uniform random
    position, an antialiased bicubic resize to ``size`` and, if ``flip``, a horizontal flip with
    probability 1/2. Returns uint8 of shape (num_crops, 3, size, size).
    """
    height, width = photo.shape[:2]
    image = Image.fromarray(photo)
    crops = np.empty((num_crops, 3, size, size), dtype=np.uint8)
    for index in range(num_crops):
        side = min(int(rng.choice(scales)), height, width)
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = image.crop((left, top, left + side, top + side))
        if side != size:
            crop = crop.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(crop)  # (size, size, 3)
        if flip and rng.random() < 0.5:
            array = array[:, ::-1]
        crops[index] = array.transpose(2, 0, 1)
    return crops


def uint8_to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 3, H, W) in [0, 255] -> float32 tensor in [-1, 1]."""
    tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
    return tensor.float().div_(127.5).sub_(1.0)


def _checked_crop_settings(split: str, num_crops: int | None, size: int | None, scales: tuple[int, ...] | None,
                           corpus: str) -> tuple[int, int, tuple[int, ...]]:
    """(num_crops, size, scales) with the corpus's defaults for the None ones; a clear error for an unknown
    corpus or split."""
    if corpus not in CORPUS_NAMES:
        raise ValueError(f"Unknown photo corpus {corpus!r}; choose one of {CORPUS_NAMES}.")
    if split not in SPLIT_SCENES:
        raise ValueError(f"Unknown split {split!r}; choose one of {sorted(SPLIT_SCENES)}.")
    defaults = CORPUS_CROPS[corpus]
    num_crops = defaults.num_crops[split] if num_crops is None else int(num_crops)
    return num_crops, defaults.size if size is None else size, defaults.scales if scales is None else scales


def _corpus_split(split: str, num_crops: int, seed: int, size: int, scales: tuple[int, ...], flip: bool,
                  corpus: str) -> tuple[list, str]:
    """A split's photo loaders and the key of its crops: a hash of every setting that makes
    them and, for the corpus v2, of the photo files' contents (an edited corpus never reuses stale crops)."""
    if corpus == "v1":
        sources = photo_sources(split)
        names = [source.name for source in sources]
        loaders = [lambda source=source: load_photo(source) for source in sources]
    else:
        paths = corpus_photo_paths(split)
        names, loaders = [path.name for path in paths], [lambda path=path: load_corpus_photo(path) for path in paths]
    settings = {"split": split, "num_crops": num_crops, "seed": seed, "size": size, "scales": list(scales),
                "flip": flip, "sources": names, "version": 1}
    if corpus == "v2":
        settings["corpus"] = hashlib.sha1(b"".join(path.read_bytes() for path in paths)).hexdigest()
    return loaders, hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def photo_crops_key(split: str = "train", num_crops: int | None = None, seed: int = 0,
                    corpus: str = DEFAULT_CORPUS) -> str:
    """The key of the crops ``build_photo_dataset(split, num_crops, seed, corpus=corpus)`` cuts with its default
    size, scales and flips (10 hex digits): equal keys, equal crops. Latents made from the crops record it."""
    num_crops, size, scales = _checked_crop_settings(split, num_crops, None, None, corpus)
    return _corpus_split(split, num_crops, seed, size, scales, True, corpus)[1]


def build_photo_dataset(split: str = "train", num_crops: int | None = None, seed: int = 0, size: int | None = None,
                        scales: tuple[int, ...] | None = None, flip: bool = True, as_uint8: bool = False,
                        use_cache: bool = True, progress: bool = False, corpus: str = DEFAULT_CORPUS) -> torch.Tensor:
    """Random crops of the embedded photos of one split, deterministic for a given seed.

    Args:
        split: "train", "val" or "test"; the split's photos are the files of ``data/photos/<split>/`` (corpus
            v2) or are listed in ``SPLIT_SCENES`` (corpus v1).
        num_crops: number of crops N (default: the corpus's, ``CORPUS_CROPS``: v2 8192 / 1024 / 1024 for
            train / val / test, v1 16384 / 1024 / 1024), spread evenly over the split's photos.
        seed: the same seed and arguments give the same crops, bit for bit.
        size: side of the returned crops in pixels (default: the corpus's, v2 128, v1 64).
        scales: crop sides in source pixels, one drawn per crop (default: the corpus's).
        flip: horizontal flips as augmentation.
        as_uint8: return the uint8 crops (4x less memory) instead of float in [-1, 1].
        use_cache: read/write the crops as ``.npy`` under ``cache_dir()``.
        corpus: "v2" (the 97 photos of ``data/photos/``, the default) or "v1" (12 photos bundled in pip packages).

    Returns:
        Tensor (N, 3, size, size): float32 in [-1, 1], or uint8 if ``as_uint8``.
    """
    num_crops, size, scales = _checked_crop_settings(split, num_crops, size, scales, corpus)
    if num_crops <= 0:
        raise ValueError(f"num_crops must be positive, got {num_crops}.")
    if size <= 0 or not scales or min(scales) <= 0:
        raise ValueError(f"size and every crop scale must be positive, got size={size}, scales={scales}.")
    loaders, key = _corpus_split(split, num_crops, seed, size, scales, flip, corpus)
    prefix = "photos" if corpus == "v1" else "photos_v2"
    cache_path = cache_dir() / f"{prefix}_{split}_{num_crops}x{size}_seed{seed}_{key}.npy"

    if use_cache and cache_path.is_file():
        crops = np.load(cache_path)
    else:
        rng = np.random.default_rng(_split_seed(split, seed))
        counts = np.full(len(loaders), num_crops // len(loaders))
        counts[: num_crops % len(loaders)] += 1
        parts = [random_crops(load(), int(count), rng, size, scales, flip)
                 for load, count in tqdm(list(zip(loaders, counts)), desc=f"crops {split}", disable=not progress)
                 if count > 0]
        crops = np.concatenate(parts)
        crops = crops[rng.permutation(len(crops))]  # mix photos so any prefix is a fair sample
        if use_cache:
            atomic_write(cache_path, lambda file: np.save(file, crops))
    tensor = torch.from_numpy(np.ascontiguousarray(crops))
    return tensor if as_uint8 else uint8_to_float(tensor)


# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m revq_core.data.photos", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build and cache the photo crops of every split")
    build.add_argument("--corpus", choices=CORPUS_NAMES, default=DEFAULT_CORPUS)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--size", type=int, default=None, help="crop side (default: the corpus's, v2 128, v1 64)")
    for split in SPLIT_SCENES:
        build.add_argument(f"--num-{split}", type=int, default=None,
                           help=f"crops in the {split} split (default: the corpus's, v2 "
                                f"{CORPUS_CROPS['v2'].num_crops[split]})")
    sources = sub.add_parser("sources", help="list the source photos, their split and licence")
    sources.add_argument("--corpus", choices=CORPUS_NAMES, default=DEFAULT_CORPUS)
    args = parser.parse_args(argv)

    if args.command == "sources":
        if args.corpus == "v2":
            print((PHOTO_CORPUS_DIR / "manifest.csv").read_text(), end="")
            return
        for split in SPLIT_SCENES:
            for source in photo_sources(split):
                print(f"{split:5s}  {source.name:22s} {source.package:13s} {source.licence}")
        return
    for split in SPLIT_SCENES:
        crops = build_photo_dataset(split, getattr(args, f"num_{split}"), seed=args.seed, size=args.size,
                                    as_uint8=True, progress=True, corpus=args.corpus)
        photos = (len(corpus_photo_paths(split)) if args.corpus == "v2" else len(photo_sources(split)))
        print(f"{split:5s}: {tuple(crops.shape)} uint8 from {photos} photos of the corpus {args.corpus}  -> {cache_dir()}")


if __name__ == "__main__":
    main()
