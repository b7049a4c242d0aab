import json

import pytest
import torch

import cnnzoo
import cnnzoo.studies.league as league
import cnnzoo.training.loop as train_mod
from cnnzoo.analysis import count_macs
from cnnzoo.cli import build_parser
from cnnzoo.cli.common import run_command
from cnnzoo.studies.league import plan_budget, published_figure, resolve_models, run_league
from tests.training.test_train import fake_cpu


def _parser():
    return build_parser()


def _count_train_calls(monkeypatch) -> list:
    calls = []
    real = league.train

    def counting(cfg, **kw):
        calls.append(cfg.model)
        return real(cfg, **kw)

    monkeypatch.setattr(league, "train", counting)
    return calls


@pytest.mark.slow
def test_league_writes_leaderboard_skips_finished_and_refuses_changed_settings(fmnist_small, tmp_path, monkeypatch, capsys):
    out = tmp_path / "league"
    common = dict(epochs=1, train_subset=256, out=out, data_dir=str(fmnist_small), threads=1, progress=False)
    board = run_league(["lenet5", "resnet20"], **common)

    saved = json.loads((out / "leaderboard.json").read_text())
    assert saved["settings"]["epochs"] == 1 and saved["settings"]["models"] == ["lenet5", "resnet20"]
    entries = {e["model"]: e for e in saved["entries"]}
    assert set(entries) == {"lenet5", "resnet20"}
    assert [e["test_top1"] for e in saved["entries"]] == sorted((e["test_top1"] for e in saved["entries"]), reverse=True)
    for name, size in (("lenet5", [1, 32, 32]), ("resnet20", [1, 28, 28])):
        e = entries[name]
        model = cnnzoo.create_model(name, num_classes=10, in_chans=1)
        assert e["params"] == sum(p.numel() for p in model.parameters())
        assert e["input_size"] == size and e["macs"] == count_macs(model, size)
        assert e["epochs"] == 1 and e["train_images"] == 256 and e["status"] == "trained"
        assert 0.0 <= e["test_top5"] <= 1.0 and e["test_top1"] <= e["test_top5"]
        assert e["images_per_second"] > 0 and e["run_dir"] == str(out / name)
        assert e["published"] is None and e["family"] == cnnzoo.get_model_cfg(name)["family"]
    assert board["entries"] == saved["entries"]
    md = (out / "leaderboard.md").read_text()
    assert "| lenet5 | LeNet |" in md and "| resnet20 | ResNet |" in md and "published" in md

    # A second league with the same settings trains nothing (CLI path, --json last line).
    calls = _count_train_calls(monkeypatch)
    mtime = (out / "resnet20" / "summary.json").stat().st_mtime_ns
    args = _parser().parse_args(["league", "--models", "lenet?", "resnet20", "--epochs", "1", "--train-subset", "256",
                                 "--data-dir", str(fmnist_small), "--threads", "1", "--out", str(out),
                                 "--no-progress", "--json"])
    assert run_command(args) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert calls == [] and {e["status"] for e in last["entries"]} == {"skipped"}
    assert (out / "resnet20" / "summary.json").stat().st_mtime_ns == mtime
    assert {e["model"]: e["test_top1"] for e in last["entries"]} == {m: e["test_top1"] for m, e in entries.items()}

    # Other settings in the same folder: an error naming the entry and the difference, before any training.
    with pytest.raises(ValueError, match=r"entry lenet5: .*\(epochs 1 -> 2; warmup_epochs 0.2 -> 0.4\)"):
        run_league(["lenet5", "resnet20"], **{**common, "epochs": 2})
    with pytest.raises(ValueError, match=r"entry resnet20: .*seed 0 -> 3"):
        run_league(["mobilenet_v1_cifar", "resnet20"], **{**common, "seed": 3})
    assert calls == [] and not (out / "mobilenet_v1_cifar").exists()
    assert (out / "lenet5" / "summary.json").is_file()


def test_interrupted_entry_is_resumed_not_restarted(fmnist_small, tmp_path, monkeypatch):
    out = tmp_path / "league"
    common = dict(epochs=2, train_subset=256, out=out, data_dir=str(fmnist_small), threads=1, progress=False)
    real_save = train_mod.save_train_state

    def save_then_die(path, state):  # killed right after the first epoch's checkpoint
        real_save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_train_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_league(["lenet5"], **common)
    monkeypatch.setattr(train_mod, "save_train_state", real_save)
    run = out / "lenet5"
    assert (run / "train_state.pt").is_file() and not (run / "summary.json").exists()
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # header + epoch 1

    calls = _count_train_calls(monkeypatch)
    board = run_league(["lenet5"], **common)
    assert calls == []  # continued by resume_training, not started again
    (entry,) = board["entries"]
    assert entry["status"] == "resumed" and entry["epochs"] == 2
    assert [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()] == ["epoch", "1", "2"]


def test_entry_stopped_before_its_first_checkpoint_starts_again(fmnist_small, tmp_path, monkeypatch, capsys):
    common = dict(epochs=1, train_subset=128, out=tmp_path, data_dir=str(fmnist_small), threads=1, progress=False)

    def die(path, state):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_train_state", die)
    with pytest.raises(KeyboardInterrupt):
        run_league(["lenet5"], **common)
    monkeypatch.undo()
    assert (tmp_path / "lenet5" / "config.json").is_file() and not (tmp_path / "lenet5" / "train_state.pt").exists()
    (entry,) = run_league(["lenet5"], **common)["entries"]
    assert entry["status"] == "trained" and (tmp_path / "lenet5" / "summary.json").is_file()
    assert "stopped before its first checkpoint" in capsys.readouterr().err


def test_plan_budget_arithmetic():
    # 10,000 images at 1,000 img/s + 10,000 test images at 10,000 img/s: 11 s per epoch.
    assert plan_budget(60, 1000, 10000, 10000, 10000) == dict(epochs=5, train_images=10000, train_subset=None,
                                                              estimated_seconds=55.0)
    assert plan_budget(11, 1000, 10000, 10000, 10000)["epochs"] == 1
    # Evaluating after the last epoch only (10 s per epoch + 1 s once), or after every second one.
    assert plan_budget(64, 1000, 10000, 10000, 10000, eval_every=0) == dict(
        epochs=6, train_images=10000, train_subset=None, estimated_seconds=61.0)
    assert plan_budget(64, 1000, 10000, 10000, 10000, eval_every=2)["estimated_seconds"] == 63.0
    assert plan_budget(64, 1000, 10000, 10000, 10000)["epochs"] == 5
    # One epoch does not fit 5 s: 4 s of training left after the evaluation = 3,968 images (31 batches).
    assert plan_budget(5, 1000, 10000, 10000, 10000) == dict(epochs=1, train_images=3968, train_subset=3968,
                                                             estimated_seconds=5.0)
    # Even the evaluation does not fit: one batch, never zero images.
    assert plan_budget(0.5, 1000, 10000, 10000, 10000, batch_size=64)["train_subset"] == 64
    with pytest.raises(ValueError, match="positive"):
        plan_budget(10, 0, 100, 10, 10)


def test_measure_speed_times_real_steps():
    from cnnzoo.data.datasets import synthetic_dataset
    from cnnzoo.training.config import TrainConfig

    ds = synthetic_dataset(96, (1, 28, 28), 10, seed=0)
    speed = league.measure_speed(TrainConfig(model="lenet5", batch_size=32, threads=1), ds, steps=2, warmup=1)
    assert speed["train_images_per_second"] > 0 and speed["eval_images_per_second"] > 0


def test_measure_speed_times_the_recipes_augmentation_and_test_time_flips(monkeypatch):
    from cnnzoo.data.datasets import synthetic_dataset
    from cnnzoo.training.config import TrainConfig

    drawn, forwards = [], []
    real_batches, real_create = league.epoch_batches, train_mod.create_model

    def batches(ds, cfg, *args):
        for x, y, n in real_batches(ds, cfg, *args):
            drawn.append((cfg.crop_padding, cfg.flip))
            yield x, y, n

    def create(*args, **kwargs):
        net = real_create(*args, **kwargs)
        net.register_forward_hook(lambda m, i, o: forwards.append(m.training))
        return net

    monkeypatch.setattr(league, "epoch_batches", batches)
    monkeypatch.setattr(train_mod, "create_model", create)  # the trainer's build_model makes the network
    cfg = TrainConfig(model="lenet5", batch_size=32, threads=1, crop_padding=2, flip=True, tta_flip=True)
    league.measure_speed(cfg, synthetic_dataset(96, (1, 28, 28), 10, seed=0), steps=2, warmup=1)
    assert drawn == [(2, True)] * 3  # warm-up and timed steps come from the trainer's augmented batches
    # 3 training steps; evaluation: a warm-up batch and 3 timed ones, each with its mirror image
    assert forwards == [True] * 3 + [False] * 8


@pytest.mark.parametrize("bf16, dtype", [("AMX", torch.bfloat16), (None, torch.float32)], ids=["amx", "avx2"])
def test_measure_speed_times_the_precision_the_run_will_train_in(monkeypatch, bf16, dtype):
    from cnnzoo.data.datasets import synthetic_dataset
    from cnnzoo.training.config import TrainConfig

    fake_cpu(monkeypatch, bf16)
    steps, outputs = [], []
    real_step, real_create = league.train_step, train_mod.create_model
    monkeypatch.setattr(league, "train_step", lambda *a, **kw: steps.append(kw["amp"]) or real_step(*a, **kw))

    def create(*args, **kwargs):
        net = real_create(*args, **kwargs)
        net.register_forward_hook(lambda m, i, o: outputs.append(o.dtype) if not m.training else None)
        return net

    monkeypatch.setattr(train_mod, "create_model", create)
    cfg = TrainConfig(model="lenet5", batch_size=32, threads=1, amp="auto")
    league.measure_speed(cfg, synthetic_dataset(96, (1, 28, 28), 10, seed=0), steps=2, warmup=1)
    assert steps == [dtype == torch.bfloat16] * 3 and outputs == [dtype] * 4


def test_budget_picks_epochs_or_subset_from_measured_speed(fmnist_small, tmp_path, monkeypatch):
    measured = []

    def fake_speed(speeds):
        def measure(cfg, ds, **kw):
            measured.append((cfg.model, len(ds)))
            return speeds
        return measure

    # 3,000 training images at 3,000 img/s + 1,000 test images at 10,000 img/s = 1.1 s an epoch: 2 fit 3 s.
    monkeypatch.setattr(league, "measure_speed", fake_speed(dict(train_images_per_second=3000.0,
                                                                 eval_images_per_second=10000.0)))
    common = dict(budget_minutes=0.05, data_dir=str(fmnist_small), threads=1, progress=False)
    (e,) = run_league(["lenet5"], out=tmp_path / "a", **common)["entries"]
    assert measured == [("lenet5", 3000)]
    assert (e["epochs"], e["train_images"], e["measured_images_per_second"]) == (2, 3000, 3000.0)
    plan = json.loads((tmp_path / "a" / "lenet5" / "league_plan.json").read_text())
    assert plan["epochs"] == 2 and plan["train_subset"] is None and plan["budget_minutes"] == 0.05
    # A rerun reuses the stored plan: no measuring, no training.
    calls = _count_train_calls(monkeypatch)
    (e,) = run_league(["lenet5"], out=tmp_path / "a", **common)["entries"]
    assert measured == [("lenet5", 3000)] and calls == [] and e["status"] == "skipped"
    with pytest.raises(ValueError, match=r"entry lenet5: .*budget_minutes 0.05 -> 0.1"):
        run_league(["lenet5"], out=tmp_path / "a", **{**common, "budget_minutes": 0.1})
    # A run of an --epochs league in that folder is not silently taken for a budgeted one.
    (tmp_path / "b" / "lenet5").mkdir(parents=True)
    (tmp_path / "b" / "lenet5" / "config.json").write_text(json.dumps({"model": "lenet5", "epochs": 3}))
    with pytest.raises(ValueError, match=r"entry lenet5: .*epochs=3, .*not made under --budget-minutes"):
        run_league(["lenet5"], out=tmp_path / "b", **common)
    assert measured == [("lenet5", 3000)]

    # A league on a subset of 1,000 images that fits the budget whole trains on those 1,000.
    (e,) = run_league(["lenet5"], out=tmp_path / "d", train_subset=1000, **common)["entries"]
    assert (e["epochs"], e["train_images"]) == (6, 1000) and measured[-1] == ("lenet5", 1000)

    # 100 img/s: one epoch of 3,000 images does not fit; (3 s - 0.1 s) x 100 img/s = 290 -> 256 images.
    monkeypatch.setattr(league, "measure_speed", fake_speed(dict(train_images_per_second=100.0,
                                                                 eval_images_per_second=10000.0)))
    (e,) = run_league(["lenet5"], out=tmp_path / "c", **common)["entries"]
    assert (e["epochs"], e["train_images"]) == (1, 256)
    md = (tmp_path / "c" / "leaderboard.md").read_text()
    assert "budget of 0.05 min" in md and "| 256 |" in md


def test_bad_pattern_names_close_matches_and_defaults_exist():
    with pytest.raises(ValueError, match=r"resnet2O.*Did you mean.*resnet20"):
        resolve_models(["resnet2O"])
    assert resolve_models(["vgg1?_cifar"]) == ["vgg11_cifar", "vgg13_cifar", "vgg16_cifar", "vgg19_cifar"]
    assert resolve_models(["lenet5", "lenet*"])[0] == "lenet5"
    assert len(set(resolve_models(["lenet5", "lenet*"]))) == len(resolve_models(["lenet5", "lenet*"]))
    assert set(resolve_models(None)) <= set(cnnzoo.list_models())
    families = {cnnzoo.get_model_cfg(m)["family"] for m in resolve_models(None)}
    assert {"LeNet", "AlexNet", "ZFNet", "VGG", "Inception", "ResNet", "SENet", "MobileNet"} <= families


def test_published_figures():
    assert published_figure("resnet18_cifar") == ("ResNet18", 0.949)
    assert published_figure("alexnet_cifar") == ("AlexNet", 0.899)
    assert published_figure("vgg16_cifar") == ("VGG16", 0.935)
    assert published_figure("googlenet_cifar") == ("GoogLeNet", 0.937)
    assert published_figure("mobilenet_v1_cifar") == ("MobileNet", 0.950)
    for none in ("lenet5", "seresnet18_cifar", "zfnet_cifar", "inception_v3_cifar", "vgg11_cifar", "resnet20"):
        assert published_figure(none) == (None, None)
    assert published_figure("resnet18_cifar", "mnist") == (None, None)


def test_epochs_and_budget_exclude_each_other(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        run_league(["lenet5"], epochs=1, budget_minutes=1, out=tmp_path)
    with pytest.raises(SystemExit):
        _parser().parse_args(["league", "--epochs", "1", "--budget-minutes", "1"])


def test_markdown_shows_the_published_figure_beside_each_entry():
    settings = dict(dataset="fashion-mnist", epochs=None, budget_minutes=2.0, seed=0, device="cpu", amp=False, threads=2,
                    recipe={k: getattr(league.TrainConfig, k) for k in ("opt", "lr", "weight_decay", "sched", "batch_size")})
    entry = dict(family="ResNet", test_top5=0.99, params=11_000_000, macs=500e6, input_size=[1, 28, 28], epochs=1,
                 train_images=5_000, train_seconds=100.0, images_per_second=50.0, published=None, published_model=None)
    board = dict(settings=settings, entries=[
        {**entry, "model": "resnet18_cifar", "test_top1": 0.91, "published": 0.949, "published_model": "ResNet18"},
        {**entry, "model": "seresnet18_cifar", "family": "SENet", "test_top1": 0.90}], pending=["vgg16_cifar"])
    md = league.format_leaderboard(board).splitlines()
    rows = [line for line in md if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert rows[0].startswith("| 1 | resnet18_cifar | ResNet | 0.9100 | 0.949 (ResNet18) |")
    assert rows[1].startswith("| 2 | seresnet18_cifar | SENet | 0.9000 | - |")
    assert "a budget of 2 min per model" in md[2] and md[-1] == "Not yet trained: vgg16_cifar."


def test_a_named_recipe_trains_every_model_with_it(fmnist_small, tmp_path):
    out = tmp_path / "league"
    board = run_league(["lenet5"], recipe="fast", epochs=1, train_subset=256, out=out, data_dir=str(fmnist_small),
                       threads=1, progress=False)
    config = json.loads((out / "lenet5" / "config.json").read_text())
    # the recipe's optimiser and tricks, the league's model: the recipe's own network is set aside
    assert config["model"] == "lenet5" and config["recipe"] == "fast"
    assert (config["opt"], config["sched"], config["tta_flip"], config["amp"]) == ("sgd", "linear", True, "auto")
    assert board["settings"]["recipe_name"] == "fast" and board["settings"]["recipe"]["opt"] == "sgd"
    assert "Recipe `fast` (sgd lr 0.2" in (out / "leaderboard.md").read_text()


def test_cpu_tier_is_one_member_per_family_and_league_json_reproduces_each_run(fmnist_small, tmp_path, monkeypatch):
    import shlex

    from cnnzoo.cli.train import train_config
    from cnnzoo.models.registry import get_model_cfg

    families = [get_model_cfg(m)["family"] for m in league.TIERS["cpu"]["members"]]
    assert len(families) == len(set(families)) == 9
    out = tmp_path / "tier"
    # the tier's recipe and threads, one member, cut short (epochs and a subset given here win), on an
    # AVX2 CPU: the recipe's bf16 is left to the device, which has none
    fake_cpu(monkeypatch, None)
    board = run_league(["resnet20"], tier="cpu", epochs=1, train_subset=128, out=out, data_dir=str(fmnist_small),
                       progress=False)
    (entry,) = json.loads((out / league.LEAGUE_JSON).read_text())
    assert set(entry) == {"model", "family", "dataset", "test_top1", "train_seconds", "params", "macs", "device",
                          "precision", "date", "command"}
    assert entry["dataset"] == "fashion-mnist"
    assert (entry["model"], entry["family"], entry["test_top1"]) == ("resnet20", "ResNet", board["entries"][0]["test_top1"])
    assert "2 threads" in entry["device"] and len(entry["date"]) == 10
    words = shlex.split(entry["command"])
    cfg = train_config(_parser().parse_args(words[1:]))
    assert (cfg.opt, cfg.label_smoothing, cfg.threads, cfg.epochs, cfg.train_subset) == ("sgd", 0.1, 2, 1, 128)
    assert cfg.out == str(out / "resnet20") and cfg.amp == "auto" and "--amp auto" in entry["command"]
    assert entry["precision"] == dict(amp=False, dtype="float32", cpu_capability="AVX2", device="cpu",
                                      reason="fp32: this CPU (AVX2) has no native bf16; bf16 would be emulated, ~10x slower")
    assert board["settings"]["amp"] is False and "bf16 autocast" not in (out / "leaderboard.md").read_text()
    # a member's own settings (MobileNet v1: quarter width, fp32) reach its run and its command
    run_league(["mobilenet_v1_cifar"], tier="cpu", epochs=1, train_subset=128, out=out, data_dir=str(fmnist_small),
               progress=False)
    entry = json.loads((out / league.LEAGUE_JSON).read_text())[-1]
    cfg = train_config(_parser().parse_args(shlex.split(entry["command"])[1:]))
    assert (entry["model"], cfg.amp, cfg.model_kwargs) == ("mobilenet_v1_cifar", False, {"width_mult": 0.25})
    assert entry["precision"]["reason"] == "fp32: asked for (--no-amp)"
    assert entry["params"] < 300_000  # a quarter-width MobileNet v1 (3.2M at full width)
    with pytest.raises(ValueError, match="unknown tier 'tpu'; known: cpu, gpu"):
        run_league(tier="tpu", out=tmp_path / "x", progress=False)
    assert league.TIERS["gpu"]["device"] == "cuda" and all(
        league.published_figure(m)[1] for m in league.TIERS["gpu"]["members"])


def test_a_tier_member_with_its_own_epochs_trains_them_instead_of_the_budget(fmnist_small, tmp_path, monkeypatch):
    tier = dict(members={"lenet5": dict(settings=dict(epochs=1, cutout=4))},
                recipe="fast", budget_minutes=0.01, threads=1, device="cpu")
    monkeypatch.setitem(league.TIERS, "test", tier)
    out = tmp_path / "tier"
    board = run_league(tier="test", train_subset=128, out=out, data_dir=str(fmnist_small), progress=False)
    config = json.loads((out / "lenet5" / "config.json").read_text())
    assert (config["recipe"], config["epochs"], config["cutout"], config["train_subset"]) == ("fast", 1, 4, 128)
    assert not (out / "lenet5" / league.PLAN_FILE).exists()  # not planned: the budget would give other epochs
    assert "--cutout 4" in board["entries"][0]["command"]
    # arguments given here win over the member's settings
    run_league(tier="test", epochs=2, train_subset=128, out=tmp_path / "given", data_dir=str(fmnist_small),
               progress=False)
    config = json.loads((tmp_path / "given" / "lenet5" / "config.json").read_text())
    assert (config["epochs"], config["cutout"]) == (2, 4)


@pytest.mark.parametrize("name, tier", [("league.json", "cpu"), ("league-gpu.json", "gpu")])
def test_committed_league_entries_name_their_tier_member_and_a_command_that_trains_it(name, tier):
    """docs/league*.json, behind the README's chart and tables: every entry's command parses as
    `cnnzoo train` and trains that entry's model of its tier, with the member's settings."""
    import shlex
    from pathlib import Path

    from cnnzoo.cli.train import train_config

    entries = json.loads((Path(__file__).resolve().parents[2] / "docs" / name).read_text())
    members = league.TIERS[tier]["members"]
    assert sorted(e["model"] for e in entries) == sorted(members)
    for e in entries:
        words = shlex.split(e["command"])
        assert words[:2] == ["cnnzoo", "train"], e["command"]
        cfg = train_config(_parser().parse_args(words[1:]))
        assert cfg.model == e["model"] and cfg.model_kwargs == members[e["model"]].get("model_kwargs", {})
        assert cfg.device == league.TIERS[tier]["device"] and cfg.data_dir is None
        assert 0.9 < e["test_top1"] <= 1
        own = members[e["model"]].get("settings", {})
        recipe = league.TrainConfig.from_recipe(league.TIERS[tier]["recipe"])
        assert {k: getattr(cfg, k) for k in own} == own and cfg.cutout == own.get("cutout", recipe.cutout)
        if "epochs" not in own:  # trained for the tier's budget
            assert e["train_seconds"] <= league.TIERS[tier]["budget_minutes"] * 60 * 1.35


# --------------------------------------------------------------------------------------------------
# The same experiment: every TrainConfig field but the few that change only speed or bookkeeping


def test_every_field_counts_in_the_experiment_but_speed_and_bookkeeping_ones_and_a_new_one_does():
    import dataclasses

    from cnnzoo.training.config import NOT_THE_EXPERIMENT, experiment_settings

    names = {f.name for f in dataclasses.fields(train_mod.TrainConfig)}
    assert set(NOT_THE_EXPERIMENT) < names and len(NOT_THE_EXPERIMENT) <= 13
    assert set(experiment_settings(train_mod.TrainConfig())) == names - set(NOT_THE_EXPERIMENT)
    # the settings league's old hand-kept list had left out are counted now
    for name in ("input_size", "alternate_flip", "low_res", "low_res_epochs", "lookahead", "muon_lr", "auto_augment",
                 "classes", "train_per_class", "val_split", "color_jitter", "freeze_backbone", "backbone_lr_scale",
                 "initial_checkpoint", "pretrained", "weights"):
        assert name in experiment_settings(train_mod.TrainConfig()), name

    @dataclasses.dataclass
    class WithANewSetting(train_mod.TrainConfig):
        mixup: float = 0.0

    saved = {"experiment": experiment_settings(train_mod.TrainConfig())}  # a run from before the new field
    assert league.settings_difference(WithANewSetting(), saved) == []  # its default: what that run did
    assert league.settings_difference(WithANewSetting(mixup=0.2), saved) == ["mixup 0.0 -> 0.2"]
    speed_only = WithANewSetting(threads=7, device="cuda", amp="auto", channels_last=False, eval_every=0, out="x")
    assert league.settings_difference(speed_only, saved) == []


def test_a_changed_input_size_is_not_the_run_already_trained(fmnist_small, tmp_path):
    from dataclasses import replace

    common = dict(epochs=1, train_subset=128, out=tmp_path, data_dir=str(fmnist_small), threads=1, progress=False)
    run_league(["lenet5"], **common)
    cfg = league.league_config("lenet5", epochs=1, train_subset=128, out=tmp_path, dataset="fashion-mnist",
                               data_dir=str(fmnist_small), device="cpu", amp=None, threads=1, seed=0)
    assert league.entry_state(cfg) == "finished"
    assert league.entry_state(replace(cfg, threads=2, amp="auto", eval_every=3)) == "finished"  # speed, bookkeeping
    with pytest.raises(ValueError, match=r"entry lenet5: .*other settings \(input_size None -> \[1, 36, 36\]\)"):
        league.entry_state(replace(cfg, input_size=(1, 36, 36)))
    with pytest.raises(ValueError, match=r"\(lookahead 0.0 -> 0.5; alternate_flip False -> True\)"):
        league.entry_state(replace(cfg, alternate_flip=True, lookahead=0.5))
    # a run recorded before config.json kept the request: its input size is the one it trained at
    config = tmp_path / "lenet5" / "config.json"
    saved = json.loads(config.read_text())
    assert saved["input_size"] == [1, 32, 32] and saved["experiment"]["input_size"] is None
    del saved["experiment"]
    config.write_text(json.dumps(saved))
    assert league.entry_state(cfg) == league.entry_state(replace(cfg, input_size=(1, 32, 32))) == "finished"
    with pytest.raises(ValueError, match=r"input_size \[1, 32, 32\] -> \[1, 36, 36\]"):
        league.entry_state(replace(cfg, input_size=(1, 36, 36)))


def test_the_cpu_tier_continues_from_the_committed_league_without_training(tmp_path, monkeypatch):
    """docs/league.json's runs, as the league left them (config.json from before tta_shift, eval_every
    and the "experiment" record, the budget's plan, the summary): `cnnzoo league --tier cpu` into
    their folder skips every one and writes the same entries again."""
    import dataclasses
    import shlex
    from pathlib import Path

    from cnnzoo.cli.train import train_config

    committed = json.loads((Path(__file__).resolve().parents[2] / "docs" / "league.json").read_text())
    monkeypatch.chdir(tmp_path)
    out = Path("runs/league-cpu")  # as the commands name it
    for e in committed:
        cfg = train_config(_parser().parse_args(shlex.split(e["command"])[1:]))
        run = out / e["model"]
        run.mkdir(parents=True)
        size = list(train_mod.fit_input_size(e["model"], (1, 28, 28), None))
        newer = ("tta_shift", "eval_every") if "--tta-shift" not in e["command"] else ()  # trained before them
        config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in newer}
        (run / "config.json").write_text(json.dumps(dict(
            config, amp=cfg.amp is not False, recipe="fast", out=str(run), input_size=size,
            classes=[str(c) for c in range(10)])))
        (run / league.PLAN_FILE).write_text(json.dumps(dict(
            budget_minutes=15.0, dataset="fashion-mnist", seed=0, batch_size=256, base_train_subset=None,
            train_images_per_second=1.0, eval_images_per_second=1.0, epochs=cfg.epochs, train_images=60000,
            train_subset=None, estimated_seconds=1.0)))
        (run / "summary.json").write_text(json.dumps(dict(
            model=e["model"], dataset="fashion-mnist", epochs=cfg.epochs, test_top1=e["test_top1"], test_top5=0.99,
            params=e["params"], train_seconds=e["train_seconds"], train_images=60000, input_size=size,
            run_dir=str(run), threads=2, device="cpu", device_name=e["device"].split(",")[0], finished=e["date"])))
    calls = _count_train_calls(monkeypatch)
    board = run_league(tier="cpu", out=out, progress=False)
    assert calls == [] and {e["status"] for e in board["entries"]} == {"skipped"}
    again = {e["model"]: e for e in json.loads((out / league.LEAGUE_JSON).read_text())}
    for e in committed:  # the same entries, each with the command the tier writes for it today
        assert {k: again[e["model"]][k] for k in e} == e
