"""Image folders of any size: files decoded per batch by DataLoader workers, never all held in memory.

``--data-loader memory`` (cnnzoo.data.datasets) decodes a folder once into a uint8 tensor; that stops
scaling at a few tens of thousands of photos at 224x224. Here only the file list is in memory;
worker processes read, decode (torchvision.io's libjpeg-turbo; PIL for formats it lacks) and
augment each image as its batch is needed, and hand uint8 (N, C, H, W) batches to the same
training loop.

Order and randomness are functions of (seed, epoch[, index]) only, as for the in-memory path:
the epoch's order is the same permutation, each rank takes its slice of each step's global
batch, and each image's augmentation is drawn from a generator seeded by (seed, epoch, index).
So the batches do not depend on the number of workers, a resumed run sees the batches an
uninterrupted one would, and N ranks train on what one process would.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import io
import math
import multiprocessing as mp
import os
import random
import select
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnzoo.data.datasets import IMAGE_EXTENSIONS, decode_image, list_imagefolder, stratified_split
from cnnzoo.data.seeds import epoch_seed, sample_seed
from cnnzoo.data.transforms import resize_size

LOADERS = ("memory", "stream", "auto")
AUTO_AUGMENTS = ("randaugment", "trivialaugment")
RRC_SCALE = (0.08, 1.0)  # RandomResizedCrop's area fraction and aspect-ratio range (Szegedy et al., 2015)
RRC_RATIO = (3 / 4, 4 / 3)
_JPEG_MAGIC = b"\xff\xd8\xff"
_TV_FORMATS = (b"\x89PNG", b"GIF8", b"RIFF")  # PNG, GIF, WebP: torchvision.io decodes these too


@dataclass(frozen=True)
class SampleTransform:
    """How a file becomes a uint8 (channels, *size) tensor, for training or evaluation."""
    size: tuple[int, int]
    channels: int
    seed: int = 0
    crop_pct: float = 0.875           # evaluation: resize the shorter side to size / crop_pct, crop the centre
    flip: bool = True
    auto_augment: str | None = None
    color_jitter: float = 0.0
    skip_bad: bool = False


# --------------------------------------------------------------------------------------------------
# Decoding


def _mode(channels: int):
    from torchvision.io import ImageReadMode

    return ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY


def decode_bytes(data: bytes, name: str, channels: int, reduce_to: tuple[int, int] | None = None,
                 size: tuple[int, int] | None = None) -> tuple[torch.Tensor, float]:
    """Decode an encoded image into uint8 (channels, H, W); returns it and the scale it was decoded at.

    A JPEG whose every side is at least twice ``reduce_to`` is decoded at 1/2, 1/4 or 1/8 scale in
    the DCT domain (PIL's draft mode), which is most of what makes big photos cheap; other JPEGs,
    PNG, GIF and WebP go through torchvision.io, anything else through PIL. EXIF orientation is
    applied; ``size``, the (height, width) ``image_size`` gives, saves reading the header again.
    A file that cannot be decoded raises ValueError naming it.
    """
    try:
        if data[:3] == _JPEG_MAGIC and reduce_to is not None:
            h, w = size or image_size(data, name)
            factor = min(h // reduce_to[0], w // reduce_to[1])
            if factor >= 2:
                return _draft_decode(data, channels, factor, w)
        if data[:3] == _JPEG_MAGIC or data[:4] in _TV_FORMATS:
            from torchvision.io import decode_image as tv_decode

            x = tv_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), _mode(channels),
                          apply_exif_orientation=True)
            if x.dtype == torch.uint8:  # a 16-bit PNG comes back as uint16: PIL scales it below
                return (x if x.shape[0] == channels else x.expand(channels, -1, -1).contiguous()), 1.0
    except (RuntimeError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    return decode_image(io.BytesIO(data), channels, label=name), 1.0


def _draft_decode(data: bytes, channels: int, factor: int, width: int) -> tuple[torch.Tensor, float]:
    """PIL's JPEG decode at 1/2, 1/4 or 1/8 scale (the DCT coefficients are scaled, not the pixels),
    at least 1/``factor`` of the full size; ``width`` is the full width after EXIF rotation."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        mode = "RGB" if channels == 3 else "L"
        draft = (img.width // factor, img.height // factor)
        img.draft(mode, draft)
        img = ImageOps.exif_transpose(img).convert(mode)
        x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, -1)
        x = x.permute(2, 0, 1)
        scale = img.width / width
    return (x if x.shape[0] == channels else x.expand(channels, -1, -1)), scale


def image_size(data: bytes, name: str) -> tuple[int, int]:
    """(height, width) after EXIF rotation, from the header alone."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    return h, w


def resize_uint8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 (C, H, W). Channels-last uint8 input takes torch's
    vectorised uint8 kernel, about twice as fast on a CPU as the float path."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    x = x.unsqueeze(0).contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0]  # collate's stack copies


# --------------------------------------------------------------------------------------------------
# Per-sample transforms


def random_resized_crop_box(h: int, w: int, g: random.Random) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop covering 8-100% of the area with aspect ratio 3/4-4/3,
    both drawn from ``g``; after 10 failed draws, the centre crop of clamped aspect ratio."""
    area = h * w
    log_lo, log_hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    for _ in range(10):
        u = [g.random() for _ in range(4)]
        target = area * (RRC_SCALE[0] + u[0] * (RRC_SCALE[1] - RRC_SCALE[0]))
        ratio = math.exp(log_lo + u[1] * (log_hi - log_lo))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            return int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1)), ch, cw
    ratio = min(max(w / h, RRC_RATIO[0]), RRC_RATIO[1])
    cw, ch = (w, round(w / ratio)) if w / h < ratio else (round(h * ratio), h)
    ch, cw = min(ch, h), min(cw, w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def train_sample(data: bytes, name: str, tf: SampleTransform, seed: int) -> torch.Tensor:
    """RandomResizedCrop to ``tf.size`` (the crop drawn before decoding, so that a JPEG is decoded
    at the smallest DCT scale that still covers it), flip, then the optional auto-augment and colour
    jitter; all randomness from ``seed`` (Python's generator: a torch one costs more than the crop)."""
    g = random.Random(seed)
    h, w = image_size(data, name)
    top, left, ch, cw = random_resized_crop_box(h, w, g)
    reduce_to = (max(1, h * tf.size[0] // ch), max(1, w * tf.size[1] // cw))  # the whole image at the crop's scale
    x, scale = decode_bytes(data, name, tf.channels, reduce_to, (h, w))
    if scale != 1.0:
        top, left = int(top * scale), int(left * scale)
        ch, cw = max(1, min(round(ch * scale), x.shape[1] - top)), max(1, min(round(cw * scale), x.shape[2] - left))
    x = resize_uint8(x[:, top: top + ch, left: left + cw], tf.size)
    if tf.flip and g.random() < 0.5:
        x = x.flip(-1)
    if tf.auto_augment or tf.color_jitter:
        x = _photometric(x, tf, g.getrandbits(62))
    return x


def _photometric(x: torch.Tensor, tf: SampleTransform, seed: int) -> torch.Tensor:
    """torchvision.transforms.v2's auto-augment / colour jitter, which draw from the global RNG:
    seeded from ``seed`` and restored after, so that the caller's random stream is untouched."""
    from torchvision.transforms import v2

    steps = []
    if tf.auto_augment == "randaugment":
        steps.append(v2.RandAugment())
    elif tf.auto_augment == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    if tf.color_jitter:
        steps.append(v2.ColorJitter(brightness=tf.color_jitter, contrast=tf.color_jitter, saturation=tf.color_jitter))
    rgb = x.shape[0] == 3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        y = v2.Compose(steps)(x if rgb else x.expand(3, -1, -1))
    return y if rgb else y[:1].contiguous()


def eval_sample(data: bytes, name: str, tf: SampleTransform) -> torch.Tensor:
    """The evaluation preprocessing of ``cnnzoo.data.transforms`` (resize to ``size / crop_pct``, centre
    crop) on uint8, with the uint8 resize kernel (within a grey level of the float one it uses)
    and, for a JPEG at least twice the resize target, a reduced-scale decode."""
    h, w = image_size(data, name)
    target = resize_size((tf.channels, *tf.size), tf.crop_pct)
    if isinstance(target, int):  # the shorter side; the longer keeps the aspect ratio (truncated)
        target = (target, int(target * w / h)) if h <= w else (int(target * h / w), target)
    x, _ = decode_bytes(data, name, tf.channels, target, (h, w))
    x = resize_uint8(x, target)
    top, left = round((target[0] - tf.size[0]) / 2), round((target[1] - tf.size[1]) / 2)
    if top < 0 or left < 0:
        raise ValueError(f"{name}: crop {tf.size} larger than the resized image {target}")
    return x[:, top: top + tf.size[0], left: left + tf.size[1]].contiguous()


def transform_sample(data: bytes, name: str, tf: SampleTransform, epoch: int | None, index: int) -> torch.Tensor:
    """``epoch=None``: the evaluation transform; else the training one, seeded by (seed, epoch, index)."""
    if epoch is None:
        return eval_sample(data, name, tf)
    return train_sample(data, name, tf, sample_seed(tf.seed, epoch, index))


# --------------------------------------------------------------------------------------------------
# Datasets of files


class StreamSource:
    """What the trainer asks of a dataset read per batch (an image folder's file list, or tar shards)."""

    classes: list[str]
    skipped: list[str]  # bad files met so far, in this process

    def train_batches(self, batch_size: int, seed: int, epoch: int, first_step: int, rank: int, world_size: int,
                      pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """This rank's (uint8 images, labels, images in the global batch) of each step of ``epoch``
        from ``first_step`` on."""
        raise NotImplementedError

    def eval_batches(self, batch_size: int, rank: int, world_size: int,
                     pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of the set, each image once over all ranks, at the evaluation transform."""
        raise NotImplementedError

    def sample_batches(self, n: int, seed: int) -> Iterator[torch.Tensor]:
        """uint8 (N, C, H, W) batches of a fixed sample of ``n`` images at the evaluation transform."""
        raise NotImplementedError

    def sample_images(self, n: int, seed: int) -> torch.Tensor:
        return torch.cat(list(self.sample_batches(n, seed)))

    def channel_stats(self, samples: int = 512, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1] units over a sample of the images, as running sums:
        the sample is never held in memory as floats."""
        total = squares = count = 0
        for x in self.sample_batches(samples, seed):
            x = x.double().div_(255)
            total = total + x.sum(dim=(0, 2, 3))
            squares = squares + x.square().sum(dim=(0, 2, 3))
            count += x.numel() // x.shape[1]
        mean = total / count
        std = ((squares - count * mean.square()) / max(1, count - 1)).clamp_min(0).sqrt().clamp_min(1e-3)
        return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def report_skipped(source: StreamSource, bad: list[str], batch_images: int) -> None:
    """Note bad files met in a batch (stderr and ``source.skipped``, once each, though every epoch
    meets them); a batch of nothing else is an error."""
    new = [b for b in dict.fromkeys(bad) if b not in source.skipped]
    if new:
        source.skipped.extend(new)
        print(f"skipped {len(new)} undecodable image(s): {', '.join(new)}", file=sys.stderr, flush=True)
    if batch_images == 0:
        raise ValueError(f"every image of a batch is undecodable: {', '.join(bad)}")


@dataclass
class StreamDataset(Dataset, StreamSource):
    """An image folder as a file list. ``dataset[(epoch, i)]`` is image i, decoded and augmented
    for that epoch (``epoch=None``: the evaluation transform), with its label and, when the file is
    bad and ``skip_bad`` is set, its path instead of pixels."""

    files: list[str]
    labels: torch.Tensor
    classes: list[str]
    transform: SampleTransform
    name: str = ""
    workers: int = 2
    skipped: list[str] = field(default_factory=list)  # bad files met so far (in this process)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int | None, int]) -> tuple[torch.Tensor | None, int, str | None]:
        epoch, i = key
        path, label = self.files[i], int(self.labels[i])
        try:
            return transform_sample(Path(path).read_bytes(), path, self.transform, epoch, i), label, None
        except (ValueError, OSError) as exc:
            if not self.transform.skip_bad:
                raise ValueError(str(exc) if isinstance(exc, ValueError) else f"{path}: cannot read ({exc})") from exc
            return None, label, path

    def take(self, indices: torch.Tensor) -> StreamDataset:
        idx = indices.tolist()
        return replace(self, files=[self.files[i] for i in idx], labels=self.labels[indices])

    def subset(self, n: int, seed: int = 0) -> StreamDataset:
        if n >= len(self):
            return self
        return self.take(torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n])

    def sample_batches(self, n: int, seed: int) -> Iterator[torch.Tensor]:
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return (x for x, _ in self.batches(64, idx))

    def batches(self, batch_size: int, indices: torch.Tensor | None = None,
                pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Evaluation batches, in order, of ``indices`` (default: all)."""
        idx = (indices if indices is not None else torch.arange(len(self))).tolist()
        keys = [[(None, i) for i in idx[s: s + batch_size]] for s in range(0, len(idx), batch_size)]
        for x, y, _ in self.load(keys, pin_memory):
            yield x, y

    def eval_batches(self, batch_size: int, rank: int, world_size: int,
                     pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(batch_size, torch.arange(rank, len(self), world_size), pin_memory)

    def train_batches(self, batch_size: int, seed: int, epoch: int, first_step: int, rank: int, world_size: int,
                      pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        sampler = GlobalBatchSampler(len(self), batch_size, seed, epoch, rank, world_size, first_step)
        for (x, y, _), n in zip(self.load(sampler, pin_memory), sampler.global_sizes()):
            yield x, y, n

    def load(self, batches: Sequence[list[tuple[int | None, int]]],
             pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """(uint8 images, labels, bad files skipped) for each list of keys, read by ``workers``
        processes (0: in this one). A worker's error reaches this process as the exception it raised."""
        loader = DataLoader(self, batch_sampler=batches, collate_fn=collate, pin_memory=pin_memory,
                            generator=torch.Generator(),  # not the global RNG: resumes see the same stream
                            **worker_options(self.workers))
        for x, y, bad in loader:
            if bad:
                report_skipped(self, bad, len(y))
            yield x, y, len(bad)


def worker_options(workers: int) -> dict[str, Any]:
    """DataLoader arguments for ``workers`` loader processes. They are forked from a small server
    process that has imported torch once (its 290 MB then shared by all): forked from the trainer,
    each would share the trainer's heap copy-on-write, and the trainer's next allocations would copy
    it page by page (1 GB more at the evaluation after an epoch of mobilenet_v1 at 224). Each
    worker ends as soon as the trainer does, however it dies (``exit_with``)."""
    if not workers:
        return dict(num_workers=0)
    if getattr(mp.current_process(), "_inheriting", False):  # this is a fresh worker importing the main script
        raise RuntimeError(f"{getattr(sys.modules.get('__mp_main__'), '__file__', 'the main script')} trains when "
                           "it is imported, and loader workers start in a fresh process that imports it: put the "
                           "training call under `if __name__ == \"__main__\":` (or use --workers 0)")
    ctx = None
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["cnnzoo.data.stream"])
    return dict(num_workers=workers, prefetch_factor=2, multiprocessing_context=ctx,
                worker_init_fn=functools.partial(_worker_init, os.getpid()))


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _worker_init(trainer: int, worker_id: int) -> None:
    # A worker's parent is the server, not the trainer, so torch's parent-death check never fires, and
    # it holds the server's "clients alive" pipe, so a killed trainer would leave both running for ever.
    exit_with(trainer)
    # The objects inherited from the server, out of the collector's reach: its passes would write
    # to every page holding one, copying them all into each worker (1 MB more per step, measured).
    gc.freeze()
    # Decoded images (up to a few MB) in pages of their own, given back when freed: glibc would
    # raise its threshold after the first and keep them in a heap that only grows (+145 MB a worker).
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (AttributeError, OSError):  # not glibc
        pass


def exit_with(pid: int) -> None:
    """End this process (``os._exit``) as soon as process ``pid`` has ended, however it ended: a
    daemon thread waits on a pidfd (Linux >= 5.3), elsewhere polls the pid once a second."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        os._exit(1)
    except (AttributeError, OSError):  # no pidfds here
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while _running(pid):
                time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name=f"exit-with-{pid}", daemon=True).start()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the pid taken by another user's process
        return False
    return True


def collate(items: list[tuple[torch.Tensor | None, int, str | None]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [p for _, _, p in items if p is not None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good]), bad


class GlobalBatchSampler(Sampler):
    """Keys ``(epoch, index)`` of this rank's slice of each global batch of ``epoch``, from
    ``first_step`` on. The epoch's order is the permutation the in-memory path draws from
    (seed, epoch), and rank r of N takes images [B*r/N, B*(r+1)/N) of each global batch of B: so
    the ranks together see exactly one process's batches, and a resume can start at any step."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 first_step: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        if batch_size < world_size:
            raise ValueError(f"global batch size {batch_size} is smaller than the {world_size} ranks sharing it")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world_size, self.first_step = rank, world_size, first_step

    @property
    def steps(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def order(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch)))

    def global_sizes(self) -> list[int]:
        """Images in each global batch yielded, the loss's divisor."""
        return [min(self.batch_size, self.n - s * self.batch_size) for s in range(self.first_step, self.steps)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order()
        for step in range(self.first_step, self.steps):
            batch = order[step * self.batch_size: (step + 1) * self.batch_size]
            lo, hi = len(batch) * self.rank // self.world_size, len(batch) * (self.rank + 1) // self.world_size
            yield [(self.epoch, i) for i in batch[lo:hi].tolist()]

    def __len__(self) -> int:
        return max(0, self.steps - self.first_step)


# --------------------------------------------------------------------------------------------------
# Building the datasets


def folder_datasets(root: str | Path, train_tf: SampleTransform, workers: int, val_split: float | None = None,
                    seed: int = 0) -> tuple[StreamDataset, StreamDataset]:
    """(train, val) of ``root/train/<class>/*`` and ``root/val/<class>/*``, or with ``val_split``
    a stratified split of ``root/train``. Train and val share one list of skipped files."""
    files, labels, classes = list_imagefolder(root, "train")
    skipped: list[str] = []
    train = StreamDataset(files, labels, classes, train_tf, f"imagefolder:{root}", workers, skipped)
    if val_split:
        train_idx, val_idx = stratified_split(labels, val_split, seed)
        return train.take(train_idx), train.take(val_idx)
    val_files, val_labels, _ = list_imagefolder(root, "val", classes)
    return train, StreamDataset(val_files, val_labels, classes, train_tf, train.name, workers, skipped)


def system_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_loader(requested: str, dataset: str, images: int, input_size: tuple[int, int, int],
                  budget_gb: float | None) -> str:
    """``memory`` or ``stream``: ``auto`` streams when the decoded set would pass the budget
    (default: a quarter of RAM)."""
    if requested not in LOADERS:
        raise ValueError(f"--data-loader must be one of {', '.join(LOADERS)}, got {requested!r}")
    if dataset == "webdataset":
        if requested == "memory":
            raise ValueError("--dataset webdataset streams its shards: use --data-loader stream or auto")
        return "stream"
    if dataset != "imagefolder":
        if requested == "stream":
            raise ValueError(f"--data-loader stream reads image files: --dataset imagefolder or webdataset, not {dataset}")
        return "memory"
    if requested != "auto":
        return requested
    budget = (budget_gb * 2**30) if budget_gb is not None else system_memory_bytes() / 4
    return "stream" if images * math.prod(input_size) > budget else "memory"


def count_images(root: str | Path, val_split: float | None) -> int:
    """Image files of ``root``'s train and val splits, from the file names alone."""
    splits = ("train",) if val_split else ("train", "val")
    return sum(1 for s in splits if (Path(root) / s).is_dir()
               for p in (Path(root) / s).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
