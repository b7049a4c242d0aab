"""int8 and bf16 inference against torchvision's fp32 eager model, and int8 top-1 against fp32.

    .venv/bin/python benchmarks/int8.py speed [--out DIR] [--models resnet50 mobilenet_v2] [--batches 1 32]
                                              [--backend torch onnxruntime] [--precision fp32 bf16 int8]
    .venv/bin/python benchmarks/int8.py accuracy [--out DIR] [--models lenet5 resnet20 mobilenet_v2_cifar]
                                                 [--quantizer onnxruntime openvino]
    .venv/bin/python benchmarks/int8.py compressed [--out DIR] [--models lenet5]

``speed``: one ``cnnzoo bench --reference --backend torch onnxruntime --precision fp32 bf16 int8``
run per batch size (every variant interleaved with torchvision's eager fp32 model and with the
peer, torchvision's model quantized plainly by ONNX Runtime); random weights.
``accuracy``: trains each model on Fashion-MNIST (``TRAIN_ARGS``), quantizes
the run with ``cnnzoo quantize`` (512 training images) and evaluates both on the test split.
``compressed``: Deep Compression then int8: the trained run, its ``cnnzoo compress`` file (.cnnz) and
that file quantized (``cnnzoo quantize --checkpoint X.cnnz``): size, test top-1, and img/s of the
fp32 model and the int8 file timed in one ``cnnzoo bench`` run at batch 1 and 32.
Each prints the table: model, backend, precision, batch, img/s, ratio to reference, share of peak, top-1.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CNNZOO = [sys.executable, "-m", "cnnzoo"]
# LeNet-5's own 12-epoch schedule reaches 0.91 (a minute on an idle 2-core CPU); the deeper nets
# take the fast recipe, cut to a few epochs.
TRAIN_ARGS = {"lenet5": [], "resnet20": ["--recipe", "fast", "--epochs", "3"],
              "mobilenet_v2_cifar": ["--recipe", "fast", "--epochs", "3"]}


def run_json(args: list[str]) -> dict:
    """Run a cnnzoo command with --json; its last output line is the result."""
    print("$ cnnzoo " + " ".join(args), file=sys.stderr, flush=True)
    out = subprocess.run([*CNNZOO, *args, "--json"], check=True, capture_output=True, text=True).stdout
    print(out.rsplit("\n", 2)[0], file=sys.stderr)
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    cols = ["model", "backend", "precision", "batch", "img/s", "x reference (90% CI)", "x peer (90% CI)", "peak %",
            "top-1", "size MB"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |")
    return "\n".join(lines)


def _ci(v: dict, key: str) -> str:
    if f"over_{key}" not in v:
        return "-"
    lo, hi = v[f"over_{key}_ci90"]
    return f"{v[f'over_{key}']:.2f} ({lo:.2f}-{hi:.2f})"


def speed(out: Path, models: list[str], batches: list[int], iters: int, warmup: int, backends: list[str],
          precisions: list[str]) -> list[dict]:
    rows = []
    for batch in batches:
        report = run_json(["bench", *models, "--mode", "infer", "--batch-size", str(batch), "--reference",
                           "--backend", *backends, "--precision", *precisions, "--iters", str(iters), "--warmup", str(warmup)])
        (out / f"bench_b{batch}.json").write_text(json.dumps(report, indent=1, default=str))
        ratios = {q["model"]: q for q in report["ratios"]}
        for r in report["results"]:
            v = ratios[r["model"]].get("variants", {}).get(r["variant"], {})
            if r["variant"] == "reference":
                v = {"over_reference": 1.0, "over_reference_ci90": [1.0, 1.0]}
            elif r["variant"] == "ours":
                q = ratios[r["model"]]
                v = {"over_reference": q["ours_over_reference"], "over_reference_ci90": q["ours_over_reference_ci90"]}
            rows.append({"model": r["model"], "backend": r["backend"] or "torch eager", "precision": r["precision"],
                         "batch": batch, "img/s": f"{r['images_per_s']:.1f}", "variant": r["variant"],
                         "x reference (90% CI)": _ci(v, "reference"), "x peer (90% CI)": _ci(v, "peer"),
                         "peak %": f"{100 * r['peak_share']:.0f}", "top-1": "-"})
            rows[-1]["model"] += f" ({r['variant']})"
    return rows


def accuracy(out: Path, models: list[str], quantizers: list[str]) -> list[dict]:
    """fp32 top-1 of each trained model, then that of its int8 file from each quantizer (the int8
    files all run in ONNX Runtime, so the top-1 tells the quantizers apart)."""
    rows = []
    for model in models:
        run = _trained(out, model)
        ev = run_json(["eval", "--checkpoint", str(run)])
        rows.append({"model": model, "backend": "torch eager", "precision": "fp32", "batch": 512,
                     "top-1": f"{100 * ev['top1']:.2f}", "size MB": f"{(run / 'last.safetensors').stat().st_size / 1e6:.3f}"})
        for quantizer in quantizers:
            int8 = out / f"{model}.{quantizer}.int8.onnx"
            q = run_json(["quantize", "--checkpoint", str(run), "--out", str(int8), "--backend", quantizer])
            ev = run_json(["eval", "--checkpoint", str(int8)])
            rows.append({"model": model, "backend": f"onnxruntime ({quantizer} quantizer)", "precision": "int8",
                         "batch": 512, "top-1": f"{100 * ev['top1']:.2f}", "size MB": f"{q['bytes'] / 1e6:.3f}"})
    return rows


def _trained(out: Path, model: str) -> Path:
    run = out / f"{model}-fmnist"
    if not (run / "summary.json").is_file():
        run_json(["train", "--model", model, *TRAIN_ARGS.get(model, ["--recipe", "fast", "--epochs", "3"]),
                  "--out", str(run), "--no-progress"])
    return run


def compressed(out: Path, models: list[str], batches: list[int]) -> list[dict]:
    rows = []
    for model in models:
        run = _trained(out, model)
        cnnz, int8 = out / f"{model}.cnnz", out / f"{model}.cnnz.int8.onnx"
        if not cnnz.is_file():
            run_json(["compress", "--checkpoint", str(run), "--out", str(cnnz), "--no-progress"])
        run_json(["quantize", "--checkpoint", str(cnnz), "--out", str(int8)])
        files = {"fp32": run / "last.safetensors", "fp32 .cnnz": cnnz, "int8 from .cnnz": int8}
        top1 = {k: run_json(["eval", "--checkpoint", str(f)])["top1"] for k, f in files.items()}
        speed = {}
        for batch in batches:
            report = run_json(["bench", model, str(int8), "--mode", "infer", "--batch-size", str(batch)])
            speed[batch] = [r["images_per_s"] for r in report["results"]]  # [fp32 eager, int8 file]
        for k, f in files.items():
            ips = {b: (v[1] if k.startswith("int8") else v[0]) for b, v in speed.items()}
            rows.append({"model": model, "backend": "onnxruntime" if k.startswith("int8") else "torch eager",
                         "precision": k, "batch": " / ".join(map(str, batches)),
                         "img/s": " / ".join(f"{ips[b]:.0f}" for b in batches) if k != "fp32 .cnnz" else "-",
                         "top-1": f"{100 * top1[k]:.2f}", "size MB": f"{f.stat().st_size / 1e6:.3f}"})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["speed", "accuracy", "compressed"])
    p.add_argument("--out", default="runs/int8", help="folder for the runs, files and JSON reports")
    p.add_argument("--models", nargs="+")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--backend", nargs="+", default=["torch", "onnxruntime"])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16", "int8"])
    p.add_argument("--quantizer", nargs="+", default=["onnxruntime"], choices=["onnxruntime", "openvino"],
                   help="accuracy: quantize with these backends' tools (openvino: pip install 'cnnzoo[openvino]')")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "speed":
        rows = speed(out, args.models or ["resnet50", "mobilenet_v2"], args.batches, args.iters, args.warmup, args.backend,
                     args.precision)
    elif args.part == "accuracy":
        rows = accuracy(out, args.models or ["lenet5", "resnet20", "mobilenet_v2_cifar"], args.quantizer)
    else:
        rows = compressed(out, args.models or ["lenet5"], args.batches)
    text = table(rows)
    (out / f"{args.part}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
