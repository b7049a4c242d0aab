"""``cnnzoo quantize``'s int8 formats on CPUs with and without VNNI: top-1 here and on an emulated
AVX2 CPU, and speed here.

    .venv/bin/python benchmarks/int8_formats.py accuracy --runs runs/l5 runs/r20 [--images 2000] [--emulate-fp32]
    .venv/bin/python benchmarks/int8_formats.py speed [--models resnet20 resnet50] [--batches 1 64] [--out DIR]
    .venv/bin/python benchmarks/int8_formats.py predict MODEL.onnx IMAGES.npy LOGITS.npy

``accuracy``: quantizes each trained run (``cnnzoo quantize``: 512 training images) in every format of
``cnnzoo.inference.quantize.INT8_FORMATS``, then runs its fp32 graph and each int8 file with ONNX Runtime on
the same ``--images`` test images, here and under ``qemu-x86_64 -cpu Haswell``: an AVX2 CPU without
AVX-512, VNNI or AMX (ONNX Runtime picks its kernels from CPUID, which qemu answers for the CPU it
emulates). Prints each file's top-1, its top-1 agreement with the fp32 graph here, and its top-1 on
the whole test split here (``cnnzoo eval``'s). qemu runs fp32 kernels ~25x slower than int8 ones
(ResNet-20: 1.2 s an image), so the fp32 graph runs under it only with ``--emulate-fp32``.
``speed``: each format's file of a registered model with random weights (speed does not depend on
them), timed with ONNX Runtime on this machine, interleaved iteration by iteration (``cnnzoo bench``'s
timing), with each format's speed over u8s8's and its 90% confidence interval.
``predict``: one .onnx file's logits on a .npy of images. It imports only numpy and onnxruntime, so
it starts in seconds under qemu, where the other parts run it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

QEMU_AVX2 = ["qemu-x86_64", "-cpu", "Haswell"]
PREDICT_BATCH = 256


def predict(model: str, images: str, out: str) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.load(images)
    name = session.get_inputs()[0].name
    logits = [session.run(None, {name: x[i:i + PREDICT_BATCH]})[0] for i in range(0, len(x), PREDICT_BATCH)]
    np.save(out, np.concatenate(logits))


def _logits(model: Path, images: Path, emulate: bool) -> np.ndarray:
    """``model``'s logits on ``images``, computed here or under qemu's AVX2 CPU."""
    out = images.with_name(f"{model.stem}.{'avx2' if emulate else 'native'}.logits.npy")
    cmd = [sys.executable, __file__, "predict", str(model), str(images), str(out)]
    subprocess.run([*QEMU_AVX2, *cmd] if emulate else cmd, check=True, stderr=subprocess.DEVNULL)
    return np.load(out)


def accuracy(out: Path, runs: list[str], n: int, emulate_fp32: bool) -> list[dict]:
    from cnnzoo.inference.load import load_model
    from cnnzoo.inference.predict import evaluate_checkpoint
    from cnnzoo.inference.quantize import INT8_FORMATS, fp32_onnx, labelled_images, quantize

    if shutil.which(QEMU_AVX2[0]) is None:
        raise SystemExit("accuracy needs qemu-x86_64 (Debian package qemu-user) for the AVX2 CPU")
    rows = []
    for run in map(Path, runs):
        net, meta = load_model(run, None)
        cfg = net.pretrained_cfg
        model = f"{cfg['architecture']} ({run.name})"
        images, labels = labelled_images(meta["dataset"], "test", n, cfg, data_dir=meta.get("data_dir"),
                                         data_size=meta.get("data_size"), classes=meta.get("classes"))
        x = out / f"{run.name}.test{n}.npy"
        np.save(x, images.numpy())
        files = {"fp32": out / f"{run.name}.fp32.onnx"}
        files["fp32"].write_bytes(fp32_onnx(net, cfg["input_size"]))
        for fmt in INT8_FORMATS:
            files[fmt] = out / f"{run.name}.{fmt}.onnx"
            quantize(files[fmt], checkpoint=run, int8_format=fmt)
        ref = _logits(files["fp32"], x, emulate=False).argmax(1)
        for fmt, path in files.items():
            full = evaluate_checkpoint(run if fmt == "fp32" else path)["top1"]  # the fp32 graph has no metadata
            row = {"model": model, "format": fmt, "top-1, test split, here": f"{100 * full:.2f}"}
            for cpu, emulate in (("here", False), ("AVX2 (qemu)", True)):
                if emulate and fmt == "fp32" and not emulate_fp32:
                    row[f"top-1 {cpu}"] = row[f"agreement {cpu}"] = "-"
                    continue
                pred = _logits(path, x, emulate).argmax(1)
                row[f"top-1 {cpu}"] = f"{100 * (pred == labels.numpy()).mean():.2f}"
                row[f"agreement {cpu}"] = f"{100 * (pred == ref).mean():.2f}"
            print(row, file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def speed(out: Path, models: list[str], batches: list[int], iters: int, warmup: int) -> list[dict]:
    import torch

    from cnnzoo.inference.onnx import OnnxRuntimeModule
    from cnnzoo.inference.quantize import INT8_FORMATS, quantize
    from cnnzoo.models.registry import get_model_cfg
    from cnnzoo.studies.bench import Variant, _time_variants, paired_ratio, paired_ratio_ci

    rows = []
    for model in models:
        torch.manual_seed(0)
        files = {fmt: out / f"{model}.random.{fmt}.onnx" for fmt in INT8_FORMATS}
        for fmt, path in files.items():
            quantize(path, model=model, dataset="synthetic", calib_images=32, check_images=16, int8_format=fmt)
        size = get_model_cfg(model)["input_size"]
        for batch in batches:
            vs = [Variant(fmt, OnnxRuntimeModule(path.read_bytes()), None, 0) for fmt, path in files.items()]
            x = torch.randn(batch, *size)
            _time_variants(vs, model, "infer", x, torch.zeros(batch, dtype=torch.long), False, torch.device("cpu"),
                           warmup, iters, progress=False)
            base = vs[0].times
            for v in vs:
                lo, hi = paired_ratio_ci(v.times, base)
                rows.append({"model": f"{model} {'x'.join(map(str, size))}", "format": v.label, "batch": batch,
                             "ms/batch (median)": f"{1e3 * float(np.median(v.times)):.2f}",
                             "img/s": f"{batch / float(np.median(v.times)):.1f}",
                             "x u8s8 (90% CI)": f"{paired_ratio(v.times, base):.3f} ({lo:.3f}-{hi:.3f})"})
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("--runs", nargs="+", required=True, help="trained run folders")
    a.add_argument("--images", type=int, default=2000, help="test images run here and under qemu")
    a.add_argument("--emulate-fp32", action="store_true", help="run the fp32 graph under qemu too (slow)")
    s = sub.add_parser("speed")
    s.add_argument("--models", nargs="+", default=["resnet20", "resnet50"])
    s.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    s.add_argument("--iters", type=int, default=20)
    s.add_argument("--warmup", type=int, default=3)
    for q in (a, s):
        q.add_argument("--out", default="runs/int8-formats", help="folder for the files and the table")
    r = sub.add_parser("predict")
    r.add_argument("model")
    r.add_argument("images")
    r.add_argument("logits")
    args = p.parse_args()
    if args.part == "predict":
        return predict(args.model, args.images, args.logits)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "accuracy":
        rows = accuracy(out, args.runs, args.images, args.emulate_fp32)
    else:
        rows = speed(out, args.models, args.batches, args.iters, args.warmup)
    text = table(rows)
    (out / f"{args.part}.md").write_text(text + "\n")
    (out / f"{args.part}.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
