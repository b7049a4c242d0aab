import json
import subprocess
import sys

import pytest
from PIL import Image

from cnnzoo.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_run(fmnist_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--data-dir", str(fmnist_small), "--epochs", "2", "--batch-size", "64",
                 "--out", str(out), "--no-progress"]) == 0
    return out


def test_train_prints_final_line_and_json(fmnist_small, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "train", "--data-dir", str(fmnist_small), "--epochs", "1", "--train-subset", "500",
                           "--out", str(tmp_path / "r"), "--no-progress", "--json")
    assert code == 0
    lines = out.strip().splitlines()
    assert "lenet5 on fashion-mnist: test top-1" in lines[-2] and str(tmp_path / "r") in lines[-2]
    assert json.loads(lines[-1])["epochs"] == 1


def test_train_recipe_with_overrides_and_eval_with_flip_tta(fmnist_small, tmp_path, capsys):
    run = tmp_path / "fast"
    code, out, _ = run_cli(capsys, "train", "--recipe", "fast", "--data-dir", str(fmnist_small), "--epochs", "1",
                           "--train-subset", "512", "--lr", "0.1", "--no-amp", "--out", str(run), "--no-progress", "--json")
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "fast" and config["model"] == "vgg_airbench" and config["lr"] == 0.1
    assert config["tta_flip"] and summary["tta_flip"] and summary["tta_shift"] == 1 and not config["amp"]
    code, out, _ = run_cli(capsys, "eval", "--checkpoint", str(run), "--data-dir", str(fmnist_small), "--tta-flip",
                           "--tta-shift", "1", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["top1"] == pytest.approx(summary["test_top1"])


def test_eval_reports_top1_top5(trained_run, fmnist_small, capsys):
    code, out, _ = run_cli(capsys, "eval", "--checkpoint", str(trained_run), "--data-dir", str(fmnist_small), "--json")
    res = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and res["images"] == 1000 and 0.6 < res["top1"] <= res["top5"] <= 1
    summary = json.loads((trained_run / "summary.json").read_text())
    assert res["top1"] == pytest.approx(summary["best_test_top1"])


def test_predict_prints_class_names(trained_run, fmnist_small, tmp_path, capsys):
    from cnnzoo.data.datasets import load_dataset

    ds = load_dataset("fashion-mnist", "test", data_dir=fmnist_small)
    paths = []
    for i in range(4):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(ds.images[i, 0].numpy()).resize((90, 70)).convert("RGB").save(p)  # any size and mode
        paths.append(str(p))
    code, out, _ = run_cli(capsys, "predict", "--checkpoint", str(trained_run / "best.safetensors"), *paths,
                           "--topk", "3", "--json")
    results = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and len(results) == 4 and all(len(r["top"]) == 3 for r in results)
    assert all(r["top"][0]["class"] in ds.classes for r in results)
    assert sum(r["top"][0]["class_index"] == int(y) for r, y in zip(results, ds.labels[:4])) >= 2


def test_bad_inputs_give_one_line_errors(trained_run, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--model", "resnet-50", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown model 'resnet-50'" in err and "Did you mean" in err
    code, _, err = run_cli(capsys, "train", "--dataset", "cifar", "--out", str(tmp_path / "y"))
    assert code == 2 and "unknown dataset 'cifar'" in err
    code, _, err = run_cli(capsys, "train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "z"))
    assert code == 2 and "apt-get install -y dataset-fashion-mnist" in err
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path))
    assert code == 2 and "no run there" in err
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code, _, err = run_cli(capsys, "predict", "--checkpoint", str(trained_run), str(bad))
    assert code == 2 and "photo.jpg: cannot decode image" in err
    code, _, err = run_cli(capsys, "eval", "--checkpoint", str(trained_run), "--model", "lenet5_caffe")
    assert code == 2 and "does not fit model lenet5_caffe" in err and "missing" in err


def test_models_command_lists_the_zoo(capsys):
    code, out, _ = run_cli(capsys, "models", "lenet*", "--json")
    rows = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and [r["name"] for r in rows] == ["lenet5", "lenet5_caffe", "lenet_300_100"]
    lenet = rows[0]
    assert lenet["params"] == 61706 and lenet["year"] == 1998
    assert lenet["verified_against"] == "paper Fig. 2: test_registry.py::test_lenet5_layer_table"
    assert lenet["gmacs"] == pytest.approx(0.000417, rel=0.01)


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "cnnzoo", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "train" in res.stdout


def test_summary_and_factorize_commands(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "summary", "lenet5", "--num-classes", "10", "--json")
    res = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and "c1" in out and "Total params:         61,706" in out
    assert res["model"] == "lenet5" and res["totals"]["params"] == 61_706 and res["layers"][0]["name"] == "c1"
    code, out, _ = run_cli(capsys, "factorize", "--kernel", "5", "--channels", "64", "--plot", str(tmp_path / "f.png"),
                           "--json")
    assert code == 0 and (tmp_path / "f.png").stat().st_size > 1000
    assert "18/25" in out


def test_imagefolder_training_skips_bad_images_when_asked(tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "d" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "d" / split / c / f"{i}.png")
    (tmp_path / "d" / "train" / "a" / "bad.png").write_bytes(b"\x89PNG broken")
    args = ["train", "--model", "resnet20", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "d"),
            "--input-size", "3", "16", "16", "--epochs", "1", "--batch-size", "4", "--no-progress"]
    code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "r1"))
    assert code == 2 and "bad.png: cannot decode image" in err
    code, out, _ = run_cli(capsys, *args, "--out", str(tmp_path / "r2"), "--skip-bad-images", "--json")
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and len(summary["skipped_images"]) == 1 and summary["train_images"] == 8


def test_eval_and_predict_accept_an_onnx_export(trained_run, fmnist_small, tmp_path, capsys):
    onnx_path = tmp_path / "lenet5.onnx"
    code, _, err = run_cli(capsys, "export", "--checkpoint", str(trained_run), "--format", "onnx", "--out", str(onnx_path))
    assert code == 0, err
    code, out, _ = run_cli(capsys, "eval", "--checkpoint", str(trained_run), "--data-dir", str(fmnist_small), "--json")
    eager = json.loads(out.strip().splitlines()[-1])
    code, out, _ = run_cli(capsys, "eval", "--checkpoint", str(onnx_path), "--data-dir", str(fmnist_small), "--json")
    exported = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and exported["top1"] == pytest.approx(eager["top1"], abs=1e-3)
    img = tmp_path / "x.png"
    Image.new("L", (28, 28), 200).save(img)
    code, out, _ = run_cli(capsys, "predict", "--checkpoint", str(onnx_path), str(img), "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])[0]["top"][0]["class"]


def test_compress_then_eval_and_predict_the_cnnz_file(trained_run, fmnist_small, tmp_path, capsys):
    out = tmp_path / "lenet5.cnnz"
    code, text, err = run_cli(capsys, "compress", "--checkpoint", str(trained_run), "--data-dir", str(fmnist_small),
                              "--out", str(out), "--prune-iters", "1", "--prune-epochs", "1", "--final-epochs", "0",
                              "--quant-epochs", "1", "--no-progress", "--json")
    assert code == 0, err
    report = json.loads(text.strip().splitlines()[-1])
    assert out.stat().st_size < (trained_run / "best.safetensors").stat().st_size / 10
    code, text, _ = run_cli(capsys, "eval", "--checkpoint", str(out), "--data-dir", str(fmnist_small), "--json")
    res = json.loads(text.strip().splitlines()[-1])
    assert code == 0 and res["top1"] > 0.5 and report["totals"]["file_bytes"] == out.stat().st_size
    # the .cnnz file rebuilds the quantized model the report measured (one image's worth of slack)
    assert res["top1"] == pytest.approx(report["totals"]["top1_quantized"], abs=1.5e-3)
    img = tmp_path / "x.png"
    Image.new("L", (28, 28), 200).save(img)
    code, text, _ = run_cli(capsys, "predict", "--checkpoint", str(out), str(img), "--json")
    assert code == 0 and json.loads(text.strip().splitlines()[-1])[0]["top"][0]["class"]


def test_train_passes_model_kwargs_and_the_new_flags_to_the_config(tmp_path, capsys):
    run = tmp_path / "r"
    code, out, err = run_cli(capsys, "train", "--dataset", "synthetic", "--synthetic-classes", "4", "--epochs", "1",
                             "--train-subset", "128", "--test-subset", "64", "--eval-batch-size", "32",
                             "--input-size", "1", "32", "32", "--model-kwargs", "act=tanh,pool=avg", "--opt", "sgd",
                             "--momentum", "0.5", "--out", str(run), "--no-progress", "--json")
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["model_kwargs"] == {"act": "tanh", "pool": "avg"}
    assert (config["synthetic_classes"], config["test_subset"], config["eval_batch_size"]) == (4, 64, 32)
    assert (config["opt"], config["momentum"]) == ("sgd", 0.5)
    code, _, err = run_cli(capsys, "train", "--model-kwargs", "width_mult=0.5", "--out", str(tmp_path / "x"))
    assert code == 2 and "lenet5 takes no argument 'width_mult'; it accepts: act, pool" in err


def test_model_kwargs_build_a_named_model_for_weights_without_metadata(tmp_path, capsys):
    from safetensors.torch import save_file

    from cnnzoo import create_model

    weights = tmp_path / "thin.safetensors"  # no cnnzoo metadata: the model is built from --model
    thin = create_model("mobilenet_v1_cifar", width_mult=0.25, num_classes=1000)  # 1000: no metadata says 10
    save_file({k: v.contiguous() for k, v in thin.state_dict().items()}, str(weights))
    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32), 200).save(img)
    code, _, err = run_cli(capsys, "predict", "--checkpoint", str(weights), "--model", "mobilenet_v1_cifar", str(img))
    assert code == 2 and "classifier.weight has shape (1000, 256), the model expects (1000, 1024)" in err
    code, out, err = run_cli(capsys, "predict", "--checkpoint", str(weights), "--model", "mobilenet_v1_cifar",
                             "--model-kwargs", "width_mult=0.25", str(img), str(img), "--json")
    assert code == 0, err
    assert [r["image"] for r in json.loads(out.strip().splitlines()[-1])] == [str(img), str(img)]
    onnx_path = tmp_path / "thin.onnx"
    code, _, err = run_cli(capsys, "export", "--checkpoint", str(weights), "--model", "mobilenet_v1_cifar",
                           "--model-kwargs", "width_mult=0.25", "--out", str(onnx_path))
    assert code == 0, err
    from cnnzoo.inference.onnx import read_onnx_meta

    assert read_onnx_meta(onnx_path)["kwargs"] == {"width_mult": 0.25}
    code, _, err = run_cli(capsys, "predict", "--checkpoint", str(onnx_path), "--model-kwargs", "width_mult=0.25",
                           str(img))
    assert code == 2 and "thin.onnx: a .onnx file holds its network whole" in err


def test_export_and_compress_take_model_kwargs(trained_run, tmp_path, capsys):
    from cnnzoo.inference.onnx import read_onnx_meta

    sizes = {}
    for kwargs in ([], ["--model-kwargs", "shortcut=B"]):
        onnx_path = tmp_path / f"r20{len(kwargs)}.onnx"
        code, out, err = run_cli(capsys, "export", "--model", "resnet20", *kwargs, "--out", str(onnx_path), "--json")
        assert code == 0, err
        sizes[read_onnx_meta(onnx_path)["kwargs"].get("shortcut")] = json.loads(out.strip().splitlines()[-1])["bytes"]
    assert sizes[None] < sizes["B"]  # option B's projection shortcuts add weights to option A's
    code, _, err = run_cli(capsys, "compress", "--checkpoint", str(trained_run), "--out", str(tmp_path / "m.cnnz"),
                           "--model-kwargs", "width_mult=2")
    assert code == 2 and "lenet5 takes no argument 'width_mult'" in err and not (tmp_path / "m.cnnz").exists()
