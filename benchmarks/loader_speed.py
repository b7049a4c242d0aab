"""Loader speed per worker: images/s of decode + RandomResizedCrop(224) + flip, no model.

Ours: cnnzoo.data.stream (torchvision.io's libjpeg-turbo decode, the crop drawn before decoding so a
JPEG at least twice the crop is decoded at a reduced DCT scale, uint8 channels-last resize).
Theirs: torchvision.datasets.ImageFolder with its default PIL loader and the same
torchvision.transforms.v2 steps (RandomResizedCrop(224), RandomHorizontalFlip, PILToTensor).

Each runs in this one process with one intra-op thread (what one DataLoader worker has), over the
same files (read into the page cache first), in rounds that alternate which runs first, so that a
shared machine's load falls on both alike; the ratio is the median of the per-round ratios.

    python benchmarks/loader_speed.py /tmp/photos --images 1000 --rounds 5

With ``--batch-decode cuda`` (a GPU) it also times nvJPEG: torchvision.io.decode_jpeg on batches of
``--decode-batch`` files with ``device="cuda"``, then the same RandomResizedCrop(224) and flip on the
GPU, synchronised before the clock stops; ``--batch-decode cpu`` runs that path on the CPU.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from photo_folder import make_photo_folder  # noqa: E402


def ours(root: Path, size: int):
    from cnnzoo.data.datasets import list_imagefolder
    from cnnzoo.data.stream import SampleTransform, StreamDataset

    files, labels, classes = list_imagefolder(root, "train")
    ds = StreamDataset(files, labels, classes, SampleTransform((size, size), 3), workers=0)
    return lambda i, epoch: ds[(epoch, i)][0], len(ds)


def theirs(root: Path, size: int):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    tf = v2.Compose([v2.RandomResizedCrop(size), v2.RandomHorizontalFlip(), v2.PILToTensor()])
    ds = ImageFolder(str(root / "train"), transform=tf)
    return lambda i, epoch: ds[i][0], len(ds)


def batch_decode(files: list[str], size: int, device: str, batch: int):
    """decode_jpeg on whole batches of files on ``device``, then the crop and flip there."""
    from torchvision.io import decode_jpeg
    from torchvision.transforms import v2

    tf = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])

    def run(indices: list[int]) -> float:
        t0 = time.perf_counter()
        for s in range(0, len(indices), batch):
            data = [torch.frombuffer(bytearray(Path(files[i]).read_bytes()), dtype=torch.uint8)
                    for i in indices[s: s + batch]]
            out = torch.stack([tf(x) for x in decode_jpeg(data, device=device)])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        assert out.shape[-2:] == (size, size) and out.dtype == torch.uint8
        return len(indices) / (time.perf_counter() - t0)

    return run


def rate(fetch, indices: list[int], epoch: int) -> float:
    t0 = time.perf_counter()
    for i in indices:
        x = fetch(i, epoch)
    assert x.shape[-2:] == (224, 224) and x.dtype == torch.uint8
    return len(indices) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="image folder (root/train/<class>/*.jpg); generated there if missing")
    p.add_argument("--generate", type=int, default=2000, help="images to generate when root has none")
    p.add_argument("--images", type=int, default=1000, help="images per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-decode", metavar="DEVICE", help="also time batched decode_jpeg on DEVICE (cuda, cpu)")
    p.add_argument("--decode-batch", type=int, default=64)
    args = p.parse_args()
    root = Path(args.root)
    if not (root / "train").is_dir():
        make_photo_folder(root, args.generate, 0)
    torch.set_num_threads(1)
    (ours_fetch, n), (theirs_fetch, _) = ours(root, args.size), theirs(root, args.size)
    from cnnzoo.data.datasets import list_imagefolder

    files = list_imagefolder(root, "train")[0]  # ImageFolder's order too: classes sorted, then file names
    g = torch.Generator().manual_seed(0)
    ratios, rates = [], {"ours": [], "theirs": [], "batch": []}
    batched = batch_decode(files, args.size, args.batch_decode, args.decode_batch) if args.batch_decode else None
    for r in range(args.rounds):
        idx = torch.randperm(n, generator=g)[: args.images].tolist()
        for i in idx:  # into the page cache first: whichever runs first must not pay for the disk
            Path(files[i]).read_bytes()
        if r % 2 == 0:
            a, b = rate(ours_fetch, idx, r), rate(theirs_fetch, idx, r)
        else:
            b, a = rate(theirs_fetch, idx, r), rate(ours_fetch, idx, r)
        rates["ours"].append(a)
        rates["theirs"].append(b)
        ratios.append(a / b)
        line = f"round {r + 1}: ours {a:.0f} img/s, ImageFolder+PIL {b:.0f} img/s, ratio {a / b:.2f}"
        if batched:
            rates["batch"].append(batched(idx))
            line += f"; decode_jpeg on {args.batch_decode} in batches of {args.decode_batch}: {rates['batch'][-1]:.0f} img/s"
        print(line, flush=True)
    print(f"median per worker: ours {statistics.median(rates['ours']):.0f} img/s, ImageFolder+PIL "
          f"{statistics.median(rates['theirs']):.0f} img/s; median ratio {statistics.median(ratios):.2f} "
          f"(torch {torch.__version__}, {args.images} images x {args.rounds} rounds, {args.size}px crops)")
    if batched:
        name = torch.cuda.get_device_name() if args.batch_decode.startswith("cuda") else "the CPU, one thread"
        print(f"median batched decode_jpeg on {args.batch_decode} ({name}): {statistics.median(rates['batch']):.0f} img/s")


if __name__ == "__main__":
    main()
