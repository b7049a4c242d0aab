"""The command line's parsing: TrainConfig's generated flags, --model-kwargs on every command that
builds a model, model_arguments in the registry, the top-level help, argparse only in cnnzoo.cli."""
import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import cnnzoo
from cnnzoo.cli import build_parser, main
from cnnzoo.cli.common import parse_kwargs
from cnnzoo.cli.train import config_flag, train_config
from cnnzoo.models.factory import create_model
from cnnzoo.models.registry import model_arguments, model_kwargs_for
from cnnzoo.training.config import RECIPES, TrainConfig


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


# --------------------------------------------------------------------------------------------------
# cnnzoo train: one flag per TrainConfig field


def test_every_trainconfig_field_has_its_flag():
    by_dest = {a.dest: a for a in subparser("train")._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in by_dest, f"TrainConfig.{f.name} has no flag"
        assert "--" + f.name.replace("_", "-") in by_dest[f.name].option_strings
        assert by_dest[f.name].default is None  # unset unless given: a recipe's value stands


def test_flag_types_follow_the_annotations():
    args = parse("train", "--epochs", "3", "--lr", "0.5", "--momentum", "0.8", "--input-size", "1", "32", "32",
                 "--no-channels-last", "--skip-bad-images", "--test-subset", "100", "--eval-batch-size", "64",
                 "--synthetic-classes", "4", "--model-kwargs", "act=tanh", "--out", "r")
    cfg = train_config(args)
    assert (cfg.epochs, cfg.lr, cfg.momentum, cfg.input_size) == (3, 0.5, 0.8, (1, 32, 32))
    assert cfg.channels_last is False and cfg.skip_bad_images is True
    assert (cfg.test_subset, cfg.eval_batch_size, cfg.synthetic_classes) == (100, 64, 4)
    assert cfg.model_kwargs == {"act": "tanh"} and cfg.out == "r"
    with pytest.raises(SystemExit) as exc:
        parse("train", "--opt", "lamb")
    assert exc.value.code == 2


def test_no_flags_give_the_default_config():
    assert train_config(parse("train")) == TrainConfig()
    assert TrainConfig().channels_last  # on unless --no-channels-last


def test_recipe_values_apply_unless_a_flag_is_given():
    cfg = train_config(parse("train", "--recipe", "fast", "--epochs", "2", "--no-amp", "--momentum", "0.5"))
    recipe = RECIPES["fast"]
    assert cfg.recipe == "fast" and cfg.model == recipe["model"] and cfg.lr == recipe["lr"]
    assert cfg.flip is recipe["flip"] and cfg.tta_flip is recipe["tta_flip"]
    assert (cfg.epochs, cfg.amp, cfg.momentum) == (2, False, 0.5)
    cfg = train_config(parse("train", "--recipe", "fast"))
    assert cfg.amp == "auto" and cfg.epochs == recipe["epochs"]
    cfg = train_config(parse("train", "--recipe", "fast-long"))
    assert (cfg.model, cfg.cutout, cfg.epochs, cfg.lr) == ("vgg_airbench_96", 8, 34, recipe["lr"])
    assert train_config(parse("train", "--recipe", "fast-long", "--cutout", "0")).cutout == 0


def test_amp_flag_forces_bf16_or_fp32_or_leaves_the_choice_to_the_device(capsys):
    assert parse("train").amp is None and train_config(parse("train")).amp is False
    assert train_config(parse("train", "--amp", "--epochs", "2")).amp is True  # a bare --amp: bf16
    assert train_config(parse("train", "--amp", "auto")).amp == "auto"
    assert train_config(parse("train", "--no-amp")).amp is False
    assert train_config(parse("train", "--recipe", "fast", "--amp")).amp is True
    for argv, error in ((["--amp", "yes"], "argument --amp/--no-amp: invalid choice: 'yes' (choose from 'auto')"),
                        (["--no-amp", "auto"], "--no-amp takes no value, got 'auto'")):
        with pytest.raises(SystemExit) as exc:
            parse("train", *argv)
        assert exc.value.code == 2 and error in capsys.readouterr().err
    # the league's flag is the same: unset leaves each tier member's own setting
    assert [parse("league", *argv).amp for argv in ([], ["--amp"], ["--amp", "auto"], ["--no-amp"])] == [
        None, True, "auto", False]


@pytest.mark.parametrize("amp, words", [("auto", ["--amp", "auto"]), (True, ["--amp"]), (False, [])])
def test_train_command_writes_the_amp_asked_for(amp, words):
    import shlex

    from cnnzoo.training.config import train_command

    cfg = TrainConfig.from_recipe("fast", amp=amp, out="runs/x")
    command = shlex.split(train_command(cfg))
    at = command.index("--seed")  # --amp comes after --seed, in TrainConfig's field order
    assert [w for w in command[at:] if w in ("--amp", "--no-amp", "auto")] == words
    assert train_config(parse(*command[1:])) == dataclasses.replace(cfg, recipe=None)


def test_generated_flag_reads_help_and_choices_from_field_metadata():
    @dataclasses.dataclass
    class Config:
        ratio: float | None = dataclasses.field(default=None, metadata={"help": "kept share, 90% by default"})
        mode: str = dataclasses.field(default="a", metadata={"help": "how", "choices": ("a", "b")})
        size: tuple[int, int] = (4, 4)
        names: list[str] = dataclasses.field(default_factory=list)
        level: typing.Literal[1, 2] = 1

    fields = {f.name: f for f in dataclasses.fields(Config)}
    flag, kw = config_flag(fields["ratio"], float | None)
    assert flag == "--ratio" and kw["type"] is float and kw["default"] is None
    assert kw["help"] == "kept share, 90%% by default (default: None)"  # % doubled for argparse
    _, kw = config_flag(fields["mode"], str)
    assert kw["choices"] == ("a", "b") and kw["help"] == "how (default: a)"
    _, kw = config_flag(fields["size"], tuple[int, int])
    assert kw["nargs"] == 2 and kw["type"] is int and kw["help"] == "(default: 4 4)"
    _, kw = config_flag(fields["names"], list[str])
    assert kw["nargs"] == "+" and kw["type"] is str and kw["help"] == "(default: [])"
    _, kw = config_flag(fields["level"], typing.Literal[1, 2])
    assert kw["choices"] == (1, 2) and kw["type"] is int
    p = argparse.ArgumentParser()
    flag, kw = config_flag(fields["ratio"], float | None)
    p.add_argument(flag, **kw)
    assert "90% by default" in p.format_help()


# --------------------------------------------------------------------------------------------------
# --model-kwargs


def test_model_kwargs_values_are_literals_else_strings():
    assert parse_kwargs("width_mult=0.5,act=relu,aux_logits=True,widths=(16,32,64)") == dict(
        width_mult=0.5, act="relu", aux_logits=True, widths=(16, 32, 64))
    with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE, got 'width_mult'"):
        parse_kwargs("width_mult")


@pytest.mark.parametrize("argv", [
    ["train"], ["eval", "--checkpoint", "run"], ["predict", "--checkpoint", "run", "a.png"], ["summary", "lenet5"],
    ["bench", "lenet5"], ["export", "--out", "m.onnx"], ["league"], ["compress", "--checkpoint", "run", "--out", "m.cnnz"],
])
def test_model_kwargs_on_every_command_that_builds_a_model(argv):
    args = parse(*argv, "--model-kwargs", "width_mult=0.5,dropout=0.1", "--model-kwargs", "dropout=0.2")
    merged = train_config(args).model_kwargs if argv[0] == "train" else cnnzoo.cli.common.model_kwargs(args)
    assert merged == {"width_mult": 0.5, "dropout": 0.2}  # repeatable, later wins


def test_model_kwargs_never_swallow_positional_arguments():
    args = parse("predict", "--checkpoint", "run", "--model-kwargs", "a=1", "img1.png", "img2.png")
    assert args.images == ["img1.png", "img2.png"] and args.model_kwargs == [{"a": 1}]
    args = parse("bench", "--model-kwargs", "a=1", "lenet5", "resnet20")
    assert args.models == ["lenet5", "resnet20"]


def test_summary_with_model_kwargs(capsys):
    assert main(["summary", "mobilenet_v1", "--model-kwargs", "width_mult=0.5", "--json"]) == 0
    out = capsys.readouterr().out
    assert "1,331,592" in out and json.loads(out.strip().splitlines()[-1])["totals"]["params"] == 1_331_592


def test_unknown_model_kwarg_exits_2_with_the_accepted_ones(capsys):
    assert main(["summary", "resnet50", "--model-kwargs", "width_mult=0.5"]) == 2
    err = capsys.readouterr().err
    assert "resnet50 takes no argument 'width_mult'; it accepts: " in err
    assert "zero_init_residual" in err and "shortcut" in err
    with pytest.raises(SystemExit) as exc:
        main(["summary", "resnet50", "--model-kwargs", "width_mult"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------------------------------
# the registry's side: model_arguments


def test_model_arguments_are_the_constructors_less_what_the_variant_fixes():
    assert model_arguments("mobilenet_v1")["width_mult"] == 1.0
    assert "width_mult" not in model_arguments("mobilenet_v1_050")  # fixed at 0.5 by the variant
    assert model_arguments("googlenet_cifar")["width_mult"] == 0.25  # the variant's setdefault
    assert model_arguments("resnet20")["shortcut"] == "A"  # set in a helper the variant calls
    assert "shortcut" not in model_arguments("plain20") and "stem" not in model_arguments("resnet20")
    assert model_arguments("lenet5") == {"act": "relu", "pool": "max", "drop_rate": 0.0, "global_pool": ""}
    for name in cnnzoo.list_models():
        assert not {"num_classes", "in_chans"} & set(model_arguments(name))


def test_create_model_names_model_key_and_accepted_arguments():
    with pytest.raises(ValueError, match=r"^mobilenet_v1_050 takes no argument 'width_mult'; it accepts: act, "):
        create_model("mobilenet_v1_050", width_mult=0.25)
    with pytest.raises(ValueError, match="lenet5_caffe takes no argument 'act'; it accepts: drop_rate, global_pool$"):
        create_model("lenet5_caffe", act="tanh")
    assert model_arguments("zfnet")["lrn"] is True
    assert create_model("zfnet", lrn=False).pretrained_cfg["kwargs"] == {"lrn": False}


def test_model_kwargs_for_several_models_go_where_they_are_taken():
    per = model_kwargs_for(["mobilenet_v1_cifar", "resnet20"], {"width_mult": 0.5, "zero_init_residual": True})
    assert per == {"mobilenet_v1_cifar": {"width_mult": 0.5}, "resnet20": {"zero_init_residual": True}}
    with pytest.raises(ValueError, match="no model of lenet5, resnet20 takes 'width_mult'"):
        model_kwargs_for(["lenet5", "resnet20"], {"width_mult": 0.5})


# --------------------------------------------------------------------------------------------------
# help and layout


def test_top_level_help_says_what_cnnzoo_is_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "classic convolutional image classifiers" in out and "examples:" in out
    assert "\n  cnnzoo summary googlenet --model-kwargs aux_logits=True" in out  # kept as written


def test_help_texts_cite_papers_not_sections_of_a_seed():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    texts = [a.help or "" for a in sub._choices_actions]
    texts += [a.help or "" for p in sub.choices.values() for a in p._actions]
    assert not [t for t in texts if re.search(r"\bseed\s+(section\s+)?\d", t)]
    assert any("Inception v3" in t for t in texts)


def test_argparse_lives_in_cnnzoo_cli_only():
    root = Path(cnnzoo.__file__).parent
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "argparse" in p.read_text())
    assert users and all(u.startswith("cli/") for u in users), users


# --------------------------------------------------------------------------------------------------
# several models: each gets the keys it takes


def test_bench_gives_each_model_the_kwargs_it_takes(capsys):
    argv = ["bench", "mobilenet_v1_cifar", "resnet20", "--model-kwargs", "width_mult=0.5,zero_init_residual=True",
            "--warmup", "0", "--iters", "1", "--threads", "1", "--batch-size", "2", "--no-progress", "--json"]
    assert main(argv) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]}
    params = lambda name, **kw: sum(p.numel() for p in create_model(name, **kw).parameters())
    assert rows["mobilenet_v1_cifar"]["params"] == params("mobilenet_v1_cifar", width_mult=0.5)
    assert rows["mobilenet_v1_cifar"]["params"] < params("mobilenet_v1_cifar")
    assert rows["resnet20"]["params"] == params("resnet20")
    assert main(["bench", "lenet5", "resnet20", "--model-kwargs", "width_mult=0.5", "--no-progress"]) == 2
    assert "no model of lenet5, resnet20 takes 'width_mult'" in capsys.readouterr().err


def test_league_gives_each_entry_the_kwargs_it_takes(tmp_path, capsys):
    from cnnzoo.studies.league import league_config

    cfg = league_config("resnet20", epochs=1, train_subset=None, out=tmp_path, dataset="synthetic", data_dir=None,
                        device="cpu", amp=None, threads=1, seed=0, model_kwargs={"zero_init_residual": True})
    assert cfg.model_kwargs == {"zero_init_residual": True}
    argv = ["league", "--models", "lenet5", "resnet20", "--model-kwargs", "width_mult=0.5", "--epochs", "1",
            "--out", str(tmp_path / "league"), "--no-progress"]
    assert main(argv) == 2  # refused before any training
    assert "no model of lenet5, resnet20 takes 'width_mult'" in capsys.readouterr().err
    assert not (tmp_path / "league").exists()


class _OpenNet:
    def __init__(self, num_classes: int = 10, in_chans: int = 3, depth: int = 2, **extra) -> None:
        self.extra = extra


def _open_net(**kwargs) -> _OpenNet:
    return _OpenNet(depth=3, **kwargs)


def _unannotated(**kwargs):
    return _OpenNet(**kwargs)


def test_constructors_taking_any_keyword_are_not_second_guessed(monkeypatch):
    import cnnzoo.models.registry as registry

    for name, fn in (("test_open_net", _open_net), ("test_unannotated", _unannotated)):
        monkeypatch.setitem(registry._ENTRYPOINTS, name, fn)
        cfg = dataclasses.replace(registry.get_pretrained_cfg("lenet5"), architecture=name)
        monkeypatch.setitem(registry._CFGS, name, {cfg.tag: cfg})
    assert model_arguments("test_open_net") == {}  # depth fixed by the function, **extra not listed
    assert model_arguments("test_unannotated") == {}
    for name in ("test_open_net", "test_unannotated"):
        registry.check_model_kwargs(name, {"anything": 1})  # no error: the constructor decides
    assert model_kwargs_for(["lenet5", "test_open_net"], {"act": "tanh"}) == {
        "lenet5": {"act": "tanh"}, "test_open_net": {"act": "tanh"}}


# --------------------------------------------------------------------------------------------------
# the process the command runs in

_CHURN = """
import resource, torch
from cnnzoo.cli.common import keep_freed_memory
print(keep_freed_memory())
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(4):  # ten 16 MiB tensors, made and freed together as a step's activations are
    before = faults()
    kept = [torch.ones(4 << 20) for _ in range(10)]
    del kept
    counts.append(faults() - before)
print(counts[-1])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("switch", ["1", "0"])
def test_the_command_keeps_freed_memory_for_the_next_step(switch):
    env = {**os.environ, "CNNZOO_KEEP_FREED_MEMORY": switch}
    took, faults = subprocess.run([sys.executable, "-c", _CHURN], env=env, capture_output=True, text=True,
                                  check=True).stdout.split()
    import resource  # POSIX only

    pages = (10 * 16 << 20) // resource.getpagesize()
    # Kept, the fourth round reuses the memory the first ones freed. glibc's default mostly hands
    # it back and faults every page in again, though not always (it can only trim the heap's top).
    if switch == "1":
        assert took == "True" and int(faults) < pages // 4
    else:
        assert took == "False"


def test_every_command_runs_with_freed_memory_kept(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("cnnzoo.cli.keep_freed_memory", lambda: calls.append(True))
    assert main(["models", "lenet5"]) == 0
    assert calls == [True]


def test_recipe_and_config_files_combine_and_flags_win(tmp_path):
    # a copy of a shipped recipe, passed as a file, is that recipe
    from cnnzoo.training.recipes import RECIPE_DIR

    copy = tmp_path / "mine.toml"
    copy.write_text((RECIPE_DIR / "fast-long.toml").read_text())
    as_file = train_config(parse("train", "--recipe", str(copy)))
    assert dataclasses.replace(as_file, recipe="fast-long") == train_config(parse("train", "--recipe", "fast-long"))
    # --config: its values on top of --recipe's, flags on top of both
    overrides = tmp_path / "overrides.toml"
    overrides.write_text("epochs = 3  # epochs\nlr = 1  # an integer where a float is expected is a float\n"
                         "input_size = [1, 32, 32]\n")
    cfg = train_config(parse("train", "--recipe", "fast", "--config", str(overrides), "--epochs", "5"))
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.input_size, cfg.recipe) == ("vgg_airbench", 5, 1.0, (1, 32, 32), "fast")
    assert isinstance(cfg.lr, float)
    # --config alone: on top of the defaults; a config that names its base is a recipe of its own
    assert train_config(parse("train", "--config", str(overrides))).model == "lenet5"
    assert train_config(parse("train", "--config", str(copy))).model == "vgg_airbench_96"
    with pytest.raises(ValueError, match="names its own base recipe"):
        train_config(parse("train", "--recipe", "fast", "--config", str(copy)))


def test_league_recipe_takes_a_file_too(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('base = "fast"\nlr = 0.1\n')
    from cnnzoo.studies.league import league_config

    cfg = league_config("lenet5", epochs=1, train_subset=None, out=tmp_path, dataset="fashion-mnist", data_dir=None,
                        device="cpu", amp=None, threads=1, seed=0, recipe=str(recipe))
    assert (cfg.model, cfg.opt, cfg.lr, cfg.tta_flip) == ("lenet5", "sgd", 0.1, True)
    assert parse("league", "--recipe", str(recipe)).recipe == str(recipe)
