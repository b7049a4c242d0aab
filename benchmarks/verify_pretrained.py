"""Check cnnzoo's published-weights catalogue against the real files (needs internet, or the files
already in torch.hub's / huggingface_hub's caches).

For each chosen entry of ``cnnzoo weights``: fetch the file as ``create_model(pretrained=True)`` does
(torch.hub checks torchvision's hash prefix, cnnzoo.models.hub the hub's SHA-256), check the file's SHA-256
against the catalogue, build the reference with the same weights (torchvision's model with its
weights enum, or timm's with its pretrained tag; both read the same cached file), classify one image
with each and print the top-1 class of both and the largest logit difference.

    .venv/bin/python benchmarks/verify_pretrained.py --models resnet18 mobilenet_v2 --image cat.jpg
    .venv/bin/python benchmarks/verify_pretrained.py --models 'resnet*' --image cat.jpg --expect tabby
    .venv/bin/python benchmarks/verify_pretrained.py            # every catalogued file (about 6 GB)

Without --image a fixed synthetic image is used: the logits comparison still holds, the class does not.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cnnzoo.data.datasets import decode_image
from cnnzoo.data.transforms import eval_transform
from cnnzoo.models import hub
from cnnzoo.models.factory import create_model


def test_image(path: str | None) -> torch.Tensor:
    if path:
        return decode_image(path, 3)
    g = torch.Generator().manual_seed(0)  # smooth colour blobs: a photo-like spectrum, no meaning
    low = torch.rand(3, 8, 10, generator=g)
    return (torch.nn.functional.interpolate(low[None], size=(375, 500), mode="bicubic")[0].clamp(0, 1) * 255).byte()


def reference_logits(w: hub.PublishedWeights, img: torch.Tensor, ours_input: torch.Tensor) -> torch.Tensor:
    """The reference's logits for the same weights. torchvision's model gets its weights' own
    transforms (its GoogLeNet / Inception v3 renormalise inside, ours are registered with the
    renormalised statistics); timm's gets our input, whose preprocessing is its pretrained cfg's."""
    if w.source == "torchvision":
        import torchvision.models as tvm

        enum_name, _, weight_name = w.reference.partition(".")
        weights = getattr(tvm, enum_name)[weight_name]
        model = tvm.get_model(_torchvision_name(w), weights=weights).eval()
        x = weights.transforms()(img)
    else:
        import timm

        model = timm.create_model(w.reference.removeprefix("timm:"), pretrained=True).eval()
        x = ours_input
    with torch.inference_mode():
        return model(x[None])[0]


def _torchvision_name(w: hub.PublishedWeights) -> str:
    from cnnzoo.models.registry import get_pretrained_cfg

    return get_pretrained_cfg(w.model).reference.removeprefix("torchvision:")


def verify(w: hub.PublishedWeights, img: torch.Tensor) -> dict:
    model = create_model(w.name, pretrained=True).eval()
    cfg = model.pretrained_cfg
    hash_ok = cfg["sha256"].startswith(w.sha256) if w.sha256 else None  # hub files: checked by cnnzoo.models.hub
    x = eval_transform(cfg)(img)
    with torch.inference_mode():
        ours = model(x[None])[0]
    ref = reference_logits(w, img, x)
    names = cfg["label_names"]
    return dict(weights=w.name, file=w.file, sha256=cfg["sha256"], hash_ok=hash_ok, published_top1=w.top1,
                ours=names[int(ours.argmax())], ours_prob=round(float(ours.softmax(0).max()), 4),
                reference=names[int(ref.argmax())], max_abs_diff=float((ours - ref).abs().max()),
                max_abs_logit=float(ref.abs().max()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["*"], metavar="PATTERN", help="model names or wildcards")
    p.add_argument("--image", help="an image file to classify (default: a synthetic image)")
    p.add_argument("--expect", help="the class name the image should get (e.g. tabby)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest logit difference accepted, relative to the largest logit (default 1e-4)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    entries = [w for pattern in args.models for w in hub.list_weights(pattern)]
    if not entries:
        p.error(f"no published weights match {args.models}")
    img = test_image(args.image)
    rows, failed = [], 0
    print(f"{'weights':42} {'hash':5} {'ours':24} {'reference':24} {'max|diff|':>10} {'top-1 %':>8}")
    for w in entries:
        try:
            r = verify(w, img)
        except Exception as exc:  # report and go on: one missing file should not hide the others
            print(f"{w.name:42} ERROR {type(exc).__name__}: {exc}")
            failed += 1
            continue
        ok = (r["hash_ok"] is not False and r["max_abs_diff"] <= args.tolerance * max(1.0, r["max_abs_logit"]) and r["ours"] == r["reference"]
              and (args.expect is None or r["ours"] == args.expect))
        failed += not ok
        print(f"{r['weights']:42} {str(r['hash_ok']):5} {r['ours'][:24]:24} {r['reference'][:24]:24} "
              f"{r['max_abs_diff']:10.2e} {r['published_top1'] or '-':>8}{'' if ok else '  MISMATCH'}")
        rows.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"{len(entries) - failed} of {len(entries)} files agree with the catalogue and the reference")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
