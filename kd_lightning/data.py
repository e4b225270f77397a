"""CIFAR-10 as uint8 tensors, split 80/20 by a seeded permutation, augmented a whole batch at a time.

The images stay uint8 (N, 3, 32, 32) for the whole run, on the accelerator when there is one.
A batch is an index into that tensor; crop, flip and normalisation run on the batch after it
reaches the device (`on_after_batch_transfer`), so no per-image Python or PIL work sits in the
training loop.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from kd_lightning.config import DataConfig, Source, allowed, values
from kd_lightning.images import DataError, Listing, digest, list_split, load_listing
from kd_lightning.images import load_folder as load_folder  # the folder source lives in images.py

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
VAL_FRACTION = 0.2


# ----------------------------------------------------------------------------- split


def split_indices(n: int, split_seed: int, subset: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation indices: a permutation of range(n) seeded only by `split_seed`.

    The first 20% of the permutation is validation, the rest training, whatever the mode or the
    training seed. `subset` keeps the first `subset` training indices and shrinks validation in
    proportion, so a subset's validation images are still never a full run's training images.
    Validation holds at least one image (from 2 images up; 3 and more split as 20% rounded).
    """
    if n < 2:
        raise DataError(f"{n} training images cannot be split 80/20; the split needs at least 2")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_val = max(1, int(round(n * VAL_FRACTION)))
    val, train = perm[:n_val], perm[n_val:]
    if subset is not None:
        if not 1 <= subset <= len(train):
            raise DataError(f"data.subset={subset} is impossible: it must lie in [1, {len(train)}] for this data")
        val = val[: max(1, int(round(subset * n_val / len(train))))]
        train = train[:subset]
    return train, val


def index_hash(indices: torch.Tensor) -> str:
    """Short fingerprint of an index set (order-free), recorded with every run."""
    data = np.sort(indices.numpy().astype(np.int64)).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


# ----------------------------------------------------------------------------- sources


def synthetic_cifar(n: int, seed: int, num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable stand-in for CIFAR-10: a smooth colour pattern per class plus pixel noise."""
    g = torch.Generator().manual_seed(1234)  # the class patterns are the same for every split
    patterns = F.interpolate(torch.randn(num_classes, 3, 4, 4, generator=g), size=32, mode="bilinear")
    g.manual_seed(seed)
    labels = torch.randint(num_classes, (n,), generator=g)
    images = 128 + 50 * patterns[labels] + 40 * torch.randn(n, 3, 32, 32, generator=g)
    return images.clamp(0, 255).to(torch.uint8), labels


def check_classes(root: Path, train: Listing, test: Listing) -> None:
    """train/ and test/ hold the same class folders, as many as CIFAR-10 has classes; else a DataError."""
    if train.classes != test.classes:
        only = [
            f"only in {a.split}/: {', '.join(sorted(set(a.classes) - set(b.classes))) or '-'}"
            for a, b in ((train, test), (test, train))
        ]
        raise DataError(f"data.root={root}: train/ and test/ hold different class folders ({'; '.join(only)})")
    if len(train.classes) != len(CLASSES):
        raise DataError(
            f"data.root={root}: train/ holds {len(train.classes)} class folders ({', '.join(train.classes)}); "
            f"CIFAR-10 needs {len(CLASSES)}, one per class: {', '.join(CLASSES)}"
        )


def content_id(*digests: str) -> str:
    """A short id of the data (the digests of its parts): equal for equal pixels and labels, whatever the source."""
    return hashlib.sha256("\0".join(digests).encode()).hexdigest()[:16]


def load_torchvision(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root), train=train, download=True)
    except Exception as err:  # URLError, socket errors, HTTP errors, a corrupt download...
        raise DataError(
            f"could not find or download CIFAR-10 into data.root={root} ({type(err).__name__}: {err}). "
            "Without network access, unpack an offline copy and use data.source=folder data.root=PATH "
            "(e.g. `tar xzf cifar10-jpeg.tar.gz -C data`, then data.root=data/cifar10-jpeg)"
        ) from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(ds.targets, dtype=torch.int64)


# ----------------------------------------------------------------------------- batches


def augment(images: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random 32x32 crop of the zero-padded image and a random horizontal flip, per image, batched.

    uint8 (B, C, H, W) in and out. The crop's rows are copied whole (index_select), its columns
    gathered with the flip folded into their order: no per-image work and no host sync.
    """
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad))  # (B, C, Hp, Wp)
    dy = torch.randint(0, 2 * pad + 1, (b, 1), device=dev)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), device=dev)
    flip = torch.rand(b, device=dev) < 0.5
    hp, wp = h + 2 * pad, w + 2 * pad
    # crop row r of channel k of image i is row (i * C + k) * Hp + dy_i + r of padded viewed as (B * C * Hp, Wp)
    starts = torch.arange(b * c, device=dev).view(b, c, 1) * hp + dy.view(b, 1, 1)
    rows = padded.view(b * c * hp, wp).index_select(0, (starts + torch.arange(h, device=dev)).view(-1))
    cols = dx + torch.where(flip[:, None], torch.arange(w - 1, -1, -1, device=dev), torch.arange(w, device=dev))
    return rows.view(b, c, h, wp).gather(3, cols[:, None, None, :].expand(b, c, h, w))


@functools.cache
def _channel_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std on `device`, made once: building them per batch would be a blocking host-to-device copy."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    return mean.to(device), std.to(device)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 normalised per channel, channels_last."""
    mean, std = _channel_stats(images.device)
    # the arithmetic in NCHW, the layout change last: per-channel broadcasting over channels_last
    # (3 values innermost) ran four times slower on a CPU
    x = images.to(torch.float32, copy=True).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)


class BatchLoader:
    """Iterates (uint8 images, labels) batches by indexing tensors that already sit on their device.

    Shuffling uses a permutation seeded by (seed, epoch), so a resumed run sees the same order as
    an uninterrupted one. Under DDP each rank takes every world_size-th index of that permutation.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size

    def _order(self) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch())
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            if self.shuffle:  # equal shard sizes keep the ranks' step counts in lock-step
                order = order[: n - n % self.world_size]
            order = order[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n = len(self._order())
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order().to(self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


# ----------------------------------------------------------------------------- data module


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 (or a synthetic stand-in) with the study's seeded 80/20 train/val split."""

    def __init__(
        self,
        source: str = DataConfig.source,
        root: str = DataConfig.root,
        *,
        split_seed: int = DataConfig.split_seed,
        subset: int | None = DataConfig.subset,
        batch_size: int = DataConfig.batch_size,
        eval_batch_size: int = DataConfig.eval_batch_size,
        num_workers: int = DataConfig.num_workers,
        synthetic_size: tuple[int, int] = (DataConfig.synthetic_train, DataConfig.synthetic_test),
        seed: int = 0,
    ):
        super().__init__()
        if source not in values(Source):
            raise DataError(f"data.source={source!r} is unknown; allowed: {allowed(Source)}")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise DataError(f"data.{key}={value} is impossible; it must be >= 1")
        if num_workers < 0:
            raise DataError(f"data.num_workers={num_workers} is impossible; it must be >= 0")
        if source == Source.synthetic:
            for key, value, least, why in (
                ("synthetic_train", synthetic_size[0], 2, "the 80/20 split needs a training and a validation image"),
                ("synthetic_test", synthetic_size[1], 1, "the test set needs an image"),
            ):
                if value < least:
                    raise DataError(f"data.{key}={value} is impossible; it must be >= {least} ({why})")
        self.source, self.root, self.split_seed, self.subset = source, Path(root), split_seed, subset
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.synthetic_size, self.seed = synthetic_size, seed
        self.num_classes = len(CLASSES)
        self.content_id: str | None = None  # after setup(): a digest of every train and test pixel and label
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._on_device: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_tensors(
        cls,
        train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        batch_size: int = DataConfig.batch_size,
        eval_batch_size: int = DataConfig.eval_batch_size,
        seed: int = 0,
    ) -> CIFAR10DataModule:
        """The same batching and augmentation over (uint8 images, labels) pairs chosen by the caller: no file,
        no 80/20 split (the benchmark uses it to time exactly the images it picked)."""
        dm = cls(Source.synthetic.value, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
        dm._splits = {"train": train, "val": val, "test": test if test is not None else val}
        dm.split_hash = dm.val_hash = None
        dm.content_id = content_id(*(digest(x, y.to(torch.int64)) for x, y in dm._splits.values()))
        return dm

    def _load(self) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
        """(images, labels, digest of both) for train and test."""
        if self.source == Source.folder:
            if not self.root.is_dir():
                what = "is a file, not a folder" if self.root.exists() else "does not exist"
                raise DataError(
                    f"data.root={self.root} {what}; data.source=folder needs an unpacked CIFAR-10 "
                    "folder (train/<class>/, test/<class>/), e.g. `make data`"
                )
            listings = [list_split(self.root, split) for split in ("train", "test")]  # layout errors before decoding
            check_classes(self.root, *listings)
            self.num_classes = len(listings[0].classes)
            found = [load_listing(listing, self.num_workers) for listing in listings]
            return [(f.images, f.labels, f.digest) for f in found]
        if self.source == Source.synthetic:
            n_train, n_test = self.synthetic_size
            pairs = [synthetic_cifar(n_train, seed=1), synthetic_cifar(n_test, seed=2)]
        else:
            pairs = [load_torchvision(self.root, True), load_torchvision(self.root, False)]
        return [(x, y, digest(x, y)) for x, y in pairs]

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        (train_x, train_y, train_digest), (test_x, test_y, test_digest) = self._load()
        self.content_id = content_id(train_digest, test_digest)
        self.full_train_size = len(train_y)
        self.train_idx, self.val_idx = split_indices(len(train_y), self.split_seed, self.subset)
        full_val = split_indices(len(train_y), self.split_seed)[1]
        self.split_hash = index_hash(full_val)  # same for every subset of one split
        self.val_hash = index_hash(self.val_idx)
        self._splits = {
            "train": (train_x[self.train_idx].contiguous(), train_y[self.train_idx]),
            "val": (train_x[self.val_idx].contiguous(), train_y[self.val_idx]),
            "test": (test_x, test_y),
        }

    def sizes(self) -> dict[str, int]:
        return {f"n_{k}": len(v[1]) for k, v in self._splits.items()}

    def _loader(self, split: str, train: bool) -> BatchLoader:
        self.setup()
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        key = (split, str(device))
        if key not in self._on_device:  # moved once per run, not per epoch
            x, y = self._splits[split]
            self._on_device[key] = (x.to(device), y.to(device))
        x, y = self._on_device[key]
        return BatchLoader(
            x,
            y,
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train and len(y) > self.batch_size,
            seed=self.seed,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )

    def train_dataloader(self) -> BatchLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> BatchLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> BatchLoader:
        return self._loader("test", train=False)

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int):
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            images = augment(images)
        return normalize(images), labels
