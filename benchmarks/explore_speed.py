"""How fast `cnnzoo explore` answers, through its ASGI app (no network in between): the zoo page
and resnet50's page cold and warm, and POST /api/predict for resnet18_cifar (3x32x32) with and
without Grad-CAM, occlusion and feature maps. Medians of --repeats calls after one warm-up call.

    .venv/bin/python benchmarks/explore_speed.py [--repeats 10] [--threads 2]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def timed(call) -> float:
    t = time.perf_counter()
    res = call()
    assert res.status_code == 200, res.text
    return time.perf_counter() - t


def checkpoint(folder: Path) -> Path:
    """resnet18_cifar as a CIFAR-10 run would leave it (random weights: speed does not depend on them)."""
    from cnnzoo.models.checkpoint import model_meta, save_weights
    from cnnzoo.models.factory import create_model

    model = create_model("resnet18_cifar", num_classes=10)
    save_weights(model, folder / "best.safetensors", model_meta(model, classes=[str(i) for i in range(10)]))
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from fastapi.testclient import TestClient
    from PIL import Image

    from cnnzoo.explore import create_app

    buf = io.BytesIO()
    Image.new("RGB", (500, 375), "olive").save(buf, format="JPEG")
    image = buf.getvalue()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, TestClient(create_app([checkpoint(Path(tmp))], [], warm=False)) as c:
        out["zoo_page_cold_s"] = timed(lambda: c.get("/"))
        out["resnet50_page_cold_s"] = timed(lambda: c.get("/models/resnet50"))
        cases = {
            "zoo_page_s": lambda: c.get("/"),
            "resnet50_page_s": lambda: c.get("/models/resnet50"),
            "predict_topk_s": lambda: c.post("/api/predict", files={"image": ("x.jpg", image)}, data={"cam": "false"}),
            "predict_gradcam_s": lambda: c.post("/api/predict", files={"image": ("x.jpg", image)}),
            "predict_all_maps_s": lambda: c.post("/api/predict", files={"image": ("x.jpg", image)},
                                                 data={"occlusion": "true", "features": "true"}),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for call in cases.values():
            timed(call)  # warm-up: imports, caches, the first pass's allocations
        for _ in range(args.repeats):  # interleaved, so that a burst of load elsewhere hits every case
            for name, call in cases.items():
                times[name].append(timed(call))
        out.update({k: statistics.median(v) for k, v in times.items()})
    print(json.dumps({k: round(v, 4) for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
