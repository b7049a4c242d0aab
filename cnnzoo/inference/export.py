"""Inference-time forms of a model: batch norm folded into convolutions, channels_last,
``torch.compile``, ONNX Runtime or OpenVINO; and ``cnnzoo export``'s checkpoint to ONNX.

- ``fold_batchnorm``: every BatchNorm2d whose input is the untouched output of a Conv2d is folded
  into that convolution's weight and bias and replaced by ``nn.Identity``. Pairs are found by
  running the model once with hooks, not by module names: what counts is that the batch norm sees
  exactly the tensor the convolution produced (same tensor, no in-place change in between).
- ``optimize_for_inference``: a folded, channels_last copy, run eagerly, through ``torch.compile``,
  ONNX Runtime or OpenVINO (fp32), whichever is fastest on an example batch; its outputs are
  checked against the eager model before it is returned: it is lossless (int8 is
  ``cnnzoo.inference.quantize``).
- ``export_model``: a checkpoint or registered model to an ONNX file (``cnnzoo.inference.onnx``).
"""
from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.inference.load import load_model
from cnnzoo.inference.onnx import (
    ATOL,
    DEFAULT_OPSET,
    OnnxRuntimeModule,
    OpenVinoModule,
    check_against,
    export_onnx,
    onnx_bytes,
)
from cnnzoo.models.checkpoint import load_checkpoint

# --------------------------------------------------------------------------------------------------
# Batch-norm folding


def _example_input(model: nn.Module, input_size: Sequence[int] | None, batch: int = 2) -> torch.Tensor:
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None)
        if cfg is None:
            raise ValueError(f"{type(model).__name__} has no pretrained_cfg; pass input_size=(C, H, W)")
        input_size = cfg["input_size"]
    try:
        p = next(model.parameters())
        device, dtype = p.device, p.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    return torch.randn(batch, *input_size, device=device, dtype=dtype)


def find_conv_bn_pairs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) for every BatchNorm2d whose input is exactly a Conv2d's output.

    One forward pass in eval mode with hooks: a convolution's output is remembered together with
    its version counter; a batch norm is paired with the convolution whose output it receives
    unchanged (an in-place activation in between bumps the version and rules the pair out).
    Modules called more than once (shared) are never folded.
    """
    names = {m: n for n, m in model.named_modules(remove_duplicate=False)}
    calls: dict[nn.Module, int] = {}
    produced: list[tuple[torch.Tensor, int, nn.Module]] = []  # keeps outputs alive: no id reuse
    pairs: dict[nn.Module, nn.Module] = {}

    def conv_hook(mod: nn.Module, inp: Any, out: Any) -> None:
        calls[mod] = calls.get(mod, 0) + 1
        if isinstance(out, torch.Tensor):
            produced.append((out, out._version, mod))

    def bn_hook(mod: nn.Module, inp: tuple[Any, ...]) -> None:
        calls[mod] = calls.get(mod, 0) + 1
        t = inp[0]
        for out, version, conv in reversed(produced):
            if out is t and out._version == version:
                pairs[mod] = conv
                break

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(bn_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
        produced.clear()
    used_convs = [c for c in pairs.values()]
    result = []
    for bn, conv in pairs.items():
        if calls.get(bn) != 1 or calls.get(conv) != 1 or used_convs.count(conv) != 1:
            continue
        if bn.num_features != conv.out_channels or not bn.track_running_stats or bn.running_var is None:
            continue
        result.append((names[conv], names[bn]))
    return result


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode batch norm into the preceding convolution, in place:
    ``bn(conv(x)) = conv'(x)`` with ``w' = w * s``, ``b' = (b - mean) * s + beta``,
    ``s = gamma / sqrt(var + eps)`` per output channel."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))).to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(shift.to(conv.weight.dtype))
    else:
        conv.bias.copy_(conv.bias * scale + shift)


def fold_batchnorm(model: nn.Module, input_size: Sequence[int] | None = None) -> int:
    """Fold every foldable BatchNorm2d of ``model`` (in place) into its convolution and replace it
    by ``nn.Identity``; returns how many were folded. The model must be used in eval mode after."""
    pairs = find_conv_bn_pairs(model, _example_input(model, input_size))
    for conv_name, bn_name in pairs:
        fold_conv_bn(model.get_submodule(conv_name), model.get_submodule(bn_name))
        parent_name, _, leaf = bn_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, nn.Identity())
    return len(pairs)


# --------------------------------------------------------------------------------------------------
# optimize_for_inference


@contextlib.contextmanager
def cuda_tf32(enabled: bool) -> Iterator[None]:
    """Within this block, CUDA's fp32 convolutions (cuDNN) and matmuls (cuBLAS) run in TF32 or not.
    TF32, cuDNN's default, moves logits by ~1e-3 of their scale: only in full fp32 can a folded
    model be held to ``ATOL``."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _time_call(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, reps: int) -> float:
    """Median seconds of ``reps`` calls, after one warm-up call. On CUDA each call is timed to the
    end of its kernels, not to the return of their launches."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        fn(x)
        times = []
        for _ in range(reps):
            sync()
            t0 = time.perf_counter()
            fn(x)
            sync()
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


INFERENCE_BACKENDS = ("eager", "compile", "onnxruntime", "openvino")


def optimize_for_inference(
    model: nn.Module,
    example_input: torch.Tensor | None = None,
    *,
    backends: Sequence[str] = ("eager", "onnxruntime"),
    reps: int = 3,
    atol: float = ATOL,
) -> nn.Module:
    """A copy of ``model`` for inference: batch norm folded into the convolutions, channels_last
    memory format, run by the fastest of ``backends`` on ``example_input`` (default: a batch of
    8 random images of the model's input size).

    ``backends``: ``"eager"`` (the folded model itself), ``"compile"`` (``torch.compile``; it needs
    a C++ compiler and warms up for tens of seconds on a CPU, so it is not tried by default) and
    ``"onnxruntime"`` (CPU only), ``"openvino"`` (CPU only, fp32; the optional extra). Every candidate's output is compared with the eager model's (on CUDA
    in full fp32, not TF32); one off by more than ``atol`` is dropped (a warning says why). The
    returned module keeps ``pretrained_cfg`` and carries ``inference_backend`` and ``inference_timings`` (seconds per call).
    """
    unknown = set(backends) - set(INFERENCE_BACKENDS)
    if unknown or not backends:
        raise ValueError(f"unknown backends {sorted(unknown)}; choose from {', '.join(INFERENCE_BACKENDS)}")
    eager = model.eval()
    x = example_input if example_input is not None else _example_input(model, None, batch=8)
    candidates = _checked(_candidates(model, x, backends), eager, x, atol)
    timings: dict[str, float] = {}
    if len(candidates) > 1:  # one candidate: nothing to choose, no time spent measuring
        timings = {name: _time_call(call, x, reps) for name, (_, call) in candidates.items()}
    best = min(timings, key=timings.__getitem__) if timings else next(iter(candidates))
    module, _ = candidates[best]
    result = _InferenceWrapper(module, channels_last=best in ("eager", "compile"))
    if hasattr(model, "pretrained_cfg"):
        result.pretrained_cfg = dict(model.pretrained_cfg)
    result.inference_backend = best
    result.inference_timings = timings
    return result


Candidates = dict[str, tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]]


def _candidates(model: nn.Module, x: torch.Tensor, backends: Sequence[str]) -> Candidates:
    """{backend: (module, call)} for the batch-norm-folded, channels-last copy of ``model``."""
    folded = copy.deepcopy(model).eval()
    fold_batchnorm(folded, tuple(x.shape[1:]))
    folded = folded.to(memory_format=torch.channels_last)

    def folded_call(t: torch.Tensor) -> torch.Tensor:
        return folded(t.contiguous(memory_format=torch.channels_last))

    candidates: Candidates = {}
    if "eager" in backends:
        candidates["eager"] = (folded, folded_call)
    if "compile" in backends:
        compiled = torch.compile(folded)
        candidates["compile"] = (compiled, lambda t: compiled(t.contiguous(memory_format=torch.channels_last)))
    runtimes = {"onnxruntime": OnnxRuntimeModule, "openvino": OpenVinoModule}
    for name in [b for b in runtimes if b in backends and x.device.type == "cpu"]:
        try:
            graph = onnx_bytes(folded, x.contiguous(), DEFAULT_OPSET, dynamic_batch=True)
            module = runtimes[name](graph, threads=torch.get_num_threads())
            candidates[name] = (module, module)
        except Exception as exc:  # an operator the exporter or runtime lacks, no OpenVINO: keep the others
            warnings.warn(f"optimize_for_inference: {name} not used ({type(exc).__name__}: {exc})", stacklevel=3)
    return candidates


def _checked(candidates: Candidates, eager: nn.Module, x: torch.Tensor, atol: float) -> Candidates:
    """The candidates whose outputs match the eager model's (on CUDA in full fp32, not TF32)."""
    kept: Candidates = {}
    for name, (module, call) in candidates.items():
        try:
            with cuda_tf32(False):
                check = check_against(eager, call, x, atol)
        except Exception as exc:
            warnings.warn(f"optimize_for_inference: {name} failed ({type(exc).__name__}: {exc})", stacklevel=3)
            continue
        if check["ok"]:
            kept[name] = (module, call)
        else:
            warnings.warn(f"optimize_for_inference: {name} differs from the eager model by "
                          f"{check['max_abs_diff']:.2e} (> {check['limit']:.2e}) or in top-1; not used", stacklevel=3)
    if not kept:
        raise ValueError("optimize_for_inference: no backend reproduced the eager model's outputs")
    return kept


class _InferenceWrapper(nn.Module):
    """The optimised module plus the input conversion it expects (channels_last for torch)."""

    def __init__(self, inner: nn.Module, channels_last: bool) -> None:
        super().__init__()
        self.inner = inner
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.inner(x)


# --------------------------------------------------------------------------------------------------
# Checkpoints and registered models to ONNX


def export_model(out: str | Path, *, checkpoint: str | Path | None = None, model: str | None = None,
                 model_kwargs: dict[str, Any] | None = None, input_size: Sequence[int] | None = None,
                 opset: int = DEFAULT_OPSET, dynamic_batch: bool = False, seed: int = 0,
                 pretrained: bool | str | Path | None = None) -> dict[str, Any]:
    """``export_onnx`` of a run folder or weights file (``model``: the network of weights files
    without cnnzoo metadata), or of the registered ``model`` with ``pretrained`` weights (published
    ones by tag, or a file; see ``create_model``) or else random weights (seeded)."""
    if checkpoint:
        net, meta = load_checkpoint(checkpoint, model, model_kwargs)
        meta = dict(meta)
        meta.setdefault("model", net.pretrained_cfg["architecture"])
        meta.update(mean=list(net.pretrained_cfg["mean"]), std=list(net.pretrained_cfg["std"]))
    elif model:
        torch.manual_seed(seed)
        net, meta = load_model(None, model, pretrained=pretrained, model_kwargs=model_kwargs)
        cfg = net.pretrained_cfg  # the weights' evaluation preprocessing travels with the file
        meta.update(weights=cfg.get("weights") or cfg.get("file") or "random", crop_pct=cfg["crop_pct"],
                    interpolation=cfg["interpolation"])
    else:
        raise ValueError("say what to export: --checkpoint RUN_DIR_OR_FILE, or --model NAME (random weights)")
    meta.setdefault("num_classes", net.pretrained_cfg["num_classes"])
    return export_onnx(net, out, meta, input_size=input_size, opset=opset, dynamic_batch=dynamic_batch)
