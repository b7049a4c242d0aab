"""The streaming image-folder loader and WebDataset shards (cnnzoo.data.stream, cnnzoo.data.shards)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import cnnzoo.training.loop as train_mod
from cnnzoo.cli import main
from cnnzoo.data.datasets import load_imagefolder, stratified_split
from cnnzoo.data.shards import shard_datasets
from cnnzoo.data.stream import (
    GlobalBatchSampler,
    SampleTransform,
    StreamDataset,
    choose_loader,
    decode_bytes,
    exit_with,
    folder_datasets,
    train_sample,
)
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.loop import load_run_data, resume_training, train

CLASSES = ("cat", "dog", "fox")


def _image(rng: np.random.Generator) -> Image.Image:
    h, w = (int(v) for v in rng.integers(40, 90, 2))
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((w, h), Image.BICUBIC)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train/: 3 classes x 20 images (JPEG and PNG, 40-90 px); val/: 3 x 4."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("val", 4)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                _image(rng).save(root / split / c / f"{i:02d}.{'png' if i % 4 == 0 else 'jpg'}")
    return root


def _tf(**kw):
    return SampleTransform(**{"size": (32, 32), "channels": 3, "seed": 0, **kw})


def _epoch(ds, epoch=0, first_step=0, rank=0, world=1, batch=16):
    return list(ds.train_batches(batch, 0, epoch, first_step, rank, world, False))


def test_stream_sees_the_classes_labels_and_order_of_the_memory_loader(folder):
    mem = load_imagefolder(folder, "train", (32, 32), 3)
    train, val = folder_datasets(folder, _tf(), workers=0)
    assert train.classes == mem.classes == list(CLASSES) and torch.equal(train.labels, mem.labels)
    assert len(val) == 12 and val.classes == mem.classes
    cfg = TrainConfig(batch_size=16, seed=0)
    memory_labels = [y for _, y, _ in train_mod.epoch_batches(mem, cfg, 1, 0, train_mod.World())]
    stream_labels = [y for _, y, _ in _epoch(train, epoch=1)]
    assert all(torch.equal(a, b) for a, b in zip(memory_labels, stream_labels)) and len(stream_labels) == 4


def test_batches_are_a_function_of_seed_epoch_and_index_not_of_workers(folder):
    train, _ = folder_datasets(folder, _tf(color_jitter=0.3, auto_augment="trivialaugment"), workers=0)
    a, b = _epoch(train), _epoch(train)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1, _), (x2, y2, _) in zip(a, b))
    assert [n for *_, n in a] == [16, 16, 16, 12] and a[0][0].shape == (16, 3, 32, 32) and a[0][0].dtype == torch.uint8
    train.workers = 2
    c = _epoch(train)
    assert all(torch.equal(x1, x2) for (x1, _, _), (x2, _, _) in zip(a, c))
    other = _epoch(train, epoch=1)
    assert not torch.equal(a[0][1], other[0][1]) or not torch.equal(a[0][0], other[0][0])
    # the global RNG (dropout masks) is left alone by the loader and its augmentation
    torch.manual_seed(5)
    state = torch.get_rng_state()
    _epoch(train)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_share_each_global_batch_from_any_step(world):
    full = list(GlobalBatchSampler(50, 16, seed=3, epoch=2))
    for first in (0, 2):
        per_rank = [list(GlobalBatchSampler(50, 16, 3, 2, r, world, first)) for r in range(world)]
        assert all(len(p) == len(full) - first for p in per_rank)
        for step, keys in enumerate(full[first:]):
            assert sum((p[step] for p in per_rank), []) == keys
    assert GlobalBatchSampler(50, 16, 3, 2, 0, 1, 2).global_sizes() == [16, 2]
    with pytest.raises(ValueError, match="rank 3 outside a world of 3"):
        GlobalBatchSampler(50, 16, 3, 2, 3, 3)


def _stream_cfg(folder, out, **kw):
    return TrainConfig(**{**dict(model="lenet5", dataset="imagefolder", data_dir=str(folder), input_size=(1, 32, 32),
                                 data_loader="stream", workers=2, epochs=2, batch_size=16, warmup_epochs=0.5,
                                 checkpoint_every=2, deterministic=True, threads=1, color_jitter=0.2,
                                 out=str(out), seed=0), **kw})


def test_resumed_mid_epoch_run_reaches_the_uninterrupted_runs_weights(folder, tmp_path, monkeypatch):
    full = train(_stream_cfg(folder, tmp_path / "full"), progress=False)
    assert full["train_images"] == 60 and full["test_images"] == 12
    real_save = train_mod.save_train_state

    def save_then_die(path, state):
        real_save(path, state)
        if state["step"] == 2 and state["epoch"] == 1:  # mid-way through the second epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_train_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_stream_cfg(folder, tmp_path / "cut"), progress=False)
    monkeypatch.setattr(train_mod, "save_train_state", real_save)
    resumed = resume_training(tmp_path / "cut", progress=False)
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_top1"] == full["test_top1"]


def test_bad_file_is_named_through_the_workers_or_skipped_and_reported(folder, tmp_path, capsys):
    import shutil

    root = tmp_path / "photos"
    shutil.copytree(folder, root)
    bad = root / "train" / "dog" / "zz_corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="zz_corrupt.jpg: cannot decode image"):
        train(_stream_cfg(root, tmp_path / "r1", epochs=1), progress=False)
    summary = train(_stream_cfg(root, tmp_path / "r2", epochs=1, skip_bad_images=True), progress=False)
    assert summary["skipped_images"] == [str(bad)] and "zz_corrupt.jpg" in capsys.readouterr().err
    with pytest.raises(ValueError, match="x.bin: cannot decode image"):
        decode_bytes(b"not an image at all", "x.bin", 3)


def test_workers_start_apart_from_the_trainer_and_an_unguarded_script_is_told_why(folder, tmp_path):
    import os
    import subprocess
    import sys

    # forked from the trainer, a worker would be its child and share (then copy) its heap
    ds = folder_datasets(folder, _tf(), workers=1)[0]
    parents = {int(y) for _, y, _ in _ParentPid(ds).load([[(0, 0)], [(0, 1)]])}
    assert os.getpid() not in parents
    script = tmp_path / "unguarded.py"
    script.write_text("from cnnzoo.training.config import TrainConfig\nfrom cnnzoo.training.loop import train\n"
                      f"train(TrainConfig(model='lenet5', dataset='imagefolder', data_dir={str(folder)!r}, "
                      f"input_size=(1, 32, 32), data_loader='stream', workers=1, out={str(tmp_path / 'run')!r}))\n")
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert p.returncode != 0 and f"{script} trains when it is imported" in p.stderr, p.stderr[-2000:]
    assert 'if __name__ == "__main__":' in p.stderr


class _ParentPid(StreamDataset):
    def __init__(self, ds):
        super().__init__(**{f: getattr(ds, f) for f in ds.__dataclass_fields__})

    def __getitem__(self, key):
        import os

        return torch.zeros(1, dtype=torch.uint8), os.getppid(), None


def _group(pgid):
    """{pid: parent pid} of the processes of process group ``pgid``, from /proc; zombies, which hold
    no files or memory and wait for whoever adopted them, are left out."""
    procs = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent, group = stat.read_text().rpartition(")")[2].split()[:3]
        except OSError:  # ended meanwhile
            continue
        if int(group) == pgid and state != "Z":
            procs[int(stat.parent.name)] = int(parent)
    return procs


def _describe(pids):
    def cmdline(pid):
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except OSError:
            return "?"
    return "; ".join(f"{pid}: {cmdline(pid)}" for pid in pids)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from /proc (Linux)")
def test_no_loader_process_outlives_a_killed_trainer(folder, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "cnnzoo", "train", "--model", "lenet5", "--dataset", "imagefolder", "--data-dir",
           str(folder), "--input-size", "1", "32", "32", "--data-loader", "stream", "--workers", "2", "--epochs",
           "1000", "--batch-size", "16", "--threads", "1", "--no-progress", "--out", str(tmp_path / "run")]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        deadline = time.monotonic() + 120
        while True:  # until the loader's workers run: children of the trainer's children (the forkserver)
            group = _group(p.pid)
            if sum(parent in group and parent != p.pid for parent in group.values()) >= 2:
                break
            assert p.poll() is None and time.monotonic() < deadline, "the run ended or stalled before its workers ran"
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)  # the trainer alone, as the OOM killer does
        try:
            p.communicate(timeout=10)  # end of file: no process holds its stdout any more
        except subprocess.TimeoutExpired:
            pytest.fail(f"stdout still open 10 s after the trainer's death: {_describe(_group(p.pid))}")
        deadline = time.monotonic() + 5
        while _group(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group(p.pid), f"outlived the trainer: {_describe(_group(p.pid))}"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.kill()
        print(p.communicate()[0].decode()[-3000:])  # shown when the test fails


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polled"])
def test_exit_with_ends_the_process_when_the_watched_one_ends(pidfd, monkeypatch):
    import os
    import subprocess
    import threading

    ended = threading.Event()
    monkeypatch.setattr(os, "_exit", lambda code: ended.set())
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open")
    watched = subprocess.Popen(["sleep", "60"])
    try:
        exit_with(watched.pid)
        assert not ended.wait(0.3)
    finally:
        watched.kill()
        watched.wait()
    assert ended.wait(5)


def test_val_split_is_stratified_seeded_and_disjoint(folder):
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    tr, va = stratified_split(labels, 0.1, seed=1)
    assert torch.bincount(labels[va]).tolist() == [5, 3, 2]
    assert sorted(tr.tolist() + va.tolist()) == list(range(100))
    assert torch.equal(va, stratified_split(labels, 0.1, seed=1)[1])
    assert not torch.equal(va, stratified_split(labels, 0.1, seed=2)[1])
    with pytest.raises(ValueError, match="--val-split"):
        stratified_split(labels, 1.5, 0)
    for loader in ("memory", "stream"):
        data = load_run_data(TrainConfig(model="lenet5", dataset="imagefolder", data_dir=str(folder),
                                         input_size=(1, 32, 32), data_loader=loader, val_split=0.25, workers=0), False)
        assert len(data.train_ds) == 45 and torch.bincount(data.test_ds.labels).tolist() == [5, 5, 5]


def test_auto_streams_when_the_decoded_set_passes_the_budget(folder):
    assert choose_loader("auto", "imagefolder", 1000, (3, 224, 224), budget_gb=1.0) == "memory"
    assert choose_loader("auto", "imagefolder", 100_000, (3, 224, 224), budget_gb=1.0) == "stream"
    assert choose_loader("auto", "fashion-mnist", 10**9, (1, 28, 28), budget_gb=0.001) == "memory"
    with pytest.raises(ValueError, match="--data-loader stream reads image files"):
        choose_loader("stream", "fashion-mnist", 0, (1, 28, 28), None)
    cfg = dict(model="lenet5", dataset="imagefolder", data_dir=str(folder), input_size=(1, 32, 32), workers=0)
    assert isinstance(load_run_data(TrainConfig(**cfg, memory_budget_gb=1e-6), False).train_ds, StreamDataset)
    assert not isinstance(load_run_data(TrainConfig(**cfg), False).train_ds, StreamDataset)
    with pytest.raises(ValueError, match="--auto-augment and --color-jitter"):
        load_run_data(TrainConfig(**cfg, data_loader="memory", color_jitter=0.1), False)
    with pytest.raises(ValueError, match="--cutout 8 works on images held in memory.*--data-loader stream"):
        load_run_data(TrainConfig(**cfg, data_loader="stream", cutout=8), False)
    with pytest.raises(ValueError, match="--alternate-flip works on images held in memory.*--data-loader stream"):
        load_run_data(TrainConfig(**cfg, data_loader="stream", flip=True, alternate_flip=True), False)


def test_big_jpeg_is_decoded_at_a_reduced_dct_scale(tmp_path):
    import io

    buf = io.BytesIO()
    _image(np.random.default_rng(1)).resize((960, 640)).save(buf, format="JPEG")
    x, scale = decode_bytes(buf.getvalue(), "big.jpg", 3, reduce_to=(150, 150))
    assert scale == 0.25 and x.shape == (3, 160, 240)
    x, scale = decode_bytes(buf.getvalue(), "big.jpg", 1, reduce_to=(400, 400))
    assert scale == 1.0 and x.shape == (1, 640, 960)
    crop = train_sample(buf.getvalue(), "big.jpg", _tf(size=(64, 64)), seed=7)
    assert crop.shape == (3, 64, 64) and torch.equal(crop, train_sample(buf.getvalue(), "big.jpg", _tf(size=(64, 64)), 7))


def test_shards_round_trip_and_train(folder, tmp_path, capsys):
    assert main(["shards", "--data-dir", str(folder), "--out", str(tmp_path / "sh"), "--shard-size", "16"]) == 0
    meta = json.loads((tmp_path / "sh" / "meta.json").read_text())
    assert meta["classes"] == list(CLASSES) and meta["splits"]["train"]["images"] == 60
    pattern = str(tmp_path / "sh" / "train-{000000..000003}.tar")
    train_sh, val_sh = shard_datasets(pattern, _tf(), workers=2)
    assert len(train_sh) == 60 and len(val_sh) == 12 and train_sh.classes == list(CLASSES)
    val_labels = torch.cat([y for _, y in val_sh.eval_batches(5, 0, 1, False)])
    assert sorted(val_labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    # each validation image once over the ranks
    assert sum(len(y) for r in range(2) for _, y in val_sh.eval_batches(5, r, 2, False)) == 12
    epoch = _epoch(train_sh)
    assert [n for *_, n in epoch] == [16, 16, 16, 12] and [len(y) for _, y, _ in epoch] == [16, 16, 16, 12]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch, _epoch(train_sh)))
    resumed = _epoch(train_sh, first_step=1)  # a resume sees the rest of the same epoch
    assert len(resumed) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(epoch[1:], resumed))
    halves = [_epoch(train_sh, rank=r, world=2) for r in range(2)]
    assert [len(x) for x, _, _ in halves[0]] == [8, 8, 8, 6] and len(halves[1]) == 4
    code = main(["train", "--model", "lenet5", "--dataset", "webdataset", "--data-dir", pattern, "--input-size", "1",
                 "32", "32", "--epochs", "1", "--batch-size", "16", "--workers", "2", "--out", str(tmp_path / "run"),
                 "--no-progress", "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["train_images"] == 60 and summary["test_images"] == 12


def test_evaluation_crop_is_within_a_grey_level_of_the_reference_preprocessing():
    import io

    from torchvision.io import decode_image

    from cnnzoo.data.stream import eval_sample
    from cnnzoo.data.transforms import EvalTransform

    rng = np.random.default_rng(2)
    for w, h in ((300, 200), (200, 333), (257, 256)):
        buf = io.BytesIO()
        _image(rng).resize((w, h)).save(buf, format="PNG")
        ours = eval_sample(buf.getvalue(), "x.png", _tf(size=(224, 224), crop_pct=0.875)).float()
        # mean 0 and std 1/255: the reference's resized, cropped pixels themselves
        ref = EvalTransform((3, 224, 224), 0.875, "bilinear", (0.0,) * 3, (1 / 255,) * 3)(
            decode_image(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)))
        assert ours.shape == ref.shape and (ours - ref).abs().max() <= 1.001


@pytest.mark.slow
def test_two_streaming_processes_reach_the_weights_of_one(folder, tmp_path):
    from tests.training.test_distributed import torchrun

    cfg = dict(model="lenet5", dataset="imagefolder", data_dir=str(folder), input_size=[1, 32, 32],
               data_loader="stream", workers=1, epochs=1, batch_size=16, warmup_epochs=0.5, seed=3, threads=1,
               color_jitter=0.2)
    p = torchrun(tmp_path, json.dumps({**cfg, "out": str(tmp_path / "ddp")}), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    train(TrainConfig.from_dict({**cfg, "out": str(tmp_path / "one")}), progress=False)
    a, b = load_file(tmp_path / "one" / "last.safetensors"), load_file(tmp_path / "ddp" / "last.safetensors")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
