"""``cnnzoo train``: one flag per ``TrainConfig`` field, ``--recipe``, ``--config`` and ``--resume``."""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
import types
import typing
from typing import Any

from cnnzoo.cli.common import (
    BoolOrWord,
    add_json,
    kwargs_flag,
    merge_kwargs,
)
from cnnzoo.training.config import TrainConfig


def _unwrap_optional(annotation: Any) -> Any:
    """``int | None`` -> ``int``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _default_text(f: dataclasses.Field) -> str:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(default, tuple):
        default = " ".join(map(str, default))
    return f"default: {default}"


def config_flag(f: dataclasses.Field, annotation: Any) -> tuple[str, dict[str, Any]]:
    """The ``add_argument`` call of one TrainConfig field: ``--kebab-case``, type from the
    annotation, help from ``metadata["help"]`` and the default. Every flag defaults to None (unset),
    so a recipe's values stand unless a flag is given."""
    kind = _unwrap_optional(annotation)
    origin = typing.get_origin(kind) or kind
    help_text = f.metadata.get("help", "")
    # argparse %-formats help texts: a literal % must be doubled.
    kw: dict[str, Any] = dict(dest=f.name, default=None,
                              help=f"{help_text} ({_default_text(f)})".lstrip().replace("%", "%%"))
    items = typing.get_args(kind)
    words = [w for a in items if typing.get_origin(a) is typing.Literal for w in typing.get_args(a)]
    if kind is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif origin in (typing.Union, types.UnionType) and set(items) == {bool, typing.Literal[tuple(words)]}:
        kw.update(action=BoolOrWord, choices=tuple(words), metavar="|".join(words))  # amp: bool | Literal["auto"]
    elif origin is typing.Literal:
        kw.update(type=type(items[0]), choices=items)
    elif origin in (tuple, list):  # tuple[int, int, int]: exactly 3 values; list[str], tuple[int, ...]: 1 or more
        fixed = origin is tuple and Ellipsis not in items
        kw.update(type=items[0], nargs=len(items) if fixed else "+")
    elif origin is dict:  # model_kwargs: KEY=VALUE items, repeatable, merged in train_config
        kw.update(kwargs_flag((help_text or "arguments of the model's constructor").replace("%", "%%")))
    elif origin in (int, float, str):
        kw["type"] = origin
    else:
        raise TypeError(f"TrainConfig.{f.name}: no command-line form for the annotation {annotation!r}")
    if "metavar" in f.metadata and "metavar" not in kw:
        kw["metavar"] = f.metadata["metavar"]
    if "choices" in f.metadata:
        kw["choices"] = f.metadata["choices"]
    if "action" in f.metadata:  # "extend": a repeated flag adds to the list (--log tensorboard --log mlflow)
        kw["action"] = f.metadata["action"]
    return "--" + f.name.replace("_", "-"), kw


def add_log_flags(p: argparse.ArgumentParser) -> None:
    """``--log`` and ``--log-every``, as ``cnnzoo train`` has them, for the commands that train runs
    of their own (league, experiment, compress)."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("log", "log_every"):
            flag, kw = config_flag(f, hints[f.name])
            p.add_argument(flag, **kw)


def add_config_flags(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    group = p.add_argument_group("training settings (TrainConfig; with --recipe, the recipe's values are the defaults)")
    for f in dataclasses.fields(TrainConfig):
        flag, kw = config_flag(f, hints[f.name])
        group.add_argument(flag, **kw)


def _from_flag(value: Any, annotation: Any) -> Any:
    """What argparse collected, as the field's type: nargs lists to tuples, KEY=VALUE dicts merged."""
    origin = typing.get_origin(_unwrap_optional(annotation))
    if origin is tuple:
        return tuple(value)
    return merge_kwargs(value) if origin is dict else value


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the flags ask for: the recipe's settings (if any), then the --config file's,
    then every flag given."""
    hints = typing.get_type_hints(TrainConfig)
    given = {f.name: _from_flag(getattr(args, f.name), hints[f.name]) for f in dataclasses.fields(TrainConfig)
             if f.name != "recipe" and getattr(args, f.name) is not None}
    if args.initial_checkpoint and args.model is None:  # the checkpoint's network, as it was built
        from cnnzoo.training.finetune import checkpoint_model

        given["model"], kwargs = checkpoint_model(args.initial_checkpoint)
        given.setdefault("model_kwargs", kwargs)
    elif args.weights and args.model is None:
        from cnnzoo.models import hf_hub

        if hf_hub.is_hub_name(args.weights):  # the repository's network
            given["model"] = hf_hub.open_repo(args.weights).architecture
    if args.recipe or args.config:
        return TrainConfig.from_recipe(args.recipe, config=args.config, **given)
    return TrainConfig(**given)


def cmd_train(args: argparse.Namespace) -> Any:
    from cnnzoo.training.loop import resume_training, train

    start = time.perf_counter()
    if args.resume:
        summary = resume_training(args.resume, epochs=args.epochs, progress=not args.no_progress)
    else:
        summary = train(train_config(args), progress=not args.no_progress)
    summary["wall_seconds"] = round(time.perf_counter() - start, 2)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return None
    print(f"{summary['model']} on {summary['dataset']}: test top-1 {summary['test_top1']:.4f} "
          f"top-5 {summary['test_top5']:.4f} | train time {summary['train_seconds']:.1f} s, wall time "
          f"{summary['wall_seconds']:.1f} s | run {summary['run_dir']}")
    return summary


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("train", help="train a model (defaults: LeNet-5 on Fashion-MNIST)",
                       description="Train a registered model; every TrainConfig setting has a flag.")
    add_config_flags(s)
    s.add_argument("--config", metavar="FILE",
                   help="a TOML file of TrainConfig values, as the recipe files are (cnnzoo/training/recipes/*.toml), on top "
                        "of --recipe's; flags given here win over both")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (only --epochs may change)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json(s)
    s.set_defaults(func=cmd_train)
