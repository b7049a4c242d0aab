"""DistributedDataParallel on CPU: 2 processes over loopback (gloo) reach the weights of one
process with the same global batch and seed, and only rank 0 writes the run folder."""
import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnzoo.training.checkpoint import load_train_state
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.loop import epoch_batches, train
from cnnzoo.utils.distributed import World, all_reduce_sum, any_rank, broadcast_object, gather_object, init_from_env

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_world_of_one_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = init_from_env("cpu")
    assert world == World() and world.is_main and not world.distributed
    dev = torch.device("cpu")
    assert all_reduce_sum(world, [1, 2.5], dev) == [1.0, 2.5]
    assert any_rank(world, True, dev) and not any_rank(world, False, dev)
    assert broadcast_object(world, {"a": 1}) == {"a": 1} and gather_object(world, 3) == [3]


def test_rank_shards_are_disjoint_and_make_up_the_global_batch(fmnist_small):
    from cnnzoo.data.datasets import load_dataset

    ds = load_dataset("fashion-mnist", "train", data_dir=fmnist_small).subset(200, 0)
    cfg = TrainConfig(batch_size=64, seed=5)
    whole = [y for _, y, _ in epoch_batches(ds, cfg, 1, 0, World())]
    parts = [[y for _, y, _ in epoch_batches(ds, cfg, 1, 0, World(rank=r, size=3))] for r in range(3)]
    assert len(whole) == 4  # 64, 64, 64, 8
    for step, y in enumerate(whole):
        assert torch.equal(torch.cat([p[step] for p in parts]), y)
    # a mid-epoch start skips exactly the first steps
    assert torch.equal(next(epoch_batches(ds, cfg, 1, 2, World()))[1], whole[2])


def test_augmented_batches_are_cut_from_the_global_batch(fmnist_small):
    from cnnzoo.data.datasets import load_dataset

    ds = load_dataset("fashion-mnist", "train", data_dir=fmnist_small).subset(200, 0)
    cfg = TrainConfig(batch_size=64, seed=5, crop_padding=2, flip=True, cutout=8)
    whole = [x for x, _, _ in epoch_batches(ds, cfg, 1, 0, World())]
    parts = [[x for x, _, _ in epoch_batches(ds, cfg, 1, 0, World(rank=r, size=2))] for r in range(2)]
    for step, x in enumerate(whole):
        assert torch.equal(torch.cat([p[step] for p in parts]), x)
    # the same crops and flips without Cutout: the batches differ only where Cutout blacked pixels out
    uncut = [x for x, _, _ in epoch_batches(ds, TrainConfig(batch_size=64, seed=5, crop_padding=2, flip=True),
                                            1, 0, World())]
    for x, u in zip(whole, uncut):
        changed = x != u
        assert changed.any() and (x[changed] == 0).all()


# Runs under torchrun: train (rank 0 sends itself SIGTERM at its 5th training step) or resume.
DDP_RUNNER = r"""
import json, os, signal, sys
import cnnzoo.training.loop as T

real_create = T.create_model
def create(*a, **k):
    model = real_create(*a, **k)
    seen = [0]
    def hook(module, inputs, output):
        seen[0] += module.training
        if module.training and seen[0] == 5 and os.environ["RANK"] == "0" and sys.argv[1] != "resume":
            os.kill(os.getpid(), signal.SIGTERM)
    model.register_forward_hook(hook)
    return model
T.create_model = create
if __name__ == "__main__":  # streaming workers import this script afresh
    try:
        if sys.argv[1] == "resume":
            T.resume_training(sys.argv[2], progress=False)
        else:
            T.train(T.TrainConfig.from_dict(json.loads(sys.argv[1])), progress=False)
    except T.TrainingInterrupted:
        sys.exit(130)
"""


def torchrun(tmp_path, *args, timeout=120):
    script = tmp_path / "ddp_runner.py"
    script.write_text(DDP_RUNNER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_processes_stopped_and_resumed_match_one_process(fmnist_small, tmp_path):
    cfg = dict(model="lenet5", data_dir=str(fmnist_small), epochs=1, batch_size=64, train_subset=640, warmup_epochs=0.3,
               crop_padding=2, flip=True, seed=7, threads=1, checkpoint_every=3)
    # SIGTERM reaches rank 0 only; both ranks stop after step 5 and rank 0 writes the checkpoint.
    p = torchrun(tmp_path, json.dumps({**cfg, "out": str(tmp_path / "ddp")}))
    assert p.returncode != 0 and "torchrun ... -m cnnzoo train --resume" in p.stderr, p.stderr[-3000:]
    state = load_train_state(tmp_path / "ddp" / "train_state.pt")
    assert (state["epoch"], state["step"], state["world_size"], len(state["rng_ranks"])) == (0, 5, 2, 2)
    p = torchrun(tmp_path, "resume", str(tmp_path / "ddp"))
    assert p.returncode == 0, p.stderr[-3000:]

    single = train(TrainConfig(**cfg, out=str(tmp_path / "one")), progress=False)
    a, b = load_file(tmp_path / "one" / "last.safetensors"), load_file(tmp_path / "ddp" / "last.safetensors")
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-5, diff
    # metrics are reduced over ranks: the whole test set and all 640 training images, once
    ra, rb = (list(csv.DictReader(open(tmp_path / d / "metrics.csv"))) for d in ("one", "ddp"))
    assert len(rb) == 1 and rb[0]["test_top1"] == ra[0]["test_top1"]
    assert abs(float(rb[0]["train_loss"]) - float(ra[0]["train_loss"])) < 1e-4
    assert abs(float(rb[0]["test_top1"]) - single["test_top1"]) < 1e-6
    assert not list((tmp_path / "ddp").glob(".*"))  # no leftovers from a second writer


@pytest.mark.slow
def test_unwritable_out_stops_every_rank_before_training(fmnist_small, tmp_path):
    # Rank 0 probes the folder and hands its error to rank 1, which would otherwise wait forever.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "cnnzoo", "train", "--model", "lenet5",
           "--data-dir", str(fmnist_small), "--epochs", "1", "--no-progress", "--out", str(blocker / "run")]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    # Rank 0 always says why; rank 1 does too unless torchrun's agent, seeing rank 0 exit first,
    # has already stopped it: either way no rank trains (no hang, no epoch line).
    assert "cannot write to run folder" in p.stderr, p.stderr[-3000:]
    assert "epoch 1/1" not in p.stdout + p.stderr
