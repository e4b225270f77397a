"""Data faults: a stale or broken image cache, an unwritable data folder, a wrong folder layout, impossible sizes.

Each is either survived (rebuilt with one log line, cached elsewhere) or refused with one DataError sentence;
and the content id tells data apart by its files' bytes (folder) or its pixels and labels (the other sources).
"""

import errno
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kd_lightning import images
from kd_lightning.data import CLASSES, CIFAR10DataModule, DataError, load_folder, split_indices
from kd_lightning.images import cache_paths

OLD = 1_600_000_000  # the images' mtime: an unpacked archive's, so a file rewritten now always differs


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """The user cache folder, inside tmp_path: no test writes under ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "kd-lightning"


def save(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path)
    os.utime(path, (OLD, OLD))


def make_folder(root: Path, classes=CLASSES, n=2, splits=("train", "test")) -> Path:
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                save(root / split / c / f"{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return root


def data_lines(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name in ("kd_lightning.data", "kd_lightning.images") and r.levelno >= logging.INFO
    ]


def forbid_decoding(monkeypatch) -> None:
    monkeypatch.setattr(images, "_decode", lambda path: pytest.fail(f"decoded {path}: the cache was not used"))


def folder_content_id(root: Path) -> str:
    dm = CIFAR10DataModule("folder", str(root))
    dm.setup()
    return dm.content_id


@contextmanager
def _refusing(path: Path):
    raise PermissionError(errno.EACCES, "Permission denied", str(path))
    yield path  # pragma: no cover


# ----------------------------------------------------------------------------- the image cache


def test_replacing_every_image_of_a_class_rebuilds_the_cache_and_uses_the_new_pixels(tmp_path, caplog):
    root = make_folder(tmp_path / "data", classes=("cat", "dog"), n=3)
    old_x, _, _ = load_folder(root, "train")
    new = np.full((32, 32, 3), 7, np.uint8)
    for path in (root / "train" / "cat").iterdir():  # same names, same count, same sizes: new pixels
        Image.fromarray(new).save(path)
    caplog.set_level(logging.INFO)
    x, _, _ = load_folder(root, "train")
    assert torch.equal(x[:3], torch.from_numpy(new).permute(2, 0, 1).expand(3, 3, 32, 32))
    assert torch.equal(x[3:], old_x[3:])
    [line] = data_lines(caplog)
    assert f"image cache {root / '.train-uint8-v2.npz'} is stale" in line.getMessage()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: np.random.default_rng(0).bytes(len(data)), id="garbage"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_broken_cache_file_is_rebuilt_with_one_log_line(tmp_path, caplog, damage):
    root = make_folder(tmp_path / "data", classes=("cat", "dog"))
    want, _, _ = load_folder(root, "train")
    cache = root / ".train-uint8-v2.npz"
    cache.write_bytes(damage(cache.read_bytes()))
    caplog.set_level(logging.INFO)
    x, _, _ = load_folder(root, "train")
    assert torch.equal(x, want)
    [line] = data_lines(caplog)
    assert f"image cache {cache} is unreadable (" in line.getMessage() and line.exc_info is None
    caplog.clear()
    load_folder(root, "train")  # rebuilt: read back in silence
    assert data_lines(caplog) == []


def test_cache_with_the_right_key_but_wrong_arrays_is_rebuilt(tmp_path, caplog, monkeypatch):
    root = make_folder(tmp_path / "data", classes=("cat", "dog"))
    want, _, _ = load_folder(root, "train")
    cache = root / ".train-uint8-v2.npz"
    with np.load(cache) as z:
        parts = dict(z)
    parts["images"] = parts["images"][:, :, :16]  # (N, 3, 16, 32)
    with open(cache, "wb") as f:
        np.savez(f, **parts)
    caplog.set_level(logging.INFO)
    assert torch.equal(load_folder(root, "train")[0], want)
    [line] = data_lines(caplog)
    assert "is invalid (its images are uint8 (4, 3, 16, 32), not uint8 (4, 3, 32, 32))" in line.getMessage()


def test_old_cache_versions_are_ignored(tmp_path, caplog):
    root = make_folder(tmp_path / "data", classes=("cat", "dog"))
    (root / ".train-uint8-v1.npz").write_bytes(b"a v1 cache, trusted by file count")
    caplog.set_level(logging.INFO)
    load_folder(root, "train")
    [line] = data_lines(caplog)
    assert line.getMessage().startswith("decoding 4 images under") and (root / ".train-uint8-v2.npz").is_file()


def test_unwritable_data_folder_caches_in_the_user_folder_and_the_next_start_reads_it(
    tmp_path, caplog, monkeypatch, user_cache
):
    root = make_folder(tmp_path / "data", classes=("cat", "dog"))
    real = images.atomic_path
    monkeypatch.setattr(images, "atomic_path", lambda path: _refusing(path) if path.parent == root else real(path))
    caplog.set_level(logging.INFO)
    want, _, _ = load_folder(root, "train")
    [cached] = user_cache.glob("data-*-train-uint8-v2.npz")
    assert not (root / ".train-uint8-v2.npz").exists()
    assert f"it is kept in {cached} instead" in data_lines(caplog)[-1].getMessage()
    forbid_decoding(monkeypatch)
    caplog.clear()
    assert torch.equal(load_folder(root, "train")[0], want)
    assert data_lines(caplog) == []


def test_read_only_data_folder_by_permissions_caches_in_the_user_folder(tmp_path, user_cache, monkeypatch):
    root = make_folder(tmp_path / "data", classes=("cat", "dog"))
    root.chmod(0o555)
    try:
        probe = root / ".probe"
        try:
            probe.touch()
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("chmod 0o555 does not stop root writing; the monkeypatched variant tests the fallback")
        want, _, _ = load_folder(root, "train")
        assert len(list(user_cache.glob("data-*-train-uint8-v2.npz"))) == 1
        forbid_decoding(monkeypatch)
        assert torch.equal(load_folder(root, "train")[0], want)
    finally:
        root.chmod(0o755)


def test_cache_write_failure_only_warns(tmp_path, caplog, monkeypatch):
    root = make_folder(tmp_path / "data", classes=("cat", "dog"))

    @contextmanager
    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
        yield path  # pragma: no cover

    monkeypatch.setattr(images, "atomic_path", disk_full)
    caplog.set_level(logging.INFO)
    x, y, _ = load_folder(root, "train")
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]
    warning = data_lines(caplog)[-1]
    assert warning.levelno == logging.WARNING and warning.exc_info is None
    message = warning.getMessage()
    assert message.startswith("could not write the image cache (") and "No space left on device" in message


def test_two_data_roots_never_share_a_user_cache_file(tmp_path):
    a, b = cache_paths(tmp_path / "a" / "data", "train"), cache_paths(tmp_path / "b" / "data", "train")
    assert a[1].parent == b[1].parent and a[1] != b[1]
    assert a[1].name.startswith("data-") and a[1].name.endswith("-train-uint8-v2.npz")


# ----------------------------------------------------------------------------- content id


def test_folder_content_id_is_equal_for_identical_data_and_changes_with_one_pixel(tmp_path):
    root = make_folder(tmp_path / "a")
    shutil.copytree(root, tmp_path / "b")
    first = folder_content_id(root)
    assert len(first) == 16 and first == folder_content_id(tmp_path / "b")
    path = tmp_path / "b" / "test" / "frog" / "1.png"
    pixels = np.array(Image.open(path))
    pixels[5, 5, 0] ^= 1
    Image.fromarray(pixels).save(path)
    assert folder_content_id(tmp_path / "b") != first


def test_folder_content_id_is_read_from_the_cache_without_rehashing(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data")
    first = folder_content_id(root)
    forbid_decoding(monkeypatch)
    monkeypatch.setattr(images, "content_digest", lambda *a: pytest.fail("the files were hashed again"))
    assert folder_content_id(root) == first


def test_touched_or_copied_files_with_the_same_bytes_keep_the_cache_and_the_content_id(tmp_path, caplog, monkeypatch):
    root = make_folder(tmp_path / "data")
    first = folder_content_id(root)
    os.utime(root / "train" / "cat" / "0.png")  # now: a new mtime, the same bytes
    copy = root / "train" / "dog" / "1.png"
    shutil.copy2(copy, tmp_path / "x.png")
    shutil.move(tmp_path / "x.png", copy)  # cp -p: a new inode, the same bytes and times
    caplog.set_level(logging.INFO)
    forbid_decoding(monkeypatch)
    assert folder_content_id(root) == first
    [line] = data_lines(caplog)  # train/ re-keyed, test/ read back
    assert line.getMessage() == (
        f"image cache {root / '.train-uint8-v2.npz'}: the files' times changed, their bytes did not; the cache is kept"
    )
    caplog.clear()
    assert folder_content_id(root) == first and data_lines(caplog) == []  # the new key: read in silence


def test_new_pixels_under_the_old_names_sizes_and_times_are_decoded_and_change_the_content_id(tmp_path, caplog):
    """rsync -a, cp -p and tar x give files their old names, sizes and mtimes; their bytes still count."""
    root = make_folder(tmp_path / "data", classes=("cat", "dog"), n=2)
    stored = tmp_path / "other"  # other pixels in files of the same sizes (uncompressed PNGs), with the old mtimes
    for name in ("train/cat/0.png", "train/dog/1.png"):
        (stored / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), 9, np.uint8)).save(stored / name, compress_level=0)
        Image.open(root / name).save(root / name, compress_level=0)  # the originals, uncompressed: same sizes
        os.utime(root / name, (OLD, OLD))
    old_x, _, _ = load_folder(root, "train")
    old_id = images.load_listing(images.list_split(root, "train")).digest
    for name in ("train/cat/0.png", "train/dog/1.png"):
        assert (stored / name).stat().st_size == (root / name).stat().st_size
        shutil.copyfile(stored / name, root / name)
        os.utime(root / name, ns=(OLD * 10**9, OLD * 10**9))
    caplog.set_level(logging.INFO)
    x, _, _ = load_folder(root, "train")
    assert torch.equal(x[0], torch.full((3, 32, 32), 9, dtype=torch.uint8)) and not torch.equal(x, old_x)
    assert images.load_listing(images.list_split(root, "train")).digest != old_id
    [line] = data_lines(caplog)
    assert "is stale (the files' bytes changed since it was written)" in line.getMessage()


def test_synthetic_content_id_is_equal_for_equal_sizes_and_changes_with_the_data():
    def content_id(n_train, n_test):
        dm = CIFAR10DataModule("synthetic", synthetic_size=(n_train, n_test))
        dm.setup()
        return dm.content_id

    assert content_id(100, 20) == content_id(100, 20)
    assert len({content_id(100, 20), content_id(100, 21), content_id(101, 20)}) == 3


def test_from_tensors_content_id_changes_with_one_pixel_or_label():
    x, y = torch.zeros(8, 3, 32, 32, dtype=torch.uint8), torch.arange(8) % 10

    def content_id(x, y):
        return CIFAR10DataModule.from_tensors((x, y), (x[:2], y[:2])).content_id

    first = content_id(x, y)
    assert first == content_id(x.clone(), y.clone()) and len(first) == 16
    x2, y2 = x.clone(), y.clone()
    x2[3, 1, 2, 3] = 1
    y2[4] = 9
    assert len({first, content_id(x2, y), content_id(x, y2)}) == 3


def test_torchvision_content_id_hashes_the_loaded_arrays(monkeypatch):
    data = {True: synthetic_pair(50), False: synthetic_pair(10)}
    monkeypatch.setattr("kd_lightning.data.load_torchvision", lambda root, train: data[train])

    def content_id():
        dm = CIFAR10DataModule("torchvision", "unused")
        dm.setup()
        return dm.content_id

    first = content_id()
    assert first == content_id()
    data[False][0][0, 0, 0, 0] ^= 1
    assert content_id() != first


def synthetic_pair(n):
    g = torch.Generator().manual_seed(n)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n) % 10


# ----------------------------------------------------------------------------- folder layout


def test_empty_class_folder_is_refused_by_name(tmp_path):
    root = make_folder(tmp_path / "data")
    for f in (root / "train" / "deer").iterdir():
        f.unlink()
    (root / "train" / "deer" / ".DS_Store").write_bytes(b"hidden: does not count")
    with pytest.raises(DataError, match=f"data.root={root}: train/deer/ holds no images; every class folder needs"):
        folder_content_id(root)


def test_nine_class_folders_are_refused(tmp_path):
    root = make_folder(tmp_path / "data", classes=CLASSES[:9])
    with pytest.raises(DataError) as err:
        folder_content_id(root)
    assert str(err.value).startswith(f"data.root={root}: train/ holds 9 class folders (airplane, automobile, ")
    assert "CIFAR-10 needs 10, one per class: airplane" in str(err.value)


def test_class_of_unsupported_image_type_is_refused_naming_type_count_and_folder(tmp_path):
    root = make_folder(tmp_path / "data")
    for f in (root / "test" / "ship").iterdir():
        Image.open(f).save(f.with_suffix(".webp"))
        f.unlink()
    with pytest.raises(DataError) as err:
        folder_content_id(root)
    assert str(err.value) == (
        f"data.root={root}: test/ship/ holds 2 .webp files and no supported image; "
        "the supported image types are .png, .jpg, .jpeg, so convert those files or move them out"
    )


def test_unsupported_images_beside_supported_ones_are_refused(tmp_path):
    root = make_folder(tmp_path / "data", classes=("cat", "dog"))
    Image.new("RGB", (32, 32)).save(root / "train" / "dog" / "extra.gif")
    with pytest.raises(DataError, match=r"train/dog/ holds 1 \.gif file beside 2 supported images"):
        load_folder(root, "train")


def test_train_and_test_with_different_class_folders_are_refused_naming_them(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "test" / "frog").rename(root / "test" / "frogs")
    with pytest.raises(DataError) as err:
        folder_content_id(root)
    assert str(err.value) == (
        f"data.root={root}: train/ and test/ hold different class folders (only in train/: frog; only in test/: frogs)"
    )


def test_hidden_files_are_ignored_and_stray_files_get_one_warning(tmp_path, caplog):
    root = make_folder(tmp_path / "data", classes=("cat", "dog"))
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"x")
    (root / "train" / "cat" / "._0.png").write_bytes(b"AppleDouble, not a png")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    for name in ("notes.txt", "labels.csv", "Thumbs.db", "z.json"):
        (root / "train" / "dog" / name).write_text("not an image")
    caplog.set_level(logging.WARNING)
    x, _, _ = load_folder(root, "train")
    assert len(x) == 4
    [line] = data_lines(caplog)
    assert line.getMessage() == (
        f"data.root={root}: ignoring 4 entries that are not .png, .jpg, .jpeg images: "
        "train/dog/Thumbs.db, train/dog/labels.csv, train/dog/notes.txt, ..."
    )


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("value", [0, -5])
@pytest.mark.parametrize("key", ["synthetic_train", "synthetic_test"])
def test_impossible_synthetic_sizes_are_refused(key, value):
    sizes = {"synthetic_train": 100, "synthetic_test": 20, key: value}
    with pytest.raises(DataError, match=rf"^data\.{key}={value} is impossible; it must be >= [12] \("):
        CIFAR10DataModule("synthetic", synthetic_size=(sizes["synthetic_train"], sizes["synthetic_test"]))


@pytest.mark.parametrize("n_train", [2, 3, 4])
def test_tiny_synthetic_train_still_splits_into_training_and_validation(n_train):
    dm = CIFAR10DataModule("synthetic", synthetic_size=(n_train, 1))
    dm.setup()
    assert dm.sizes()["n_val"] == 1 and dm.sizes()["n_train"] == n_train - 1


def test_split_of_fewer_than_two_images_is_refused():
    with pytest.raises(DataError, match="1 training images cannot be split 80/20"):
        split_indices(1, 0)
