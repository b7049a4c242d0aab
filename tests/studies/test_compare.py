"""`cnnzoo compare`: points read from run and league folders, their MACs, the PNG, the offline
HTML, the errors a user can cause, and the published data file against the registry."""
import json
import re
import shutil
import struct

import pytest
import torch

from cnnzoo.analysis import count_macs
from cnnzoo.cli import build_parser
from cnnzoo.cli.common import run_command
from cnnzoo.models.factory import create_model
from cnnzoo.studies import compare as cmp

# LeNet-5 at 1x32x32, from its layer sizes: C1 6x28x28x(5x5x1) + C3 16x10x10x(5x5x6) + C5 120x400
# + F6 84x120 + output 10x84.
LENET5_MACS = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 120 * 400 + 84 * 120 + 10 * 84  # 416,520
# LeNet-300-100 at 1x28x28: 784x300 + 300x100 + 100x10.
LENET300_MACS = 784 * 300 + 300 * 100 + 100 * 10  # 266,200


@pytest.fixture(scope="module")
def folders(tmp_path_factory, fmnist_small):
    """A real LeNet-5 run (one short epoch), a hand-written run folder of LeNet-300-100 laid out
    as `cnnzoo train` writes it, and a league folder whose board repeats the LeNet-5 run."""
    from cnnzoo.training.config import TrainConfig
    from cnnzoo.training.loop import train

    root = tmp_path_factory.mktemp("compare")
    run_a = root / "lenet5-run"
    summary = train(TrainConfig(model="lenet5", epochs=1, train_subset=500, data_dir=str(fmnist_small),
                                out=str(run_a), threads=2, batch_size=100), progress=False)

    run_b = root / "mlp-run"
    run_b.mkdir()
    classes = [f"class{i}" for i in range(10)]
    (run_b / "config.json").write_text(json.dumps({"model": "lenet_300_100", "dataset": "fashion-mnist",
                                                   "input_size": [1, 28, 28], "classes": classes,
                                                   "model_kwargs": {}}))
    (run_b / "summary.json").write_text(json.dumps({"model": "lenet_300_100", "dataset": "fashion-mnist",
                                                    "test_top1": 0.8512, "params": 266610,
                                                    "input_size": [1, 28, 28], "run_dir": str(run_b)}))

    league = root / "league"
    league.mkdir()
    board = {"settings": {"dataset": "fashion-mnist", "epochs": 1}, "pending": [], "entries": [
        {"model": "lenet5", "params": summary["params"], "macs": LENET5_MACS, "test_top1": summary["test_top1"],
         "run_dir": str(run_a)},
        {"model": "mobilenet_v1_cifar", "params": 3217226, "macs": 47_000_000, "test_top1": 0.921,
         "run_dir": str(league / "mobilenet_v1_cifar")},
    ]}
    (league / "leaderboard.json").write_text(json.dumps(board))
    return dict(root=root, run_a=run_a, run_b=run_b, league=league, summary=summary)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_points_from_runs_and_league(folders):
    points = cmp.load_points([folders["run_a"], folders["run_b"], folders["league"]])
    assert [p.model for p in points] == ["lenet5", "lenet_300_100", "lenet5", "mobilenet_v1_cifar"]
    lenet_run, mlp, lenet_league, mobilenet = points
    # MACs counted on the network each run trained, checked against the hand count of its layers.
    assert lenet_run.gmacs == pytest.approx(LENET5_MACS / 1e9)
    assert lenet_run.gmacs == pytest.approx(0.0004, rel=0.05)
    assert mlp.gmacs == pytest.approx(LENET300_MACS / 1e9)
    assert mobilenet.gmacs == pytest.approx(0.047)
    # train writes fractions; the chart is in percent.
    assert lenet_run.top1 == pytest.approx(folders["summary"]["test_top1"] * 100)
    assert mlp.top1 == pytest.approx(85.12)
    assert lenet_run.params == folders["summary"]["params"] == 61706
    # The same model twice: both kept, labelled by their run folders, all labels distinct.
    assert lenet_run.label == f"lenet5 ({folders['run_a'].name})"
    assert lenet_league.label == f"lenet5 ({folders['run_a'].name}) #2"
    assert mlp.label == "lenet_300_100"
    assert {p.dataset for p in points} == {"fashion-mnist"}  # the league's from its settings
    assert len({p.label for p in points}) == len(points)


def test_run_macs_follow_the_trained_head(tmp_path, folders):
    """A run with 3 classes is counted with a 3-way classifier, as it was trained."""
    run = tmp_path / "three-classes"
    shutil.copytree(folders["run_b"], run)
    config = json.loads((run / "config.json").read_text())
    config["classes"] = ["a", "b", "c"]
    (run / "config.json").write_text(json.dumps(config))
    (point,) = cmp.load_points([run])
    with torch.device("meta"):
        net = create_model("lenet_300_100", num_classes=3, in_chans=1)
    assert point.gmacs * 1e9 == pytest.approx(count_macs(net, (1, 28, 28)))
    assert point.gmacs * 1e9 == pytest.approx(784 * 300 + 300 * 100 + 100 * 3)


def test_bare_list_leaderboard_and_percent_top1(tmp_path):
    board = tmp_path / "board.json"
    board.write_text(json.dumps([{"model": "lenet5", "params": 61706, "macs": LENET5_MACS, "test_top1": 90.5}]))
    (point,) = cmp.load_points([board])
    assert point.top1 == pytest.approx(90.5)
    assert point.label == "lenet5"


def test_charts(folders, tmp_path):
    out_png, out_html = tmp_path / "charts" / "chart.png", tmp_path / "charts" / "chart.html"
    result = cmp.compare([folders["run_a"], folders["run_b"], folders["league"]], out_png=out_png,
                         out_html=out_html)
    assert result["paths"] == {"png": str(out_png), "html": str(out_html)}
    points = result["points"]
    ours = [p for p in points if p["panel"] == "ours"]
    published = [p for p in points if p["panel"] == "published"]
    assert len(ours) == 4 and len(published) == len(cmp.load_published())

    data = out_png.read_bytes()
    width, height = _png_size(data)
    assert width >= 1000 and height >= 400
    assert 20_000 < len(data) < 200_000

    page = out_html.read_text()
    # Offline: nothing fetched; the one script file is Plotly's bundle, written beside the page.
    assert "http://" not in page and "https://" not in page
    assert re.findall(r"<(?:script|img|link|iframe)[^>]*\b(?:src|href)=\"([^\"]*)\"", page) == ["plotly.min.js"]
    bundle = out_html.parent / "plotly.min.js"
    assert bundle.stat().st_size > 1_000_000 and b"plotly" in bundle.read_bytes()[:2000].lower()
    assert "@import" not in page and "url(" not in page
    assert len(page) < 200_000  # the bundle is not inlined
    # The page's figure: one trace per panel, one bubble per point, each with its hover text.
    fig = cmp.plotly_figure(cmp.load_points([folders["run_a"], folders["run_b"], folders["league"]]),
                            cmp.load_published())
    assert [len(t.x) for t in fig.data] == [len(ours), len(published)]
    for trace, panel in zip(fig.data, (ours, published)):
        assert list(trace.x) == pytest.approx([p["gmacs"] for p in panel])
        assert list(trace.y) == pytest.approx([p["top1"] for p in panel])
        assert list(trace.text) == [p["label"] for p in panel]
        # Bubble area proportional to parameters: sizes are the counts, one scale per panel.
        assert list(trace.marker.size) == [p["params"] for p in panel] and trace.marker.sizemode == "area"
        for tip, p in zip(trace.hovertext, panel):
            assert tip.startswith(p["label"].replace("&", "&amp;") + "<br>")
            assert f"top-1 {p['top1']:.2f}%" in tip and f"{p['params']:,} params" in tip and "GMACs" in tip
    # Log-scale x axes, the panel titles naming each panel's data; the page holds the same figure.
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log"
    titles = [a.text for a in fig.layout.annotations]
    assert any("fashion-mnist" in t for t in titles) and any("ImageNet" in t for t in titles)
    for p in points:
        assert json.dumps(p["label"])[1:-1] in page


def test_cli_json(folders, tmp_path, capsys):
    args = build_parser().parse_args(["compare", str(folders["run_b"]), "--html", str(tmp_path / "c.html"), "--json"])
    assert run_command(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["panel", "model", "dataset"]
    assert any(line.startswith("ours") and "lenet_300_100" in line and "85.12" in line for line in lines)
    assert any(line.startswith("wrote HTML") for line in lines)
    last = json.loads(lines[-1])
    assert last["paths"] == {"html": str(tmp_path / "c.html")}
    assert {"panel", "model", "label", "top1", "gmacs", "params", "source"} <= set(last["points"][0])


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cmp.load_points([tmp_path / "nowhere"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty.*neither a run folder.*summary\.json.*leaderboard\.json"):
        cmp.load_points([empty])
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"unfinished.*without summary\.json"):
        cmp.load_points([unfinished])
    league = tmp_path / "league"
    league.mkdir()
    (league / "leaderboard.json").write_text(json.dumps({"entries": [{"model": "lenet5", "params": 1,
                                                                      "test_top1": 0.5}]}))
    with pytest.raises(ValueError, match=r"leaderboard\.json entry 0: missing macs"):
        cmp.load_points([league])
    (league / "leaderboard.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"leaderboard\.json: not valid JSON"):
        cmp.load_points([league])
    unknown = tmp_path / "unknown-model"
    unknown.mkdir()
    (unknown / "summary.json").write_text(json.dumps({"model": "lenet6", "test_top1": 0.5, "input_size": [1, 32, 32]}))
    with pytest.raises(ValueError, match=r"unknown-model: cannot rebuild.*'lenet6'.*lenet5"):
        cmp.load_points([unknown])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        cmp.load_points([text])


def test_published_rows_cite_sources_and_match_torchvision():
    """Every figure has a source; the rows taken from torchvision's weight metadata match it."""
    import torchvision.models as tvm

    rows = cmp.load_published()
    names = {p.model for p in rows}
    assert {"alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "googlenet", "inception_v3", "resnet18", "resnet34",
            "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d", "seresnet50",
            "mobilenet_v1", "mobilenet_v2"} <= names
    assert len(names) == len(rows)
    for p in rows:
        assert 0 < p.top1 < 100 and p.gmacs > 0 and p.params > 0
        assert all(len(p.sources[k]) > 10 for k in ("top1", "gmacs", "params")), p.model
        if p.sources["top1"].startswith("torchvision"):
            meta = tvm.get_model_weights(p.model).IMAGENET1K_V1.meta
            assert p.top1 == meta["_metrics"]["ImageNet-1K"]["acc@1"], p.model
            assert p.gmacs == meta["_ops"], p.model
            aux = 3326696 if p.model == "inception_v3" else 0  # its training-only auxiliary head
            assert p.params == meta["num_params"] - aux, p.model


def test_published_params_match_registry():
    for p in cmp.load_published():
        with torch.device("meta"):
            net = create_model(p.model)
        assert sum(t.numel() for t in net.parameters()) == p.params, p.model


@pytest.mark.slow
def test_published_gmacs_match_count_macs():
    for p in cmp.load_published():
        with torch.device("meta"):
            net = create_model(p.model)
        ours = count_macs(net) / 1e9
        assert ours == pytest.approx(p.gmacs, rel=0.02), (p.model, ours, p.gmacs)
