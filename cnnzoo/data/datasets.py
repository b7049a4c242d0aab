"""Datasets held in memory as uint8 tensors, and augmentation on whole batches.

Small datasets (Fashion-MNIST, MNIST, a user's image folder at a model's input size) fit in memory
as ``uint8 (N, C, H, W)``: 60,000 28x28 images are 47 MB. A batch is sliced, augmented (random crop
with padding, horizontal flip) and normalised as one tensor, so no per-sample Python runs in the
training loop and the CPU spends its time in the model.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch
import torch.nn.functional as F

from cnnzoo.models.registry import unknown_name_error

FASHION_MNIST_DIR = Path(os.environ.get("CNNZOO_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_INSTALL = "apt-get install -y dataset-fashion-mnist  (Debian package; as root, or with sudo)"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DATASETS = ("fashion-mnist", "mnist", "imagefolder", "synthetic", "webdataset")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class ImageDataset:
    """Images as uint8 (N, C, H, W), labels as int64 (N,), and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = ""
    skipped: list[str] = field(default_factory=list)  # files that could not be decoded

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int, seed: int = 0) -> ImageDataset:
        """A class-balanced-in-expectation random subset of ``n`` images (all if n >= len)."""
        if n >= len(self):
            return self
        return self.take(torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n])

    def sample_images(self, n: int, seed: int) -> torch.Tensor:
        """The uint8 images of a seeded random sample of ``n`` (all if n >= len)."""
        return self.images[torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]]

    def take(self, indices: torch.Tensor) -> ImageDataset:
        return ImageDataset(self.images[indices], self.labels[indices], self.classes, self.name, self.skipped)

    def class_indices(self, wanted: list[int | str]) -> list[int]:
        """Indices of ``wanted`` classes, each given by name or by index (a name wins when a class
        is named like an index). Unknown or repeated classes raise a ValueError naming them."""
        chosen = []
        for c in wanted:
            text = str(c).strip()
            if text in self.classes:
                i = self.classes.index(text)
            elif text.lstrip("-").isdigit():
                i = int(text)
                if not 0 <= i < len(self.classes):
                    raise ValueError(f"{self.name or 'dataset'}: class index {i} out of range 0..{len(self.classes) - 1}")
            else:
                known = ", ".join(f"{j} {name!r}" for j, name in enumerate(self.classes))
                raise ValueError(f"{self.name or 'dataset'}: no class {text!r} (classes: {known})")
            if i in chosen:
                raise ValueError(f"{self.name or 'dataset'}: class {self.classes[i]!r} (index {i}) given twice")
            chosen.append(i)
        if not chosen:
            raise ValueError(f"{self.name or 'dataset'}: an empty list of classes")
        return chosen

    def select_classes(self, wanted: list[int | str]) -> ImageDataset:
        """The images of the ``wanted`` classes only (see ``class_indices``), relabelled 0..k-1 in
        the order given; ``classes`` keeps their names."""
        chosen = self.class_indices(wanted)
        new_label = torch.full((len(self.classes),), -1, dtype=torch.long)
        new_label[chosen] = torch.arange(len(chosen))
        labels = new_label[self.labels]
        keep = (labels >= 0).nonzero().squeeze(1)
        return ImageDataset(self.images[keep], labels[keep], [self.classes[i] for i in chosen], self.name, self.skipped)

    def per_class_subset(self, n: int, seed: int = 0) -> ImageDataset:
        """``n`` images of every class, drawn at random with ``seed`` (a stratified subset), in the
        dataset's order. A class with fewer than ``n`` images is an error naming it."""
        g = torch.Generator().manual_seed(seed)
        keep = []
        for label, name in enumerate(self.classes):
            members = (self.labels == label).nonzero().squeeze(1)
            if len(members) < n:
                raise ValueError(f"{self.name or 'dataset'}: class {name!r} has {len(members)} images, "
                                 f"{n} per class asked for")
            keep.append(members[torch.randperm(len(members), generator=g)[:n]])
        idx = torch.cat(keep).sort().values
        return ImageDataset(self.images[idx], self.labels[idx], self.classes, self.name, self.skipped)

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1] units, over (a sample of) the images."""
        sample = self.images[: 20000].float().div_(255)
        mean = sample.mean(dim=(0, 2, 3))
        std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


# --------------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)

_IDX_DTYPES = {0x08: torch.uint8, 0x09: torch.int8, 0x0B: torch.int16, 0x0C: torch.int32, 0x0D: torch.float32, 0x0E: torch.float64}


def read_idx(path: str | Path) -> torch.Tensor:
    """Parse an IDX file (gzipped or not) into a tensor, checking its header against its length."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    itemsize = torch.empty((), dtype=dtype).element_size()
    expected = math.prod(dims) * itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes of data), file holds {len(raw) - header}")
    data = torch.frombuffer(bytearray(raw[header:]), dtype=dtype)
    if itemsize > 1:  # IDX is big-endian
        data = torch.from_numpy(data.numpy().byteswap())
    return data.reshape(dims)


def _find_idx(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(f"{data_dir}: missing {stem}[.gz]")


def load_idx_dataset(data_dir: str | Path, split: str, classes: list[str], name: str) -> ImageDataset:
    """MNIST-format data: train-images-idx3-ubyte / t10k-images-idx3-ubyte and their labels."""
    data_dir = Path(data_dir)
    prefix = {"train": "train", "test": "t10k", "val": "t10k"}[split]
    images = read_idx(_find_idx(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find_idx(data_dir, f"{prefix}-labels-idx1-ubyte"))
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise ValueError(f"{data_dir}: {prefix} images should be uint8 (N, H, W), got {images.dtype} {tuple(images.shape)}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"{data_dir}: {len(images)} {prefix} images but labels of shape {tuple(labels.shape)}")
    labels = labels.long()
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"{data_dir}: labels outside 0..{len(classes) - 1}")
    return ImageDataset(images.unsqueeze(1).contiguous(), labels, list(classes), name)


# --------------------------------------------------------------------------------------------------
# Image files


def decode_image(path: str | Path | BinaryIO, channels: int, fit_within: tuple[int, int] | None = None,
                 label: str | None = None) -> torch.Tensor:
    """Decode any common image file (a path, or a binary file object such as an upload in memory)
    into uint8 (channels, H, W); ``label`` names it in errors (default: its path or file name).

    Respects EXIF orientation; grey, RGBA, palette and 16-bit images are converted (3 channels:
    RGB; any other count: grey, repeated). With ``fit_within=(h, w)`` a much larger image (a
    10000x10000 photo) is reduced while decoding, to about twice that size, so that memory follows
    the size the model needs, not the file's. A file that cannot be decoded raises ValueError
    naming it (``label``, for a file already read into memory).
    """
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = path if hasattr(path, "read") else Path(path)
    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as img:
            if fit_within is not None:
                img.draft(mode, (2 * fit_within[1], 2 * fit_within[0]))  # JPEG: decode at 1/2..1/8 scale
            img = ImageOps.exif_transpose(img)
            if fit_within is not None:
                factor = min(img.height // (2 * fit_within[0]), img.width // (2 * fit_within[1]))
                if factor >= 2:
                    img = img.reduce(factor)  # box filter: antialiased and cheap
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16/32-bit grey: scale to 8 bits instead of clipping.
                deep = np.asarray(img, dtype=np.float32)
                img = Image.fromarray(np.round(deep / (deep.max() or 1.0) * 255).astype(np.uint8), mode="L")
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        where = label or getattr(path, "name", path)  # a file object names itself, if it can
        raise ValueError(f"{where}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    t = torch.from_numpy(arr.copy())
    t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
    return t if t.shape[0] == channels else t.expand(channels, -1, -1).contiguous()


def resize_to(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Fit uint8 images (N, C, H, W) or (C, H, W) to ``size``.

    A slightly larger target (at most 8 pixels more per side, e.g. 28 -> 32 for LeNet-5) is reached
    by zero padding around the image, as LeCun et al. pad MNIST; anything else is a bilinear,
    antialiased resize of the shorter side followed by a centre crop (torchvision's convention).
    """
    single = images.dim() == 3
    x = images.unsqueeze(0) if single else images
    h, w = x.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return images
    if 0 <= th - h <= 8 and 0 <= tw - w <= 8:
        top, left = (th - h) // 2, (tw - w) // 2
        x = F.pad(x, (left, tw - w - left, top, th - h - top))
    else:
        scale = max(th / h, tw / w)
        nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
        out = []
        for chunk in x.split(256):  # bounded memory for big datasets
            out.append(F.interpolate(chunk.float(), size=(nh, nw), mode="bilinear", antialias=True,
                                     align_corners=False).round_().clamp_(0, 255).byte())
        x = torch.cat(out)
        top, left = (nh - th) // 2, (nw - tw) // 2
        x = x[..., top: top + th, left: left + tw].contiguous()
    return x[0] if single else x


def list_imagefolder(root: str | Path, split: str,
                     classes: list[str] | None = None) -> tuple[list[str], torch.Tensor, list[str]]:
    """The image files of ``root/<split>/<class>/<image>``: (paths, labels, class names), in class
    then file-name order.

    ``classes`` (the training split's) fixes the label order for val; a val class the training set
    lacks is an error, since the model could never predict it.
    """
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: missing (imagefolder expects {root}/train/<class>/* and "
                                f"{root}/val/<class>/*; without val/, --val-split FRACTION holds out part of train/)")
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise ValueError(f"{split_dir}: no class folders")
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise ValueError(f"{split_dir}: classes {extra} are not in the training set's classes {classes}")
    files, labels = [], []
    for label, cls in enumerate(classes):
        cls_dir = split_dir / cls
        if not cls_dir.is_dir():
            continue
        found_files = sorted(p for p in cls_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found_files and split == "train":
            raise ValueError(f"{cls_dir}: empty class folder (no images with extensions {', '.join(IMAGE_EXTENSIONS)})")
        files += [str(p) for p in found_files]
        labels += [label] * len(found_files)
    return files, torch.tensor(labels, dtype=torch.long), list(classes)


def load_imagefolder(root: str | Path, split: str, size: tuple[int, int], channels: int,
                     classes: list[str] | None = None, skip_bad: bool = False) -> ImageDataset:
    """``root/<split>/<class>/<image>`` (see ``list_imagefolder``), decoded once and held in memory at ``size``."""
    files, all_labels, classes = list_imagefolder(root, split, classes)
    images, labels, skipped = [], [], []
    for path, label in zip(files, all_labels.tolist()):
        try:
            img = decode_image(path, channels, fit_within=size)
        except ValueError:
            if not skip_bad:
                raise
            skipped.append(path)
            continue
        images.append(resize_to(img, size))
        labels.append(label)
    if not images:
        raise ValueError(f"{Path(root) / split}: no decodable images")
    return ImageDataset(torch.stack(images), torch.tensor(labels), list(classes), f"imagefolder:{root}", skipped)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices): ``fraction`` of each class, at least one image of any class
    with two or more, drawn with a seeded generator; both sorted."""
    if not 0 < fraction < 1:
        raise ValueError(f"--val-split must lie strictly between 0 and 1, got {fraction}")
    g = torch.Generator().manual_seed(seed)
    val = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        k = min(len(members) - 1, max(1, round(fraction * len(members))))
        val.append(members[torch.randperm(len(members), generator=g)[:k]])
    val_idx = torch.cat(val).sort().values
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val_idx] = False
    return keep.nonzero().flatten(), val_idx


def synthetic_dataset(n: int, size: tuple[int, int, int], num_classes: int, seed: int) -> ImageDataset:
    """Random images whose class shows as a brighter horizontal band at a class-specific height,
    plus noise: learnable, so a short run can show that training works."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = size
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = torch.randint(0, 128, (n, c, h, w), generator=g, dtype=torch.uint8)
    band = max(1, h // num_classes)
    rows = (labels * h // num_classes).tolist()
    for i, r in enumerate(rows):  # setup only, never in the training loop
        images[i, :, r: r + band] += 100
    return ImageDataset(images, labels, [f"class{i}" for i in range(num_classes)], "synthetic")


def load_dataset(name: str, split: str, *, data_dir: str | Path | None = None,
                 input_size: tuple[int, int, int] | None = None, num_classes: int = 10,
                 classes: list[str] | None = None, synthetic_size: int | None = None, seed: int = 0,
                 skip_bad_images: bool = False) -> ImageDataset:
    """Load ``split`` ("train" or "test") of a dataset by name."""
    if name in ("fashion-mnist", "mnist"):
        if data_dir is None:
            if name == "mnist":
                raise ValueError("--dataset mnist needs --data-dir DIR holding the four MNIST IDX files")
            data_dir = FASHION_MNIST_DIR
        data_dir = Path(data_dir)
        if not data_dir.is_dir() or not any(data_dir.glob("train-images-idx3-ubyte*")):
            hint = f" Install it with: {FASHION_MNIST_INSTALL}" if name == "fashion-mnist" else ""
            raise FileNotFoundError(f"{name} data not found in {data_dir}.{hint} Or pass --data-dir DIR holding the four IDX files.")
        names = FASHION_MNIST_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
        return load_idx_dataset(data_dir, split, names, name)
    if name == "imagefolder":
        if data_dir is None:
            raise ValueError("--dataset imagefolder needs --data-dir DIR with DIR/train/<class>/* and DIR/val/<class>/*")
        if input_size is None:
            raise ValueError("imagefolder needs the model's input size")
        return load_imagefolder(data_dir, "train" if split == "train" else "val", tuple(input_size[1:]),
                                input_size[0], classes, skip_bad_images)
    if name == "synthetic":
        c, h, w = input_size or (1, 28, 28)
        n = synthetic_size or (2048 if split == "train" else 512)
        return synthetic_dataset(n, (c, h, w), num_classes, seed + (0 if split == "train" else 1))
    raise unknown_name_error("dataset", name, list(DATASETS))


# --------------------------------------------------------------------------------------------------
# Batches


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image random translation by up to ``padding`` pixels (zero fill), for a whole batch at once."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n)[:, None, None, None]
    chans = torch.arange(c)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The batch moved ``dy`` pixels down and ``dx`` right (negative: up, left), zero fill: the
    same fill as ``random_crop``'s, so a test-time shift shows what training showed."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    return F.pad(x, (p,) * 4)[..., p - dy:p - dy + h, p - dx:p - dx + w]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Each image with a ``size`` x ``size`` square of zeros (black, Fashion-MNIST's background) at a
    random centre, cut off where it passes the border (DeVries & Taylor 2017, Cutout)."""
    n, _, h, w = x.shape
    top = torch.randint(0, h, (n,), generator=generator) - size // 2
    left = torch.randint(0, w, (n,), generator=generator) - size // 2
    rows = torch.arange(h)[None, :] - top[:, None]  # (n, h): row offset inside the square
    cols = torch.arange(w)[None, :] - left[:, None]
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return x.masked_fill(inside[:, None], 0)


class Normalize:
    """uint8 batch -> float32 batch, ``(x / 255 - mean) / std`` per channel, in one fused step."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        std_t = torch.tensor(std).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean).view(1, -1, 1, 1) / std_t

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift.to(x.device), x.float(), self.scale.to(x.device))


def iterate_batches(ds: ImageDataset, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                    crop_padding: int = 0, flip: bool = False, cutout: int = 0, drop_last: bool = False,
                    indices: torch.Tensor | None = None, flips: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) batches; augmentation is applied to each batch as a tensor.

    ``indices`` restricts the pass to a subset (a rank's shard); ``shuffle`` permutes it with
    ``generator`` so that the order is a function of the seed and epoch only. ``flips`` (one bool
    per image of ``ds``), with ``flip``, says which images to mirror instead of a coin per batch.
    """
    idx = indices if indices is not None else torch.arange(len(ds))
    if shuffle:
        idx = idx[torch.randperm(len(idx), generator=generator)]
    stop = len(idx) - (len(idx) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        b = idx[start: start + batch_size]
        x, y = ds.images[b], ds.labels[b]
        if crop_padding:
            x = random_crop(x, crop_padding, generator)
        if flip and flips is not None:
            x = torch.where(flips[b][:, None, None, None], x.flip(-1), x)
        elif flip:
            x = random_flip(x, generator)
        if cutout:
            x = random_cutout(x, cutout, generator)
        yield x, y
