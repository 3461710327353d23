"""The embedded photo set: deterministic crops, splits disjoint by source photo, and the image-folder loader."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from revq_core.data.images import ImageFolderDataset
from revq_core.data.photos import PHOTO_SOURCES, SPLIT_SCENES, build_photo_dataset, load_photo, photo_sources


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REVQ_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_every_source_photo_is_bundled_and_colour():
    for source in PHOTO_SOURCES:
        photo = load_photo(source)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3, source.name
        assert min(photo.shape[:2]) >= 256, f"{source.name} is too small for the largest crop scale"


def test_splits_are_disjoint_by_source_photo_and_scene():
    names = {split: {source.name for source in photo_sources(split)} for split in SPLIT_SCENES}
    scenes = {split: {source.scene for source in photo_sources(split)} for split in SPLIT_SCENES}
    assert names["train"].isdisjoint(names["val"] | names["test"]) and names["val"].isdisjoint(names["test"])
    assert scenes["train"].isdisjoint(scenes["val"] | scenes["test"]) and scenes["val"].isdisjoint(scenes["test"])
    assert set().union(*names.values()) == {source.name for source in PHOTO_SOURCES}  # every photo is used


def test_builder_is_deterministic_and_in_range(tmp_cache):
    first = build_photo_dataset("val", 48, seed=3, use_cache=False)
    second = build_photo_dataset("val", 48, seed=3, use_cache=False)
    other_seed = build_photo_dataset("val", 48, seed=4, use_cache=False)
    assert first.shape == (48, 3, 128, 128) and first.dtype == torch.float32  # the default: corpus v2, 128 px
    assert torch.equal(first, second)
    assert not torch.equal(first, other_seed)
    assert first.min() >= -1 and first.max() <= 1 and first.std() > 0.1
    assert build_photo_dataset("val", 4, corpus="v1", use_cache=False).shape == (4, 3, 64, 64)


def test_cache_round_trip(tmp_cache):
    built = build_photo_dataset("test", 20, seed=0, as_uint8=True)
    assert len(list(tmp_cache.glob("photos_v2_test_*.npy"))) == 1
    cached = build_photo_dataset("test", 20, seed=0, as_uint8=True)
    assert built.dtype == torch.uint8 and torch.equal(built, cached)


def _contains_patch(photo: np.ndarray, patch: np.ndarray) -> bool:
    """True if ``patch`` (h, w, 3) occurs verbatim in ``photo`` (H, W, 3)."""
    height, width = patch.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(photo[:, :, 0], width, axis=1)  # (H, W - w + 1, w)
    for top, left in zip(*np.nonzero((windows == patch[0, :, 0]).all(-1))):
        if top + height <= photo.shape[0] and np.array_equal(photo[top:top + height, left:left + width], patch):
            return True
    return False


def test_held_out_crops_are_cut_from_held_out_photos_only(tmp_cache):
    """Unscaled, unflipped validation crops are found verbatim in the validation photo and in no training photo."""
    crops = build_photo_dataset("val", 3, seed=0, scales=(64,), flip=False, as_uint8=True, use_cache=False, corpus="v1")
    val_photo = load_photo(photo_sources("val")[0])
    train_photos = [load_photo(source) for source in photo_sources("train")]
    for crop in crops:
        patch = crop.permute(1, 2, 0).numpy()
        assert _contains_patch(val_photo, patch)
        assert not any(_contains_patch(photo, patch) for photo in train_photos)


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="Unknown split"):
        build_photo_dataset("training", 4)
    with pytest.raises(ValueError, match="positive"):
        build_photo_dataset("val", 0)


def test_image_folder_skips_bad_files_with_a_warning(tmp_path):
    root = tmp_path / "imagenet"
    for label, colour in (("n01", (255, 0, 0)), ("n02", (0, 0, 255))):
        (root / label).mkdir(parents=True)
        Image.new("RGB", (320, 240), colour).save(root / label / "good.JPEG")
    Image.new("L", (100, 300), 128).save(root / "n02" / "grey.png")
    (root / "n01" / "notes.txt").write_text("not an image")
    (root / "n02" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg body")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = ImageFolderDataset(root, size=64)
    messages = " ".join(str(warning.message) for warning in caught)
    assert "notes.txt" in messages and "corrupt.jpg" in messages
    assert len(dataset) == 3 and dataset.classes == ["n01", "n02"]

    loader = torch.utils.data.DataLoader(dataset, batch_size=3)
    images, labels = next(iter(loader))
    assert images.shape == (3, 3, 64, 64) and labels.tolist() == [0, 1, 1]
    assert images.min() >= -1 and images.max() <= 1
    red = images[labels == 0][0]
    assert red[0].mean() > 0.99 and red[2].mean() < -0.99  # RGB order and [-1, 1] scaling


def test_image_folder_missing_root_says_what_layout_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageNet"):
        ImageFolderDataset(tmp_path / "missing")


def test_photos_command_builds_the_default_corpus_and_lists_its_sources(tmp_cache, capsys):
    from revq_core.data.photos import main

    main(["build", "--num-train", "6", "--num-val", "3", "--num-test", "3"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("train: (6, 3, 128, 128) uint8 from 69 photos of the corpus v2")
    assert printed[2].startswith("test : (3, 3, 128, 128) uint8 from 14 photos")
    main(["sources"])
    manifest = capsys.readouterr().out.splitlines()
    assert manifest[0].startswith("file,split,package") and len(manifest) == 1 + 97
    main(["sources", "--corpus", "v1"])
    assert "grace_hopper" in capsys.readouterr().out
