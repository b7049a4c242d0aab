"""The tour's figures, docs/tour/FAMILY.png: what each family's network has learnt after a short
run on Fashion-MNIST -- its first layer's filters, and Grad-CAM on one test image of each of four
classes with the predicted class.

    .venv/bin/python benchmarks/tour_figures.py              # trains runs/tour/MODEL first when missing
    .venv/bin/python benchmarks/tour_figures.py --families lenet resnet

Each run is `cnnzoo train --model MODEL --epochs 3 --train-subset 10000 --seed 0 --out runs/tour/MODEL`
(the default recipe; 13 minutes for all seven on two Xeon cores): short runs, so the figures show what
a few epochs on a sixth of the training set teach, not the league's results.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cnnzoo.cli import main  # noqa: E402
from cnnzoo.data.datasets import Normalize, load_dataset, resize_to  # noqa: E402
from cnnzoo.inference.load import load_model  # noqa: E402
from cnnzoo.interpretation import drawing, maps  # noqa: E402

# The tour's pages and the small variant of each family the league trains.
FAMILIES = {"lenet": "lenet5", "alexnet": "alexnet_cifar", "zfnet": "zfnet_cifar", "vgg": "vgg11_cifar",
            "inception": "googlenet_cifar", "resnet": "resnet20", "mobilenet": "mobilenet_v1_cifar"}
CLASSES = ("Trouser", "Sneaker", "Bag", "Shirt")
EPOCHS, TRAIN_IMAGES = 3, 10000


def train(model: str, run: Path) -> None:
    if not (run / "last.safetensors").exists():
        args = ["train", "--model", model, "--epochs", str(EPOCHS), "--train-subset", str(TRAIN_IMAGES), "--seed", "0",
                "--out", str(run), "--no-progress"]
        assert main(args) == 0, f"cnnzoo {' '.join(args)} failed"


def figure(run: Path, out: Path) -> None:
    model, meta = load_model(run)
    cfg = model.pretrained_cfg
    ds = load_dataset(meta["dataset"], "test", data_dir=meta.get("data_dir"))
    picks = [int((ds.labels == ds.classes.index(name)).nonzero()[0]) for name in CLASSES]
    images = resize_to(ds.images[picks], cfg["input_size"][1:])
    normalize = Normalize(cfg["mean"], cfg["std"])
    fig, axes = plt.subplots(1, 1 + len(CLASSES), figsize=(2.0 * (1 + len(CLASSES)), 2.3))
    axes[0].imshow(np.asarray(drawing.filter_grid(maps.first_layer_filters(model))), cmap="gray", interpolation="nearest")
    axes[0].set_title("first-layer filters", fontsize=8)
    for ax, img, truth in zip(axes[1:], images, CLASSES):
        heat, target = maps.grad_cam(model, normalize(img.unsqueeze(0)))
        ax.imshow(np.asarray(drawing.overlay(img, heat)), interpolation="nearest")
        ax.set_title(f"{truth}: predicted {meta['classes'][target]}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{cfg['architecture']} after {EPOCHS} epochs on {TRAIN_IMAGES:,} Fashion-MNIST images "
                 f"(Grad-CAM at {maps.default_layer(model)})", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)
    plt.close(fig)
    print(f"{out}: {out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", choices=tuple(FAMILIES), default=tuple(FAMILIES))
    p.add_argument("--runs", type=Path, default=Path("runs/tour"), help="folder of the runs (trained if missing)")
    p.add_argument("--out", type=Path, default=Path("docs/tour"))
    args = p.parse_args()
    for family in args.families:
        run = args.runs / FAMILIES[family]
        train(FAMILIES[family], run)
        figure(run, args.out / f"{family}.png")
