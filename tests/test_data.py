import numpy as np
import pytest
import torch
from PIL import Image

from kd_lightning.data import (
    MEAN,
    STD,
    BatchLoader,
    CIFAR10DataModule,
    DataError,
    augment,
    index_hash,
    load_folder,
    normalize,
    split_indices,
    synthetic_cifar,
)


def test_split_is_80_20_and_disjoint():
    train, val = split_indices(50_000, split_seed=0)
    assert (len(train), len(val)) == (40_000, 10_000)
    assert len(set(train.tolist()) | set(val.tolist())) == 50_000


def test_split_depends_only_on_split_seed():
    a, b = split_indices(50_000, 0), split_indices(50_000, 0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.manual_seed(123)  # the global (training) seed plays no part
    assert torch.equal(split_indices(50_000, 0)[1], a[1])
    assert index_hash(split_indices(50_000, 1)[1]) != index_hash(a[1])


def test_subset_caps_train_and_shrinks_val_in_proportion_inside_the_full_split():
    full_train, full_val = split_indices(50_000, 0)
    train, val = split_indices(50_000, 0, subset=4_000)
    assert (len(train), len(val)) == (4_000, 1_000)
    assert set(val.tolist()) <= set(full_val.tolist())
    assert set(train.tolist()) <= set(full_train.tolist())


@pytest.mark.parametrize("subset", [0, 40_001])
def test_impossible_subset_is_refused(subset):
    with pytest.raises(DataError, match=f"data.subset={subset} is impossible"):
        split_indices(50_000, 0, subset=subset)


def test_index_hash_ignores_order():
    idx = torch.tensor([5, 1, 3])
    assert index_hash(idx) == index_hash(idx.flip(0))


def test_augment_crops_a_shifted_window_of_the_zero_padded_image():
    torch.manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = augment(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(64):
        windows = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
    assert not torch.equal(out, images)


def test_augment_flips_about_half_the_batch():
    torch.manual_seed(0)
    images = torch.arange(32, dtype=torch.uint8).repeat(512, 3, 32, 1)  # column index as the pixel value
    out = augment(images, pad=0)
    flipped = (out[:, 0, 0, 0] == 31).float().mean().item()
    assert 0.4 < flipped < 0.6


def test_normalize_gives_channels_last_float_with_cifar_statistics():
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(images)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    want = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)])
    assert torch.allclose(out[0, :, 0, 0], want, atol=1e-5)


def test_synthetic_data_is_deterministic_and_class_dependent():
    x1, y1 = synthetic_cifar(200, seed=1)
    x2, y2 = synthetic_cifar(200, seed=1)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    means = torch.stack([x1[y1 == c].float().mean(0) for c in range(10)])
    assert (means[0] - means[1]).abs().mean() > 10  # classes look different on average


def test_batch_loader_shuffles_per_epoch_reproducibly():
    x, y = torch.zeros(10, 3, 2, 2, dtype=torch.uint8), torch.arange(10)
    epoch = {"e": 0}
    loader = BatchLoader(x, y, batch_size=4, shuffle=True, seed=7, epoch=lambda: epoch["e"])
    first = torch.cat([b[1] for b in loader])
    assert torch.equal(first, torch.cat([b[1] for b in loader]))
    epoch["e"] = 1
    assert not torch.equal(first, torch.cat([b[1] for b in loader]))
    assert sorted(first.tolist()) == list(range(10)) and len(loader) == 3


def test_batch_loader_gives_each_rank_a_disjoint_shard():
    x, y = torch.zeros(11, 3, 2, 2, dtype=torch.uint8), torch.arange(11)
    shards = [
        torch.cat([b[1] for b in BatchLoader(x, y, 3, shuffle=True, rank=r, world_size=2)]).tolist() for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 5 and not set(shards[0]) & set(shards[1])


def write_folder(root, n_per_class=3, classes=("cat", "dog"), size=32, splits=("train", "test")):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n_per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_folder_source_reads_classes_in_sorted_order_and_caches(tmp_path, monkeypatch):
    root = write_folder(tmp_path, classes=("dog", "cat"))
    x, y, classes = load_folder(root, "train")
    assert classes == ["cat", "dog"] and x.shape == (6, 3, 32, 32) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert (root / ".train-uint8-v2.npz").exists()
    first = Image.open(root / "train" / "cat" / "0.png")
    assert torch.equal(x[0], torch.from_numpy(np.array(first)).permute(2, 0, 1))
    monkeypatch.setattr("kd_lightning.images._decode", lambda path: pytest.fail(f"decoded {path}: cache not used"))
    x2, _, _ = load_folder(root, "train")
    assert torch.equal(x, x2)


def test_folder_cache_is_rebuilt_when_files_change(tmp_path):
    root = write_folder(tmp_path)
    load_folder(root, "train")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "cat" / "9.png")
    assert len(load_folder(root, "train")[1]) == 7


def test_unreadable_image_is_named(tmp_path):
    root = write_folder(tmp_path)
    bad = root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"cannot read image file {bad}"):
        load_folder(root, "train")


def test_wrong_image_size_is_named(tmp_path):
    root = write_folder(tmp_path, size=28)
    with pytest.raises(DataError, match="is 28x28; CIFAR-10 images must be 32x32"):
        load_folder(root, "train")


def test_folder_errors_name_the_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CIFAR10DataModule("folder", str(tmp_path / "missing")).setup()
    write_folder(tmp_path / "no-test", splits=("train",))
    with pytest.raises(DataError, match="has no 'test/' folder"):
        CIFAR10DataModule("folder", str(tmp_path / "no-test")).setup()
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no class folders"):
        CIFAR10DataModule("folder", str(tmp_path / "empty")).setup()


def test_data_module_batches_are_normalised_and_augmented_only_in_training():
    dm = CIFAR10DataModule("synthetic", synthetic_size=(200, 50), batch_size=32, eval_batch_size=64)
    dm.setup()
    assert dm.sizes() == {"n_train": 160, "n_val": 40, "n_test": 50}
    x, y = next(iter(dm.val_dataloader()))
    out, _ = dm.on_after_batch_transfer((x, y), 0)  # no trainer: evaluation path, deterministic
    assert torch.equal(out, normalize(x)) and x.shape[0] == 40
    assert len(dm.train_dataloader()) == 5


def test_bad_batch_size_and_source_are_refused():
    with pytest.raises(DataError, match="data.batch_size=0 is impossible"):
        CIFAR10DataModule("synthetic", batch_size=0)
    with pytest.raises(DataError, match="data.source='imagenet' is unknown"):
        CIFAR10DataModule("imagenet")
