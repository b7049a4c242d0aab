"""Write cnnzoo's catalogue of published weight files and the ImageNet class list (package data).

Run once, from the repository root, where torchvision and timm are installed:

    .venv/bin/python scripts/make_weights_catalogue.py

Facts are read from the installed packages, nothing is downloaded: torchvision's weight enums
(``Weights.url``, ``.meta``: file size, ImageNet-1k top-1, class names) and timm's pretrained cfgs
(Hugging Face hub repository, licence). cnnzoo reads the files it writes without importing either.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import timm
import torchvision
import torchvision.models as tvm
from timm.data import ImageNetInfo
from timm.models import get_pretrained_cfg as timm_cfg

import cnnzoo
from cnnzoo.models.registry import get_pretrained_cfg, list_models, list_tags

PACKAGE = Path(cnnzoo.__file__).parent / "models"
# torchvision's weight names -> the registry's tags (cnnzoo/models/registry.py TV_TAGS, TV2_TAGS).
TV_TAG = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}
HF_FILE = "model.safetensors"  # what timm downloads first from a hub repository


def torchvision_entry(model: str, tag: str, ref: str) -> dict:
    weights = {w.name: w for w in tvm.get_model_weights(ref)}
    name = next(k for k, v in TV_TAG.items() if v == tag)
    w = weights[name]
    file = w.url.rsplit("/", 1)[1]
    prefix = re.search(r"-([a-f0-9]+)\.", file).group(1)  # torch.hub checks a download against it
    return dict(model=model, tag=tag, source="torchvision", reference=f"{type(w).__name__}.{name}",
                aliases=[name.lower()], url=w.url, hf_hub_id=None, file=file, sha256=prefix,
                sha256_kind="prefix (in the file name, as torch.hub checks it)",
                size_mb=round(w.meta["_file_size"], 3), top1=w.meta["_metrics"]["ImageNet-1K"]["acc@1"],
                license="BSD-3-Clause (torchvision)", num_params=w.meta["num_params"])


def timm_entry(model: str, tag: str, ref: str) -> dict | None:
    if not tag or f"{ref}.{tag}" not in timm.list_pretrained(ref + ".*"):  # timm has no weights for it
        return None
    cfg = timm_cfg(f"{ref}.{tag}")
    if not cfg.hf_hub_id:
        return None
    # timm's package records no hash, size or accuracy for hub files; the hub names each file's
    # blob by its SHA-256 (the LFS etag), which cnnzoo.models.hub checks after a download.
    return dict(model=model, tag=tag, source="timm", reference=f"timm:{ref}.{tag}", aliases=[],
                url=f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{HF_FILE}", hf_hub_id=cfg.hf_hub_id,
                file=HF_FILE, sha256=None, sha256_kind="from the hub's metadata at download (LFS etag)",
                size_mb=None, top1=None, license=cfg.license, num_params=None)


def catalogue() -> list[dict]:
    rows = []
    for model in list_models():
        ref = get_pretrained_cfg(model).reference
        if ref is None:
            continue
        lib, _, ref_name = ref.partition(":")
        for tag in list_tags(model):
            entry = torchvision_entry(model, tag, ref_name) if lib == "torchvision" else timm_entry(model, tag, ref_name)
            if entry:
                rows.append(entry)
    return rows


def main() -> None:
    rows = catalogue()
    out = dict(generated_by="scripts/make_weights_catalogue.py",
               from_packages=f"torchvision {torchvision.__version__}, timm {timm.__version__}", weights=rows)
    (PACKAGE / "weights_catalogue.json").write_text(json.dumps(out, indent=1) + "\n")
    names = tvm.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    wnids = ImageNetInfo().label_names()
    assert len(names) == len(wnids) == 1000
    with open(PACKAGE / "imagenet_classes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "wnid", "name"])
        writer.writerows((i, wnid, name) for i, (wnid, name) in enumerate(zip(wnids, names)))
    print(f"{len(rows)} weight files; 1000 ImageNet classes")


if __name__ == "__main__":
    main()
