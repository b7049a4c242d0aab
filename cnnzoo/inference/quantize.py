"""Post-training static int8 quantization: a network to an ONNX file that runs on integer kernels.

``quantize`` exports the network with batch norm folded and the batch dimension free, calibrates
the activations' ranges on images of its training split (or synthetic ones), and writes a QDQ
ONNX file (QuantizeLinear/DequantizeLinear pairs around each quantized operator, which ONNX Runtime
and OpenVINO fuse into int8 kernels): int8 weights with one scale per output channel, uint8
activations with one scale per tensor (min/max over the calibration images).

- ``backend="onnxruntime"``: ONNX Runtime's own ``quantize_static``, with 7-bit weights
  (``reduce_range``): x86 CPUs without VNNI add pairs of uint8 x int8 products in 16 bits, which
  8-bit weights can saturate (ONNX Runtime's quantization guide, "data type selection"); 7-bit ones
  cannot, so the file gives the same logits on AVX2, AVX-512 and VNNI/AMX CPUs, at u8s8 speed.
- ``backend="openvino"``: NNCF's ``quantize`` on the same ONNX graph (``pip install cnnzoo[openvino]``).

Every layer is int8 by default, as in ONNX Runtime's and NNCF's own defaults: on Fashion-MNIST the
int8 classifier cost LeNet-5 and ResNet-20 0.1-0.15 points of top-1, while in fp32 it is read as
5 MB (MobileNet v2's 1280x1000 weights) for every batch, 4x its int8 size. ``keep_fp32`` keeps
layers in fp32 where a network loses more: ``"classifier"`` (its logits decide top-1) and
``"first"`` (the first convolution sees the raw image, 1-3 channels, where one scale per tensor is
coarsest). Operators without an int8 kernel (e.g. AlexNet's LRN) run in fp32 between a
DequantizeLinear and a QuantizeLinear. The file's metadata lists every fp32 compute layer and why,
so ``eval``, ``predict`` and ``bench`` read it like any exported .onnx file.
"""
from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cnnzoo.inference.checkpoint_data import checkpoint_split
from cnnzoo.inference.export import fold_batchnorm
from cnnzoo.inference.load import load_model
from cnnzoo.inference.onnx import DEFAULT_OPSET, ONNX_META_KEY, OnnxRuntimeModule, load_onnx_checkpoint, onnx_bytes
from cnnzoo.utils.io import atomic_write

QUANT_BACKENDS = ("onnxruntime", "openvino")
KEEP_FP32 = ("first", "classifier")
DEFAULT_KEEP_FP32: tuple[str, ...] = ()
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Operators that only move or relabel values: run fp32 or int8, they cost nothing worth reporting.
_LAYOUT_OPS = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Shape", "Gather", "Identity",
               "Constant", "ConstantOfShape", "Concat", "Slice", "QuantizeLinear", "DequantizeLinear", "Relu", "Clip"}
# How many leading inputs carry activations (the rest: biases, pads, sizes, computed or constant).
_DATA_INPUTS = {**{op: 2 for op in WEIGHT_OPS}, "Pad": 1, "Resize": 1, "Split": 1, "Expand": 1, "Tile": 1}
_WHY = {"first": "kept fp32 (keep_fp32=first): the first convolution sees the raw image, where one "
                 "activation scale per tensor is coarsest, and costs little",
        "classifier": "kept fp32 (keep_fp32=classifier): its logits decide top-1, and it costs a fraction "
                      "of a percent of the network's MACs"}


_ACTIVATIONS = {"onnxruntime": "uint8, per tensor, min/max calibration",
                "openvino": "8-bit, per tensor, NNCF's performance preset (min/max, fast bias correction)"}

# ONNX Runtime's integer formats (activations x weights). On x86 without VNNI its u8s8 kernels add
# each pair of uint8 x int8 products in 16 bits (VPMADDUBSW), which saturates once 2 x 255 x |w|
# exceeds 32767: ONNX Runtime's quantization guide gives 7-bit weights (reduce_range) or u8u8 as the cure.
INT8_FORMATS = {
    "u8s8": dict(weight_type="QInt8", reduce_range=False,
                 weights="int8 in [-127, 127], per output channel, symmetric"),
    "u8s8-reduce-range": dict(weight_type="QInt8", reduce_range=True,
                              weights="int8 in [-64, 64] (7 bits), per output channel, symmetric"),
    "u8u8": dict(weight_type="QUInt8", reduce_range=False,
                 weights="uint8, per output channel, symmetric about 128"),
}
DEFAULT_INT8_FORMAT = "u8s8-reduce-range"
_FORMAT_WHY = ("7-bit weights keep every uint8 x int8 pair sum within 16 bits, so CPUs without VNNI "
               "(AVX2, AVX-512) compute what VNNI/AMX ones do, on the same u8s8 kernels")


def cpu_int8_path() -> str:
    """How this CPU adds uint8 x int8 products, as ONNX Runtime's kernels see it (CPUID, through
    torch's cpuinfo): with VNNI or AMX in 32 bits, or else in saturating 16-bit pairs."""
    caps = torch.cpu.get_capabilities()
    if caps.get("architecture") not in ("x86_64", "x86"):
        return f"{caps.get('architecture', 'unknown')} (not x86: no 16-bit saturating pairs)"
    vnni = [name for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"))
            if caps.get(flag)]
    if vnni:
        return f"VNNI ({', '.join(vnni)}): 32-bit sums"
    isa = "AVX-512" if caps.get("avx512_bw") else "AVX2" if caps.get("avx2") else "SSE"
    return f"{isa} without VNNI: pairs summed in 16 bits (VPMADDUBSW), saturating"


def _require(backend: str) -> None:
    if backend == "onnxruntime":
        return
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as exc:
        raise ValueError("--backend openvino needs OpenVINO and NNCF: pip install 'cnnzoo[openvino]' "
                         f"(import failed: {exc})") from exc


# --------------------------------------------------------------------------------------------------
# Calibration images


def labelled_images(dataset: str, split: str, n: int, cfg: dict[str, Any], *, data_dir: str | None = None,
                    data_size: Sequence[int] | None = None, classes: list[str] | None = None,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of ``n`` images of ``split`` of ``dataset``, preprocessed as the model was trained
    (``checkpoint_split``): the run's ``classes`` only, fitted to the training images' size (``data_size``),
    then to the model's input, normalised. float (N, C, H, W). Calibration needs no labels, so any
    dataset with the model's channels will do."""
    if n < 1:
        raise ValueError(f"--calib-images must be >= 1, got {n}")
    meta = dict(data_size=data_size, classes=classes)
    ds, normalize = checkpoint_split(cfg, meta, split, dataset=dataset, data_dir=data_dir, images=n, seed=seed,
                                     data_seed=seed, synthetic_size=n, check_classes=False)
    return normalize(ds.images), ds.labels


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a tensor of images, in batches."""

    def __init__(self, input_name: str, images: torch.Tensor, batch: int) -> None:
        self._batches = [{input_name: b.contiguous().numpy()} for b in images.split(batch)]
        self._i = 0

    def get_next(self) -> dict[str, Any] | None:
        if self._i == len(self._batches):
            return None
        self._i += 1
        return self._batches[self._i - 1]

    def rewind(self) -> None:
        self._i = 0


# --------------------------------------------------------------------------------------------------
# The graph: which layers stay fp32


def _weight_nodes(proto: Any) -> list[Any]:
    """The nodes with weights (convolutions, fully connected layers), in graph (topological) order."""
    inits = {t.name for t in proto.graph.initializer}
    return [n for n in proto.graph.node if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits]


def excluded_nodes(proto: Any, keep_fp32: Sequence[str]) -> dict[str, str]:
    """{node name: keep_fp32 keyword} of the nodes the policy keeps in fp32."""
    unknown = set(keep_fp32) - set(KEEP_FP32)
    if unknown:
        raise ValueError(f"unknown keep_fp32 {sorted(unknown)}; choose from {', '.join(KEEP_FP32)} (or none)")
    nodes = _weight_nodes(proto)
    if not nodes:
        return {}
    out = {}
    if "first" in keep_fp32:
        out[nodes[0].name] = "first"
    if "classifier" in keep_fp32:
        out[nodes[-1].name] = "classifier"
    return out


# Operators whose output of int8 values is int8 values on the same grid: NNCF quantizes before them.
_GRID_PRESERVING = {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice",
                    "Pad"}  # zero padding: 0 is on every grid


def _dequantized(name: str, producer: dict[str, Any]) -> bool:
    """Whether tensor ``name`` is a DequantizeLinear's output, maybe through grid-preserving operators."""
    node = producer.get(name)
    while node is not None and node.op_type in _GRID_PRESERVING:
        node = producer.get(node.input[0])
    return node is not None and node.op_type == "DequantizeLinear"


def fp32_layers(quantized: Any, excluded: dict[str, str]) -> list[dict[str, str]]:
    """The compute nodes of a QDQ graph that run in fp32 (an input not produced by a
    DequantizeLinear), with the reason: the policy, or no int8 operator for them."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    int8_ops = set(QDQRegistry) | set(QLinearOpsRegistry)  # what quantize_static quantizes in QDQ form
    producer = {o: n for n in quantized.graph.node for o in n.output}
    out = []
    for node in quantized.graph.node:
        if node.op_type in _LAYOUT_OPS:
            continue
        # A weight layer's bias stays int32 or fp32 either way: its input and weight tell.
        inputs = [i for i in node.input[:_DATA_INPUTS.get(node.op_type, len(node.input))] if i]
        if inputs and all(_dequantized(i, producer) for i in inputs):
            continue
        if node.name in excluded:
            why = _WHY[excluded[node.name]]
        elif node.op_type in int8_ops:
            why = "its input comes from a layer kept in fp32"
        else:
            why = f"no int8 {node.op_type} in ONNX Runtime's quantizer: it runs in fp32 between Dequantize and Quantize"
        out.append(dict(node=node.name, op=node.op_type, reason=why))
    return out


# --------------------------------------------------------------------------------------------------
# Quantization


def fp32_onnx(model: torch.nn.Module, input_size: Sequence[int], opset: int = DEFAULT_OPSET) -> bytes:
    """The network as fp32 ONNX with batch norm folded into the convolutions and a free batch dimension."""
    folded = copy.deepcopy(model).eval()
    fold_batchnorm(folded, tuple(input_size))
    return onnx_bytes(folded, torch.randn(2, *input_size), opset, dynamic_batch=True)


def _quantize_ort(fp32: bytes, images: torch.Tensor, excluded: Sequence[str], batch: int, tmp: Path,
                  int8_format: str) -> Any:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, pre, out = tmp / "fp32.onnx", tmp / "pre.onnx", tmp / "int8.onnx"
    src.write_bytes(fp32)
    # Shape inference and ONNX Runtime's lossless graph fusions first, as its quantizer expects.
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
    fmt = INT8_FORMATS[int8_format]
    quantize_static(str(pre), str(out), _Reader(name, images, batch), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType[fmt["weight_type"]],
                    reduce_range=fmt["reduce_range"], calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=list(excluded))
    return onnx.load(str(out))


def _quantize_nncf(fp32: bytes, images: torch.Tensor, excluded: Sequence[str], batch: int, tmp: Path) -> Any:
    import nncf
    import onnx

    proto = onnx.load_from_string(fp32)
    name = proto.graph.input[0].name
    batches = [{name: b.contiguous().numpy()} for b in images.split(batch)]
    ignored = nncf.IgnoredScope(names=list(excluded)) if excluded else None
    data = nncf.Dataset(batches)
    kwargs = dict(subset_size=len(batches), preset=nncf.QuantizationPreset.PERFORMANCE)
    return nncf.quantize(proto, data, ignored_scope=ignored, **kwargs) if ignored else nncf.quantize(proto, data, **kwargs)


def quantize_onnx(fp32: bytes, images: torch.Tensor, *, backend: str = "onnxruntime",
                  keep_fp32: Sequence[str] = DEFAULT_KEEP_FP32, batch: int = 32,
                  int8_format: str = DEFAULT_INT8_FORMAT) -> tuple[bytes, list[dict[str, str]]]:
    """(QDQ int8 ONNX bytes, its fp32 compute layers) of an fp32 ONNX graph, calibrated on ``images``
    (normalised float N, C, H, W). ``int8_format``: one of ``INT8_FORMATS`` (ONNX Runtime's quantizer)."""
    import onnx

    if backend not in QUANT_BACKENDS:
        raise ValueError(f"unknown quantization backend {backend!r}; choose from {', '.join(QUANT_BACKENDS)}")
    if int8_format not in INT8_FORMATS:
        raise ValueError(f"unknown int8 format {int8_format!r}; choose from {', '.join(INT8_FORMATS)}")
    _require(backend)
    excluded = excluded_nodes(onnx.load_from_string(fp32), keep_fp32)
    with tempfile.TemporaryDirectory(prefix="cnnzoo-quantize-") as tmp:
        if backend == "onnxruntime":
            proto = _quantize_ort(fp32, images, list(excluded), batch, Path(tmp), int8_format)
        else:
            proto = _quantize_nncf(fp32, images, list(excluded), batch, Path(tmp))
    return proto.SerializeToString(), fp32_layers(proto, excluded)


def _agreement(fp32: bytes, int8: bytes, images: torch.Tensor) -> dict[str, float]:
    """How closely the int8 graph follows the fp32 one on ``images``: top-1 agreement and the
    largest logit difference relative to the largest fp32 logit."""
    with torch.inference_mode():
        want = OnnxRuntimeModule(fp32)(images)
        got = OnnxRuntimeModule(int8)(images)
    rel = ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
    return dict(top1_agreement=(got.argmax(1) == want.argmax(1)).float().mean().item(), max_rel_logit_diff=rel)


def _source(checkpoint: str | Path | None, model: str | None, pretrained: Any,
            model_kwargs: dict[str, Any] | None) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """(fp32 ONNX bytes, metadata, pretrained_cfg) of the network to quantize."""
    if checkpoint is not None and Path(checkpoint).suffix == ".onnx":
        predictor, meta = load_onnx_checkpoint(checkpoint)
        if meta.get("quantization"):
            raise ValueError(f"{checkpoint} is already quantized ({meta['quantization'].get('backend')}); "
                             "quantize the checkpoint it came from")
        return Path(checkpoint).read_bytes(), meta, dict(predictor.pretrained_cfg)
    net, meta = load_model(checkpoint, model, pretrained=pretrained, model_kwargs=model_kwargs)
    cfg = dict(net.pretrained_cfg)
    meta = dict(meta, model=meta.get("model", cfg["architecture"]), mean=list(cfg["mean"]), std=list(cfg["std"]),
                num_classes=cfg["num_classes"])
    if checkpoint is None and not pretrained:
        meta["weights"] = "random"
    return fp32_onnx(net, cfg["input_size"]), meta, cfg


def quantize(out: str | Path, *, checkpoint: str | Path | None = None, model: str | None = None,
             pretrained: bool | str | None = None, model_kwargs: dict[str, Any] | None = None,
             dataset: str | None = None, data_dir: str | None = None, calib_images: int = 512,
             check_images: int = 256, backend: str = "onnxruntime",
             keep_fp32: Sequence[str] = DEFAULT_KEEP_FP32, seed: int = 0,
             int8_format: str = DEFAULT_INT8_FORMAT) -> dict[str, Any]:
    """Quantize a checkpoint (run folder, weights, .cnnz or fp32 .onnx file) or a registered model
    to a QDQ int8 ONNX file at ``out``; returns the report also stored in its metadata.

    Calibration uses ``calib_images`` of the training split of ``dataset`` (default: the
    checkpoint's own; ``"synthetic"`` for random weights); ``check_images`` of the test split
    measure how often the int8 file's top-1 agrees with the fp32 network's."""
    import onnx

    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"--out {out}: the int8 network is an ONNX file; name it *.onnx")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {out.parent}")
    if backend not in QUANT_BACKENDS:
        raise ValueError(f"unknown quantization backend {backend!r}; choose from {', '.join(QUANT_BACKENDS)}")
    _require(backend)
    fp32, meta, cfg = _source(checkpoint, model, pretrained, model_kwargs)
    dataset = dataset or meta.get("dataset")
    if dataset is None:
        raise ValueError("no calibration data: pass --dataset NAME (the training split is used), or "
                         "--dataset synthetic for a network with random weights")
    data_dir = data_dir or meta.get("data_dir")
    kw = dict(data_dir=data_dir, data_size=meta.get("data_size"), classes=meta.get("classes"), seed=seed)
    calib, _ = labelled_images(dataset, "train", calib_images, cfg, **kw)
    int8, fp32_nodes = quantize_onnx(fp32, calib, backend=backend, keep_fp32=keep_fp32, int8_format=int8_format)
    check = _agreement(fp32, int8, labelled_images(dataset, "test", check_images, cfg, **kw)[0])
    report = dict(backend=backend, format="QDQ", **_int8_format(backend, int8_format),
                  activations=_ACTIVATIONS[backend], cpu_int8_path=cpu_int8_path(), calibration_dataset=dataset,
                  calibration_split="train", calibration_images=len(calib), keep_fp32=list(keep_fp32),
                  fp32_layers=fp32_nodes, check_images=check_images, **check,
                  source=str(checkpoint) if checkpoint else f"{model} ({meta.get('weights', 'pretrained')})",
                  fp32_bytes=len(fp32), source_bytes=_size(checkpoint))
    meta = dict(meta, input_size=list(cfg["input_size"]), opset=DEFAULT_OPSET, dynamic_batch=True,
                quantization=report)
    proto = onnx.load_from_string(int8)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta, default=str)
    data = proto.SerializeToString()
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    return dict(report, path=str(out), model=meta["model"], bytes=len(data),
                seconds=round(time.perf_counter() - t0, 2))


def _int8_format(backend: str, int8_format: str) -> dict[str, str]:
    """The report's int8 format, its weights and why it was chosen."""
    if backend == "openvino":
        return dict(int8_format="nncf", int8_format_reason="NNCF's own, for OpenVINO's kernels",
                    weights="int8, per output channel, symmetric")
    why = _FORMAT_WHY if int8_format == DEFAULT_INT8_FORMAT else f"int8_format={int8_format} asked for"
    return dict(int8_format=int8_format, int8_format_reason=why, weights=INT8_FORMATS[int8_format]["weights"])


def _size(checkpoint: str | Path | None) -> int | None:
    """Bytes of a checkpoint file (a run folder's weights file), None without one."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        return files[0].stat().st_size if files else None
    return path.stat().st_size if path.is_file() else None


def format_report(report: dict[str, Any]) -> str:
    """The human-readable result of ``quantize``."""
    lines = [f"quantized {report['model']} to {report['path']} ({report['bytes'] / 1e6:.2f} MB int8, fp32 graph "
             f"{report['fp32_bytes'] / 1e6:.2f} MB) with {report['backend']} in {report['seconds']:.1f} s",
             f"  calibration: {report['calibration_images']} images of {report['calibration_dataset']} "
             f"({report['calibration_split']}); {report['weights']} weights, {report['activations']}",
             f"  int8 format {report['int8_format']}: {report['int8_format_reason']}",
             f"  against fp32 on {report['check_images']} test images: top-1 agreement "
             f"{100 * report['top1_agreement']:.1f}%, max |logit difference| {100 * report['max_rel_logit_diff']:.1f}% "
             f"of the largest logit",
             f"  this CPU's int8 path: {report['cpu_int8_path']}"]
    if report["fp32_layers"]:
        lines.append("  layers in fp32:")
        lines += [f"    {d['node']} ({d['op']}): {d['reason']}" for d in report["fp32_layers"]]
    else:
        lines.append("  every compute layer runs in int8")
    return "\n".join(lines)
