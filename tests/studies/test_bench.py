"""cnnzoo bench: what is measured, the interleaved reference and fast path, ONNX files, errors, CLI."""
import json
import statistics
import sys
import time

import pytest
import torch

from cnnzoo.analysis import count_macs
from cnnzoo.cli import main
from cnnzoo.models.factory import create_model
from cnnzoo.models.registry import get_model_cfg, list_models
from cnnzoo.studies.bench import (
    _percentile,
    benchmark,
    build_reference,
    compare_ops,
    matmul_peak,
    op_trace,
    paired_ratio,
    paired_ratio_ci,
    resolve_device,
)

FAST = dict(warmup=1, iters=2, threads=1, progress=False, peak_size=256)


def test_percentile():
    assert _percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert _percentile([1.0, 2.0, 3.0], 90) == pytest.approx(2.8)
    assert _percentile([5.0], 10) == 5.0


def test_matmul_peak_is_flops_over_the_fastest_product(monkeypatch):
    """The peak is 2 n^3 FLOPs over the fastest timed product: with a clock that makes the three
    products take 0.3, 0.2 and 0.25 s, it must read 2 * 256^3 / 0.2 s, whatever the machine."""
    ticks = iter([10.0, 10.3, 20.0, 20.2, 30.0, 30.25])
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    assert matmul_peak(torch.device("cpu"), n=256, reps=3) == pytest.approx(2 * 256**3 / 0.2 / 1e9)
    assert next(ticks, None) is None  # every rep was timed


def test_benchmark_infer_train_and_fast_path():
    report = benchmark(["resnet20"], mode="both", batch_size=4, optimized=True, **FAST)
    rows = {(r["mode"], r["variant"]): r for r in report["results"]}
    assert set(rows) == {("infer", "ours"), ("infer", "optimized"), ("train", "ours")}
    macs = count_macs(create_model("resnet20"), (3, 32, 32))
    for (mode, _), r in rows.items():
        assert r["iters"] == 2 and r["batch_size"] == 4 and r["input_size"] == [3, 32, 32]
        assert r["images_per_s"] == pytest.approx(4 / (r["latency_ms_p50"] / 1e3))
        assert r["latency_ms_p90"] >= r["latency_ms_p50"] > 0
        assert r["gmacs"] == pytest.approx(macs / 1e9)
        factor = 3 if mode == "train" else 1
        assert r["gflops"] == pytest.approx(2 * factor * macs * r["images_per_s"] / 1e9)
        assert r["peak_share"] == pytest.approx(r["gflops"] / report["matmul_peak_gflops"])
        assert r["params"] == 269722 and r["peak_mem_mib"] > 0
    assert rows[("infer", "optimized")]["backend"] in ("eager", "onnxruntime")
    (ratio,) = report["ratios"]
    assert ratio["mode"] == "infer" and "ours_over_reference" not in ratio
    assert ratio["optimized_over_ours"] == pytest.approx(
        rows[("infer", "optimized")]["images_per_s"] / rows[("infer", "ours")]["images_per_s"])
    assert report["threads"] == 1 and report["matmul_peak_dtype"] == "float32"
    assert report["matmul_peak_gflops"] == max(report["matmul_peak_start_gflops"], report["matmul_peak_end_gflops"])


def test_reference_interleaved_torchvision_and_timm():
    pytest.importorskip("timm")
    report = benchmark(["resnet18", "mobilenet_v1"], mode="infer", batch_size=2, input_size=(3, 64, 64),
                       reference=True, **FAST)
    by = {(r["model"], r["variant"]): r for r in report["results"]}
    for name in ("resnet18", "mobilenet_v1"):
        ours, ref = by[(name, "ours")], by[(name, "reference")]
        assert ours["params"] == ref["params"]  # the same architecture
        assert ours["gmacs"] == pytest.approx(ref["gmacs"])
    ratios = {q["model"]: q for q in report["ratios"]}
    for q in ratios.values():
        assert q["same_ops"] is True
        lo, hi = q["ours_over_reference_ci90"]
        assert 0 < lo <= q["ours_over_reference"] <= hi  # the median of the pairs lies in its own interval


def test_paired_ratio_ci():
    # reference 10% slower in every pair, whatever the machine's load did to both
    ours = [1.0, 2.0, 1.5, 1.2, 3.0, 1.1]
    assert paired_ratio(ours, [1.1 * t for t in ours]) == pytest.approx(1.1)
    assert paired_ratio_ci(ours, [1.1 * t for t in ours]) == pytest.approx([1.1, 1.1])
    # equal speeds, but a load burst slowed 3 of ours' 5 iterations and only 2 of the reference's:
    # the ratio of the medians reads 4x slower, the paired iterations read equal
    ours, ref = [1.0, 1.0, 4.0, 4.0, 4.0], [1.0, 1.0, 1.0, 4.0, 4.0]
    assert statistics.median(ref) / statistics.median(ours) == 0.25
    assert paired_ratio(ours, ref) == 1.0
    lo, hi = paired_ratio_ci([1.0, 1.0, 1.0, 1.0], [0.9, 1.0, 1.1, 1.05])
    assert 0.9 <= lo < 1.0 < hi <= 1.1


REFERENCE_MODELS = [n for n in list_models() if get_model_cfg(n)["reference"]]


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_same_operators_as_reference(name):
    """Ours runs exactly the reference's ATen operators, on the same shapes and strides, in
    inference and in a training step: no wasted work, so any timing gap is the machine's noise.
    The one difference is on purpose: on the CPU, pools run in channels-last layout (in training,
    max pools' forward only), which adds layout copies and changes nothing else."""
    if get_model_cfg(name)["reference"].startswith("timm:"):
        pytest.importorskip("timm")
    for mode in ("infer", "train"):
        diff = compare_ops(name, mode)
        assert diff["same"], f"{name} {mode}: ours only {diff['ours_only'][:5]}, reference only {diff['reference_only'][:5]}"
        pools = {"aten.max_pool2d", "aten.max_pool2d_with_indices", "aten.avg_pool2d"}
        assert {op for _, op, _ in diff["ours_only"]} <= pools | {"aten.contiguous", "aten.clone"}
        assert {op for _, op, _ in diff["reference_only"]} <= pools
        with torch.device("meta"):
            pools_used = (torch.nn.MaxPool2d, torch.nn.AvgPool2d) if mode == "infer" else torch.nn.MaxPool2d
            has_pools = any(isinstance(m, pools_used) for m in create_model(name).modules())
        assert diff["channels_last_pooling"] == has_pools


def test_op_trace_sees_wasted_work():
    class Wasteful(torch.nn.Module):
        def __init__(self, in_place: bool) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.in_place = in_place

        def forward(self, x):
            y = self.conv(x)
            if self.in_place:
                y += x.mean(1, keepdim=True)
            else:
                y = y + x.mean(1, keepdim=True)
            return y.mean((2, 3))  # logits

    x = torch.empty(2, 3, 8, 8, device="meta")
    with torch.device("meta"):
        a, b = op_trace(Wasteful(True), x, "train"), op_trace(Wasteful(False), x, "train")
    assert a != b and ("aten.add_" in {op for op, _ in a - b}) and ("aten.add" in {op for op, _ in b - a})
    with pytest.raises(ValueError, match="no reference"):
        compare_ops("resnet20", "infer")


def test_reference_errors(monkeypatch):
    with pytest.raises(ValueError, match="no reference implementation"):
        benchmark(["resnet20"], reference=True, **FAST)
    with pytest.raises(ValueError, match="expected 'torchvision:NAME'"):
        build_reference("keras:resnet50", 10, 3)
    with pytest.raises(ValueError, match="3 input channels"):
        build_reference("torchvision:resnet18", 10, 1)
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(ValueError, match="needs timm"):
        build_reference("timm:seresnet18", 10, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="--mode"):
        benchmark(["lenet5"], mode="fast", **FAST)
    with pytest.raises(ValueError, match="batch_size"):
        benchmark(["lenet5"], batch_size=0, **FAST)
    with pytest.raises(ValueError, match="unknown model"):
        benchmark(["resnet2000"], **FAST)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="cpu or cuda"):
        resolve_device("meta")


def test_bench_onnx_file(tmp_path):
    from cnnzoo.inference.onnx import export_onnx

    model = create_model("lenet5").eval()
    meta = dict(model="lenet5", mean=[0.5], std=[0.5], num_classes=10)
    export_onnx(model, tmp_path / "l.onnx", meta, dynamic_batch=True)
    report = benchmark([str(tmp_path / "l.onnx")], batch_size=3, **FAST)
    (row,) = report["results"]
    assert row["variant"] == "onnx" and row["model"] == "l.onnx" and row["input_size"] == [1, 32, 32]
    assert row["gmacs"] == pytest.approx(count_macs(model, (1, 32, 32)) / 1e9)
    with pytest.raises(ValueError, match="--mode infer"):
        benchmark([str(tmp_path / "l.onnx")], mode="train", **FAST)


def test_cli_table_and_json(capsys):
    assert main(["bench", "lenet5", "--batch-size", "2", "--iters", "2", "--warmup", "1", "--threads", "1",
                 "--mode", "train", "--json", "--no-progress"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert report["results"][0]["model"] == "lenet5" and report["results"][0]["mode"] == "train"
    assert any(line.startswith("lenet5 ") and " train " in line for line in out[:-1])
    assert out[0].startswith("device cpu") and "matmul peak" in out[0]
