"""The folder source: root/{train,test}/<class>/*.png|.jpg listed and checked, decoded once, cached as uint8.

The data's identity is its files' bytes: when the cache is built, every image file is hashed (sha256
of each file's class, name and bytes: about 1 s for CIFAR-10's 60k files, against minutes of decoding).
The cache (`.{split}-uint8-v2.npz` beside the images; under the user cache folder when the data folder
cannot be written) keeps that content digest beside the decoded arrays, under a key made of what `stat`
tells of every file: path, size, mtime, ctime and inode. Tools that copy pixels with old names, sizes
and times (`rsync -a`, `cp -p`, `tar x`) cannot set a file's ctime or keep its inode, so a matching key
is the cheap check that the files are the ones hashed. A key that differs costs one rehash: the same
bytes keep the cache (re-keyed), other bytes rebuild it. A cache that does not read back as (N, 3, 32,
32) uint8 images with the listing's N labels is rebuilt too, each with one log line; a cache that cannot
be written costs a warning, never the run.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import signal
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from kd_lightning.run.files import atomic_path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SUPPORTED = ", ".join(IMAGE_SUFFIXES)
# image types a class folder may hold by mistake: refused by name, never skipped in silence
OTHER_IMAGE_SUFFIXES = frozenset(
    ".webp .bmp .gif .tif .tiff .ppm .pgm .pbm .pnm .heic .heif .avif .jxl .jp2 .ico .tga".split()
)
IMAGE_SHAPE = (3, 32, 32)
CACHE_VERSION = 2
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent ends


class DataError(ValueError):
    """A data problem the user can fix (missing folder, unreadable file, impossible subset)."""


def digest(*arrays: np.ndarray | torch.Tensor) -> str:
    """sha256 (hex) of the dtype, shape and bytes of each array or tensor.

    sha256 rather than blake2b: with the CPU's SHA extensions it hashes ~1.8 GB/s against ~1.3 GB/s,
    so CIFAR-10's 60k images (184 MB) take about 0.1 s.
    """
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().contiguous().numpy()
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a)
    return h.hexdigest()


# ----------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class Listing:
    """One split folder as found on disk: sorted class names, image files with their labels, the cache key."""

    root: Path
    split: str
    classes: list[str]
    files: list[str]
    labels: list[int]
    key: str  # digest of every image's path (relative to the split folder), size, mtime, ctime and inode


def _visible(folder: Path) -> list[os.DirEntry]:
    """The entries of `folder` in name order, hidden ones (.DS_Store, ._x.jpg, .ipynb_checkpoints) left out."""
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _check_class_folder(root: Path, folder: str, n_images: int, others: Counter) -> None:
    if not n_images and not others:
        raise DataError(f"data.root={root}: {folder} holds no images; every class folder needs {SUPPORTED} images")
    if others:
        types = " and ".join(f"{n} {suffix}" for suffix, n in sorted(others.items()))
        beside = f"beside {n_images} supported images" if n_images else "and no supported image"
        raise DataError(
            f"data.root={root}: {folder} holds {types} file{'s' if sum(others.values()) > 1 else ''} {beside}; "
            f"the supported image types are {SUPPORTED}, so convert those files or move them out"
        )


def list_split(root: Path, split: str) -> Listing:
    """The images of root/split/<class>/; DataError for a missing split, an empty or wrongly typed class folder."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(
            f"data.root={root} has no '{split}/' folder; data.source=folder expects "
            f"{root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg"
        )
    entries = _visible(split_dir)
    classes = [e.name for e in entries if e.is_dir()]
    stray = [f"{split}/{e.name}" for e in entries if not e.is_dir()]
    if not classes:
        raise DataError(
            f"data.root={root}: '{split}/' holds no class folders; data.source=folder expects "
            f"{split}/<class>/ folders of {SUPPORTED} images"
        )
    key = hashlib.sha256(f"kd-lightning image cache v{CACHE_VERSION} stat\0{split}\0".encode())
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        images, others = [], Counter()
        for e in _visible(split_dir / name):
            suffix = os.path.splitext(e.name)[1].lower()
            if suffix in IMAGE_SUFFIXES and e.is_file():
                images.append(e)
            elif suffix in OTHER_IMAGE_SUFFIXES:
                others[suffix] += 1
            else:
                stray.append(f"{split}/{name}/{e.name}")
        _check_class_folder(root, f"{split}/{name}/", len(images), others)
        key.update(f"class\0{name}\0".encode("utf-8", "surrogateescape"))
        for e in images:
            st = e.stat()
            stamp = f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}"
            key.update(f"file\0{name}/{e.name}\0{stamp}\0".encode("utf-8", "surrogateescape"))
        files += [e.path for e in images]
        labels += [label] * len(images)
    if stray:
        few = ", ".join(stray[:3]) + (", ..." if len(stray) > 3 else "")
        entries = "entry" if len(stray) == 1 else "entries"
        log.warning(
            "data.root=%s: ignoring %d %s that are not %s images: %s", root, len(stray), entries, SUPPORTED, few
        )
    return Listing(root, split, classes, files, labels, key.hexdigest())


# ----------------------------------------------------------------------------- decoding and the cache


class FolderImages(NamedTuple):
    images: torch.Tensor  # uint8 (N, 3, 32, 32)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]
    digest: str  # content_digest of the files: their bytes, computed when the cache is built


def content_digest(listing: Listing) -> str:
    """sha256 (hex) of every image file's class, name and bytes, in the listing's order: the data as its files
    hold it, whatever their times say."""
    h = hashlib.sha256(f"kd-lightning image files\0{listing.split}\0".encode())
    split_dir = listing.root / listing.split
    for path, label in zip(listing.files, listing.labels):
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise DataError(f"cannot read image file {path}: {err.strerror or err}") from None
        name = os.path.relpath(path, split_dir)
        h.update(f"{label}\0{name}\0{len(data)}\0".encode("utf-8", "surrogateescape"))
        h.update(data)
    return h.hexdigest()


class _Unusable(Exception):
    """Why a cache file cannot be used; the level it is reported at when the images are decoded again."""

    def __init__(self, reason: str, level: int = logging.WARNING):
        super().__init__(reason)
        self.level = level


def _decode(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as err:  # PIL raises several types for a bad file
        raise DataError(f"cannot read image file {path}: {err}") from None
    if arr.shape != (32, 32, 3):
        raise DataError(f"image file {path} is {arr.shape[1]}x{arr.shape[0]}; CIFAR-10 images must be 32x32")
    return arr


def _die_with(parent: int) -> None:
    """In a decode worker: be killed when the process that started it ends, however it ends (SIGKILL included),
    so no worker outlives a killed run. Linux's PR_SET_PDEATHSIG; elsewhere the pool's own shutdown."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the line above
        os._exit(1)


def _decode_all(files: list[str], workers: int) -> np.ndarray:
    if workers > 0:
        with ProcessPoolExecutor(workers, initializer=_die_with, initargs=(os.getpid(),)) as pool:
            arrays = list(pool.map(_decode, files, chunksize=512))
    else:
        arrays = [_decode(f) for f in files]
    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))  # (N, 3, 32, 32)


def cache_paths(root: Path, split: str) -> tuple[Path, Path]:
    """Where the cache of root/split may live: beside the images, else in the user cache folder.

    The user cache file carries a hash of the root's absolute path, so two data roots never share one.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    user = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    absolute = root.resolve()
    tag = hashlib.sha256(str(absolute).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    name = f"{split}-uint8-v{CACHE_VERSION}.npz"
    return root / f".{name}", user / "kd-lightning" / f"{absolute.name}-{tag}-{name}"


def _read_cache(path: Path, listing: Listing) -> tuple[FolderImages, str]:
    """The cached arrays with their content digest, and the key they were stored under; _Unusable saying why they
    cannot be the listing's images."""
    try:
        with np.load(path) as z:
            if "content" not in z.files:
                raise _Unusable("of an older format", logging.INFO)
            key, images, labels, content = str(z["key"]), z["images"], z["labels"], str(z["content"])
    except _Unusable:
        raise
    except Exception as err:  # truncated, garbage or empty: BadZipFile, EOFError, ValueError, OSError, KeyError...
        raise _Unusable(f"unreadable ({type(err).__name__}: {err})") from None
    want = (len(listing.files), *IMAGE_SHAPE)
    if images.dtype != np.uint8 or images.shape != want:
        raise _Unusable(f"invalid (its images are {images.dtype} {images.shape}, not uint8 {want})")
    if labels.dtype != np.int64 or not np.array_equal(labels, listing.labels):
        raise _Unusable(f"invalid (its {len(labels)} labels do not match the {want[0]} images' class folders)")
    return FolderImages(torch.from_numpy(images), torch.from_numpy(labels), listing.classes, content), key


def _write_cache(paths: tuple[Path, ...], listing: Listing, found: FolderImages) -> None:
    """Write the cache to the first of `paths` that takes it; a warning (never an error) when none does."""
    errors = []
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(
                    f,
                    key=np.asarray(listing.key),
                    images=found.images.numpy(),
                    labels=found.labels.numpy(),
                    classes=np.asarray(found.classes),
                    content=np.asarray(found.digest),
                )
        except OSError as err:
            errors.append(f"{path}: {err.strerror or err}")
            continue
        if errors:
            log.info("the data folder cannot hold the image cache (%s); it is kept in %s instead", errors[0], path)
        return
    log.warning("could not write the image cache (%s); the next start decodes again", "; ".join(errors))


def load_listing(listing: Listing, workers: int = 0) -> FolderImages:
    """The listing's images from a valid cache, else decoded (one log line saying why) and cached.

    A cache whose key matches is read in silence; one whose key differs is kept when the files' bytes are the ones
    it was built from (re-keyed), and rebuilt when they are not."""
    paths = cache_paths(listing.root, listing.split)
    why: _Unusable | None = None
    content: str | None = None  # the files' digest, computed at most once
    for path in paths:
        if not path.is_file():
            continue
        try:
            found, key = _read_cache(path, listing)
        except _Unusable as err:
            why = why or _Unusable(f"image cache {path} is {err}; decoding", err.level)
            continue
        if key == listing.key:
            return found
        content = content or content_digest(listing)
        if found.digest == content:
            log.info("image cache %s: the files' times changed, their bytes did not; the cache is kept", path)
            _write_cache((path,), listing, found)
            return found
        stale = "stale (the files' bytes changed since it was written); decoding"
        why = why or _Unusable(f"image cache {path} is {stale}", logging.INFO)
    split_dir = listing.root / listing.split
    if why is None:
        log.info("decoding %d images under %s (once; later starts read the cache)", len(listing.files), split_dir)
    else:
        log.log(why.level, "%s %d images under %s again", why, len(listing.files), split_dir)
    content = content or content_digest(listing)
    images = _decode_all(listing.files, workers)
    labels = np.asarray(listing.labels, dtype=np.int64)
    found = FolderImages(torch.from_numpy(images), torch.from_numpy(labels), listing.classes, content)
    _write_cache(paths, listing, found)
    return found


def load_folder(root: Path, split: str, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """ImageFolder layout root/split/<class>/*: (uint8 images, int64 labels, class names); decoded once, then cached."""
    found = load_listing(list_split(Path(root), split), workers)
    return found.images, found.labels, found.classes
