import csv
import json

import pytest

from cnnzoo.cli import build_parser
from cnnzoo.cli.common import run_command
from cnnzoo.studies.degradation import (
    degradation_findings,
    degradation_models,
    plot_degradation,
    read_curves,
    run_degradation,
)
from cnnzoo.training.loop import METRIC_COLUMNS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_metrics(run_dir, train_top1, test_top1):
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(METRIC_COLUMNS)
        for epoch, (a, b) in enumerate(zip(train_top1, test_top1), 1):
            w.writerow([epoch, 1.0, a, 1.0, b, 0.99, 0.1, 1.0, 100.0])


@pytest.mark.slow
def test_degradation_trains_both_nets_plots_and_resumes(fmnist_small, tmp_path, capsys):
    out, png = tmp_path / "deg", tmp_path / "fig" / "degradation.png"
    argv = ["degradation", "--depths", "20", "--epochs", "2", "--subset", "200", "--data-dir", str(fmnist_small),
            "--threads", "1", "--out", str(out), "--plot", str(png), "--no-progress", "--json"]
    args = build_parser().parse_args(argv)
    assert run_command(args) == 0
    text = capsys.readouterr().out
    result = json.loads(text.strip().splitlines()[-1])
    assert list(result["models"]) == ["plain20", "resnet20"]
    for m, r in result["models"].items():
        assert r["epoch"] == [1, 2] and len(r["train_error"]) == len(r["test_error"]) == 2
        assert r["final_train_error"] == r["train_error"][-1] and r["status"] == "trained" and r["train_images"] == 200
        rows = list(csv.DictReader(open(out / m / "metrics.csv")))
        assert r["test_error"] == [1 - float(row["test_top1"]) for row in rows]
        cfg = json.loads((out / m / "config.json").read_text())
        assert (cfg["opt"], cfg["lr"], cfg["batch_size"], cfg["crop_padding"], cfg["flip"], cfg["test_subset"]) == (
                "sgd", 0.05, 32, 2, True, 2000)
    (shortcut,) = result["findings"]
    r20, p20 = result["models"]["resnet20"]["final_train_error"], result["models"]["plain20"]["final_train_error"]
    assert shortcut["kind"] == "shortcut" and (shortcut["residual_train_error"], shortcut["plain_train_error"]) == (r20, p20)
    assert f"resnet20 final training error {100 * r20:.2f}% vs plain20 {100 * p20:.2f}%: shortcuts" in text
    assert "one depth only" in text
    assert "subset of 200 training images" in result["title"] and "fashion-mnist" in result["title"]
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size < 150_000
    assert json.loads((out / "degradation.json").read_text())["models"]["plain20"]["test_error"] == \
        result["models"]["plain20"]["test_error"]

    # Again: both runs are finished, nothing is trained; other settings: an error naming the entry.
    again = run_degradation([20], epochs=2, subset=200, data_dir=str(fmnist_small), threads=1, out=out,
                            plot=png, progress=False)
    assert {r["status"] for r in again["models"].values()} == {"skipped"}
    with pytest.raises(ValueError, match=r"entry plain20: .*epochs 2 -> 3"):
        run_degradation([20], epochs=3, subset=200, data_dir=str(fmnist_small), threads=1, out=out, progress=False)


@pytest.mark.parametrize("plain56_train, verdict", [(0.80, "worse"), (0.95, "better")])
def test_findings_and_plot_from_metrics(tmp_path, plain56_train, verdict):
    # plain56 ends at 20% training error vs plain20's 10% (degradation), or at 5% (none);
    # resnet56 ends below resnet20 either way.
    _write_metrics(tmp_path / "plain20", [0.70, 0.90], [0.70, 0.88])
    _write_metrics(tmp_path / "plain56", [0.50, plain56_train], [0.50, 0.78])
    _write_metrics(tmp_path / "resnet20", [0.72, 0.91], [0.71, 0.89])
    _write_metrics(tmp_path / "resnet56", [0.75, 0.93], [0.73, 0.90])
    curves = {m: read_curves(tmp_path / m) for m in ("plain20", "resnet20", "plain56", "resnet56")}
    assert curves["plain56"]["train_error"][-1] == pytest.approx(1 - plain56_train)
    plain, res, short20, short56 = degradation_findings(curves)
    assert (plain["deeper"], plain["shallower"], plain["deeper_is"]) == ("plain56", "plain20", verdict)
    assert plain["text"].startswith(f"plain56 final training error {100 * (1 - plain56_train):.2f}% vs plain20 10.00%: "
                                    f"the deeper plain net is {verdict}")
    assert (res["deeper"], res["deeper_is"]) == ("resnet56", "better")
    assert "resnet56 final training error 7.00% vs resnet20 9.00%: the deeper residual net is better" in res["text"]
    assert short20["text"] == "resnet20 final training error 9.00% vs plain20 10.00%: shortcuts lower it by 1.00 points"
    assert short56["text"].startswith(f"resnet56 final training error 7.00% vs plain56 {100 * (1 - plain56_train):.2f}%: "
                                      f"shortcuts {'lower' if verdict == 'worse' else 'raise'} it by")
    png = plot_degradation(curves, tmp_path / "d.png", "synthetic")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size < 150_000


def test_depths_are_checked_and_ordered(tmp_path):
    assert degradation_models([56, 20]) == ["plain20", "resnet20", "plain56", "resnet56"]
    with pytest.raises(ValueError, match=r"--depths 57: .*available: 20 32 44 56 110"):
        degradation_models([20, 57])
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        read_curves(tmp_path)
