"""A run killed at any instant (SIGKILL mid-epoch, SIGKILL in the middle of a checkpoint write,
SIGTERM) and resumed reaches bit-identical weights and metrics, and leaves no unreadable file.

Each kill happens in a child process that trains through ``cnnzoo.training.loop.train`` with one hook
patched in (RUNNER below): the hook decides the exact point of death, so the test is repeatable;
``benchmarks/kill_resume.py`` kills at random wall-clock instants instead.
"""
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnzoo.training.checkpoint import load_train_state
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.loop import TrainingInterrupted, train

ROOT = Path(__file__).resolve().parents[2]

# argv: config.json-like dict | "resume" RUN_DIR, then the kill: none | step:N | write:N | weights:N | sigterm:N
RUNNER = r'''
import json, os, signal, sys
import torch
from cnnzoo.utils.io import atomic_write
import cnnzoo.training.loop as T

what, kill = sys.argv[1], sys.argv[2]
mode, _, n = kill.partition(":")
n = int(n or 0)
calls = {"forward": 0, "write": 0, "weights": 0}

real_create = T.create_model
def create(*a, **k):
    model = real_create(*a, **k)
    def hook(module, inputs, output):
        if module.training:
            calls["forward"] += 1
            if calls["forward"] == n and mode == "step":
                os.kill(os.getpid(), signal.SIGKILL)
            if calls["forward"] == n and mode == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
    model.register_forward_hook(hook)
    return model
T.create_model = create

def dying_write(path, save):
    # Write the temporary file half-way, then die: what a kill during a checkpoint leaves behind.
    def write(tmp):
        save(tmp)
        size = os.path.getsize(tmp)
        with open(tmp, "r+b") as f:
            f.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    atomic_write(path, write)

real_state, real_weights = T.save_train_state, T.save_weights
def save_state(path, state):
    calls["write"] += 1
    if mode == "write" and calls["write"] == n:
        dying_write(path, lambda tmp: torch.save(state, tmp))
    real_state(path, state)
def save_weights(model, path, meta):
    if path.name == "last.safetensors":
        calls["weights"] += 1
        if mode == "weights" and calls["weights"] == n:
            from safetensors.torch import save_file
            sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
            dying_write(path, lambda tmp: save_file(sd, tmp))
    real_weights(model, path, meta)
T.save_train_state, T.save_weights = save_state, save_weights

try:
    if what == "resume":
        T.resume_training(sys.argv[3], progress=False)
    else:
        T.train(T.TrainConfig.from_dict(json.loads(what)), progress=False)
except T.TrainingInterrupted:
    sys.exit(130)
'''

TIME_COLUMNS = ("epoch_seconds", "images_per_second")  # wall clock: the only columns allowed to differ


def cfg_dict(data_dir, out, **kw):
    # 640 images / 64 = 10 steps an epoch; a checkpoint every 3 steps and at each epoch end.
    d = dict(model="lenet5", dataset="fashion-mnist", data_dir=str(data_dir), epochs=2, batch_size=64,
             train_subset=640, warmup_epochs=0.3, crop_padding=2, flip=True, seed=3, threads=1,
             deterministic=True, checkpoint_every=3, out=str(out))
    d.update(kw)
    return d


def run_child(args, expect_rc):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == expect_rc, (p.returncode, p.stderr[-2000:])
    return p


def metrics(run, drop_time=True):
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    return [{k: v for k, v in r.items() if not (drop_time and k in TIME_COLUMNS)} for r in rows]


def assert_every_file_readable(run):
    for f in run.iterdir():
        if f.name.endswith(".safetensors"):
            load_file(f)
        elif f.name == "train_state.pt":
            load_train_state(f)
        elif f.suffix == ".json":
            json.loads(f.read_text())


def assert_same_run(a, b):
    wa, wb = load_file(a / "last.safetensors"), load_file(b / "last.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    assert metrics(a) == metrics(b)


@pytest.fixture(scope="module")
def reference(fmnist_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    train(TrainConfig.from_dict(cfg_dict(fmnist_small, out)), progress=False)
    return out


def test_deterministic_runs_are_identical(fmnist_small, reference, tmp_path):
    train(TrainConfig.from_dict(cfg_dict(fmnist_small, tmp_path / "again")), progress=False)
    assert_same_run(reference, tmp_path / "again")
    assert len(metrics(reference)) == 2
    # wall-clock columns are kept (and documented as the only ones that may differ)
    assert set(TIME_COLUMNS) <= set(metrics(reference, drop_time=False)[0])


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_is_bit_identical(fmnist_small, reference, tmp_path):
    run = tmp_path / "run"
    # 1) killed mid-epoch at step 5 of epoch 1: the checkpoint after step 3 survives
    run_child([json.dumps(cfg_dict(fmnist_small, run)), "step:5"], -signal.SIGKILL)
    assert_every_file_readable(run)
    assert load_train_state(run / "train_state.pt")["step"] == 3
    # 2) resumed, killed while writing the 2nd train_state (step 9): a half-written temp file is left
    run_child(["resume", "write:2", str(run)], -signal.SIGKILL)
    assert list(run.glob(".*.tmp")), "the kill should have left a half-written temp file"
    assert_every_file_readable(run)
    state = load_train_state(run / "train_state.pt")
    assert (state["epoch"], state["step"]) == (0, 6)
    # 3) resumed, killed while writing last.safetensors of the epoch-1 end checkpoint
    run_child(["resume", "weights:2", str(run)], -signal.SIGKILL)
    assert_every_file_readable(run)
    assert load_train_state(run / "train_state.pt")["epoch"] == 1  # the state was written before the weights
    # 4) resumed to the end
    run_child(["resume", "none", str(run)], 0)
    assert not list(run.glob(".*.tmp"))
    assert_same_run(reference, run)


@pytest.mark.slow
def test_sigterm_finishes_the_step_checkpoints_and_says_how_to_resume(fmnist_small, reference, tmp_path):
    run = tmp_path / "run"
    p = run_child([json.dumps(cfg_dict(fmnist_small, run)), "sigterm:14"], 130)
    assert f"cnnzoo train --resume {run}" in p.stderr and "SIGTERM" in p.stderr
    state = load_train_state(run / "train_state.pt")
    assert (state["epoch"], state["step"]) == (1, 4)  # step 14 = epoch 2 step 4 completed, then saved
    run_child(["resume", "none", str(run)], 0)
    assert_same_run(reference, run)


def test_sigint_in_process_raises_training_interrupted(fmnist_small, tmp_path, monkeypatch):
    import cnnzoo.training.loop as train_mod

    real_create = train_mod.create_model

    def create(*args, **kwargs):
        model = real_create(*args, **kwargs)
        model.register_forward_hook(lambda m, i, o: os.kill(os.getpid(), signal.SIGINT) if m.training else None)
        return model

    monkeypatch.setattr(train_mod, "create_model", create)
    before = signal.getsignal(signal.SIGINT)  # the default, or SIG_IGN under a shell's background job
    with pytest.raises(TrainingInterrupted, match="stopped by SIGINT after epoch 1 step 1/"):
        train(TrainConfig.from_dict(cfg_dict(fmnist_small, tmp_path / "run", checkpoint_every=0)), progress=False)
    assert load_train_state(tmp_path / "run" / "train_state.pt")["step"] == 1
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_atomic_write_gives_an_ordinary_file_mode(tmp_path):
    # mkstemp's temporary file is private (0600); what lands under the final name must have the
    # mode any new file gets under the umask, so that a run folder or chart can be shared.
    from cnnzoo.utils.io import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "f.txt").read_text() == "x"
