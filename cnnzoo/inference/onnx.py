"""ONNX files that carry cnnzoo's metadata, and the runtimes that run them (ONNX Runtime, OpenVINO).

``export_onnx`` checks the file with ONNX Runtime (same top-1, max |difference| <= 1e-4) before it
is written; the file's ``metadata_props`` hold the model name, classes and preprocessing, so
``load_onnx_checkpoint`` can predict with it without cnnzoo's weights."""
from __future__ import annotations

import io
import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.utils.io import atomic_write

ONNX_META_KEY = "cnnzoo"


DEFAULT_OPSET = 17


ATOL = 1e-4  # max |ours - reference| accepted for a folded, compiled or exported model


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a dependency
        raise ImportError("ONNX support needs onnxruntime: pip install onnxruntime") from exc
    return onnxruntime


class OnnxRuntimeModule(nn.Module):
    """An ONNX Runtime session behind a module interface: takes a float tensor (N, C, H, W),
    returns the logits as a tensor. ``eval()``/``train()`` are accepted (inference only), so the
    trainer's ``evaluate`` and ``predict`` can use it as they use a model."""

    def __init__(self, onnx_bytes: bytes | str | Path, threads: int | None = None,
                 pretrained_cfg: dict[str, Any] | None = None) -> None:
        super().__init__()
        ort = require_onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # ONNX Runtime's worker threads otherwise spin for a while after each run, taking the cores
        # from whatever torch runs next.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = onnx_bytes if isinstance(onnx_bytes, bytes) else str(onnx_bytes)
        self.session = ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        # A graph exported without --dynamic-batch takes exactly this many images per run.
        self.fixed_batch: int | None = first.shape[0] if isinstance(first.shape[0], int) else None
        if pretrained_cfg is not None:
            self.pretrained_cfg = pretrained_cfg

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.numpy()})[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.detach().float().cpu().contiguous()
        n, fixed = xc.shape[0], self.fixed_batch
        if fixed is None or n == fixed:
            return self._run(xc).to(x.device)
        # Fixed batch size: run in chunks of it, the last one zero-padded and cut back.
        pad = (-n) % fixed
        if pad:
            xc = torch.cat([xc, xc.new_zeros(pad, *xc.shape[1:])])
        out = torch.cat([self._run(chunk.contiguous()) for chunk in xc.split(fixed)])
        return out[:n].to(x.device)


class OpenVinoModule(nn.Module):
    """An ONNX graph compiled by OpenVINO's CPU plugin behind a module interface (as
    ``OnnxRuntimeModule``). ``precision``: "fp32" or "bf16" (OpenVINO's inference precision hint,
    on CPUs with AVX512-BF16 or AMX); a QDQ int8 graph runs on int8 kernels either way.
    Needs the optional extra: ``pip install 'cnnzoo[openvino]'``."""

    def __init__(self, onnx_bytes: bytes, threads: int | None = None, precision: str = "fp32",
                 pretrained_cfg: dict[str, Any] | None = None) -> None:
        super().__init__()
        try:
            import openvino as ov
        except ImportError as exc:
            raise ValueError("the openvino backend needs OpenVINO: pip install 'cnnzoo[openvino]'") from exc
        hints = {"fp32": "f32", "bf16": "bf16"}
        if precision not in hints:
            raise ValueError(f"OpenVINO precision must be fp32 or bf16 (int8 comes from a quantized graph), got {precision!r}")
        core = ov.Core()
        model = core.read_model(onnx_bytes, b"")  # an ONNX graph with its weights inside
        # One stream on the given threads, like the other backends: latency of one call, not throughput.
        config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "NUM_STREAMS": 1,
                  "INFERENCE_PRECISION_HINT": hints[precision], "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        if pretrained_cfg is not None:
            self.pretrained_cfg = pretrained_cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.detach().float().cpu().contiguous()
        out = self.request.infer({0: xc.numpy()}, share_inputs=True)
        return torch.from_numpy(out[self.compiled.output(0)].copy()).to(x.device)


def onnx_bytes(model: nn.Module, x: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    buf = io.BytesIO()
    dynamic_axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's constant-folding chatter
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["logits"], dynamic_axes=dynamic_axes, do_constant_folding=True)
    return buf.getvalue()


def check_against(reference: Callable[[torch.Tensor], torch.Tensor], candidate: Callable[[torch.Tensor], torch.Tensor],
                  x: torch.Tensor, atol: float = ATOL) -> dict[str, Any]:
    """Max |difference| and top-1 agreement of two models on ``x`` (no exception).

    ``ok`` when the top-1 classes agree and max |difference| <= ``atol * max(1, max |logit|)``:
    fp32 carries ~7 significant digits, so logits of magnitude 75 (an untrained GoogLeNet) cannot
    agree to 1e-4 absolute after the weights are rearranged; logits of magnitude <= 1 must."""
    with torch.inference_mode():
        want = reference(x).float()
        got = candidate(x).float()
    if got.shape != want.shape:
        return dict(max_abs_diff=float("inf"), limit=atol, top1_same=False, ok=False)
    diff = (got - want).abs().max().item()
    # Top-1 is compared where the reference's top two logits are further apart than ``atol``: a
    # tie within the tolerance (e.g. the vanishing logits of an untrained deep net) has no winner.
    if want.shape[1] > 1:
        top2 = want.topk(2, dim=1).values
        decided = (top2[:, 0] - top2[:, 1]) > atol
    else:
        decided = torch.ones(want.shape[0], dtype=torch.bool, device=want.device)
    same = bool((got.argmax(1) == want.argmax(1))[decided].all())
    limit = atol * max(1.0, want.abs().max().item())
    return dict(max_abs_diff=diff, limit=limit, top1_same=same, ok=same and diff <= limit)


def export_onnx(model: nn.Module, out: str | Path, meta: dict[str, Any], *, input_size: Sequence[int] | None = None,
                opset: int = DEFAULT_OPSET, dynamic_batch: bool = False, atol: float = ATOL,
                seed: int = 0) -> dict[str, Any]:
    """Export ``model`` (eval mode) to ONNX at ``out`` with ``meta`` in its metadata_props.

    Before the file is written, ONNX Runtime runs it on a random batch (2 images with
    ``dynamic_batch``, else 1; not the batch it was traced with): the top-1 classes must equal the eager model's and the largest
    absolute logit difference be at most ``atol``; otherwise a ValueError says by how much.
    Returns a report: path, opset, bytes, max_abs_diff, top1_same, seconds.
    """
    import onnx

    t0 = time.perf_counter()
    model = model.eval()
    size = tuple(input_size or model.pretrained_cfg["input_size"])
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2 if dynamic_batch else 1, *size, generator=gen)
    data = onnx_bytes(model, x, opset, dynamic_batch)
    # Checked on another batch than the traced one: a value the tracer froze into a constant shows.
    x = torch.randn(x.shape, generator=gen)
    proto = onnx.load_from_string(data)
    meta = dict(meta, input_size=list(size), opset=opset, dynamic_batch=dynamic_batch)
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
    data = proto.SerializeToString()

    check = check_against(model, OnnxRuntimeModule(data, threads=torch.get_num_threads()), x, atol)
    if not check["ok"]:
        raise ValueError(
            f"ONNX export of {meta.get('model', type(model).__name__)} does not reproduce the model: "
            f"max |difference| {check['max_abs_diff']:.3e} (limit {check['limit']:.3e}), top-1 identical: {check['top1_same']}"
        )
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise FileNotFoundError(f"output folder does not exist: {out.parent}")
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    return dict(path=str(out), model=meta.get("model"), opset=opset, dynamic_batch=dynamic_batch,
                input_size=list(size), bytes=len(data), max_abs_diff=check["max_abs_diff"],
                limit=check["limit"], top1_same=check["top1_same"], seconds=round(time.perf_counter() - t0, 3))


def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    """cnnzoo's metadata stored in an ONNX file's metadata_props."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    if ONNX_META_KEY not in props:
        raise ValueError(f"{path}: no cnnzoo metadata in the ONNX file (not exported by `cnnzoo export`?)")
    return json.loads(props[ONNX_META_KEY])


def load_onnx_checkpoint(path: str | Path, threads: int | None = None) -> tuple[OnnxRuntimeModule, dict[str, Any]]:
    """(predictor, metadata) for an ONNX file written by ``export_onnx``.

    The predictor is an ``OnnxRuntimeModule``: call it on a float tensor (N, C, H, W) for logits.
    Its ``pretrained_cfg`` has what preprocessing needs (architecture, input_size, mean, std,
    num_classes, in_chans), so ``predict``/``evaluate`` use it as they use a rebuilt model.
    """
    meta = read_onnx_meta(path)
    num_classes = int(meta.get("num_classes", len(meta.get("classes", [])) or 1000))
    cfg = dict(architecture=meta.get("model", Path(path).stem), input_size=tuple(meta["input_size"]),
               mean=tuple(meta["mean"]), std=tuple(meta["std"]), num_classes=num_classes,
               in_chans=int(meta["input_size"][0]))
    meta.setdefault("classes", [str(i) for i in range(num_classes)])
    predictor = OnnxRuntimeModule(Path(path), threads=threads, pretrained_cfg=cfg)
    return predictor.eval(), meta
