"""``--log tensorboard`` / ``--log mlflow``: the logs, read back with each library's own reader
(TensorBoard's event accumulator, MLflow's client on its file store), hold metrics.csv's numbers,
the pictures and the settings; a run killed and resumed has each step once in both; only rank 0
writes; a model without a convolution trains on with a note; the logs change no weight."""
import argparse
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import plugin_data_pb2

from cnnzoo.cli import build_parser
from cnnzoo.cli.train import train_config
from cnnzoo.data.datasets import Normalize, load_dataset, resize_to
from cnnzoo.models.factory import create_model
from cnnzoo.training import loggers
from cnnzoo.training.checkpoint import load_train_state
from cnnzoo.training.config import TrainConfig, train_command
from cnnzoo.training.loop import resume_training, train
from cnnzoo.utils.distributed import World
from tests.helpers import compress_cut_in_third_retraining

ROOT = Path(__file__).resolve().parents[2]
BOTH = ["tensorboard", "mlflow"]
CSV_COLUMNS = ("train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr", "epoch_seconds",
               "images_per_second")


@pytest.fixture(autouse=True)
def local_mlflow_store(monkeypatch):
    # The run folder's own store, whatever the machine's environment names; MLflow 3 opens a file
    # store only with this switch (the trainer sets it itself for its own store).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def config(data_dir, out, **kw):
    # 512 images / 64 = 8 steps an epoch
    return TrainConfig(**{**dict(model="lenet5", data_dir=str(data_dir), epochs=2, batch_size=64, train_subset=512,
                                 test_subset=500, threads=1, seed=3, deterministic=True, log=BOTH, log_every=4,
                                 out=str(out)), **kw})


def tensorboard(log_dir) -> EventAccumulator:
    ea = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def tb_scalars(ea: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def mlflow_run(run_dir) -> tuple[MlflowClient, str]:
    record = json.loads((Path(run_dir) / loggers.MLFLOW_RECORD).read_text())
    return MlflowClient((Path(run_dir) / record["store"]).resolve().as_uri()), record["run_id"]


def mlflow_metric(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def metrics_csv(run_dir) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(open(Path(run_dir) / "metrics.csv"))]


def test_a_run_logged_to_both_reads_back_its_metrics_csv(fmnist_small, tmp_path):
    run = tmp_path / "run"
    summary = train(config(fmnist_small, run), progress=False)
    rows = metrics_csv(run)
    ea = tensorboard(run / "tensorboard")
    client, run_id = mlflow_run(run)
    for column in CSV_COLUMNS:  # each epoch's row, at the epoch's last step (metrics.csv keeps 6 digits)
        want = [(8 * int(r["epoch"]), pytest.approx(r[column], rel=1e-5)) for r in rows]
        assert tb_scalars(ea, f"epoch/{column}") == want, column
        assert mlflow_metric(client, run_id, f"epoch/{column}") == want, column
    # every 4 steps, the epoch so far: at an epoch's last step, its row
    for tag, column in (("train/loss", "train_loss"), ("train/top1", "train_top1")):
        steps = tb_scalars(ea, tag)
        assert [s for s, _ in steps] == [4, 8, 12, 16]
        assert [v for s, v in steps if s % 8 == 0] == [pytest.approx(r[column], rel=1e-5) for r in rows]
        assert mlflow_metric(client, run_id, tag) == [(s, pytest.approx(v, rel=1e-6)) for s, v in steps]
    assert [s for s, _ in tb_scalars(ea, "train/lr")] == [4, 8, 12, 16]
    assert all(v > 0 for _, v in tb_scalars(ea, "train/images_per_second"))

    # pictures at each epoch's end: the first layer's 6 filters, and 4 test images with their Grad-CAM
    for tag in ("filters", "grad_cam"):
        assert [e.step for e in ea.Images(tag)] == [8, 16]
        assert {a.path for a in client.list_artifacts(run_id, f"images/{tag}")} == \
            {f"images/{tag}/step{s:08d}.png" for s in (8, 16)}
    assert ea.Images("grad_cam")[0].width >= 4 * loggers.PICTURE_SIDE

    # the settings with the final scores
    start = plugin_data_pb2.HParamsPluginData.FromString(
        ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model"].string_value == "lenet5" and start.hparams["lr"].number_value == pytest.approx(3e-3)
    assert start.hparams["log"].string_value == json.dumps(BOTH)
    final = {"final/test_top1": summary["test_top1"], "final/best_test_top1": summary["best_test_top1"]}
    for tag, value in final.items():
        assert tb_scalars(ea, tag) == [(16, pytest.approx(value, rel=1e-6))]
        assert mlflow_metric(client, run_id, tag) == [(16, pytest.approx(value, rel=1e-12))]
    mlflow = client.get_run(run_id)
    assert mlflow.info.status == "FINISHED" and mlflow.info.run_name == "run"
    assert mlflow.data.params["model"] == "lenet5" and mlflow.data.params["epochs"] == "2"


# Dies (SIGKILL) on the Nth call to save_train_state: the logs have written everything up to this
# checkpoint, and the checkpoint is not there; argv: config dict | "resume", N, [RUN_DIR]
RUNNER = r'''
import json, os, signal, sys
import cnnzoo.training.loop as T

calls = [0]
real = T.save_train_state
def save_train_state(path, state):
    calls[0] += 1
    if calls[0] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, state)
T.save_train_state = save_train_state
if sys.argv[1] == "resume":
    T.resume_training(sys.argv[3], progress=False)
else:
    T.train(T.TrainConfig.from_dict(json.loads(sys.argv[1])), progress=False)
'''


def run_child(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_killed_and_resumed_run_logs_each_step_once(fmnist_small, tmp_path):
    from dataclasses import asdict

    # checkpoints at steps 3 and 6 (every 3), 8 (epoch end), 11, 14, 16; killed writing the one at 6
    cfg = config(fmnist_small, tmp_path / "run", log_every=1, checkpoint_every=3)
    p = run_child(json.dumps(asdict(cfg)), "2")
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    ea = tensorboard(tmp_path / "run" / "tensorboard")
    assert [s for s, _ in tb_scalars(ea, "train/loss")] == [1, 2, 3, 4, 5, 6]  # logged past the checkpoint at 3
    assert load_train_state(tmp_path / "run" / "train_state.pt")["step"] == 3
    p = run_child("resume", "0", str(tmp_path / "run"))
    assert p.returncode == 0, p.stderr[-2000:]

    reference = tmp_path / "reference"
    train(config(fmnist_small, reference, log_every=1, checkpoint_every=3), progress=False)
    resumed, uninterrupted = tensorboard(tmp_path / "run" / "tensorboard"), tensorboard(reference / "tensorboard")
    (client, run_id), (ref_client, ref_id) = mlflow_run(tmp_path / "run"), mlflow_run(reference)
    for tag in ("train/loss", "train/top1", "train/lr", "epoch/test_top1", "final/test_top1"):
        want = tb_scalars(uninterrupted, tag)
        assert tb_scalars(resumed, tag) == want, tag  # the same values at the same steps, each once
        assert mlflow_metric(client, run_id, tag) == mlflow_metric(ref_client, ref_id, tag), tag
    assert [s for s, _ in tb_scalars(resumed, "train/loss")] == list(range(1, 17))
    assert [e.step for e in resumed.Images("grad_cam")] == [8, 16]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1  # the same MLflow run


def test_only_rank_0_writes(tmp_path, monkeypatch):
    summed = []

    def all_reduce_sum(world, values, device):  # rank 1 of 2, both ranks with the same sums
        summed.append(values)
        return [2 * float(v) for v in values]

    monkeypatch.setattr(loggers.dist_util, "all_reduce_sum", all_reduce_sum)
    net = create_model("lenet5", num_classes=10, in_chans=1)
    images = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    pictures = (images, Normalize((0.5,), (0.25,)))
    common = dict(every=1, device=torch.device("cpu"), params={"lr": 0.1}, run_name="run", pictures=pictures)
    with loggers.open_logs(BOTH, tmp_path / "rank1", world=World(rank=1, size=2), **common) as logs:
        assert logs.loggers == [] and logs.enabled
        logs.step(1, torch.tensor(2.0), torch.tensor(1), 4, 0.5, 0.1)
        logs.scalars(1, {"epoch/test_top1": 0.5})
        logs.pictures(1, net)
        logs.hparams(1, {"test_top1": 0.5})
        logs.checkpoint()
    assert summed == [[2.0, 1.0, 4]]  # it took part in the step's sums
    assert not (tmp_path / "rank1").exists()
    with loggers.open_logs(BOTH, tmp_path / "rank0", world=World(rank=0, size=2), **common) as logs:
        logs.step(1, torch.tensor(2.0), torch.tensor(1), 4, 0.5, 0.1)
    assert tb_scalars(tensorboard(tmp_path / "rank0" / "tensorboard"), "train/loss") == [(1, 0.5)]
    assert mlflow_metric(*mlflow_run(tmp_path / "rank0"), "train/top1") == [(1, 0.25)]


def test_mlflow_logs_where_its_environment_variables_say(tmp_path, monkeypatch):
    server = (tmp_path / "server").as_uri()  # a tracking server's stand-in: MLflow takes any store URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fashion")
    common = dict(every=1, world=World(), device=torch.device("cpu"), params={"lr": 0.1}, run_name="run")
    with loggers.open_logs(["mlflow"], tmp_path / "run", **common) as logs:
        logs.scalars(1, {"epoch/test_top1": 0.5})
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [loggers.MLFLOW_RECORD]
    client = MlflowClient(server)
    (run,) = client.search_runs([client.get_experiment_by_name("fashion").experiment_id])
    assert run.data.metrics == {"epoch/test_top1": 0.5} and run.data.params == {"lr": "0.1"}
    # continued without the variables: the run folder's record says where its run lives
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    with loggers.open_logs(["mlflow"], tmp_path / "run", **common) as logs:
        logs.scalars(1, {"epoch/test_top1": 0.5})
        logs.scalars(2, {"epoch/test_top1": 0.75})
    assert mlflow_metric(client, run.info.run_id, "epoch/test_top1") == [(1, 0.5), (2, 0.75)]


def test_logging_changes_no_weight_and_draws_no_random_number(fmnist_small, tmp_path):
    cfg = dict(epochs=1, test_subset=200)
    train(config(fmnist_small, tmp_path / "plain", log=[], **cfg), progress=False)
    train(config(fmnist_small, tmp_path / "logged", log_every=1, **cfg), progress=False)
    a, b = (load_file(tmp_path / run / "last.safetensors") for run in ("plain", "logged"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # the pictures leave the random state, the weights, the buffers and the modes as they were
    net = create_model("lenet5", num_classes=10, in_chans=1).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ds = load_dataset("fashion-mnist", "test", data_dir=fmnist_small)
    logs = loggers.open_logs(["tensorboard"], tmp_path / "pictures", every=0, world=World(),
                             device=torch.device("cpu"), params={}, run_name="p",
                             pictures=(resize_to(ds.images[:4], (32, 32)), Normalize(*ds.channel_stats())))
    rng = torch.get_rng_state()
    with logs:
        logs.pictures(1, net)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(m.training for m in net.modules()) and all(p.grad is None for p in net.parameters())
    assert [e.step for e in tensorboard(tmp_path / "pictures" / "tensorboard").Images("grad_cam")] == [1]


def test_a_model_without_convolutions_trains_on_with_a_note(fmnist_small, tmp_path):
    run = tmp_path / "mlp"
    train(config(fmnist_small, run, model="lenet_300_100", epochs=1, log=["tensorboard"]), progress=False)
    ea = tensorboard(run / "tensorboard")
    assert ea.Tags()["images"] == [] and len(tb_scalars(ea, "epoch/test_top1")) == 1
    notes = [e.tensor_proto.string_val[0].decode() for e in ea.Tensors("notes/text_summary")]
    assert any("no filters pictures" in n for n in notes) and any("no grad_cam pictures" in n for n in notes)


def test_mlflow_missing_names_the_extra_before_the_run_starts(fmnist_small, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow: ImportError
    with pytest.raises(ValueError, match=r"--log mlflow needs MLflow.*pip install 'cnnzoo\[mlflow\]'"):
        train(config(fmnist_small, tmp_path / "run", log=["mlflow"]), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("words", [["--log", "tensorboard", "--log", "mlflow"], ["--log", "tensorboard", "mlflow"]])
def test_log_flags_name_one_logger_or_both(words):
    cfg = train_config(build_parser().parse_args(["train", *words, "--log-every", "10", "--out", "run"]))
    assert cfg.log == BOTH and cfg.log_every == 10
    assert "--log tensorboard mlflow --log-every 10" in train_command(cfg)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--log", "wandb"])
    with pytest.raises(ValueError, match="--log-every must be >= 0"):
        TrainConfig(log_every=-1).validate()
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command in ("league", "experiment", "compress"):  # the commands that train runs of their own
        assert "--log-every STEPS" in commands[command].format_help()


def test_a_league_logs_one_run_per_member_in_one_experiment(fmnist_small, tmp_path):
    from cnnzoo.studies.league import run_league

    out = tmp_path / "league"
    run_league(["lenet5", "lenet_300_100"], epochs=1, out=out, data_dir=str(fmnist_small), threads=1,
               train_subset=256, progress=False, log=BOTH, log_every=2)
    # `tensorboard --logdir LEAGUE` overlays the members
    runs = EventMultiplexer().AddRunsFromDirectory(str(out)).Reload().Runs()
    assert set(runs) == {"lenet5/tensorboard", "lenet_300_100/tensorboard"}
    client, _ = mlflow_run(out / "lenet5")
    experiment = client.get_experiment_by_name(f"league {out}")
    members = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in members) == ["lenet5", "lenet_300_100"]
    for r in members:
        rows = metrics_csv(out / r.info.run_name)
        assert r.data.metrics["epoch/test_top1"] == pytest.approx(rows[-1]["test_top1"], rel=1e-5)
    # resumed standalone, a member keeps its MLflow run in the league's store
    resume_training(out / "lenet5", epochs=2, progress=False)
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_an_experiment_logs_each_run_below_its_folder(fmnist_small, tmp_path):
    from cnnzoo.studies.experiments import run_experiment

    out = tmp_path / "runs"
    run_experiment("stack3x3", seeds=1, epochs=1, out=out, results=tmp_path / "docs", progress=False,
                   data_dir=str(fmnist_small), threads=1, train_subset=64, test_subset=100, log=BOTH)
    runs = EventMultiplexer().AddRunsFromDirectory(str(out / "stack3x3")).Reload().Runs()
    assert set(runs) == {f"{v}/seed0/tensorboard" for v in ("5x5", "3x3-3x3", "1x5-5x1")}
    client, _ = mlflow_run(out / "stack3x3" / "5x5" / "seed0")
    experiment = client.get_experiment_by_name("experiment stack3x3")
    assert sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id])) == \
        ["1x5-5x1/seed0", "3x3-3x3/seed0", "5x5/seed0"]


def test_an_interrupted_compression_logs_each_retraining_step_once(synthetic_lenet5_run, tmp_path, monkeypatch):
    from cnnzoo.compression import pipeline

    kw = dict(sparsity="c5=0.9,f6=0.9,conv=0.5", bits="conv=4,fc=3", prune_iters=3, prune_epochs=0.25,
              final_epochs=0.25, quant_epochs=0.25, train_subset=512, progress=False, log=BOTH, log_every=1)
    out = tmp_path / "lenet5.cnnz"
    compress_cut_in_third_retraining(monkeypatch, synthetic_lenet5_run, out, **kw)
    logs = tmp_path / "lenet5.logs"
    client, run_id = mlflow_run(logs)
    assert client.get_run(run_id).info.status == "KILLED"
    report = pipeline.compress(synthetic_lenet5_run, out, **kw)

    # 512 images / 128 = 4 steps an epoch: each retraining of 0.25 epoch is 1 step
    ea = tensorboard(logs / "tensorboard")
    assert [s for s, _ in tb_scalars(ea, "train/loss")] == [1, 2, 3, 4]
    assert [s for s, _ in tb_scalars(ea, "prune/test_top1")] == [1, 2, 3]
    assert tb_scalars(ea, "quantize/test_top1") == [(4, pytest.approx(report["totals"]["top1_quantized"]))]
    assert [e.step for e in ea.Images("filters")] == [1, 2, 3, 4]
    assert "_hparams_/session_start_info" in ea.PluginTagToContent("hparams")
    assert [s for s, _ in mlflow_metric(client, run_id, "train/loss")] == [1, 2, 3, 4]
    assert [s for s, _ in mlflow_metric(client, run_id, "prune/kept")] == [1, 2, 3]
    assert mlflow_metric(client, run_id, "final/ratio") == [(4, pytest.approx(report["totals"]["ratio"]))]
    assert client.get_run(run_id).info.status == "FINISHED"
