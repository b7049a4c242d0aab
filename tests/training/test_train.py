import csv
import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

import cnnzoo.training.loop as train_mod
from cnnzoo.inference.evaluate import evaluate, tta_views
from cnnzoo.models.checkpoint import load_checkpoint
from cnnzoo.training.config import RECIPES, TrainConfig
from cnnzoo.training.loop import NonFiniteLossError, resume_training, train


def small_cfg(data_dir, out, **kw):
    base = dict(model="lenet5", dataset="fashion-mnist", data_dir=str(data_dir), epochs=2, batch_size=64,
                warmup_epochs=0.2, out=str(out), seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_short_run_learns_and_writes_the_run_folder(fmnist_small, tmp_path):
    summary = train(small_cfg(fmnist_small, tmp_path / "run"), progress=False)
    assert summary["test_top1"] > 0.6  # chance is 0.1
    assert summary["params"] == 61706 and summary["input_size"] == [1, 32, 32]
    run = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "last.safetensors", "best.safetensors", "train_state.pt", "summary.json"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(train_mod.METRIC_COLUMNS) == set(rows[0])
    saved = json.loads((run / "summary.json").read_text())
    for key in ("model", "dataset", "epochs", "test_top1", "test_top5", "params", "train_seconds"):
        assert key in saved
    model, meta = load_checkpoint(run)
    assert meta["classes"][9] == "Ankle boot" and meta["model"] == "lenet5"


# with --lookahead the state also holds the slow weights, which differ from the trained ones
# between its updates (an epoch here is not a multiple of 5 steps)
@pytest.mark.parametrize("extra", [{}, {"lookahead": 0.8}, {"opt": "muon", "muon_lr": 0.05}],
                         ids=["plain", "lookahead", "muon"])
def test_resume_continues_to_identical_weights(fmnist_small, tmp_path, monkeypatch, extra):
    full = train(small_cfg(fmnist_small, tmp_path / "full", epochs=3, **extra), progress=False)
    # Interrupt the second run right after its first checkpoint.
    real_save = train_mod.save_train_state
    calls = []

    def save_then_die(path, state):
        real_save(path, state)
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_train_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(small_cfg(fmnist_small, tmp_path / "cut", epochs=3, **extra), progress=False)
    monkeypatch.setattr(train_mod, "save_train_state", real_save)
    assert len(list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))) == 1
    resumed = resume_training(tmp_path / "cut", progress=False)
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_top1"] == full["test_top1"]
    assert len(list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))) == 3


def test_resume_of_a_folder_without_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run there"):
        resume_training(tmp_path)


def test_existing_run_is_not_overwritten(fmnist_small, tmp_path):
    train(small_cfg(fmnist_small, tmp_path / "run", epochs=1, train_subset=256), progress=False)
    before = (tmp_path / "run" / "last.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(small_cfg(fmnist_small, tmp_path / "run", epochs=1), progress=False)
    assert (tmp_path / "run" / "last.safetensors").read_bytes() == before


def test_unwritable_out_is_reported_before_training(fmnist_small, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot write to run folder"):
        train(small_cfg(fmnist_small, blocker / "run"), progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(fmnist_small, tmp_path, monkeypatch):
    real_create = train_mod.create_model

    def poisoned(*args, **kwargs):
        model = real_create(*args, **kwargs)
        calls = {"n": 0}

        def hook(module, inputs, output):
            calls["n"] += 1
            if module.training and calls["n"] > 60:  # well into epoch 2 of 47 steps each
                return output * float("nan")

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(train_mod, "create_model", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2, step \d+"):
        train(small_cfg(fmnist_small, tmp_path / "run", epochs=3), progress=False)
    weights = load_file(tmp_path / "run" / "last.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert len(list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))) == 1


def test_synthetic_dataset_trains_any_input_size(tmp_path):
    summary = train(TrainConfig(model="lenet5", dataset="synthetic", input_size=(1, 32, 32), epochs=2,
                                batch_size=64, out=str(tmp_path / "s")), progress=False)
    assert summary["test_top1"] > 0.5 and summary["input_size"] == [1, 32, 32]


def test_paper_lenet_option_trains(fmnist_small, tmp_path):
    cfg = small_cfg(fmnist_small, tmp_path / "tanh", epochs=1, model_kwargs={"act": "tanh", "pool": "avg"})
    assert train(cfg, progress=False)["test_top1"] > 0.5


def test_kill_between_metrics_row_and_state_does_not_duplicate_the_row(fmnist_small, tmp_path, monkeypatch):
    # The epoch-2 row reaches metrics.csv, then the process dies before train_state.pt says so:
    # the resume redoes epoch 2 and must write its row once, equal to an uninterrupted run's.
    full = small_cfg(fmnist_small, tmp_path / "full", epochs=3, train_subset=512, deterministic=True, threads=1)
    train(full, progress=False)
    real_save = train_mod.save_train_state
    calls = []

    def die_before_second_save(path, state):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_save(path, state)

    monkeypatch.setattr(train_mod, "save_train_state", die_before_second_save)
    with pytest.raises(KeyboardInterrupt):
        train(small_cfg(fmnist_small, tmp_path / "cut", epochs=3, train_subset=512, deterministic=True, threads=1),
              progress=False)
    monkeypatch.setattr(train_mod, "save_train_state", real_save)
    assert len(list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))) == 2
    resume_training(tmp_path / "cut", progress=False)
    timeless = [{k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_second")}
                for d in ("full", "cut") for r in csv.DictReader(open(tmp_path / d / "metrics.csv"))]
    assert [r["epoch"] for r in timeless] == ["1", "2", "3"] * 2
    assert timeless[:3] == timeless[3:]
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_older_state_files_epoch_sums_resume_mid_epoch(fmnist_small, tmp_path, monkeypatch):
    # train_state.pt files before EpochTotals kept an epoch's running sums as a list of four.
    from cnnzoo.training.checkpoint import load_train_state, save_train_state

    kw = dict(epochs=1, train_subset=512, deterministic=True, threads=1, checkpoint_every=3)
    train(small_cfg(fmnist_small, tmp_path / "full", **kw), progress=False)
    real_save = train_mod.save_train_state

    def save_then_die(path, state):
        real_save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_train_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(small_cfg(fmnist_small, tmp_path / "cut", **kw), progress=False)
    monkeypatch.setattr(train_mod, "save_train_state", real_save)
    state = load_train_state(tmp_path / "cut" / "train_state.pt")
    assert state["step"] == 3 and state["epoch_totals"]["images"] == 3 * 64
    totals = state.pop("epoch_totals")
    state["epoch_partial"] = [totals["loss_sum"], totals["correct"], totals["images"], totals["seconds"]]
    save_train_state(tmp_path / "cut" / "train_state.pt", state)
    resume_training(tmp_path / "cut", progress=False)
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [list(csv.DictReader(open(tmp_path / run / "metrics.csv"))) for run in ("full", "cut")]
    assert [[r[c] for c in ("train_loss", "train_top1", "test_top1")] for r in rows[0]] == \
           [[r[c] for c in ("train_loss", "train_top1", "test_top1")] for r in rows[1]]


def test_bad_model_data_or_option_leave_no_run_folder(fmnist_small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # without --out the folder would be runs/<model>-<dataset>-<time> here
    with pytest.raises(ValueError, match=r"unknown model 'resnet5O'\. Did you mean: .*resnet50"):
        train(TrainConfig(model="resnet5O", data_dir=str(fmnist_small)), progress=False)
    with pytest.raises(FileNotFoundError, match="fashion-mnist data not found in .*nowhere"):
        train(small_cfg(tmp_path / "nowhere", tmp_path / "no-data"), progress=False)
    with pytest.raises(ValueError, match="--opt must be one of adamw, sgd, muon, got 'adam'"):
        train(small_cfg(fmnist_small, tmp_path / "bad-opt", opt="adam"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_deterministic_run_records_its_thread_count(fmnist_small, tmp_path):
    train(small_cfg(fmnist_small, tmp_path / "run", epochs=1, train_subset=256, deterministic=True), progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["deterministic"] is True and config["threads"] == torch.get_num_threads()
    assert not torch.are_deterministic_algorithms_enabled()  # the global switch is put back after the run


def test_mid_epoch_checkpoints_record_the_step(fmnist_small, tmp_path):
    from cnnzoo.models.checkpoint import read_weights_meta
    from cnnzoo.training.checkpoint import load_train_state

    run = tmp_path / "run"
    train(small_cfg(fmnist_small, run, epochs=1, train_subset=320, checkpoint_every=2), progress=False)
    state = load_train_state(run / "train_state.pt")
    assert (state["epoch"], state["step"]) == (1, 0) and len(state["metrics"]) == 1
    assert read_weights_meta(run / "last.safetensors")["epoch"] == 1


# --------------------------------------------------------------------------------------------------
# Schedules, flip test-time averaging, recipes


def test_lookahead_pulls_back_every_5_steps_and_ends_on_the_slow_weights():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    hook = train_mod.Lookahead(net, decay=0.8, total_steps=12)
    assert "1.num_batches_tracked" not in hook.slow  # integers are not averaged
    weight, previous_slow = net[0].weight, start["0.weight"]
    for step in range(1, 13):
        with torch.no_grad():
            weight.add_(1.0)  # a "training step"
        before = weight.detach().clone()
        hook()
        if step in (5, 10, 12):  # every 5th step and the last
            keep = 0.8 * (step / 12) ** 3
            expected = keep * previous_slow + (1 - keep) * before
            assert torch.allclose(weight, expected) and torch.equal(hook.slow["0.weight"], weight)
            previous_slow = weight.detach().clone()
        else:
            assert torch.equal(weight, before)  # between updates the weights train freely
    assert all(torch.equal(net.state_dict()[k], v) for k, v in hook.slow.items())


def test_lookahead_must_be_a_decay(fmnist_small, tmp_path):
    with pytest.raises(ValueError, match=r"--lookahead is a decay in \[0, 1\), got 1.5"):
        train(small_cfg(fmnist_small, tmp_path / "run", lookahead=1.5), progress=False)
    assert not (tmp_path / "run").exists()


def test_linear_schedule_warms_up_then_falls_to_zero():
    cfg = TrainConfig(epochs=4, warmup_epochs=1, sched="linear", lr=1.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = train_mod.build_scheduler(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10] == pytest.approx(1.0) and lrs[25] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(1 / 30)


def test_flip_tta_averages_the_mirror_images_logits():
    from cnnzoo.data.datasets import ImageDataset, Normalize

    class LeftHalf(torch.nn.Module):  # a "model" that sees only the left half: flips change its answer
        def forward(self, x):
            left = x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3))
            return torch.stack([left, -left], dim=1)

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=g)
    ds = ImageDataset(images, torch.zeros(64, dtype=torch.long), ["a", "b"])
    norm = Normalize((0.5,), (0.25,))
    x = norm(images)
    plain = evaluate(LeftHalf(), ds, norm)
    tta = evaluate(LeftHalf(), ds, norm, tta_flip=True)
    logits = (LeftHalf()(x) + LeftHalf()(x.flip(3))) / 2
    assert plain["top1"] == pytest.approx((LeftHalf()(x).argmax(1) == 0).float().mean().item())
    assert tta["top1"] == pytest.approx((logits.argmax(1) == 0).float().mean().item())
    assert tta["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, ds.labels).item(), rel=1e-5)
    assert tta["top1"] != plain["top1"]


def test_shift_tta_averages_the_image_moved_each_way():
    from cnnzoo.data.datasets import ImageDataset, Normalize, translate

    x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)
    assert translate(x, 1, 0)[0, 0].tolist() == [[0, 0, 0], [1, 2, 3], [4, 5, 6]]  # down, zero fill
    assert translate(x, 0, -1)[0, 0].tolist() == [[2, 3, 0], [5, 6, 0], [8, 9, 0]]  # left
    views = tta_views(x, flip=True, shift=1)
    assert len(views) == 10 and torch.equal(views[5], x.flip(3)) and torch.equal(views[6], translate(x, 1, 0).flip(3))

    class TopLeft(torch.nn.Module):  # looks at one corner pixel: moving the image changes its answer
        def forward(self, x):
            corner = x[:, 0, 0, 0]
            return torch.stack([corner, -corner], dim=1)

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=g)
    ds = ImageDataset(images, torch.zeros(64, dtype=torch.long), ["a", "b"])
    norm = Normalize((0.5,), (0.25,))
    got = evaluate(TopLeft(), ds, norm, tta_shift=2)
    moves = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (2, 0), (-2, 0), (0, 2), (0, -2))
    logits = sum(TopLeft()(norm(translate(images, dy, dx))) for dy, dx in moves) / len(moves)
    assert got["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, ds.labels).item(), rel=1e-5)
    assert got["top1"] == pytest.approx((logits.argmax(1) == 0).float().mean().item())
    assert got["top1"] != evaluate(TopLeft(), ds, norm)["top1"]
    with pytest.raises(ValueError, match="^--tta-shift must be >= 0, got -1; --cutout must be >= 0, got -8$"):
        train_mod.train(train_mod.TrainConfig(tta_shift=-1, cutout=-8, out=None), progress=False)


def test_cutout_off_epochs_trains_the_last_epochs_on_uncut_images(fmnist_small):
    from dataclasses import replace

    from cnnzoo.data.datasets import load_dataset
    from cnnzoo.utils.distributed import World

    ds = load_dataset("fashion-mnist", "train", data_dir=fmnist_small).subset(200, 0)
    late_off = TrainConfig(batch_size=64, seed=5, crop_padding=2, flip=True, cutout=8, epochs=3, cutout_off_epochs=1)
    throughout, never = replace(late_off, cutout_off_epochs=0), replace(late_off, cutout=0)

    def batches(cfg, epoch):
        return [x for x, _, _ in train_mod.epoch_batches(ds, cfg, epoch, 0, World())]

    # before the last epoch: Cutout as without the option; in it: the same crops and flips, uncut
    assert all(torch.equal(a, b) for a, b in zip(batches(late_off, 1), batches(throughout, 1)))
    assert not all(torch.equal(a, b) for a, b in zip(batches(late_off, 1), batches(never, 1)))
    assert all(torch.equal(a, b) for a, b in zip(batches(late_off, 2), batches(never, 2)))
    with pytest.raises(ValueError, match="^--cutout-off-epochs must be >= 0, got -1$"):
        train(TrainConfig(cutout_off_epochs=-1, out=None), progress=False)


def test_alternate_flip_shows_each_image_mirrored_in_every_other_epoch(fmnist_small):
    from cnnzoo.data.datasets import load_dataset
    from cnnzoo.utils.distributed import World

    ds = load_dataset("fashion-mnist", "train", data_dir=fmnist_small).subset(200, 0)
    alternating = TrainConfig(batch_size=64, seed=5, flip=True, alternate_flip=True, epochs=3)

    def images(cfg, epoch, mirror=False):  # the epoch's images as a sorted list, order aside
        x = torch.cat([x for x, _, _ in train_mod.epoch_batches(ds, cfg, epoch, 0, World())])
        return sorted(bytes(im.flip(-1).numpy() if mirror else im.numpy()) for im in x)

    first = train_mod.alternate_flips(len(ds), 5, 0)
    assert 60 < int(first.sum()) < 140  # a coin per image
    assert images(alternating, 1) == images(alternating, 0, mirror=True)
    assert images(alternating, 2) == images(alternating, 0)
    coin = TrainConfig(batch_size=64, seed=5, flip=True, epochs=3)
    assert images(coin, 1) != images(coin, 0, mirror=True)
    with pytest.raises(ValueError, match="^--alternate-flip chooses which images --flip mirrors: add --flip$"):
        train(TrainConfig(alternate_flip=True, out=None), progress=False)


def test_low_res_trains_the_first_epochs_on_scaled_down_images(fmnist_small, tmp_path, monkeypatch):
    from cnnzoo.data.datasets import load_dataset
    from cnnzoo.utils.distributed import World

    seen = []

    def recording_step(model, x, y, *args, **kwargs):
        seen.append(x.clone())
        return train_step(model, x, y, *args, **kwargs)

    train_step = train_mod.train_step
    monkeypatch.setattr(train_mod, "train_step", recording_step)
    cfg = small_cfg(fmnist_small, tmp_path / "run", model="vgg_airbench", epochs=3, train_subset=128, crop_padding=2,
                    low_res=14, low_res_epochs=2)
    summary = train(cfg, progress=False)
    assert [tuple(x.shape[2:]) for x in seen] == [(14, 14)] * 4 + [(28, 28)] * 2  # 2 steps an epoch
    assert summary["input_size"] == [1, 28, 28] and summary["test_top1"] > 0.1  # scored at full size
    # the epoch's augmented batch, normalised, then scaled down
    ds = load_dataset("fashion-mnist", "train", data_dir=fmnist_small).subset(128, 0)
    first, _, _ = next(train_mod.epoch_batches(ds, cfg, 1, 0, World()))
    norm = train_mod.Normalize(*ds.channel_stats())
    want = torch.nn.functional.interpolate(norm(first), size=(14, 14), mode="bilinear", antialias=True)
    assert torch.allclose(seen[2], want, atol=1e-5)
    for bad, message in [(dict(low_res=14), r"needs both --low-res \(got 14\) and --low-res-epochs \(got 0\)"),
                         (dict(low_res=8, low_res_epochs=1), "--low-res 8: vgg_airbench trains on 28x28 images and "
                                                             "takes 9x9 at the least"),
                         (dict(low_res=14, low_res_epochs=4), "--low-res-epochs 4 is more than the run's --epochs 3")]:
        with pytest.raises(ValueError, match=message):
            train(small_cfg(fmnist_small, tmp_path / "bad", model="vgg_airbench", epochs=3, **bad), progress=False)
    assert not (tmp_path / "bad").exists()


def test_eval_every_scores_the_named_epochs_and_the_last(fmnist_small, tmp_path):
    summary = train(small_cfg(fmnist_small, tmp_path / "run", epochs=3, eval_every=2), progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [r["test_top1"] for r in rows][0] == "nan" and all(float(r["test_top1"]) > 0.1 for r in rows[1:])
    assert summary["test_top1"] == pytest.approx(float(rows[2]["test_top1"]), abs=1e-6)
    best = max(float(r["test_top1"]) for r in rows[1:])
    assert summary["best_test_top1"] == pytest.approx(best, abs=1e-6)
    assert load_checkpoint(tmp_path / "run" / "best.safetensors")[1]["test_top1"] == pytest.approx(best, abs=1e-6)
    only_last = train(small_cfg(fmnist_small, tmp_path / "last", epochs=2, eval_every=0), progress=False)
    rows = list(csv.DictReader(open(tmp_path / "last" / "metrics.csv")))
    assert rows[0]["test_top1"] == "nan" and float(rows[1]["test_top1"]) == pytest.approx(only_last["test_top1"])
    with pytest.raises(ValueError, match="^--eval-every must be >= 0, got -2$"):
        train(small_cfg(fmnist_small, tmp_path / "bad", eval_every=-2), progress=False)
    assert not (tmp_path / "bad").exists()


def test_recipe_sets_defaults_and_flags_win():
    cfg = TrainConfig.from_recipe("fast", epochs=2)
    assert cfg.recipe == "fast" and cfg.model == "vgg_airbench" and cfg.epochs == 2
    assert cfg.opt == "sgd" and cfg.sched == "linear" and cfg.tta_flip and cfg.flip
    assert cfg.tta_shift == 1 and cfg.eval_every == 0
    with pytest.raises(ValueError, match="unknown recipe 'quick'.*fast"):
        TrainConfig.from_recipe("quick")


@pytest.mark.slow
def test_fast_recipe_trains_the_whitened_vgg(fmnist_small, tmp_path):
    cfg = TrainConfig.from_recipe("fast", data_dir=str(fmnist_small), epochs=3, batch_size=128,
                                  test_subset=500, out=str(tmp_path / "run"))
    summary = train(cfg, progress=False)
    assert summary["test_top1"] > 0.6 and summary["tta_flip"] and summary["test_images"] == 500
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["recipe"] == "fast" and saved["model"] == "vgg_airbench"
    # the stem was whitened from the data and frozen: its weights are W and -W, unchanged by training
    model, _ = load_checkpoint(tmp_path / "run")
    w = model.stem.conv.weight
    assert torch.equal(w[4:], -w[:4])
    # resuming rebuilds the same stem and continues to the same weights as the run itself
    again = resume_training(tmp_path / "run", epochs=3, progress=False)
    assert again["test_top1"] == summary["test_top1"]


def test_every_config_field_has_a_help_text():
    # `cnnzoo train`'s flags are generated from these fields
    from dataclasses import MISSING, fields

    for f in fields(TrainConfig):
        assert f.metadata.get("help", "").strip(), f.name
        assert f.default is not MISSING or f.default_factory is not MISSING, f.name


# --------------------------------------------------------------------------------------------------
# Precision: bf16 autocast where the device has it natively, fp32 elsewhere


def fake_cpu(monkeypatch, bf16: str | None, mkldnn_bf16: bool | None = None) -> None:
    """This CPU as one with ``bf16`` units ("AMX", "AVX512-BF16") or none (an AVX2 CPU; with
    ``mkldnn_bf16``, a plain AVX-512 one, which mkldnn's flag calls bf16-capable)."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: bf16 == "AMX")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16 is not None)
    mkldnn = bf16 is not None if mkldnn_bf16 is None else mkldnn_bf16
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn)
    capability = "AVX512" if bf16 or mkldnn else "AVX2"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)


@pytest.mark.parametrize("bf16, mkldnn, amp, reason, capability", [
    ("AMX", None, True, "bf16 autocast: this CPU has AMX (native bf16)", "AVX512"),
    ("AVX512-BF16", None, True, "bf16 autocast: this CPU has AVX512-BF16 (native bf16)", "AVX512"),
    (None, None, False, "fp32: this CPU (AVX2) has no native bf16; bf16 would be emulated, ~10x slower", "AVX2"),
    (None, True, False, "fp32: this CPU (AVX512) has no native bf16; bf16 would be emulated, ~10x slower", "AVX512"),
], ids=["amx", "avx512-bf16", "avx2", "avx512-without-bf16"])
def test_auto_precision_is_bf16_only_where_the_cpu_has_it(monkeypatch, bf16, mkldnn, amp, reason, capability):
    from cnnzoo.utils.precision import resolve_precision

    fake_cpu(monkeypatch, bf16, mkldnn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the automatic choice never warns
        p = resolve_precision("auto", "cpu")
    assert (p.amp, p.reason, p.cpu_capability, p.device) == (amp, reason, capability, "cpu")
    assert p.record() == dict(amp=amp, dtype="bfloat16" if amp else "float32", reason=reason,
                              cpu_capability=capability, device="cpu")


@pytest.mark.parametrize("bf16", [True, False], ids=["ampere", "turing"])
def test_auto_precision_on_a_cuda_gpu_asks_it_for_native_bf16(monkeypatch, bf16):
    import contextlib

    from cnnzoo.utils.precision import resolve_precision

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "GPU")
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext(asked.append(device)))
    # a GPU before Ampere runs bf16 only by emulation, which torch counts as support unless told not to
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16 or including_emulation)
    p = resolve_precision("auto", "cuda:1")
    assert asked == [torch.device("cuda:1")] and (p.amp, p.device) == (bf16, "cuda:1")
    assert p.reason == ("bf16 autocast: GPU computes bf16 natively" if bf16 else
                        "fp32: GPU has no native bf16; bf16 would be emulated")


def test_forced_precision_runs_as_asked_and_warns_of_emulated_bf16(monkeypatch):
    from cnnzoo.utils.precision import resolve_precision

    fake_cpu(monkeypatch, None)
    with pytest.warns(UserWarning, match=r"bf16 autocast on cpu: this CPU \(AVX2\) has no native bf16; bf16 would "
                                         r"be emulated, ~10x slower \(--amp auto or --no-amp train in fp32\)"):
        p = resolve_precision(True, "cpu")
    assert p.amp and p.reason.startswith("bf16 autocast: asked for (--amp); this CPU (AVX2) has no native bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision(False, "cpu").reason == "fp32: asked for (--no-amp)"
        fake_cpu(monkeypatch, "AMX")
        assert resolve_precision(True, "cpu").reason == "bf16 autocast: asked for (--amp)"
    with pytest.raises(ValueError, match="amp must be True, False or 'auto', got 'yes'"):
        resolve_precision("yes", "cpu")


def test_bf16_recipes_choose_by_device_and_the_others_stay_fp32():
    from cnnzoo.studies import degradation
    from cnnzoo.studies.experiments import EXPERIMENTS, run_config

    assert RECIPES["fast"]["amp"] == RECIPES["fast-long"]["amp"] == "auto"
    assert TrainConfig().amp is False  # the default recipe (make demo)
    assert TrainConfig(**degradation.RECIPE).amp is False
    for exp in EXPERIMENTS.values():
        assert all(run_config(exp, v, 0, "runs/x").amp is False for v in exp.variants), exp.name


def test_run_records_the_precision_asked_for_and_the_one_resolved(fmnist_small, tmp_path, monkeypatch, capsys):
    fake_cpu(monkeypatch, None)
    summary = train(small_cfg(fmnist_small, tmp_path / "run", epochs=1, train_subset=256, amp="auto"))
    record = dict(amp=False, dtype="float32", reason="fp32: this CPU (AVX2) has no native bf16; bf16 would be "
                                                     "emulated, ~10x slower", cpu_capability="AVX2", device="cpu")
    assert "precision: " + record["reason"] in capsys.readouterr().out.splitlines()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["amp"] == "auto" and config["precision"] == record  # as asked for, and as resolved here
    assert summary["amp"] is False and summary["precision"] == record
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["precision"] == record


def test_resume_keeps_the_recorded_precision_on_another_machine(fmnist_small, tmp_path, monkeypatch):
    import shutil

    steps = []
    real_step = train_mod.train_step
    monkeypatch.setattr(train_mod, "train_step", lambda *a, **kw: steps.append(kw["amp"]) or real_step(*a, **kw))
    real_save = train_mod.save_train_state

    def save_then_die(path, state):
        real_save(path, state)
        raise KeyboardInterrupt

    # started on a CPU with AMX: "auto" is bf16; cut after the first epoch
    fake_cpu(monkeypatch, "AMX")
    monkeypatch.setattr(train_mod, "save_train_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(small_cfg(fmnist_small, tmp_path / "run", train_subset=256, amp="auto"), progress=False)
    monkeypatch.setattr(train_mod, "save_train_state", real_save)
    # the same run as an older version wrote it: config.json without the precision record
    shutil.copytree(tmp_path / "run", tmp_path / "old")
    old = json.loads((tmp_path / "old" / "config.json").read_text())
    del old["precision"]
    (tmp_path / "old" / "config.json").write_text(json.dumps({**old, "amp": True}))
    # continued on an AVX2 CPU: still bf16, with a warning
    fake_cpu(monkeypatch, None)
    steps.clear()
    with pytest.warns(UserWarning, match=r"this CPU \(AVX2\) has no native bf16.*the run started in bf16 and keeps it"):
        summary = resume_training(tmp_path / "run", progress=False)
    assert steps and all(steps) and summary["amp"] is True
    assert summary["precision"]["reason"] == ("bf16 autocast, as recorded when the run started "
                                              "(bf16 autocast: this CPU has AMX (native bf16))")
    assert (summary["precision"]["dtype"], summary["precision"]["cpu_capability"]) == ("bfloat16", "AVX2")
    with pytest.warns(UserWarning, match=r"this CPU \(AVX2\) has no native bf16"):
        summary = resume_training(tmp_path / "old", progress=False)
    assert summary["amp"] is True and summary["precision"]["reason"].startswith("bf16 autocast: asked for (--amp)")


# --------------------------------------------------------------------------------------------------
# Recipes as files (cnnzoo/training/recipes/*.toml)


def test_shipped_recipes_are_files_whose_every_value_says_why():
    import re

    from cnnzoo.training.recipes import RECIPE_DIR, recipe_names

    assert {"default", "fast", "fast-long", "experiments", "experiments-one-cycle", "degradation"} <= set(RECIPES)
    assert set(RECIPES) == set(recipe_names())
    files = [*RECIPE_DIR.glob("*.toml"), *RECIPE_DIR.glob("league/*.toml"), *RECIPE_DIR.glob("compress/*.toml")]
    assert len(files) >= 9
    for path in files:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^[a-z_]+\s*=", line):  # a value: its reason on the line, or in the comment above
                assert "#" in line or lines[i - 1].startswith("#"), f"{path.name}:{i + 1} {line!r} says no why"
    # the default recipe is TrainConfig's defaults (make demo); fast-long is fast with what differs
    assert {k: getattr(TrainConfig(), k) for k in RECIPES["default"]} == RECIPES["default"]
    assert {k: v for k, v in RECIPES["fast-long"].items() if RECIPES["fast"].get(k) != v} == dict(
        model="vgg_airbench_96", epochs=34, cutout=8, cutout_off_epochs=11, tta_shift=2)


def test_a_bad_recipe_file_names_the_file_the_key_and_what_was_expected(tmp_path):
    bad = tmp_path / "bad.toml"
    for text, error in (
            ("epoch = 3\n", "bad.toml: unknown key 'epoch'; known: .*epochs"),
            ('epochs = "3"\n', r"bad.toml: epochs must be int, got '3' \(str\)"),
            ("flip = 1\n", r"bad.toml: flip must be bool, got 1 \(int\)"),
            ("input_size = [1, 32]\n", r"bad.toml: input_size must be an array of 3 ints, got \[1, 32\] \(list\)"),
            ('amp = "yes"\n', r"bad.toml: amp must be bool or 'auto', got 'yes' \(str\)"),
            ("lr = 0.1\nlr = 0.2\n", "bad.toml: not valid TOML"),
            ('base = "bad.toml"\n', "base recipes form a loop"),
            ('base = "quick"\n', "unknown recipe 'quick'; known: .*fast")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=error):
            TrainConfig.from_recipe(str(bad))
    with pytest.raises(FileNotFoundError, match="recipe file .*missing.toml does not exist"):
        TrainConfig.from_recipe(str(tmp_path / "missing.toml"))


def test_trainconfig_validates_itself_before_any_data_is_read():
    # the checks that need no data, in one place: each names the flags that conflict
    for bad, message in ((dict(initial_checkpoint="run", weights="tv_in1k"), "--initial-checkpoint brings its own"),
                         (dict(tta_shift=-1, cutout=-2), "^--tta-shift must be >= 0, got -1; --cutout must be >= 0"),
                         (dict(alternate_flip=True), "--alternate-flip chooses which images --flip mirrors"),
                         (dict(low_res_epochs=2), r"needs both --low-res \(got 0\) and --low-res-epochs \(got 2\)"),
                         (dict(low_res=8, low_res_epochs=13), "--low-res-epochs 13 is more than the run's --epochs 12"),
                         (dict(opt="lamb"), "--opt must be one of adamw, sgd, muon, got 'lamb'"),
                         (dict(sched="poly"), "--sched must be one of cosine, linear, step, none, got 'poly'"),
                         (dict(freeze_backbone=True, backbone_lr_scale=0.1), "no effect with --freeze-backbone"),
                         (dict(dataset="webdataset", val_split=0.1), "--val-split picks images at random")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad).validate()
    TrainConfig().validate()
    for name in RECIPES:
        TrainConfig.from_recipe(name).validate()
