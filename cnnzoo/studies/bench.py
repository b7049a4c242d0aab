"""Throughput and latency of zoo models, against their reference implementations and the machine.

``benchmark`` times each model's inference (forward under ``inference_mode``) and/or training step
(forward, cross-entropy, backward, SGD step) on random data, after warm-up iterations. Variants of
one model (ours, the torchvision/timm reference, ``optimize_for_inference``'s fast path) are timed
in the same process, interleaved iteration by iteration, so a change in the machine's load hits
them all alike. Each result carries the median images/s with its spread, latency percentiles per
batch, peak memory, parameters, MACs, the achieved GFLOP/s and their share of a large matmul in the
same precision, measured in the same run on the same threads (the practical peak of this machine; on
CUDA in fp32 that is TF32, the precision cuDNN's convolutions use by default).

With a reference, each ours/reference ratio is the median of the per-iteration ratios (iteration i of
each variant ran back to back, under the same load), with a bootstrap 90% confidence interval, and
with ``same_ops``: whether both run the same ATen operators on the same
shapes and strides (``compare_ops``, traced on the meta device), apart from our pooling in
channels-last layout on the CPU (``channels_last_pooling``). Same operators and an interval
holding 1.0 mean the same work at the same cost; different operators name the extra work.

Precision variants (``variants``: (backend, precision) pairs, ``variant_pairs``) time our model
as it would be deployed: batch norm folded, run by torch (eager, channels_last; bf16 under autocast),
ONNX Runtime (fp32, or int8 quantized by ``cnnzoo.inference.quantize`` on random calibration images) or
OpenVINO. With a reference, an int8 variant is also timed against its peer: the reference model
quantized plainly with ONNX Runtime's static quantization, run by the same backend. Each row's
share of peak is against the matmul peak of its own precision (int8: ONNX Runtime's integer matmul).

FLOPs are counted as 2 x MACs (convolutions and linear layers, ``cnnzoo.analysis.count_macs``);
a training step is counted as 3 x the forward pass (forward, gradient w.r.t. inputs and weights).
"""
from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from cnnzoo.analysis import count_macs
from cnnzoo.inference.export import cuda_tf32, optimize_for_inference
from cnnzoo.inference.onnx import (
    DEFAULT_OPSET,
    OnnxRuntimeModule,
    OpenVinoModule,
    load_onnx_checkpoint,
    onnx_bytes,
    read_onnx_meta,
)
from cnnzoo.inference.quantize import fp32_onnx, quantize_onnx
from cnnzoo.models.factory import create_model
from cnnzoo.models.layers import pool_in_input_layout
from cnnzoo.models.registry import get_model_cfg, model_kwargs_for
from cnnzoo.training.step import main_logits, train_step
from cnnzoo.utils.distributed import device_name

MODES = ("infer", "train")
TRAIN_FLOP_FACTOR = 3  # forward + backward (input gradients + weight gradients)


# --------------------------------------------------------------------------------------------------
# Machine helpers


def resolve_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device available (torch.cuda.is_available() is False)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {device!r}")
    return dev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                reps: int = 5) -> float:
    """GFLOP/s of the best of ``reps`` (n x n) @ (n x n) products: what this device reaches on the
    most favourable dense workload with the current thread count. On CUDA, fp32 products run in
    TF32 where cuDNN's convolutions do (``torch.backends.cudnn.allow_tf32``, on by default), so the
    peak is that of the precision the models' convolutions run in."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    best = math.inf
    with cuda_tf32(torch.backends.cudnn.allow_tf32):
        torch.mm(a, b, out=c)  # warm-up: thread pool, kernel selection
        for _ in range(reps):
            _sync(device)
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            _sync(device)
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def int8_matmul_peak(n: int | None = None, reps: int = 5) -> float:
    """GOP/s of the best of ``reps`` (n x n) uint8 @ int8 products in ONNX Runtime (MatMulInteger,
    the integer kernel its int8 convolutions run on), on torch's thread count: the int8 peak."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    n = n or 2048
    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "b")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "int8_peak",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])], [b])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = OnnxRuntimeModule(proto.SerializeToString()).session  # the benchmark's session settings
    a = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8)}
    session.run(None, a)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        session.run(None, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def precision_peak(device: torch.device, precision: str, n: int | None = None) -> float:
    """The matmul peak of ``precision`` ("fp32", "bf16", "int8") on ``device``."""
    if precision == "int8":
        if device.type != "cpu":
            raise ValueError("the int8 variants run on the CPU (ONNX Runtime, OpenVINO); use --device cpu")
        return int8_matmul_peak(n)
    return matmul_peak(device, torch.bfloat16 if precision == "bf16" else torch.float32, n)


class PeakMemory:
    """Peak memory of the code run inside ``with``: on CUDA the allocator's max allocated bytes;
    on CPU the process's peak resident set (VmHWM, reset through /proc/self/clear_refs where the
    kernel allows it, else the peak since the process started)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib: float | None = None
        self.kind = "cuda max allocated" if device.type == "cuda" else "process peak RSS"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.kind = "process peak RSS since start"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            _sync(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.mib = int(line.split()[1]) / 1024
        except OSError:
            import resource

            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _percentile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100] of ``xs``."""
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


# --------------------------------------------------------------------------------------------------
# Models


def build_reference(spec: str, num_classes: int, in_chans: int) -> nn.Module:
    """The reference implementation named by a registry cfg's ``reference`` ("torchvision:NAME"
    or "timm:NAME") with random weights. timm is only a test dependency: imported here, lazily."""
    lib, _, name = spec.partition(":")
    if lib == "torchvision":
        import torchvision

        if in_chans != 3:
            raise ValueError(f"torchvision's {name} takes 3 input channels, the benchmark input has {in_chans}")
        kwargs: dict[str, Any] = dict(weights=None, num_classes=num_classes)
        if name in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=False)  # ours is built without aux heads too
        return torchvision.models.get_model(name, **kwargs)
    if lib == "timm":
        try:
            import timm
        except ImportError as exc:
            raise ValueError(f"--reference for {spec} needs timm (a test dependency, not installed): "
                             "pip install timm") from exc
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    raise ValueError(f"unknown reference {spec!r} (expected 'torchvision:NAME' or 'timm:NAME')")


# --------------------------------------------------------------------------------------------------
# Backends and precisions

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
CALIB_IMAGES = 16  # random images calibrating the int8 variants and their peers (timing only)
_UNSUPPORTED = {
    ("torch", "int8"): "torch has no int8 convolutions for these models on this path; int8 runs in "
                       "onnxruntime or openvino",
    ("onnxruntime", "bf16"): "ONNX Runtime's CPU provider has no bfloat16 convolutions on x86 (its bf16 fast "
                             "math is for ARM64)",
}


def variant_pairs(backends: Sequence[str], precisions: Sequence[str],
                  device: str = "cpu") -> tuple[list[tuple[str, str]], list[str]]:
    """The (backend, precision) pairs of ``backends`` x ``precisions`` that can run on ``device``,
    and a line saying why for each one that cannot. None at all is an error."""
    for given, known, flag in ((backends, BACKENDS, "--backend"), (precisions, PRECISIONS, "--precision")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ValueError(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    pairs, skipped = [], []
    for b in dict.fromkeys(backends):
        for p in dict.fromkeys(precisions):
            why = _UNSUPPORTED.get((b, p))
            if b != "torch" and not str(device).startswith("cpu"):
                why = f"{b} runs on the CPU only"
            if why:
                skipped.append(f"{b} {p}: {why}")
            else:
                pairs.append((b, p))
    if not pairs and (backends or precisions):
        raise ValueError("no variant to time: " + "; ".join(skipped))
    return pairs, skipped


class _Autocast(nn.Module):
    """``inner`` under bf16 autocast, returning fp32 logits."""

    def __init__(self, inner: nn.Module, device_type: str) -> None:
        super().__init__()
        self.inner, self.device_type = inner, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.inner(x).float()


def _runtime(onnx_bytes: bytes, backend: str, precision: str = "fp32") -> nn.Module:
    if backend == "onnxruntime":
        return OnnxRuntimeModule(onnx_bytes, threads=torch.get_num_threads())
    return OpenVinoModule(onnx_bytes, threads=torch.get_num_threads(), precision=precision)


def precision_module(model: nn.Module, backend: str, precision: str, example: torch.Tensor,
                     calib: torch.Tensor) -> nn.Module:
    """``model`` as deployed on ``backend`` in ``precision`` (batch norm folded): torch eager in
    channels_last (bf16: under autocast), or an ONNX graph (int8: ``cnnzoo.inference.quantize`` calibrated on
    ``calib``) in ONNX Runtime or OpenVINO. Carries ``inference_backend`` and ``precision``."""
    size = tuple(example.shape[1:])
    if backend == "torch":
        out = optimize_for_inference(model, example, backends=("eager",))
        out = _Autocast(out, example.device.type) if precision == "bf16" else out
    elif precision == "int8":
        out = _runtime(quantize_onnx(fp32_onnx(model, size), calib, backend=backend)[0], backend)
    elif backend == "onnxruntime":
        out = optimize_for_inference(model, example, backends=("onnxruntime",))
    else:
        out = _runtime(fp32_onnx(model, size), backend, precision)
    out.inference_backend, out.precision = backend, precision
    return out


def peer_module(reference: nn.Module, backend: str, calib: torch.Tensor) -> nn.Module:
    """The reference model quantized plainly: exported as it is, ONNX Runtime's static quantization
    (QDQ, per-channel int8 weights, uint8 activations, every layer), run by ``backend``."""
    fp32 = onnx_bytes(reference.eval(), calib[:2].contiguous(), DEFAULT_OPSET, dynamic_batch=True)
    out = _runtime(quantize_onnx(fp32, calib, backend="onnxruntime", keep_fp32=())[0], backend)
    out.inference_backend, out.precision = backend, "int8"
    return out


@dataclass
class Variant:
    """One thing timed: our model, the reference, the fast path, or an ONNX file."""

    label: str
    model: Callable[[torch.Tensor], Any]
    macs: int | None
    params: int
    times: list[float] = field(default_factory=list)
    peak_mem_mib: float | None = None
    peak_mem_kind: str = ""
    step: Callable[[], None] | None = None


def _cross_entropy(outputs: Any, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(main_logits(outputs).float(), y)


def _make_step(model: Callable[[torch.Tensor], Any], mode: str, x: torch.Tensor, y: torch.Tensor,
               amp: bool, device: torch.device) -> Callable[[], None]:
    """A closure running one inference or training step of ``model`` on the fixed batch ``x``."""
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    if mode == "infer":
        if isinstance(model, nn.Module):
            model.eval()

        def infer() -> None:
            with torch.inference_mode(), autocast():
                model(x)

        return infer
    assert isinstance(model, nn.Module)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train() -> None:
        train_step(model, x, y, _cross_entropy, opt, amp=amp)

    return train


class _OpRecorder(TorchDispatchMode):
    """Counts every ATen operator call with the shapes and strides of its tensor arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[tuple[str, tuple[Any, ...]]] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        # Size-1 dimensions are dropped: their strides mean nothing, and (N, C, 1, 1) against (N, C)
        # is the same work (a dropout before or after the flatten).
        layout = tuple(tuple((n, st) for n, st in zip(t.shape, t.stride()) if n != 1) for t in tensors)
        self.ops[(str(func.overloadpacket), layout)] += 1
        return func(*args, **kwargs)


def op_trace(model: nn.Module, x: torch.Tensor, mode: str) -> collections.Counter[tuple[str, tuple[Any, ...]]]:
    """The multiset of ATen operators (with argument shapes and strides) that one inference or
    training step (forward, cross-entropy, backward) of ``model`` on ``x`` runs. Works on the meta
    device, so the traces of 100M-parameter networks cost no memory and no arithmetic."""
    rec = _OpRecorder()
    if mode == "infer":
        model.eval()
        with torch.inference_mode(), rec:
            model(x)
    else:
        model.train()
        y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        with rec:  # up to the gradients: the optimiser's update only depends on the parameters' shapes
            train_step(model, x, y, _cross_entropy, None)
    return rec.ops


def compare_ops(name: str, mode: str, input_size: Sequence[int] | None = None, batch_size: int = 2,
                model_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Whether our ``name`` and its reference implementation run the same operators on the same
    shapes and strides in ``mode``: then a timing difference between them is the machine's noise,
    not wasted work. Both are built on the meta device (which stands in for the CPU).

    Returns ``same``: the same operators apart from the one place ours differs on purpose, pooling
    in channels-last layout on the CPU (``cnnzoo.models.layers.MaxPool2d``: same values and gradients, less time);
    ``channels_last_pooling``: whether that detour ran; and the operators only one of the two runs
    as traced, detour included (``ours_only``, ``reference_only``: [(count, op, layout)])."""
    cfg = get_model_cfg(name)
    if not cfg.get("reference"):
        raise ValueError(f"{name} has no reference implementation to compare with")
    size = tuple(input_size or cfg["input_size"])
    with torch.device("meta"):
        ours = create_model(name, in_chans=size[0], **(model_kwargs or {}))
        ref = build_reference(cfg["reference"], ours.pretrained_cfg["num_classes"], size[0])
    x = torch.empty(batch_size, *size, device="meta")
    a, b = op_trace(ours, x, mode), op_trace(ref, x, mode)
    with pool_in_input_layout():
        a_as_torch_pools = op_trace(ours, x, mode)
    only = lambda c: [(n, op, layout) for (op, layout), n in sorted(c.items())]
    return dict(same=a_as_torch_pools == b, channels_last_pooling=a != a_as_torch_pools,
                ours_only=only(a - b), reference_only=only(b - a))


def _count_macs(model: nn.Module, size: tuple[int, ...]) -> int | None:
    try:
        return count_macs(model, size)
    except Exception:  # a model the counter cannot run: report no MACs rather than fail the timing
        return None


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters()) if isinstance(model, nn.Module) else 0


# --------------------------------------------------------------------------------------------------
# Benchmark


def _progress(msg: str, enabled: bool) -> None:
    if enabled:
        print(f"\r\033[K{msg}", end="", file=sys.stderr, flush=True)


def benchmark(
    models: Sequence[str],
    *,
    mode: str = "infer",
    batch_size: int = 8,
    input_size: Sequence[int] | None = None,
    threads: int | None = None,
    device: str = "cpu",
    amp: bool = False,
    channels_last: bool = False,
    reference: bool = False,
    optimized: bool = False,
    optimize_backends: Sequence[str] = ("eager", "onnxruntime"),
    variants: Sequence[tuple[str, str]] = (),
    warmup: int = 3,
    iters: int = 10,
    progress: bool = True,
    seed: int = 0,
    peak_size: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    pretrained: bool | str | None = None,
) -> dict[str, Any]:
    """Time ``models`` (registered names or exported .onnx files); returns a dict with the machine's
    matmul peak (``peak_size``: its matrix size, default 2048 on CPU, 8192 on CUDA) and one row per
    (model, mode, variant) plus the ours/reference ratios. ``model_kwargs`` go to each registered
    model that takes them, ``pretrained`` its published weights (the references keep their own
    configuration and random weights: speed does not depend on them). ``variants``: (backend,
    precision) pairs (``variant_pairs``) timed beside ours in infer mode.
    See the module docstring for what is measured and how."""
    if mode not in (*MODES, "both"):
        raise ValueError(f"--mode must be infer, train or both, got {mode!r}")
    if batch_size < 1 or iters < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, iters >= 1, warmup >= 0 (got {batch_size}, {iters}, {warmup})")
    dev = resolve_device(device)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    modes = MODES if mode == "both" else (mode,)
    if amp and variants:
        raise ValueError("--amp runs ours and the reference in bf16; with --backend/--precision ask for "
                         "--precision bf16 instead")
    registered = [m for m in models if not str(m).endswith(".onnx")]
    if model_kwargs and not registered:
        raise ValueError("model arguments apply to registered models; an .onnx file holds its network whole")
    per_model = model_kwargs_for(registered, model_kwargs) if model_kwargs else {}
    if pretrained:
        per_model = {m: {**per_model.get(m, {}), "pretrained": pretrained} for m in registered}
    torch.manual_seed(seed)
    # Untrained deep nets can shrink activations into subnormal floats, which x86 computes ~100x
    # slower; trained weights do not. Flushing them to zero times every model as trained.
    flushed = torch.set_flush_denormal(True)
    try:
        return _benchmark(models, modes, dev, batch_size, input_size, amp, channels_last, reference, optimized,
                          optimize_backends, list(variants), warmup, iters, progress, peak_size, per_model)
    finally:
        if flushed:
            torch.set_flush_denormal(False)


def _benchmark(models: Sequence[str], modes: Sequence[str], dev: torch.device, batch_size: int,
               input_size: Sequence[int] | None, amp: bool, channels_last: bool, reference: bool, optimized: bool,
               optimize_backends: Sequence[str], pairs: list[tuple[str, str]], warmup: int, iters: int,
               progress: bool, peak_size: int | None, per_model: dict[str, dict[str, Any]]) -> dict[str, Any]:
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    _progress("measuring the matmul peaks ...", progress)
    main = "bf16" if amp else "fp32"
    precisions = list(dict.fromkeys([main, *(p for _, p in pairs), *_onnx_precisions(models)]))
    start = {p: precision_peak(dev, p, peak_size) for p in precisions}

    rows: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    for name in models:
        is_onnx = str(name).endswith(".onnx")
        label = Path(name).name if is_onnx else name
        kwargs = per_model.get(name, {})
        for m in modes:
            variants = _build_variants(name, is_onnx, m, dev, batch_size, input_size, amp, channels_last, reference,
                                       optimized, optimize_backends, pairs, functools.partial(create_model, **kwargs),
                                       get_model_cfg)
            _, size, num_classes = variants[0]
            vs: list[Variant] = [v for v, _, _ in variants]
            x = torch.randn(batch_size, *size, device=dev)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, num_classes, (batch_size,), device=dev)
            _time_variants(vs, f"{label} {m}", m, x, y, amp, dev, warmup, iters, progress)
            rows += [_row(label, m, v, batch_size, size, start[_variant_precision(v, main)], main) for v in vs]
            if len(vs) > 1:
                ratios.append(_ratios(name, label, m, vs, batch_size, size, dev, channels_last, kwargs))
            del variants, vs
    _progress("", progress)
    end = {p: precision_peak(dev, p, peak_size) for p in precisions}  # again: a load change during the run shows
    best = {p: max(start[p], end[p]) for p in precisions}
    for r in rows:  # shares of the best peak seen: a machine slowed by other load lowers neither
        r["peak_share"] = None if r["gflops"] is None else r["gflops"] / best[r["precision"]]
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return dict(device=str(dev), device_name=device_name(dev), threads=torch.get_num_threads(),
                amp=amp, channels_last=channels_last, batch_size=batch_size,
                matmul_peak_gflops=best[main], matmul_peak_start_gflops=start[main],
                matmul_peak_end_gflops=end[main], matmul_peak_dtype=_precision(dev, main),
                matmul_peaks={p: dict(gflops=best[p], start=start[p], end=end[p]) for p in precisions},
                variants=[f"{b}-{p}" for b, p in pairs],
                load_avg_start=load_start, load_avg_end=load_end, cpu_count=os.cpu_count(),
                torch=torch.__version__, results=rows, ratios=ratios)


def _time_variants(vs: Sequence[Variant], label: str, mode: str, x: torch.Tensor, y: torch.Tensor, amp: bool,
                   dev: torch.device, warmup: int, iters: int, progress: bool) -> None:
    """Warm up, then time every variant's step ``iters`` times, interleaved; then one more step each
    for its peak memory. Fills each variant's ``times`` and ``peak_mem_*``."""
    for v in vs:
        v.step = _make_step(v.model, mode, x, y, amp, dev)
        for i in range(warmup):
            _progress(f"{label} {v.label}: warm-up {i + 1}/{warmup}", progress)
            v.step()
        _sync(dev)
    rng = random.Random(0)
    for i in range(iters):
        # Interleaved, in a fresh order each iteration: a rotation would keep each variant right
        # after the same one, and one that runs after eager torch starts with cold caches and threads.
        for v in rng.sample(vs, len(vs)):
            _sync(dev)
            t0 = time.perf_counter()
            v.step()
            _sync(dev)
            v.times.append(time.perf_counter() - t0)
        done = " ".join(f"{v.label} {len(x) / _percentile(v.times, 50):.1f}/s" for v in vs)
        _progress(f"{label} batch {len(x)}: {i + 1}/{iters}  {done}", progress)
    for v in vs:
        with PeakMemory(dev) as pm:
            v.step()
        v.peak_mem_mib, v.peak_mem_kind = pm.mib, pm.kind


def _ratios(name: str, label: str, mode: str, vs: Sequence[Variant], batch_size: int, size: tuple[int, ...],
            dev: torch.device, channels_last: bool, model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Ours against the reference (paired speed ratio, same operators?) and the fast path against both."""
    variant = {v.label: v for v in vs}
    speed = {v.label: batch_size / _percentile(v.times, 50) for v in vs}
    ratio: dict[str, Any] = dict(model=label, mode=mode, batch_size=batch_size)
    if "reference" in variant:
        times = variant["ours"].times, variant["reference"].times
        ratio["ours_over_reference"] = paired_ratio(*times)
        ratio["ours_over_reference_ci90"] = paired_ratio_ci(*times)
        ops = compare_ops(name, mode, size, model_kwargs=model_kwargs)
        ratio["same_ops"] = ops["same"]
        # the detour is taken by NCHW inputs on the CPU only (the trace runs on the meta device)
        ratio["channels_last_pooling"] = ops["channels_last_pooling"] and dev.type == "cpu" and not channels_last
    if "optimized" in variant:
        ratio["optimized_over_ours"] = speed["optimized"] / speed["ours"]
        ratio["optimized_backend"] = getattr(variant["optimized"].model, "inference_backend", None)
        if "reference" in variant:
            ratio["optimized_over_reference"] = speed["optimized"] / speed["reference"]
    extra = {v.label: _variant_ratios(v, variant) for v in vs
             if v.label not in ("ours", "reference", "optimized") and not v.label.startswith("reference-")}
    if extra:
        ratio["variants"] = extra
    return ratio


def _variant_ratios(v: Variant, variant: dict[str, Variant]) -> dict[str, Any]:
    """A precision variant's paired speed ratios: over ours, over the reference, and (int8) over
    its peer, the reference quantized plainly and run by the same backend."""
    out: dict[str, Any] = dict(over_ours=paired_ratio(v.times, variant["ours"].times))
    for key, other in (("reference", variant.get("reference")), ("peer", variant.get(f"reference-{v.label}"))):
        if other is not None:
            out[f"over_{key}"] = paired_ratio(v.times, other.times)
            out[f"over_{key}_ci90"] = paired_ratio_ci(v.times, other.times)
    return out


def paired_ratio(ours: Sequence[float], ref: Sequence[float]) -> float:
    """The median over interleaved iterations of ``ref[i] / ours[i]`` (ours' speed over the reference's).
    Unlike the ratio of the two medians, it compares each pair under the load both ran in."""
    return statistics.median(r / o for o, r in zip(ours, ref))


def paired_ratio_ci(ours: Sequence[float], ref: Sequence[float], level: float = 0.9,
                    resamples: int = 2000, seed: int = 0) -> list[float]:
    """A bootstrap confidence interval for the median speed ratio ours/reference from interleaved
    timings: iteration i of each ran back to back, so ``ref[i] / ours[i]`` pairs them under the
    same machine load. A ratio whose interval holds 1.0 is not a measured difference."""
    pairs = [r / o for o, r in zip(ours, ref)]
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(pairs, k=len(pairs))) for _ in range(resamples))
    tail = (1.0 - level) / 2
    return [medians[int(tail * (resamples - 1))], medians[int((1.0 - tail) * (resamples - 1))]]


def _precision(dev: torch.device, precision: str) -> str:
    """The name of the precision ``precision_peak`` ran ``precision`` in on ``dev``."""
    if dev.type == "cuda" and precision == "fp32" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return {"fp32": "float32", "bf16": "bfloat16"}.get(precision, precision)


def _variant_precision(v: Variant, main: str) -> str:
    return getattr(v.model, "precision", main)


def _onnx_precisions(models: Sequence[str]) -> list[str]:
    """"int8" when one of ``models`` is a quantized .onnx file: its peak is measured too."""
    onnx = [m for m in models if str(m).endswith(".onnx")]
    return ["int8"] if any(read_onnx_meta(m).get("quantization") for m in onnx) else []


def _build_variants(name: str, is_onnx: bool, mode: str, dev: torch.device, batch_size: int,
                    input_size: Sequence[int] | None, amp: bool, channels_last: bool, reference: bool,
                    optimized: bool, optimize_backends: Sequence[str], pairs: Sequence[tuple[str, str]],
                    create_model: Callable[..., nn.Module],
                    get_model_cfg: Callable[[str], dict[str, Any]]) -> list[tuple[Variant, tuple[int, ...], int]]:
    """[(variant, input size, num_classes)] for one model and mode: ours first."""
    if is_onnx:
        if mode != "infer":
            raise ValueError(f"{name}: an ONNX file can only be benchmarked with --mode infer")
        if dev.type != "cpu":
            raise ValueError(f"{name}: ONNX files run on the CPU through ONNX Runtime; use --device cpu")
        predictor, meta = load_onnx_checkpoint(name, threads=torch.get_num_threads())
        predictor.inference_backend = "onnxruntime"
        predictor.precision = "int8" if meta.get("quantization") else "fp32"
        size = tuple(input_size or meta["input_size"])
        macs = None
        if meta.get("model"):
            try:
                with torch.device("meta"):
                    shape_model = create_model(meta["model"], num_classes=predictor.pretrained_cfg["num_classes"],
                                               in_chans=size[0])
                macs = _count_macs(shape_model, size)
            except (ValueError, RuntimeError, NotImplementedError):
                macs = None
        return [(Variant("onnx", predictor, macs, int(meta.get("params", 0))), size,
                 predictor.pretrained_cfg["num_classes"])]

    cfg = get_model_cfg(name)
    size = tuple(input_size or cfg["input_size"])
    ours = create_model(name, in_chans=size[0]).to(dev)
    num_classes = ours.pretrained_cfg["num_classes"]
    macs = _count_macs(ours, size)
    if channels_last:
        ours = ours.to(memory_format=torch.channels_last)
    out = [(Variant("ours", ours, macs, _params(ours)), size, num_classes)]
    if reference:
        if not cfg.get("reference"):
            raise ValueError(f"{name} has no reference implementation (verified against its paper); drop --reference")
        ref = build_reference(cfg["reference"], num_classes, size[0]).to(dev)
        if channels_last:
            ref = ref.to(memory_format=torch.channels_last)
        ref_macs = _count_macs(ref, size)
        out.append((Variant("reference", ref, ref_macs, _params(ref)), size, num_classes))
    if optimized and mode == "infer":
        example = torch.randn(batch_size, *size, device=dev)
        if amp:  # ONNX Runtime or OpenVINO would run fp32 beside bf16 variants: not a like-for-like comparison
            optimize_backends = [b for b in optimize_backends if b in ("eager", "compile")] or ["eager"]
        fast = optimize_for_inference(create_model(name, in_chans=size[0]).to(dev).eval(), example,
                                      backends=optimize_backends)
        out.append((Variant("optimized", fast, macs, _params(ours)), size, num_classes))
    if pairs and mode == "infer":
        example = torch.randn(batch_size, *size, device=dev)
        calib = torch.randn(CALIB_IMAGES, *size, generator=torch.Generator().manual_seed(0))
        for backend, precision in pairs:
            fast = precision_module(ours, backend, precision, example, calib)
            out.append((Variant(f"{backend}-{precision}", fast, macs, _params(ours)), size, num_classes))
            if precision == "int8" and reference:
                peer = peer_module(ref, backend, calib)
                out.append((Variant(f"reference-{backend}-int8", peer, ref_macs, _params(ref)), size, num_classes))
    return out


def _row(model: str, mode: str, v: Variant, batch_size: int, size: tuple[int, ...], peak: float,
         main: str) -> dict[str, Any]:
    p50, p90, p10 = (_percentile(v.times, q) for q in (50, 90, 10))
    ips = batch_size / p50
    flops = None if v.macs is None else 2 * v.macs * (TRAIN_FLOP_FACTOR if mode == "train" else 1)
    gflops = None if flops is None else flops * ips / 1e9
    return dict(model=model, mode=mode, variant=v.label, batch_size=batch_size, input_size=list(size),
                images_per_s=ips, spread_pct=100 * (p90 - p10) / (2 * p50), latency_ms_p50=1e3 * p50,
                latency_ms_p90=1e3 * p90, iters=len(v.times), peak_mem_mib=v.peak_mem_mib, peak_mem_kind=v.peak_mem_kind,
                params=v.params, gmacs=None if v.macs is None else v.macs / 1e9, gflops=gflops,
                peak_share=None if gflops is None else gflops / peak,
                backend=getattr(v.model, "inference_backend", None), precision=_variant_precision(v, main))


# --------------------------------------------------------------------------------------------------
# Output and CLI


def format_table(report: dict[str, Any]) -> str:
    """The human-readable result: one line per timed variant, then the ratios."""
    head = (f"{'model':<22} {'mode':<5} {'variant':<22} {'img/s':>9} {'±%':>5} {'p50 ms':>9} {'p90 ms':>9} "
            f"{'mem MiB':>8} {'params':>8} {'GMACs':>7} {'GFLOP/s':>8} {'peak%':>6}")
    lines = [
        f"device {report['device']} ({report['device_name']}), {report['threads']} threads, batch {report['batch_size']}"
        f"{', bf16 autocast' if report['amp'] else ''}{', channels_last' if report['channels_last'] else ''}; "
        f"matmul peak {report['matmul_peak_gflops']:.1f} GFLOP/s ({report['matmul_peak_dtype']}; "
        f"start {report['matmul_peak_start_gflops']:.1f}, end {report['matmul_peak_end_gflops']:.1f})",
        head, "-" * len(head),
    ]
    if report.get("load_avg_start") is not None:
        lines[0] += f"; load average {report['load_avg_start']:.2f} -> {report['load_avg_end']:.2f} on {report['cpu_count']} CPUs"

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in report["results"]:
        short = {"onnxruntime": "ort", "openvino": "ov"}
        backend = short.get(r.get("backend") or "", r.get("backend"))
        variant = r["variant"]
        for long, abbr in short.items():
            variant = variant.replace(long, abbr)
        if backend and variant in ("optimized", "onnx"):
            variant += f"[{backend}]"
        lines.append(
            f"{r['model']:<22} {r['mode']:<5} {variant:<22} {r['images_per_s']:>9.1f} {r['spread_pct']:>5.1f} "
            f"{r['latency_ms_p50']:>9.2f} {r['latency_ms_p90']:>9.2f} {num(r['peak_mem_mib'], '.0f'):>8} "
            f"{r['params'] / 1e6:>7.2f}M {num(r['gmacs'], '.3g'):>7} {num(r['gflops'], '.1f'):>8} "
            f"{num(None if r['peak_share'] is None else 100 * r['peak_share'], '.0f'):>6}"
        )
    for q in report["ratios"]:
        parts = []
        if "ours_over_reference" in q:
            lo, hi = q["ours_over_reference_ci90"]
            parts.append(f"ours/reference {q['ours_over_reference']:.3f} (90% CI {lo:.3f}-{hi:.3f}; "
                         f"{'same' if q['same_ops'] else 'DIFFERENT'} operators"
                         f"{', pooling in channels-last' if q.get('channels_last_pooling') else ''})")
        if "optimized_over_ours" in q:
            parts.append(f"optimized ({q.get('optimized_backend')})/ours {q['optimized_over_ours']:.3f}")
        if "optimized_over_reference" in q:
            parts.append(f"optimized/reference {q['optimized_over_reference']:.3f}")
        for label, v in q.get("variants", {}).items():
            part = f"{label}/ours {v['over_ours']:.2f}"
            for key in ("reference", "peer"):
                if f"over_{key}" in v:
                    lo, hi = v[f"over_{key}_ci90"]
                    part += f", /{key} {v[f'over_{key}']:.2f} ({lo:.2f}-{hi:.2f})"
            parts.append(part)
        lines.append(f"{q['model']} {q['mode']} batch {q['batch_size']}: " + ", ".join(parts))
    peaks = report.get("matmul_peaks", {})
    if len(peaks) > 1:
        lines.append("matmul peaks (peak% of each row is against its precision's): " + ", ".join(
            f"{p} {v['gflops']:.0f} G{'OP' if p == 'int8' else 'FLOP'}/s" for p, v in peaks.items()))
    mem = {r["peak_mem_kind"] for r in report["results"]}
    lines.append(f"img/s: median over iterations, ± half the p10-p90 spread; memory: {', '.join(sorted(mem))}; "
                 f"train GFLOP/s count 3x the forward pass")
    return "\n".join(lines)


def optimize_backends_for(device: str, compile: bool = False) -> tuple[str, ...]:
    """What ``optimize_for_inference`` may try on ``device``: ONNX Runtime and OpenVINO (where
    installed) run on the CPU only, and ``torch.compile`` only when asked for (its warm-up takes
    tens of seconds per model on a CPU)."""
    import importlib.util

    backends = ["eager", "onnxruntime"]
    if importlib.util.find_spec("openvino") is not None:
        backends.append("openvino")
    if compile:
        backends.append("compile")
    if device != "cpu":
        backends = [b for b in backends if b not in ("onnxruntime", "openvino")]
    return tuple(backends)
