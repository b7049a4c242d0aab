"""WebDataset tar shards: an image folder written as ``train-000000.tar ...`` and read back as a stream.

Shards suit many machines and object stores: each reader opens a few big files in sequence instead
of many small ones, through anything the ``webdataset`` library opens (paths, ``pipe:`` commands,
URLs). ``write_shards`` copies the encoded files as they are (no re-encoding) into tars of
``shard_size`` samples, the training split in a seeded shuffled order so that every shard holds
every class; ``meta.json`` beside them holds the class names and each shard's image count.

What holds when reading (there is no random access, so less than for an image folder):
- Each epoch permutes the shards with (seed, epoch); rank r of N reads shards r, r+N, ... of that
  order, and DataLoader worker w of W of those, every W-th; a worker shuffles its samples in a
  seeded buffer of ``SHUFFLE_BUFFER`` and cycles its shards, so every rank takes exactly the
  epoch's ``ceil(images / batch_size)`` steps (DDP needs equal step counts) and an epoch sees about
  each image once, not exactly once.
- Each image's augmentation is seeded by (seed, epoch, its key), and the batches are a function of
  (seed, epoch, N, W): a run resumed mid-epoch with the same ranks and ``--workers`` sees the
  batches an uninterrupted one would, after reading (not decoding) the samples of the steps it skips.
- Evaluation reads every validation image exactly once over all ranks and workers.
"""
from __future__ import annotations

import json
import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cnnzoo.data.datasets import list_imagefolder
from cnnzoo.data.seeds import epoch_seed, sample_seed
from cnnzoo.data.stream import (
    SampleTransform,
    StreamSource,
    collate,
    report_skipped,
    transform_sample,
    worker_options,
)

SHUFFLE_BUFFER = 500  # encoded samples per worker (~50 MB of JPEGs)
META = "meta.json"


def write_shards(folder: str | Path, out: str | Path, shard_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``folder/train`` (and ``folder/val`` if present) as ``out/{split}-NNNNNN.tar`` and ``out/meta.json``;
    returns the metadata."""
    import webdataset as wds

    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files, labels, classes = list_imagefolder(folder, "train")
    meta: dict[str, Any] = {"classes": classes, "source": str(folder), "shards": {}, "splits": {}}
    splits = [("train", files, labels.tolist())]
    if (Path(folder) / "val").is_dir():
        val_files, val_labels, _ = list_imagefolder(folder, "val", classes)
        splits.append(("val", val_files, val_labels.tolist()))
    for split, paths, labs in splits:
        order = list(range(len(paths)))
        if split == "train":
            random.Random(seed).shuffle(order)
        names = []
        for k in range(math.ceil(len(order) / shard_size)):
            name = f"{split}-{k:06d}.tar"
            chunk = order[k * shard_size: (k + 1) * shard_size]
            with wds.TarWriter(str(out / name)) as tar:
                for i in chunk:
                    path = Path(paths[i])
                    ext = path.suffix.lower().lstrip(".").replace("jpeg", "jpg")
                    tar.write({"__key__": f"{i:08d}", ext: path.read_bytes(), "cls": labs[i],
                               "txt": str(path.relative_to(folder))})
            meta["shards"][name] = len(chunk)
            names.append(name)
        meta["splits"][split] = {"images": len(order),
                                 "pattern": f"{split}-{{000000..{len(names) - 1:06d}}}.tar" if names else None}
    (out / META).write_text(json.dumps(meta, indent=1))
    return meta


def expand(pattern: str) -> list[str]:
    """``dir/train-{000000..000009}.tar`` -> the ten file names (braces as in bash)."""
    import webdataset as wds

    return list(wds.shardlists.expand_urls(pattern))


def decode_sample(sample: dict[str, Any], tf: SampleTransform, epoch: int | None
                  ) -> tuple[torch.Tensor | None, int, str | None]:
    """(image, label, None), or (None, label, name) for a bad image when ``tf.skip_bad``."""
    name = f"{sample.get('__url__', '?')}:{sample['__key__']}"
    if "txt" in sample:
        name += f" ({sample['txt'].decode()})"
    if "cls" not in sample:
        raise ValueError(f"{name}: sample has no 'cls' label (files: {sorted(k for k in sample if not k.startswith('__'))})")
    label = int(sample["cls"])
    images = [k for k in sample if k in ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm")]
    try:
        if not images:
            raise ValueError(f"{name}: sample has no image file")
        index = zlib.crc32(sample["__key__"].encode())
        return transform_sample(sample[images[0]], name, tf, epoch, index), label, None
    except ValueError:
        if not tf.skip_bad:
            raise
        return None, label, name


def _samples(urls: list[str]) -> Iterator[dict[str, Any]]:
    import webdataset as wds

    return wds.tariterators.tarfile_samples([{"url": u} for u in urls])


class _TrainStream(IterableDataset):
    """One rank's training batches of an epoch; DataLoader worker w plays the part (``role``) that
    keeps batch k of the epoch with the worker stream k mod W, however many steps are skipped."""

    def __init__(self, shards: list[str], tf: SampleTransform, epoch: int, rank: int, steps: list[tuple[int, int]],
                 workers: int, first_step: int) -> None:
        self.shards, self.tf, self.epoch, self.rank = shards, tf, epoch, rank
        self.steps, self.workers, self.first_step = steps, workers, first_step  # steps: (step, images on this rank)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        role = (worker + self.first_step) % self.workers
        mine = [(s, n) for s, n in self.steps if s % self.workers == role]
        stream = self._stream(role)
        for step, n in mine:
            raw = [next(stream) for _ in range(n)]
            if step < self.first_step:  # a resume: read past the steps already trained, without decoding
                continue
            yield collate([decode_sample(s, self.tf, self.epoch) for s in raw])

    def _stream(self, role: int) -> Iterator[dict[str, Any]]:
        """This worker's samples, shuffled in a seeded buffer, cycling through its shards for ever."""
        shards = self.shards[role::self.workers]
        rng = random.Random(sample_seed(self.tf.seed, self.epoch, self.rank * 1000 + role))
        buffer: list[dict[str, Any]] = []
        while True:
            order = shards[:]
            rng.shuffle(order)
            read = 0
            for sample in _samples(order):
                read += 1
                buffer.append(sample)
                if len(buffer) >= SHUFFLE_BUFFER:
                    j = rng.randrange(len(buffer))
                    buffer[j], buffer[-1] = buffer[-1], buffer[j]
                    yield buffer.pop()
            if read == 0:
                raise ValueError(f"shards {order} hold no samples")
            if len(buffer) < SHUFFLE_BUFFER:  # fewer images than the buffer: hand them out in shuffled order
                rng.shuffle(buffer)
                yield from buffer
                buffer = []


class _EvalStream(IterableDataset):
    def __init__(self, shards: list[str], tf: SampleTransform, batch_size: int) -> None:
        self.shards, self.tf, self.batch_size = shards, tf, batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        info = get_worker_info()
        shards = self.shards[info.id::info.num_workers] if info is not None else self.shards
        batch = []
        for sample in _samples(shards):
            batch.append(decode_sample(sample, self.tf, None))
            if len(batch) == self.batch_size:
                yield collate(batch)
                batch = []
        if batch:
            yield collate(batch)


@dataclass
class ShardDataset(StreamSource):
    """Tar shards of one split, read in sequence by ``workers`` processes."""

    shards: list[str]
    images: int
    classes: list[str]
    transform: SampleTransform
    workers: int = 2
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.images

    def subset(self, n: int, seed: int = 0) -> ShardDataset:
        raise ValueError("--train-subset / --test-subset pick images at random; tar shards are read in sequence: "
                         "list fewer shards in --data-dir instead")

    def _loader(self, dataset: IterableDataset, shards: int, pin_memory: bool) -> DataLoader:
        workers = min(self.workers, shards)
        return DataLoader(dataset, batch_size=None, pin_memory=pin_memory, generator=torch.Generator(),
                          **worker_options(workers))

    def train_batches(self, batch_size: int, seed: int, epoch: int, first_step: int, rank: int, world_size: int,
                      pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        if len(self.shards) < world_size:
            raise ValueError(f"{len(self.shards)} shards cannot feed {world_size} ranks: write smaller shards "
                             f"(cnnzoo shards --shard-size)")
        order = torch.randperm(len(self.shards), generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
        mine = [self.shards[i] for i in order[rank::world_size].tolist()]
        steps, sizes = math.ceil(self.images / batch_size), []
        for step in range(steps):
            n = min(batch_size, self.images - step * batch_size)
            sizes.append((step, n * (rank + 1) // world_size - n * rank // world_size))
        workers = max(1, min(self.workers, len(mine)))
        stream = _TrainStream(mine, self.transform, epoch, rank, sizes, workers, first_step)
        loader = self._loader(stream, len(mine), pin_memory)
        for step, (x, y, bad) in zip(range(first_step, steps), loader):
            if bad:
                report_skipped(self, bad, len(y))
            yield x, y, min(batch_size, self.images - step * batch_size)

    def eval_batches(self, batch_size: int, rank: int, world_size: int,
                     pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        mine = self.shards[rank::world_size]
        if not mine:
            return
        for x, y, bad in self._loader(_EvalStream(mine, self.transform, batch_size), len(mine), pin_memory):
            if bad:
                report_skipped(self, bad, len(y))
            if len(y):
                yield x, y

    def sample_batches(self, n: int, seed: int) -> Iterator[torch.Tensor]:
        """The first ``n`` images of the shards (in their order; no random access), in batches of 64."""
        batch, left = [], n
        for sample in _samples(self.shards):
            x, _, _ = decode_sample(sample, self.transform, None)
            if x is not None:
                batch.append(x)
                left -= 1
            if len(batch) == 64 or (left == 0 and batch):
                yield torch.stack(batch)
                batch = []
            if left == 0:
                return
        if batch:
            yield torch.stack(batch)


def shard_datasets(pattern: str, tf: SampleTransform, workers: int) -> tuple[ShardDataset, ShardDataset]:
    """(train, val) for ``--data-dir 'DIR/train-{000000..000127}.tar'``: the shards named, and the
    validation shards ``meta.json`` in DIR lists."""
    shards = expand(pattern)
    folder = Path(shards[0]).parent
    meta_path = folder / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: missing (written by `cnnzoo shards` beside the shards, with the class "
                                f"names and each shard's image count)")
    meta = json.loads(meta_path.read_text())
    missing = [s for s in shards if Path(s).name not in meta["shards"]]
    if missing:
        raise ValueError(f"{meta_path} does not list {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    skipped: list[str] = []
    classes = meta["classes"]
    train = ShardDataset(shards, sum(meta["shards"][Path(s).name] for s in shards), classes, tf, workers, skipped)
    val_info = meta["splits"].get("val")
    if not val_info or not val_info["pattern"]:
        raise ValueError(f"{meta_path}: no validation shards (write them from a folder with val/)")
    val_shards = [str(folder / s) for s in expand(val_info["pattern"])]
    return train, ShardDataset(val_shards, val_info["images"], classes, tf, workers, skipped)
