"""A checkpoint's dataset as its training run prepared it, for every command that scores, shows,
calibrates or retrains a trained network: the run's classes only, relabelled in the run's order
(``--classes``), at the training images' size, then fitted to the model's input, and the run's
normalisation. The network itself comes from ``predict.load_model``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cnnzoo.data.datasets import ImageDataset, Normalize, load_dataset, resize_to


def checkpoint_split(cfg: Mapping[str, Any], meta: Mapping[str, Any], split: str, *, dataset: str | None = None,
                     data_dir: str | None = None, images: int | None = None, seed: int | None = 0,
                     data_seed: int = 0, synthetic_size: int | None = None, fit_input: bool = True,
                     check_classes: bool = True) -> tuple[ImageDataset, Normalize]:
    """(``split`` of the checkpoint's dataset, uint8, prepared as in training; the normalisation of
    its inputs). ``cfg``: the model's ``pretrained_cfg`` (input size, mean, std, classes); ``meta``:
    the checkpoint's metadata (dataset, data folder, training image size, class names).

    ``dataset`` / ``data_dir`` replace the checkpoint's. ``images``: a pick of that many, seeded
    with ``seed`` (``ImageDataset.subset``), or the first ones with ``seed=None``. ``data_seed`` and
    ``synthetic_size`` make the synthetic set. ``fit_input=False`` stops at the training images'
    size (images to show, which ``predict.prepare_image`` then fits as it fits any image file).
    ``check_classes``: a dataset of another number of classes than the model's is an error."""
    dataset = dataset or meta.get("dataset")
    if dataset is None:
        raise ValueError("the checkpoint does not say which dataset it was trained on; pass --dataset")
    c, h, w = cfg["input_size"]
    data_size = tuple(meta.get("data_size") or (c, h, w))
    wanted = list(meta.get("classes") or [])
    ds = load_dataset(dataset, split, data_dir=data_dir or meta.get("data_dir"), input_size=data_size,
                      num_classes=cfg["num_classes"], classes=wanted if dataset == "imagefolder" else None,
                      synthetic_size=synthetic_size, seed=data_seed)
    if ds.classes != wanted and wanted and set(wanted) <= set(ds.classes):  # trained with --classes
        ds = ds.select_classes(wanted)
    if check_classes and len(ds.classes) != cfg["num_classes"]:
        raise ValueError(f"{dataset} has {len(ds.classes)} classes, the checkpoint's model {cfg['num_classes']}")
    if ds.images.shape[1] != c:
        raise ValueError(f"{dataset} has {ds.images.shape[1]} channels, the model takes {c}")
    if images is not None:
        ds = ds.subset(images, seed) if seed is not None else ds.take(slice(0, images))
    ds.images = resize_to(ds.images, data_size[1:])
    if fit_input:
        ds.images = resize_to(ds.images, (h, w))
    return ds, Normalize(cfg["mean"], cfg["std"])
