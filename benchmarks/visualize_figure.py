"""The README's figure docs/visualize.png: Grad-CAM, occlusion and a deconvnet projection of a
LeNet-5 trained briefly on Fashion-MNIST, for one test image of each of a few classes.

    .venv/bin/python benchmarks/visualize_figure.py                 # trains runs/visualize_lenet5 first
    .venv/bin/python benchmarks/visualize_figure.py --run runs/lenet5 --out docs/visualize.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cnnzoo.cli import main  # noqa: E402
from cnnzoo.data.datasets import Normalize, load_dataset, resize_to  # noqa: E402
from cnnzoo.inference.load import load_model  # noqa: E402
from cnnzoo.interpretation import drawing, maps  # noqa: E402

CLASSES = ("Trouser", "Sneaker", "Bag", "Ankle boot", "Shirt")


def train(run: Path) -> None:
    if not run.exists():
        assert main(["train", "--model", "lenet5", "--epochs", "3", "--threads", "1", "--out", str(run),
                     "--no-progress"]) == 0


def panels(model, meta, img: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    cfg = model.pretrained_cfg
    x = Normalize(cfg["mean"], cfg["std"])(img.unsqueeze(0))
    cam, target = maps.grad_cam(model, x)
    occ, _ = maps.occlusion(model, x, target=target, baseline=maps.default_baseline(meta.get("dataset")))
    proj = maps.deconv(model, x, layer="c3")
    with torch.no_grad():
        prob = float(model(x).softmax(dim=1)[0, target])
    boxed = drawing.draw_box(drawing.image(img), proj["field"])
    return [(f"predicted: {meta['classes'][target]} ({prob:.2f})", np.asarray(drawing.image(img))),
            (f"Grad-CAM at {maps.default_layer(model)}", np.asarray(drawing.overlay(img, cam))),
            ("occlusion (black square)", np.asarray(drawing.overlay(img, occ))),
            (f"c3 unit {proj['channel']}: its field", np.asarray(boxed)),
            ("deconvnet projection", np.asarray(drawing.signed_image(proj["deconv"]))),
            ("guided backprop", np.asarray(drawing.signed_image(proj["guided"])))]


def figure(run: Path, out: Path) -> None:
    model, meta = load_model(run)
    c, h, w = model.pretrained_cfg["input_size"]
    ds = load_dataset(meta["dataset"], "test", data_dir=meta.get("data_dir"))
    picks = [int((ds.labels == ds.classes.index(name)).nonzero()[0]) for name in CLASSES]
    images = resize_to(ds.images[picks], (h, w))
    rows = [panels(model, meta, img) for img in images]
    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(1.9 * len(rows[0]), 1.95 * len(rows)))
    for r, row in enumerate(rows):
        for col, (title, arr) in enumerate(row):
            ax = axes[r, col]
            ax.imshow(arr, cmap="gray", interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle(f"cnnzoo visualize: {model.pretrained_cfg['architecture']} on Fashion-MNIST", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"{out}: {out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=Path("runs/visualize_lenet5"), help="a Fashion-MNIST run (trained "
                                                                                   "if missing)")
    p.add_argument("--out", type=Path, default=Path("docs/visualize.png"))
    args = p.parse_args()
    train(args.run)
    figure(args.run, args.out)
