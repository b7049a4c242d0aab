"""int8 quantization (``cnnzoo quantize``), the int8 file in eval/predict/bench, and bench's
backend x precision variants. Small models, synthetic data: the file runs in well under a minute."""
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnzoo.cli import build_parser
from cnnzoo.cli.common import run_command

HAS_OPENVINO = all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))


def cli(argv, capsys):
    code = run_command(build_parser().parse_args(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def int8_file(synthetic_lenet5_run, tmp_path_factory):
    from cnnzoo.inference.quantize import quantize

    out = tmp_path_factory.mktemp("q") / "lenet5.int8.onnx"
    report = quantize(out, checkpoint=synthetic_lenet5_run, calib_images=128, check_images=256)
    return out, report


def test_quantized_run_keeps_its_top1_with_every_layer_int8_by_default(synthetic_lenet5_run, int8_file):
    from cnnzoo.inference.predict import evaluate_checkpoint

    path, report = int8_file
    fp32 = evaluate_checkpoint(synthetic_lenet5_run)
    int8 = evaluate_checkpoint(path)  # the checkpoint's own dataset, read from the file's metadata
    assert fp32["top1"] > 0.5, "the synthetic classes are learnable in one epoch"
    assert abs(int8["top1"] - fp32["top1"]) <= 0.02  # 5 of the 256 test images, on a one-epoch net
    assert report["calibration_dataset"] == "synthetic" and report["calibration_images"] == 128
    assert report["top1_agreement"] >= 0.97
    assert report["keep_fp32"] == [] and report["fp32_layers"] == []  # every layer int8 by default
    assert report["bytes"] == path.stat().st_size < report["fp32_bytes"] / 2


def test_int8_file_has_integer_weights_a_free_batch_and_cnnzoo_metadata(int8_file):
    import onnx

    from cnnzoo.inference.onnx import load_onnx_checkpoint, read_onnx_meta

    path, _ = int8_file
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch stays symbolic
    int8_weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == 3  # LeNet-5's C1, C3, C5 ...
    scales = {t.name: t for t in proto.graph.initializer}
    conv_dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == int8_weights[1].name]
    assert scales[conv_dq[0].input[1]].dims == [16]  # ... one scale per output channel
    meta = read_onnx_meta(path)
    assert meta["quantization"]["backend"] == "onnxruntime" and meta["dynamic_batch"]
    predictor, _ = load_onnx_checkpoint(path)
    for n in (1, 5):
        assert predictor(torch.randn(n, *meta["input_size"])).shape == (n, 10)


def test_int8_weights_leave_16_bit_pair_sums_unsaturated(int8_file):
    """Without VNNI, x86 int8 kernels add two uint8 x int8 products in 16 bits (VPMADDUBSW): with
    |w| <= 64 no pair of activations <= 255 exceeds 32767, so every x86 CPU computes the same."""
    import onnx
    from onnx import numpy_helper

    from cnnzoo.inference.onnx import read_onnx_meta

    path, report = int8_file
    proto = onnx.load(str(path))
    weights = [numpy_helper.to_array(t) for t in proto.graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1]  # not the per-channel zero points
    assert len(weights) == 5  # LeNet-5's three convolutions and two fully connected layers
    peak = max(int(np.abs(w.astype(int)).max()) for w in weights)
    assert 2 * 255 * peak <= 32767  # no pair of uint8 x int8 products overflows 16 bits ...
    assert peak == 64  # ... and the weights use all 7 bits
    zero_points = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.UINT8]
    assert zero_points  # activations stay uint8: reduce_range narrows the weights only
    meta = read_onnx_meta(path)["quantization"]
    assert meta["int8_format"] == report["int8_format"] == "u8s8-reduce-range"
    assert "without VNNI" in meta["int8_format_reason"] and meta["weights"].startswith("int8 in [-64, 64]")


def test_cli_int8_format_chooses_the_weight_type(tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "full.int8.onnx"
    code, text, err = cli(["quantize", "--model", "lenet5", "--dataset", "synthetic", "--out", str(out),
                           "--calib-images", "32", "--check-images", "32", "--int8-format", "u8s8", "--json"], capsys)
    assert code == 0, err
    assert json.loads(text.strip().splitlines()[-1])["int8_format"] == "u8s8"
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1]
    assert max(int(np.abs(w.astype(int)).max()) for w in weights) == 127  # all 8 bits: may saturate without VNNI
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["quantize", "--model", "lenet5", "--out", str(out), "--int8-format", "s8s8"])
    assert exc.value.code == 2 and "invalid choice: 's8s8'" in capsys.readouterr().err


def test_cpu_int8_path_names_vnni_or_the_saturating_16_bit_pairs(monkeypatch):
    from cnnzoo.inference.quantize import cpu_int8_path

    def caps(**flags):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", "avx2": True, **flags})
        return cpu_int8_path()

    assert caps().startswith("AVX2 without VNNI") and "VPMADDUBSW" in caps()
    assert caps(avx512_bw=True).startswith("AVX-512 without VNNI")
    assert caps(avx_vnni=True) == "VNNI (AVX-VNNI): 32-bit sums"
    assert caps(avx512_bw=True, avx512_vnni=True, amx_int8=True) == "VNNI (AMX, AVX512-VNNI): 32-bit sums"
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "arm64"})
    assert cpu_int8_path().startswith("arm64 (not x86")


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None or platform.machine() != "x86_64",
                    reason="needs qemu-user (qemu-x86_64) on an x86-64 host to emulate an AVX2 CPU without VNNI")
def test_int8_file_computes_the_same_on_an_emulated_avx2_cpu(synthetic_lenet5_run, int8_file, tmp_path):
    """ONNX Runtime picks its int8 kernels from CPUID, which qemu answers for the CPU it emulates
    (Haswell: AVX2, no AVX-512, no VNNI): the int8 file's logits there are those computed here."""
    from cnnzoo.inference.load import load_model
    from cnnzoo.inference.onnx import OnnxRuntimeModule
    from cnnzoo.inference.quantize import labelled_images

    path, _ = int8_file
    net, _ = load_model(synthetic_lenet5_run)
    x, _ = labelled_images("synthetic", "test", 256, net.pretrained_cfg)  # the report's check images
    np.save(tmp_path / "x.npy", x.numpy())
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "int8_formats.py"  # imports no torch
    subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, str(script), "predict", str(path),
                    str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], check=True, capture_output=True, timeout=120)
    emulated = torch.from_numpy(np.load(tmp_path / "y.npy"))
    with torch.inference_mode():
        fp32, here = net.eval()(x), OnnxRuntimeModule(path)(x)
    assert (emulated.argmax(1) == fp32.argmax(1)).float().mean() >= 0.97
    torch.testing.assert_close(emulated, here, rtol=0, atol=1e-5 * here.abs().max().item())


def test_predict_and_cli_eval_read_the_int8_file(int8_file, tmp_path, capsys):
    from PIL import Image

    path, _ = int8_file
    img = tmp_path / "x.png"
    Image.fromarray(np.full((28, 28), 200, dtype=np.uint8)).save(img)
    code, out, err = cli(["predict", "--checkpoint", str(path), str(img), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    top = result[0]["top"] if isinstance(result, list) else result["predictions"][0]["top"]
    assert len(top) == 5 and sum(t["prob"] for t in top) <= 1.0 + 1e-6
    code, out, err = cli(["eval", "--checkpoint", str(path), "--json"], capsys)
    assert code == 0, err and json.loads(out.strip().splitlines()[-1])["dataset"] == "synthetic"


def test_keep_fp32_first_and_classifier_and_none(tmp_path):
    from cnnzoo.inference.quantize import quantize

    kw = dict(model="resnet20", dataset="synthetic", calib_images=16,
              check_images=16)
    both = quantize(tmp_path / "a.onnx", keep_fp32=("first", "classifier"), **kw)
    weight_layers = [(d["node"], d["op"]) for d in both["fp32_layers"] if d["op"] in ("Conv", "Gemm")]
    assert weight_layers == [("/conv1/Conv", "Conv"), ("/fc/Gemm", "Gemm")]
    assert "first convolution" in both["fp32_layers"][0]["reason"] and "logits" in both["fp32_layers"][-1]["reason"]
    none = quantize(tmp_path / "b.onnx", keep_fp32=(), **kw)
    assert none["fp32_layers"] == [] and none["top1_agreement"] >= 0.9


def test_mobilenet_v2_cifar_quantizes_with_a_dynamic_batch(tmp_path):
    from cnnzoo.inference.onnx import load_onnx_checkpoint
    from cnnzoo.inference.quantize import quantize

    # A random network's logits lie close together, so its top-1 agreement depends on the draw:
    # seed it here rather than inherit whatever state the tests before left.
    torch.manual_seed(0)
    report = quantize(tmp_path / "m.onnx", model="mobilenet_v2_cifar", model_kwargs=dict(width_mult=0.25),
                      dataset="synthetic", calib_images=16, check_images=32)
    assert report["top1_agreement"] >= 0.9 and report["source"] == "mobilenet_v2_cifar (random)"
    predictor, meta = load_onnx_checkpoint(tmp_path / "m.onnx")
    assert predictor(torch.randn(3, 3, 32, 32)).shape == (3, 10)


@pytest.mark.slow
def test_compressed_checkpoint_quantizes_from_its_decompressed_weights(synthetic_lenet5_run, tmp_path, capsys):
    from cnnzoo.compression.pipeline import compress
    from cnnzoo.inference.cnnz import load_compressed_checkpoint
    from cnnzoo.inference.predict import evaluate_checkpoint

    cnnz = tmp_path / "m.cnnz"
    compress(synthetic_lenet5_run, cnnz, progress=False, sparsity="c5=0.5", bits="conv=5,fc=5", prune_iters=1,
             prune_epochs=0.05, final_epochs=0.05, quant_epochs=0.05, train_subset=256)
    out = tmp_path / "m.int8.onnx"
    code, text, err = cli(["quantize", "--checkpoint", str(cnnz), "--out", str(out), "--calib-images", "64", "--json"],
                          capsys)
    assert code == 0, err
    report = json.loads(text.strip().splitlines()[-1])
    assert report["source_bytes"] == cnnz.stat().st_size and report["calibration_dataset"] == "synthetic"
    dense, _ = load_compressed_checkpoint(cnnz)
    assert dense.pretrained_cfg["architecture"] == report["model"] == "lenet5"
    assert abs(evaluate_checkpoint(out)["top1"] - evaluate_checkpoint(cnnz)["top1"]) <= 0.02


@pytest.mark.parametrize("argv, message", [
    (["--model", "lenet5", "--out", "X.onnx"], "no calibration data: pass --dataset"),
    (["--model", "lenet5", "--dataset", "synthetic", "--out", "X.pt"], "name it \\*.onnx"),
    (["--model", "lenet5", "--dataset", "synthetic", "--out", "X.onnx", "--keep-fp32", "last"],
     "unknown keep_fp32 \\['last'\\]; choose from first, classifier"),
    (["--model", "lenet5", "--dataset", "synthetic", "--out", "X.onnx", "--calib-images", "0"],
     "--calib-images must be >= 1, got 0"),
    (["--model", "lenet5", "--dataset", "synthetic", "--out", "nowhere/X.onnx"], "output folder does not exist"),
    (["--out", "X.onnx", "--dataset", "synthetic"], "say which network"),
])
def test_bad_quantize_input_is_one_clear_line(argv, message, tmp_path, capsys):
    argv = [a.replace("X.", str(tmp_path / "X.")) if a.startswith("X.") else a for a in argv]
    code, _, err = cli(["quantize", *argv], capsys)
    assert code == 2
    assert err.count("\n") == 1
    import re

    assert re.search(message, err), err


def test_an_int8_file_is_not_quantized_twice(int8_file, tmp_path):
    from cnnzoo.inference.quantize import quantize

    with pytest.raises(ValueError, match="already quantized"):
        quantize(tmp_path / "again.onnx", checkpoint=int8_file[0])


@pytest.mark.skipif(HAS_OPENVINO, reason="OpenVINO and NNCF are installed")
def test_openvino_backend_without_the_extra_says_how_to_install_it(tmp_path):
    from cnnzoo.inference.quantize import quantize

    with pytest.raises(ValueError, match=r"pip install 'cnnzoo\[openvino\]'"):
        quantize(tmp_path / "x.onnx", model="lenet5", dataset="synthetic", backend="openvino")


@pytest.mark.skipif(not HAS_OPENVINO, reason="needs the openvino extra (OpenVINO, NNCF)")
def test_openvino_quantizes_and_runs_fp32_bf16_and_int8(tmp_path):
    from cnnzoo.inference.onnx import OpenVinoModule
    from cnnzoo.inference.quantize import fp32_onnx, quantize
    from cnnzoo.models.factory import create_model

    report = quantize(tmp_path / "x.onnx", model="lenet5", dataset="synthetic", backend="openvino",
                      calib_images=32, check_images=64)
    assert report["backend"] == "openvino" and report["top1_agreement"] >= 0.9
    model = create_model("lenet5").eval()
    x = torch.randn(4, *model.pretrained_cfg["input_size"])
    with torch.inference_mode():
        want = model(x)
    graph = fp32_onnx(model, model.pretrained_cfg["input_size"])
    assert (OpenVinoModule(graph, precision="fp32")(x) - want).abs().max() < 1e-4
    assert (OpenVinoModule(graph, precision="bf16")(x) - want).abs().max() < 0.05 * want.abs().max()
    int8 = OpenVinoModule((tmp_path / "x.onnx").read_bytes())
    assert int8(x).shape == (4, 10)
    from cnnzoo.inference.export import optimize_for_inference

    fast = optimize_for_inference(model, x, backends=("openvino",))
    assert fast.inference_backend == "openvino" and (fast(x) - want).abs().max() < 1e-4


# --------------------------------------------------------------------------------------------------
# bench --backend / --precision


def test_variant_pairs_skip_what_a_backend_lacks_and_refuse_when_nothing_is_left():
    from cnnzoo.studies.bench import variant_pairs

    pairs, skipped = variant_pairs(["torch", "onnxruntime"], ["bf16", "int8"])
    assert pairs == [("torch", "bf16"), ("onnxruntime", "int8")]
    assert [s.split(":")[0] for s in skipped] == ["torch int8", "onnxruntime bf16"]
    with pytest.raises(ValueError, match="no variant to time: onnxruntime bf16: ONNX Runtime's CPU provider"):
        variant_pairs(["onnxruntime"], ["bf16"])
    with pytest.raises(ValueError, match="--precision: unknown fp8; choose from fp32, bf16, int8"):
        variant_pairs(["torch"], ["fp8"])
    assert variant_pairs(["onnxruntime", "torch"], ["fp32"], device="cuda")[0] == [("torch", "fp32")]


def test_bench_times_int8_and_bf16_beside_the_reference_and_the_peer():
    from cnnzoo.studies.bench import benchmark

    report = benchmark(["mobilenet_v2"], batch_size=2, input_size=(3, 32, 32), reference=True,
                       variants=[("torch", "bf16"), ("onnxruntime", "int8")], warmup=1, iters=3, progress=False,
                       peak_size=256, model_kwargs=dict(width_mult=0.25))
    rows = {r["variant"]: r for r in report["results"]}
    assert set(rows) == {"ours", "reference", "torch-bf16", "onnxruntime-int8", "reference-onnxruntime-int8"}
    assert (rows["onnxruntime-int8"]["precision"], rows["torch-bf16"]["precision"]) == ("int8", "bf16")
    peaks = report["matmul_peaks"]
    assert set(peaks) == {"fp32", "bf16", "int8"}
    for r in rows.values():
        assert r["peak_share"] == pytest.approx(r["gflops"] / peaks[r["precision"]]["gflops"])
    v = report["ratios"][0]["variants"]
    assert set(v) == {"torch-bf16", "onnxruntime-int8"}
    lo, hi = v["onnxruntime-int8"]["over_peer_ci90"]
    assert lo <= v["onnxruntime-int8"]["over_peer"] <= hi and "over_peer" not in v["torch-bf16"]
    assert v["torch-bf16"]["over_reference"] > 0


def test_bench_cli_precision_flags_and_amp(int8_file, capsys):
    code, out, err = cli(["bench", "lenet5", "--precision", "int8", "--batch-size", "2", "--iters", "2", "--warmup",
                          "0", "--no-progress", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["variants"] == ["onnxruntime-int8"]
    assert "not timed: torch int8" in out
    code, _, err = cli(["bench", "lenet5", "--amp", "--precision", "int8"], capsys)
    assert code == 2 and "--amp runs ours and the reference in bf16" in err
    code, out, err = cli(["bench", str(int8_file[0]), "--batch-size", "2", "--iters", "2", "--warmup", "0",
                          "--no-progress", "--json"], capsys)
    row = json.loads(out.strip().splitlines()[-1])["results"][0]
    assert code == 0 and row["precision"] == "int8" and row["backend"] == "onnxruntime"


# --------------------------------------------------------------------------------------------------
# compare --x latency


def _bench_report(path, rows, batch=1):
    report = dict(device_name="test cpu", threads=2, batch_size=batch, torch=torch.__version__, results=[
        dict(model=m, mode="infer", variant=v, batch_size=batch, latency_ms_p50=ms) for m, v, ms in rows])
    path.write_text("table above the JSON line\n" + json.dumps(report))
    return path


def test_compare_puts_measured_latency_on_the_x_axis(tmp_path, capsys):
    from cnnzoo.studies.compare import compare

    board = tmp_path / "board.json"
    board.write_text(json.dumps([{"model": "lenet5", "params": 61706, "gmacs": 0.0004, "test_top1": 0.9},
                                 {"model": "resnet20", "params": 272474, "gmacs": 0.04, "test_top1": 0.93}]))
    bench = _bench_report(tmp_path / "bench.json", [("lenet5", "ours", 0.5), ("resnet20", "ours", 4.0),
                                                    ("resnet50", "ours", 80.0), ("resnet50", "onnxruntime-int8", 9.0),
                                                    ("mobilenet_v2", "ours", 20.0), ("lenet5", "onnxruntime-int8", 0.2)])
    result = compare([board], out_png=tmp_path / "c.png", x="latency", bench=[bench])
    got = {(p["panel"], p["model"]): p["latency_ms"] for p in result["points"]}
    assert got == {("ours", "lenet5"): 0.5, ("ours", "resnet20"): 4.0, ("published", "resnet50"): 80.0,
                   ("published", "mobilenet_v2"): 20.0}
    assert 0 < (tmp_path / "c.png").stat().st_size < 300_000
    int8 = compare([board], x="latency", bench=[bench], bench_variant="onnxruntime-int8")
    assert [(p["model"], p["latency_ms"]) for p in int8["points"]] == [("lenet5", 0.2), ("resnet50", 9.0)]
    code, out, err = cli(["compare", str(board), "--x", "latency", str(bench), "--out", str(tmp_path / "d.png")], capsys)
    assert code == 0, err
    assert "ms/img" in out and "wrote PNG" in out


def test_compare_latency_errors_are_clear(tmp_path, capsys):
    from cnnzoo.studies.compare import compare

    board = tmp_path / "board.json"
    board.write_text(json.dumps([{"model": "lenet5", "params": 61706, "gmacs": 0.0004, "test_top1": 0.9}]))
    bench = _bench_report(tmp_path / "bench.json", [("resnet50", "ours", 80.0)])
    with pytest.raises(ValueError, match="time none of the runs' models \\(resnet50 only\\)"):
        compare([board], x="latency", bench=[bench])
    with pytest.raises(ValueError, match="with --x latency write the PNG"):
        compare([board], out_html=tmp_path / "c.html", x="latency", bench=[bench])
    code, _, err = cli(["compare", str(board), "--x", "latency"], capsys)
    assert code == 2 and "--x latency needs a bench report" in err
    code, _, err = cli(["compare", str(board), "--x", "latency", str(tmp_path / "missing.json")], capsys)
    assert code == 2 and "missing.json: no such bench report" in err


def test_layers_fed_through_max_pool_or_layout_ops_count_as_int8():
    """NNCF puts the QuantizeLinear/DequantizeLinear pair before a max pool or a flatten, whose
    output of int8 values stays on the same grid: the next layer runs on int8 values, an average
    pool's output does not."""
    from onnx import TensorProto, helper

    from cnnzoo.inference.quantize import fp32_layers

    def graph(between: str):
        nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["dq"], name="dq"),
                 helper.make_node(between, ["dq"], ["pooled"], name="between", kernel_shape=[2, 2]),
                 helper.make_node("DequantizeLinear", ["qw", "sw"], ["w"], name="dqw"),
                 helper.make_node("Conv", ["pooled", "w"], ["y"], name="conv")]
        io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("q", "y")]
        return helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:]))

    assert fp32_layers(graph("MaxPool"), {}) == []
    flagged = fp32_layers(graph("AveragePool"), {})
    assert [d["node"] for d in flagged] == ["conv"] and "kept in fp32" in flagged[0]["reason"]
