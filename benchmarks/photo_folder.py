"""A folder of photo-like JPEGs for the loader benchmarks: ``root/train/<class>/*.jpg`` and ``root/val``.

Each image is a smooth random colour field (a few random values per side, upsampled bicubically)
with random filled shapes and a little sensor-like noise: JPEG files of realistic size (tens of kB
at 256-512 px), unlike pure noise (incompressible) or flat colour (a few hundred bytes).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def photo_like(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    field = rng.integers(0, 256, (rng.integers(3, 8), rng.integers(3, 8), 3), dtype=np.uint8)
    img = Image.fromarray(field).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 7)):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    # sensor-like noise from a tiled 64x64 patch: as costly to compress as fresh noise, 20x cheaper to make
    tile = rng.normal(0, 4, (64, 64, 3)).astype(np.int16)
    noise = np.tile(tile, (height // 64 + 1, width // 64 + 1, 1))[:height, :width]
    noisy = np.asarray(img, dtype=np.int16) + noise
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def make_photo_folder(root: str | Path, n_train: int, n_val: int = 0, classes: int = 10, seed: int = 0,
                      min_side: int = 256, max_side: int = 512, quality: int = 90) -> Path:
    """Write the images (skipping files already there, so an interrupted run continues)."""
    root = Path(root)
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            cls = f"class{i % classes:02d}"
            path = root / split / cls / f"{i:06d}.jpg"
            if path.exists():
                continue
            rng = np.random.default_rng((seed, split == "val", i))
            h, w = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
            path.parent.mkdir(parents=True, exist_ok=True)
            photo_like(rng, h, w).save(path, quality=quality)
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("root")
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--val", type=int, default=500)
    args = p.parse_args()
    make_photo_folder(args.root, args.train, args.val)
    total = sum(f.stat().st_size for f in Path(args.root).rglob("*.jpg"))
    print(f"{args.root}: {args.train + args.val} images, {total / 2**20:.0f} MiB, pid {os.getpid()}")


if __name__ == "__main__":
    main()
