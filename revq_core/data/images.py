"""Images from disk: an ImageNet-layout folder, the paper's resize-and-centre-crop, PIL -> tensor, and the image
files a command line names (``find_images``, read in batches by ``image_batches``).

Images returned by this module are float32 tensors in [-1, 1], shape (3, H, W) per image.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from revq_core.data.photos import uint8_to_float
from revq_core.utils.checks import first_line

# ---------------------------------------------------------------------------------------------
# ImageNet-layout folder
# ---------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".gif")
# PIL modes of more than 8 bits per value (single channel): 16-bit PNG/TIFF ("I;16*"; some open as 32-bit "I")
# and 32-bit float TIFF ("F"). ``convert("RGB")`` would clip their values to 0..255 (black or white).
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def image_to_unit_float(image: Image.Image) -> Image.Image:
    """A high-bit-depth grayscale PIL image (``HIGH_BIT_DEPTH_MODES``) -> mode "F" image with values in [0, 1].

    Integer modes ("I;16*", "I") are 16-bit data: divided by 65535. Float images ("F") are taken as
    already in [0, 1] when their maximum is at most 1, else divided by their maximum. Values below 0
    (or above 1 after scaling) are clipped.
    """
    values = np.asarray(image, dtype=np.float64)  # (H, W)
    if image.mode == "F":
        peak = float(values.max()) if values.size else 0.0
        scale = peak if peak > 1.0 else 1.0
    else:
        scale = 65535.0
    return Image.fromarray((values / scale).clip(0.0, 1.0).astype(np.float32))  # 2-D float32: mode "F"


def pil_to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """Any PIL image -> float32 (3, size, size) in [-1, 1] (short side resized to ``size``, centre crop).

    8-bit images go through RGB (grayscale, palette and alpha images included); 16-bit and float
    grayscale images (``HIGH_BIT_DEPTH_MODES``) keep their full range (``image_to_unit_float``) and are
    repeated over the three channels.
    """
    if image.mode in HIGH_BIT_DEPTH_MODES:
        gray = np.asarray(resize_center_crop(image_to_unit_float(image), size), dtype=np.float32)  # (size, size)
        unit = torch.from_numpy(gray.clip(0.0, 1.0))  # resampling keeps [0, 1] up to float rounding: clip
        return (unit * 2.0 - 1.0).expand(3, -1, -1).contiguous()
    array = np.asarray(resize_center_crop(image.convert("RGB"), size)).transpose(2, 0, 1)  # (3, size, size) uint8
    return uint8_to_float(array[None])[0]


def is_hidden(path: Path) -> bool:
    """True if any part of ``path`` starts with '.' (``.ipynb_checkpoints/x.png``, ``.DS_Store``, ``._x.JPEG``):
    never data. Pass paths relative to the folder searched (its own parents may be hidden)."""
    return any(part.startswith(".") and part not in (".", "..") for part in Path(path).parts)


def open_image(path: Path) -> Image.Image:
    """``PIL.Image.open(path)``; an image whose header claims more pixels than PIL's bomb limit raises an
    ``ImageInputError`` naming the file and its claimed size (PIL's own error names neither)."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError as error:
        raise ImageInputError(f"{path} claims more pixels than PIL's limit of {2 * Image.MAX_IMAGE_PIXELS:,} "
                              f"({first_line(error)}): a damaged or hostile file; remove it, or raise "
                              f"PIL.Image.MAX_IMAGE_PIXELS if the image is real.") from None


def image_files(folder: Path) -> list[Path]:
    """The image files (by extension) under ``folder``, recursively and sorted, hidden files and folders skipped."""
    return sorted(file for file in folder.rglob("*") if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS
                  and not is_hidden(file.relative_to(folder)))


def resize_center_crop(image: Image.Image, size: int = 256) -> Image.Image:
    """The paper's preprocessing: short side resized to ``size`` (bilinear, antialiased), centre ``size x size`` crop.

    The one function behind the ImageNet path: latent encoding (``ImageFolderDataset``,
    ``encode_image_folder``, ``encode_to_cache``) and evaluation (``revq_core.evaluate``). It computes what
    the authors' ``Resize(256)`` + ``CenterCrop(256)`` (torchvision, on PIL images) compute, without
    torchvision: the long side becomes ``int(size * long / short)`` (truncated); PIL's own bilinear
    resize, which widens its filter by the reduction factor when shrinking (antialiasing; PIL's default
    ``reducing_gap=None``, no JPEG draft mode); an image already of that size is not resampled; the crop
    starts at ``round((side - size) / 2)`` (Python's round: halves to even). The embedded photo crops
    (``build_photo_dataset``) have their own bicubic crops and do not use it.
    """
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    new_width, new_height = (size, new_long) if width <= height else (new_long, size)
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    left, top = int(round((new_width - size) / 2.0)), int(round((new_height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images in ImageNet layout (``root/<class>/<image>``, or flat ``root/<image>``).

    Each item is ``(image, label)``: image float32 (3, size, size) in [-1, 1] (``resize_center_crop``: the
    paper's bilinear short-side resize and centre crop), label the index of its class folder (0 for a flat
    folder); ``load_uint8`` gives the same image as uint8, the exact 8-bit original evaluation compares with.
    Hidden files and folders (names starting with '.', e.g. ``.ipynb_checkpoints/``) are ignored. A class
    folder is read recursively (``cat/sub/x.png`` belongs to ``cat``); image files beside class folders
    (``root/x.png`` and ``root/cat/``) are refused, since neither layout would take them all.
    16-bit and float grayscale images keep their range (see ``pil_to_tensor``).
    Non-image files and images that cannot be opened are skipped with a warning naming the file,
    at construction (header check) or, for files that break while decoding, when read
    (the next readable image is returned instead), so a DataLoader worker never crashes on one bad file.
    ``skipped`` lists the (path, reason) of every file skipped at construction.
    """

    def __init__(self, root: str | os.PathLike, size: int = 256, check_files: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Image folder {self.root} does not exist. Point it at a directory in ImageNet "
                                    f"layout: root/<class>/<image>.JPEG (e.g. the ImageNet val set sorted by class).")
        self.size = size
        class_dirs = sorted(path for path in self.root.iterdir() if path.is_dir() and not is_hidden(Path(path.name)))
        self.classes = [path.name for path in class_dirs]
        candidates: list[tuple[Path, int]] = []
        if class_dirs:
            loose = sorted(path.name for path in self.root.iterdir() if path.is_file()
                           and not is_hidden(Path(path.name)) and path.suffix.lower() in IMAGE_EXTENSIONS)
            if loose:
                raise ValueError(f"{self.root} holds {len(loose)} image file(s) at its top level (e.g. {loose[0]}) "
                                 f"beside {len(class_dirs)} folder(s) (e.g. {class_dirs[0].name}/): use one layout, "
                                 f"every image in a class folder (root/<class>/<image>) or all of them flat in "
                                 f"root; move the top-level images into a folder, or the folders' images up.")
            for label, directory in enumerate(class_dirs):
                candidates += [(path, label) for path in sorted(directory.rglob("*"))
                               if path.is_file() and not is_hidden(path.relative_to(directory))]
        else:
            candidates = [(path, 0) for path in sorted(self.root.iterdir())
                          if path.is_file() and not is_hidden(Path(path.name))]
        self.samples: list[tuple[Path, int]] = []
        self.skipped: list[tuple[Path, str]] = []
        for path, label in candidates:
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                reason = f"not an image file (extension {path.suffix!r})"
            elif check_files and (problem := _header_problem(path)):
                reason = problem
            else:
                self.samples.append((path, label))
                continue
            self.skipped.append((path, reason))
            warnings.warn(f"Skipping {path}: {reason}.", stacklevel=2)
        if not self.samples:
            raise ValueError(f"No readable images in {self.root} (looked for {', '.join(IMAGE_EXTENSIONS)}).")

    def __len__(self) -> int:
        return len(self.samples)

    def content_key(self) -> str:
        """A short hash of what this dataset yields: the image size and each sample's path relative to the root,
        file size and label (a cache of its latents is keyed by it, with the VAE's digest; no file is read)."""
        digest = hashlib.sha1(f"size={self.size};resize_center_crop=bilinear".encode())
        for path, label in self.samples:
            digest.update(f"{path.relative_to(self.root).as_posix()}\0{path.stat().st_size}\0{label}\n".encode())
        return digest.hexdigest()[:16]

    def load(self, index: int) -> torch.Tensor:
        """The image at ``index`` as float32 (3, size, size) in [-1, 1]; raises OSError if it cannot be decoded."""
        path, _ = self.samples[index]
        with open_image(path) as image:
            return pil_to_tensor(image, self.size)

    def load_uint8(self, index: int) -> torch.Tensor:
        """The image at ``index`` as uint8 (3, size, size), RGB; raises OSError if it cannot be decoded.

        8-bit images are exactly the levels ``resize_center_crop`` produces (what the authors' ToTensor
        divides by 255); 16-bit and float grayscale images are rounded to 8 bits.
        """
        path, _ = self.samples[index]
        with open_image(path) as image:
            if image.mode in HIGH_BIT_DEPTH_MODES:
                unit = (pil_to_tensor(image, self.size) + 1.0) / 2.0
                return torch.round(unit.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
            array = np.asarray(resize_center_crop(image.convert("RGB"), self.size)).transpose(2, 0, 1)
            return torch.from_numpy(np.ascontiguousarray(array))  # (3, size, size) uint8

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for attempt in range(len(self.samples)):
            current = (index + attempt) % len(self.samples)
            try:
                return self.load(current), self.samples[current][1]
            except (OSError, ValueError, SyntaxError) as error:
                warnings.warn(f"Skipping {self.samples[current][0]}: cannot decode it ({error}); "
                              f"returning the next readable image instead.", stacklevel=2)
        raise RuntimeError(f"No image in {self.root} could be decoded.")


def _header_problem(path: Path) -> str | None:
    """None if PIL recognises ``path`` as an image and its header checks out, else why not."""
    try:
        with open_image(path) as image:
            image.verify()
        return None
    except ImageInputError as error:  # a decompression bomb: say so
        return str(error).removeprefix(f"{path} ")
    except Exception:  # PIL raises many types (UnidentifiedImageError, SyntaxError, struct.error, ...)
        return "PIL cannot read it as an image (corrupt or truncated)"


# ---------------------------------------------------------------------------------------------
# Image files named on a command line (``python -m revq_core.tokenize_images``), and back to PNG
# ---------------------------------------------------------------------------------------------


class ImageInputError(ValueError):
    """An input that is not an image file or a folder holding some, or two images of the same name."""


def find_images(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, Path]]:
    """[(name, path)] of the images to tokenize, in a stable order.

    A folder contributes its image files (by extension), recursively and sorted, named by their path
    relative to it; a file is named by its file name. Raises ImageInputError for a missing input, a
    folder without images, or two images of the same name.
    """
    found: list[tuple[str, Path]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files = image_files(path)
            if not files:
                raise ImageInputError(f"{path} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                                      f"point at a folder of images or at image files.")
            found += [(file.relative_to(path).as_posix(), file) for file in files]
        elif path.is_file():
            found.append((path.name, path))
        else:
            raise ImageInputError(f"{path} does not exist; pass image files or folders of images.")
    names = [name for name, _ in found]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ImageInputError(f"two inputs have the same name {duplicates[0]!r} (names identify images in the "
                              f"codes file); tokenize them separately or rename one.")
    return found


def read_image(path: Path, size: int) -> torch.Tensor:
    """One image file -> (3, size, size) float32 in [-1, 1] (short side resized to ``size``, centre crop)."""
    try:
        with open_image(path) as image:
            return pil_to_tensor(image, size)
    except ImageInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageInputError(f"{path} is not a readable image ({first_line(error)})") from None


class ImageBatch(NamedTuple):
    images: torch.Tensor  # (B, 3, size, size) float32 in [-1, 1]; B = 0 when every file of the chunk was skipped
    names: list[str]  # the B images' names
    skipped: list[tuple[str, str]]  # (name, why) of the unreadable files of the chunk (with skip_unreadable)


def image_batches(images: Sequence[tuple[str, Path]], size: int, batch_size: int,
                  skip_unreadable: bool = False) -> Iterator[ImageBatch]:
    """The images of ``find_images`` read in chunks of ``batch_size`` files, in order, one ImageBatch per chunk.

    An unreadable file raises ImageInputError, or with ``skip_unreadable`` is left out and reported in
    ``skipped``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    for start in range(0, len(images), batch_size):
        batch, names, skipped = [], [], []
        for name, path in images[start:start + batch_size]:
            try:
                batch.append(read_image(path, size))
                names.append(name)
            except ImageInputError as error:
                if not skip_unreadable:
                    raise ImageInputError(f"{error}; remove it or pass --skip-unreadable.") from None
                skipped.append((name, str(error)))
        yield ImageBatch(torch.stack(batch) if batch else torch.empty(0, 3, size, size), names, skipped)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """An image (3, H, W) in [-1, 1] (clamped) -> 8-bit RGB PIL image, each value rounded to the nearest level
    (as ``evaluation.metrics.to_uint8(to_unit_range(image))``)."""
    levels = (((image.detach().cpu().float() + 1.0) / 2.0).clamp(0.0, 1.0) * 255).round().to(torch.uint8)
    return Image.fromarray(levels.permute(1, 2, 0).numpy())  # (H, W, 3)

