"""The photo corpus v2 in data/photos/: manifest and files agree, splits disjoint by photo and diverse,
small RGB JPEGs, redistributable licences; and the rebuild script's cropping and downscaling rules."""
import collections
import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "data" / "photos"
SPLITS = ("train", "val", "test")
ALLOWED_LICENCES = {"public-domain", "CC0-1.0", "CC-BY-2.0", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-2.0", "CC-BY-SA-3.0",
                    "CC-BY-SA-4.0", "GPL-2.0-or-later", "GPL-3.0-or-later", "BSD-2-Clause", "BSD-3-Clause"}
SCENES_ON_EVERY_SIDE = {"people", "animal", "landscape", "object", "texture", "night", "indoor"}
MAX_TOTAL_BYTES = 20 * 2**20

_spec = importlib.util.spec_from_file_location("build_photo_corpus", REPO / "scripts" / "build_photo_corpus.py")
corpus = importlib.util.module_from_spec(_spec)
sys.modules["build_photo_corpus"] = corpus  # dataclasses look their module up there
_spec.loader.exec_module(corpus)


@pytest.fixture(scope="module")
def photos():
    return corpus.read_manifest(PHOTOS / "manifest.csv")


def test_manifest_and_files_agree(photos):
    listed = {photo.output_path for photo in photos}
    on_disk = {path.relative_to(PHOTOS) for split in SPLITS for path in (PHOTOS / split).iterdir()}
    assert len(listed) == len(photos), "a file is listed twice"
    assert on_disk == listed, f"not listed: {sorted(on_disk - listed)}; missing: {sorted(listed - on_disk)}"


def test_each_split_is_non_empty_and_diverse(photos):
    counts = collections.Counter(photo.split for photo in photos)
    assert len(photos) >= 40
    assert all(counts[split] > 0 for split in SPLITS), counts
    assert counts["train"] >= 0.6 * len(photos) and min(counts["val"], counts["test"]) >= 0.1 * len(photos), counts
    for split in SPLITS:
        tags = set().union(*(set(photo.tags.split()) for photo in photos if photo.split == split))
        assert SCENES_ON_EVERY_SIDE <= tags, f"{split} lacks {sorted(SCENES_ON_EVERY_SIDE - tags)}"


def test_no_photo_on_two_sides(photos):
    for key in ("file", "original_path", "sha256"):
        splits_of = collections.defaultdict(set)
        for photo in photos:
            splits_of[getattr(photo, key)].add(photo.split)
        shared = {value: sides for value, sides in splits_of.items() if len(sides) > 1}
        assert not shared, f"{key} in two splits: {shared}"
        assert len(splits_of) == len(photos), f"two rows share a {key}"


def test_images_are_small_rgb_jpegs(photos):
    total = 0
    for photo in photos:
        path = PHOTOS / photo.output_path
        total += path.stat().st_size
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB", photo.file
            assert 64 <= min(image.size) <= 512, f"{photo.file} is {image.size}"
    assert total <= MAX_TOTAL_BYTES, f"{total / 2**20:.1f} MiB"


def test_licences_are_redistributable_and_attributed(photos):
    for photo in photos:
        assert photo.licence in ALLOWED_LICENCES, f"{photo.file}: {photo.licence}"
        assert photo.author.strip() and photo.package and photo.version, photo.file
        assert len(photo.sha256) == 64 and photo.kind in ("deb", "pip"), photo.file


def _png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_prepare_photo_crops_inside_the_object_and_downscales():
    stamp = np.zeros((40, 60, 4), np.uint8)
    stamp[10:30, 5:55] = (200, 100, 50, 255)  # opaque object, transparent around it
    cropped, original_size = corpus.prepare_photo(_png_bytes(Image.fromarray(stamp)), (5, 10, 55, 30), "stamp")
    assert original_size == (60, 40) and cropped.mode == "RGB" and cropped.size == (50, 20)
    assert np.all(np.asarray(cropped) == (200, 100, 50))
    with pytest.raises(corpus.CorpusError, match="transparent pixels"):
        corpus.prepare_photo(_png_bytes(Image.fromarray(stamp)), (0, 10, 55, 30), "stamp")
    with pytest.raises(corpus.CorpusError, match="outside"):
        corpus.prepare_photo(_png_bytes(Image.fromarray(stamp)), (0, 0, 61, 30), "stamp")
    large, _ = corpus.prepare_photo(_png_bytes(Image.new("RGB", (1200, 900), (10, 20, 30))), None, "large")
    assert large.size == (683, 512)


def test_read_manifest_rejects_a_bad_row_in_one_line(tmp_path):
    bad = tmp_path / "manifest.csv"
    lines = (PHOTOS / "manifest.csv").read_text(encoding="utf-8").splitlines()
    bad.write_text("\n".join([lines[0], lines[1].replace(",train,", ",training,", 1)]) + "\n", encoding="utf-8")
    with pytest.raises(corpus.CorpusError, match="split must be one of") as error:
        corpus.read_manifest(bad)
    assert "\n" not in str(error.value)
