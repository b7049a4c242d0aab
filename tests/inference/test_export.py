"""Batch-norm folding, optimize_for_inference, ONNX export checked with ONNX Runtime, ONNX loading."""
import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.cli import build_parser, main
from cnnzoo.inference.export import find_conv_bn_pairs, fold_batchnorm, optimize_for_inference
from cnnzoo.inference.onnx import export_onnx, load_onnx_checkpoint, read_onnx_meta


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics and affine terms, so that a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def run_cli(*argv: str):
    """The command's result; unlike ``main``, errors propagate as exceptions."""
    args = build_parser().parse_args(list(argv))
    return args.func(args)


class ConvReluBn(nn.Module):
    """conv -> in-place ReLU -> BN: the BN sees the conv's tensor, modified; must not be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(4, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.bn(self.act(self.conv(x)))))


def test_fold_skips_modified_tensor_and_folds_biased_conv():
    model = randomize_bn(ConvReluBn())
    x = torch.randn(2, 3, 8, 8)
    assert find_conv_bn_pairs(model, x) == [("conv2", "bn2")]
    want = model(x)
    assert fold_batchnorm(model, (3, 8, 8)) == 1
    assert isinstance(model.bn, nn.BatchNorm2d) and isinstance(model.bn2, nn.Identity)
    torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2_cifar", "vgg11_cifar", "googlenet_cifar"])
def test_fold_batchnorm_every_bn_and_same_outputs(name):
    torch.manual_seed(0)
    model = randomize_bn(cnnzoo.create_model(name))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
        folded = optimize_for_inference(model, x, backends=("eager",))
        got = folded(x)
    assert folded.inference_backend == "eager"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_optimize_for_inference_picks_a_backend_and_agrees():
    torch.manual_seed(0)
    model = randomize_bn(cnnzoo.create_model("resnet20"))
    x = torch.randn(8, 3, 32, 32)
    fast = optimize_for_inference(model, x)
    assert fast.inference_backend in ("eager", "onnxruntime")
    assert set(fast.inference_timings) == {"eager", "onnxruntime"}
    y = torch.randn(3, 3, 32, 32)  # another batch size than the example
    with torch.no_grad():
        assert (fast(y) - model(y)).abs().max().item() <= 1e-4
    assert fast.pretrained_cfg["architecture"] == "resnet20"
    with pytest.raises(ValueError, match="unknown backends"):
        optimize_for_inference(model, x, backends=("tensorrt",))


FAMILIES = ["lenet5", "alexnet_cifar", "vgg11_cifar", pytest.param("googlenet_cifar", marks=pytest.mark.slow),
            pytest.param("inception_v3_cifar", marks=pytest.mark.slow), "resnet20", "seresnet20",
            "mobilenet_v2_cifar"]


@pytest.mark.parametrize("name", FAMILIES)
def test_export_every_family_checked_by_onnxruntime(name, tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(cnnzoo.create_model(name))
    classes = [f"c{i}" for i in range(model.pretrained_cfg["num_classes"])]
    meta = dict(model=name, classes=classes, mean=list(model.pretrained_cfg["mean"]), std=list(model.pretrained_cfg["std"]),
                num_classes=len(classes), data_size=[1, 28, 28])
    report = export_onnx(model, tmp_path / "m.onnx", meta, dynamic_batch=True)
    assert report["top1_same"] and report["max_abs_diff"] <= report["limit"]
    predictor, got_meta = load_onnx_checkpoint(tmp_path / "m.onnx")
    assert got_meta["classes"] == classes and got_meta["data_size"] == [1, 28, 28]
    assert predictor.pretrained_cfg["input_size"] == model.pretrained_cfg["input_size"]
    x = torch.randn(3, *model.pretrained_cfg["input_size"])  # batch 3: the exported batch was 2
    with torch.no_grad():
        want = model(x)
    got = predictor(x)
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())


def test_export_cli_from_checkpoint_and_model(tmp_path):
    from cnnzoo.models.checkpoint import model_meta, save_weights

    torch.manual_seed(1)
    model = cnnzoo.create_model("lenet5").eval()
    classes = [f"item{i}" for i in range(10)]
    save_weights(model, tmp_path / "w.safetensors", model_meta(model, classes=classes, data_size=[1, 28, 28]))
    assert main(["export", "--checkpoint", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "a.onnx")]) == 0
    meta = read_onnx_meta(tmp_path / "a.onnx")
    assert meta["model"] == "lenet5" and meta["classes"] == classes and meta["data_size"] == [1, 28, 28]
    predictor, _ = load_onnx_checkpoint(tmp_path / "a.onnx")
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(predictor(x), model(x).detach(), atol=1e-4, rtol=1e-4)

    assert main(["export", "--model", "resnet20", "--out", str(tmp_path / "b.onnx"), "--opset", "13", "--json"]) == 0
    meta = read_onnx_meta(tmp_path / "b.onnx")
    assert meta["model"] == "resnet20" and meta["opset"] == 13 and meta["weights"] == "random"


def test_export_errors(tmp_path):
    with pytest.raises(ValueError, match="--checkpoint"):
        run_cli("export", "--out", str(tmp_path / "x.onnx"))
    with pytest.raises(FileNotFoundError):
        run_cli("export", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "x.onnx"))
    with pytest.raises(FileNotFoundError):
        read_onnx_meta(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="not a readable ONNX"):
        read_onnx_meta(tmp_path / "junk.onnx")
    # An ONNX file from elsewhere (no cnnzoo metadata) is refused with a message saying so.
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(nn.Linear(3, 2), (torch.randn(1, 3),), buf, dynamo=False)
    (tmp_path / "foreign.onnx").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="no cnnzoo metadata"):
        load_onnx_checkpoint(tmp_path / "foreign.onnx")


def test_export_refuses_a_graph_onnx_gets_wrong(tmp_path):
    """A model whose traced graph differs from its eager behaviour fails the ONNX Runtime check and
    writes no file (the tracer freezes the Python branch taken for the example input)."""

    class DataDependent(nn.Module):
        pretrained_cfg = dict(input_size=(3, 4, 4), architecture="datadep")

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(48, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x.flatten(1))
            if float(x.sum()) > 1e9:  # never true: the trace keeps the "else" branch
                return y
            return y * 0 + torch.arange(5.0) * float(x.mean())  # constant baked into the trace

    with pytest.raises(ValueError, match="does not reproduce"):
        export_onnx(DataDependent(), tmp_path / "d.onnx", dict(model="datadep", mean=[0] * 3, std=[1] * 3))
    assert not (tmp_path / "d.onnx").exists()


def test_onnx_predictor_in_evaluate_with_fixed_batch_graph(tmp_path):
    """A graph exported for batch 1 still evaluates a dataset in batches of 7 (run in chunks), with
    the same top-1 as the eager model: what `cnnzoo eval/predict` do with an .onnx file."""
    from cnnzoo.data.datasets import Normalize, synthetic_dataset
    from cnnzoo.training.loop import evaluate

    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5").eval()
    export_onnx(model, tmp_path / "f.onnx", dict(model="lenet5", mean=[0.5], std=[0.25], num_classes=10))
    predictor, meta = load_onnx_checkpoint(tmp_path / "f.onnx")
    assert predictor.fixed_batch == 1 and meta["classes"] == [str(i) for i in range(10)]
    ds = synthetic_dataset(23, (1, 32, 32), 10, seed=0)
    norm = Normalize(predictor.pretrained_cfg["mean"], predictor.pretrained_cfg["std"])
    got = evaluate(predictor, ds, norm, batch_size=7)
    want = evaluate(model, ds, norm, batch_size=7)
    assert got["top1"] == want["top1"] and got["loss"] == pytest.approx(want["loss"], abs=1e-4)


def test_onnx_runtime_threads_do_not_spin_after_a_run(tmp_path):
    """ONNX Runtime's workers would otherwise busy-wait after each run and slow the torch code that
    runs next on the same cores (bench interleaves eager variants with an ONNX Runtime one)."""
    model = cnnzoo.create_model("lenet5").eval()
    export_onnx(model, tmp_path / "f.onnx", dict(model="lenet5", mean=[0.5], std=[0.25], num_classes=10))
    predictor, _ = load_onnx_checkpoint(tmp_path / "f.onnx", threads=2)
    opts = predictor.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 2
