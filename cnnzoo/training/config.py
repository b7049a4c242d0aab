"""Every setting of a training run in one dataclass, ``TrainConfig``: its defaults are the default
recipe's (``recipes/default.toml``), each field with its unit and the flag that sets it; one
``validate`` says which options conflict. Also what makes two runs the same experiment, and the
command line that reproduces a run."""
from __future__ import annotations

import ast
import json
import shlex
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from cnnzoo.data.stream import AUTO_AUGMENTS, LOADERS
from cnnzoo.training.recipes import RECIPE_DIR, load_recipe, read_toml, recipe_names, recipe_path


def _opt(default: Any, help: str, **flag: Any) -> Any:
    """A TrainConfig field with its help text (the `cnnzoo train` flag's), units included, and
    any other ``add_argument`` setting of its flag (metavar, choices)."""
    return field(default=default, metadata={"help": help, **flag})


# The default recipe's values (cnnzoo/training/recipes/default.toml, each with its unit and reason) are the
# defaults of the fields it names; the file is checked against the fields with the other recipes.
_DEFAULT = read_toml(RECIPE_DIR / "default.toml")


# What build_optimizer and build_scheduler know.
OPTIMIZERS = ("adamw", "sgd", "muon")
SCHEDULES = ("cosine", "linear", "step", "none")


# What --log writes to (cnnzoo.training.loggers).
LOGGERS = ("tensorboard", "mlflow")


@dataclass
class TrainConfig:
    # what to train on
    model: str = _opt(_DEFAULT["model"], "registered model name (`cnnzoo models` lists them)")
    dataset: str = _opt(_DEFAULT["dataset"], "fashion-mnist | mnist | imagefolder | synthetic | webdataset "
                                         "(--data-dir 'DIR/train-{000000..000009}.tar', written by `cnnzoo shards`)")
    data_dir: str | None = _opt(None, "folder of the dataset's files; None: the dataset's default location")
    input_size: tuple[int, int, int] | None = _opt(
        None, "training input (C, H, W) in pixels; None: the dataset's, fitted to the model", metavar=("C", "H", "W"))
    train_subset: int | None = _opt(None, "train on a seeded random subset of this many images; None: the whole split")
    test_subset: int | None = _opt(None, "evaluate on a seeded subset of this many images after each epoch; "
                                         "None: the whole test split")
    classes: list[str] | None = _opt(
        None, "train and test on these classes only, by index or name (e.g. 5,6,7 or Sandal Bag), relabelled "
              "0..k-1 in the order given; None: all", metavar="CLASS")
    train_per_class: int | None = _opt(None, "train on a seeded random subset of this many images of each class; "
                                             "None: all")
    synthetic_classes: int = _opt(10, "number of classes of --dataset synthetic")
    skip_bad_images: bool = _opt(False, "imagefolder: skip undecodable files (reported) instead of failing")
    val_split: float | None = _opt(None, "evaluate on this fraction of the training split, held out per class "
                                         "(seeded), instead of the test/val split; e.g. 0.1 for a folder without val/")
    # image files: decoded once into memory, or per batch by worker processes
    data_loader: str = _opt("auto", "memory: decode the whole dataset once | stream: decode each batch in --workers "
                                    "processes (RandomResizedCrop + flip) | auto: stream when the decoded images "
                                    "would pass --memory-budget-gb", choices=LOADERS)
    memory_budget_gb: float | None = _opt(None, "--data-loader auto: most GiB the decoded images may take in memory; "
                                                "None: a quarter of RAM")
    workers: int = _opt(2, "stream: decoding processes (0: in the training process)")
    auto_augment: str | None = _opt(None, "stream: randaugment | trivialaugment (torchvision.transforms.v2)",
                                    choices=AUTO_AUGMENTS)
    color_jitter: float = _opt(0.0, "stream: brightness, contrast and saturation jitter (fraction); 0: off")
    # starting point (a new run from trained weights: fresh optimiser and schedule, epoch 0)
    initial_checkpoint: str | None = _opt(
        None, "start a new run from the weights of a cnnzoo run folder or weights file (--model defaults to its "
              "network); the classifier starts fresh when the classes differ, the first conv is fitted to the "
              "input channels",
        metavar="RUN_DIR|FILE")
    freeze_backbone: bool = _opt(False, "train the classifier only (a linear probe): every other layer keeps its "
                                        "weights and its batch-norm statistics")
    backbone_lr_scale: float = _opt(1.0, "learning rate of every layer but the classifier, as a multiple of --lr")
    # optimisation (defaults: the LeNet-5 main job, >= 0.905 Fashion-MNIST top-1 in < 60 s on 2 cores)
    epochs: int = _opt(_DEFAULT["epochs"], "passes over the training set (epochs)")
    batch_size: int = _opt(_DEFAULT["batch_size"], "images per optimisation step (global, over all ranks)")
    lr: float = _opt(_DEFAULT["lr"], "peak learning rate, reached after the warm-up")
    opt: str = _opt(_DEFAULT["opt"], "optimiser: adamw | sgd (Nesterov) | muon (Muon on convolution filters, Nesterov SGD "
                             "at --lr on the rest)", choices=OPTIMIZERS)
    momentum: float = _opt(_DEFAULT["momentum"], "SGD momentum (sgd, and muon's SGD part)")
    muon_lr: float = _opt(0.08, "muon: peak learning rate of the convolution filters; each step moves a filter "
                                "bank by about this fraction of its norm")
    weight_decay: float = _opt(_DEFAULT["weight_decay"], "weight decay (AdamW: decoupled, SGD: L2) on weights only, "
                                     "not on biases or norm layers")
    sched: str = _opt(_DEFAULT["sched"], "learning-rate schedule, stepped every batch: cosine | linear (to 0) | "
                                "step (x0.1 at half and three quarters of training) | none", choices=SCHEDULES)
    warmup_epochs: float = _opt(_DEFAULT["warmup_epochs"], "linear learning-rate warm-up from 0 (epochs, may be fractional)")
    label_smoothing: float = _opt(0.0, "cross-entropy label smoothing (fraction of the target spread over all classes)")
    lookahead: float = _opt(0.0, "every 5 steps, move a slow copy of the weights toward them and train on from it "
                                 "(Zhang et al. 2019), with a decay ramping as (step / last step)^3 up to this "
                                 "value (airbench: 0.77); the run ends on the slow copy; 0: off", metavar="DECAY")
    # augmentation, on whole uint8 batches
    crop_padding: int = _opt(0, "random translation of up to this many pixels (pad and crop); 0: off")
    flip: bool = _opt(False, "random horizontal flips")
    alternate_flip: bool = _opt(False, "with --flip: mirror each image in every other epoch, from a random first "
                                       "epoch per image, instead of at random each epoch: every image is seen both "
                                       "ways in any two epochs (Jordan 2024)")
    cutout: int = _opt(0, "black out a square of this side at a random place in each image (pixels); 0: off",
                       metavar="PIXELS")
    cutout_off_epochs: int = _opt(0, "train the last this many epochs without Cutout, on images like the test's "
                                     "(epochs); 0: Cutout throughout", metavar="EPOCHS")
    low_res: int = _opt(0, "progressive resizing (Howard 2018): train the first --low-res-epochs epochs on images "
                           "scaled down to this side (bilinear, antialiased), cheaper per step; 0: off",
                        metavar="PIXELS")
    low_res_epochs: int = _opt(0, "how many epochs, from the first, --low-res applies to", metavar="EPOCHS")
    tta_flip: bool = _opt(False, "evaluate on each image and its mirror image, logits averaged")
    tta_shift: int = _opt(0, "also evaluate on each image moved 1 to this many pixels up, down, left and right "
                             "(zero fill), logits averaged over all views; 0: off", metavar="PIXELS")
    # bookkeeping
    eval_every: int = _opt(1, "evaluate the test set after every this many epochs and after the last (epochs); "
                              "0: after the last only", metavar="EPOCHS")
    eval_batch_size: int | None = _opt(None, "images per evaluation batch; None: 1024 for data held in memory, "
                                             "the training batch size for images decoded per batch")
    seed: int = _opt(0, "seed of weights, data order, subsets and augmentation")
    threads: int | None = _opt(None, "torch intra-op CPU threads; None: all cores")
    device: str = _opt("cpu", "cpu | cuda | cuda:N")
    amp: bool | Literal["auto"] = _opt(
        False, "bfloat16 autocast for forward and loss (no loss scaling needed); auto: where the device computes "
               "bf16 natively (CUDA GPUs with bf16, CPUs with AVX512-BF16 or AMX), fp32 elsewhere")
    channels_last: bool = _opt(True, "NHWC memory format (the fast recipes' steps run at 0.72-0.86x the speed in "
                                     "NCHW: BENCHMARKS.md)")
    # reliability and scale
    log: list[str] = field(default_factory=list, metadata={
        "help": "also log the run as it goes, beside metrics.csv: tensorboard (event files in RUN/tensorboard/) "
                "and/or mlflow (the server in MLFLOW_TRACKING_URI, else a store in RUN/mlruns/; needs the extra "
                "cnnzoo[mlflow]); both: --log tensorboard mlflow. Under torchrun, whose --log-dir would claim "
                "--log: torchrun ... -m cnnzoo -- train --log ...",
        "choices": LOGGERS, "action": "extend", "metavar": "LOGGER"})
    log_every: int = _opt(50, "with --log: record the epoch's running loss and top-1, the learning rate and images per "
                              "second every this many steps (steps); 0: at epoch ends only", metavar="STEPS")
    checkpoint_every: int = _opt(0, "also checkpoint every this many steps mid-epoch (steps); 0: at epoch ends only",
                                 metavar="STEPS")
    deterministic: bool = _opt(False, "bit-reproducible on the same CPU class (or GPU) and torch build: deterministic kernels, thread count fixed in config.json")
    sync_bn: bool = _opt(False, "multi-process CUDA runs: batch-norm statistics over all ranks")
    out: str | None = _opt(None, "run folder; None: runs/<model>-<dataset>-<time>", metavar="RUN_DIR")
    model_kwargs: dict[str, Any] = field(default_factory=dict,
                                         metadata={"help": "extra keyword arguments of the model's constructor"})
    pretrained: bool = _opt(False, "start from the model's default published weights (`cnnzoo weights` lists them); "
                                   "the classifier is replaced for the dataset's classes")
    weights: str | None = _opt(None, "start from published weights by tag (e.g. tv2_in1k), a torchvision, timm or "
                                     "cnnzoo weights file, or a Hugging Face Hub repository in timm's layout "
                                     "(hf-hub:OWNER/NAME); implies --pretrained", metavar="TAG|FILE|hf-hub:REPO")
    recipe: str | None = _opt(None, f"start from a named set of settings ({', '.join(recipe_names())}: "
                                    f"cnnzoo/training/recipes/NAME.toml) or a recipe file; other flags override it",
                              metavar="NAME|FILE")

    @classmethod
    def from_recipe(cls, name: str | None, *, config: str | None = None, **overrides: Any) -> TrainConfig:
        """The settings of the recipe ``name`` (``RECIPES``, or a recipe file), then those of the
        file ``config`` on top, then ``overrides``."""
        return cls(**{**recipe_settings(name, config), **overrides, "recipe": name})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if cfg.input_size is not None:
            cfg.input_size = tuple(cfg.input_size)
        return cfg

    def validate(self) -> None:
        """Refuse settings that cannot work whatever the data: a value out of range, or options that
        conflict: --initial-checkpoint with --pretrained / --weights (each brings weights),
        --alternate-flip without --flip, --low-res without --low-res-epochs or the reverse (or more
        of them than --epochs), --backbone-lr-scale with --freeze-backbone, --val-split with
        --dataset webdataset. What needs the data or the machine is checked where they are known:
        --low-res against the model's smallest input and the training input (check_low_res);
        --auto-augment, --color-jitter, --alternate-flip and --cutout against the loader chosen
        (_data_loader); a streamed dataset without --data-dir (_stream_run_data); --device cuda and
        --sync-bn against this machine and process group (run_device)."""
        if self.initial_checkpoint and (self.pretrained or self.weights):
            raise ValueError("--initial-checkpoint brings its own weights: leave out --pretrained / --weights")
        counts = {"--tta-shift": self.tta_shift, "--crop-padding": self.crop_padding, "--cutout": self.cutout,
                  "--cutout-off-epochs": self.cutout_off_epochs, "--eval-every": self.eval_every,
                  "--low-res": self.low_res, "--low-res-epochs": self.low_res_epochs, "--log-every": self.log_every}
        if any(v < 0 for v in counts.values()):
            raise ValueError("; ".join(f"{flag} must be >= 0, got {v}" for flag, v in counts.items() if v < 0))
        if not 0 <= self.lookahead < 1:
            raise ValueError(f"--lookahead is a decay in [0, 1), got {self.lookahead}")
        if self.alternate_flip and not self.flip:
            raise ValueError("--alternate-flip chooses which images --flip mirrors: add --flip")
        if bool(self.low_res) != bool(self.low_res_epochs):
            raise ValueError(f"progressive resizing needs both --low-res (got {self.low_res}) and --low-res-epochs "
                             f"(got {self.low_res_epochs})")
        if self.low_res_epochs > self.epochs:
            raise ValueError(f"--low-res-epochs {self.low_res_epochs} is more than the run's --epochs {self.epochs}")
        if any(k not in LOGGERS for k in self.log):
            raise ValueError(f"--log must be among {', '.join(LOGGERS)}, got {' '.join(self.log)}")
        if self.opt not in OPTIMIZERS:
            raise ValueError(f"--opt must be one of {', '.join(OPTIMIZERS)}, got {self.opt!r}")
        if self.sched not in SCHEDULES:
            raise ValueError(f"--sched must be one of {', '.join(SCHEDULES)}, got {self.sched!r}")
        if self.backbone_lr_scale < 0:
            raise ValueError(f"--backbone-lr-scale must be >= 0, got {self.backbone_lr_scale}")
        if self.freeze_backbone and self.backbone_lr_scale != 1.0:
            raise ValueError("--backbone-lr-scale has no effect with --freeze-backbone (the backbone does not train)")
        if self.dataset == "webdataset" and self.val_split:
            raise ValueError("--val-split picks images at random; shards are read in sequence: write val/ shards "
                             "with `cnnzoo shards` from a folder with val/")


def recipe_settings(recipe: str | None = None, config: str | None = None) -> dict[str, Any]:
    """The TrainConfig values of ``--recipe NAME|FILE`` and ``--config FILE``: the recipe's, then
    the config file's on top (a file of the recipes' format). A config file that names its own
    ``base`` recipe stands for a recipe: given with --recipe too, it is an error."""
    hints = typing.get_type_hints(TrainConfig)
    values = dict(RECIPES[recipe]) if recipe in RECIPES else load_recipe(recipe, hints) if recipe else {}
    if config:
        if recipe and "base" in read_toml(recipe_path(config, Path.cwd())):
            raise ValueError(f"--config {config} names its own base recipe; give it alone, or leave out --recipe "
                             f"{recipe}")
        values.update(load_recipe(config, hints, relative_to=Path.cwd()))
    return values


# The fields that change only a run's speed or its bookkeeping, each with the reason. Two runs that
# differ in these alone are the same experiment: a league, an experiment or a degradation study can
# be continued with other ones, on another machine. Every other field counts, a new one included.
NOT_THE_EXPERIMENT: dict[str, str] = {
    "threads": "CPU threads: speed (and float rounding), whatever the machine has",
    "device": "where the arithmetic runs, not which",
    "workers": "decoding processes of streamed images: speed",
    "out": "the run folder",
    "amp": "bf16 autocast or fp32: speed and rounding; 'auto' resolves on each machine",
    "channels_last": "memory layout of the activations: speed and rounding",
    "eval_batch_size": "images per evaluation batch: speed and memory",
    "eval_every": "which epochs are also scored on the way: the weights and the final score are the same",
    "checkpoint_every": "how often a resume point is written mid-epoch",
    "deterministic": "repeatable kernels and fixed threads: the same arithmetic, its rounding made repeatable",
    "recipe": "a recipe's name: its values are compared in the fields it sets",
    "log": "where the run is also logged as it goes (TensorBoard, MLflow)",
    "log_every": "how often the running numbers are logged",
}


def experiment_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings that make ``cfg`` the experiment it is: every field of its class but
    NOT_THE_EXPERIMENT, as requested (None stays None, not the value a machine resolves it to),
    in JSON's types (tuples as lists), as config.json records them under "experiment"."""
    return {f.name: json.loads(json.dumps(getattr(cfg, f.name))) for f in fields(cfg)
            if f.name not in NOT_THE_EXPERIMENT}


def _flag_values(value: Any) -> list[str]:
    """The command-line words of one TrainConfig value (after its flag)."""
    if isinstance(value, (tuple, list)):
        return [str(v) for v in value]
    if isinstance(value, dict):  # --model-kwargs: Python literals, as cli.common.parse_kwargs reads them
        return [",".join(f"{k}={v if _reads_back_as_word(v) else repr(v)}" for k, v in value.items())]
    return [repr(value) if isinstance(value, float) else str(value)]


def _reads_back_as_word(value: Any) -> bool:
    """A string that --model-kwargs reads back as itself without quotes (unit=5x5, act=relu): one
    that is no Python literal, so the parser keeps it as a bare word."""
    if not isinstance(value, str) or value != value.strip() or not value or any(c in value for c in ",='\""):
        return False
    try:
        ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return True
    return False


# Written even at their defaults: what a reader looks for first in a run's command.
_ALWAYS = ("model", "epochs", "seed", "out")


def train_command(cfg: TrainConfig) -> str:
    """``cnnzoo train ...`` with every setting of ``cfg`` that is not TrainConfig's default: run as
    written, it trains the same run (into ``cfg.out``)."""
    words = ["cnnzoo", "train"]
    default = TrainConfig()
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name == "recipe" or (value == getattr(default, f.name) and f.name not in _ALWAYS):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif value is None:
            raise ValueError(f"{f.name}=None differs from its default and has no command-line form")
        else:
            words += [flag, *_flag_values(value)]
    return shlex.join(words)


# Named sets of settings (``cnnzoo train --recipe NAME``): the files cnnzoo/training/recipes/NAME.toml.
RECIPES: dict[str, dict[str, Any]] = {name: load_recipe(name, typing.get_type_hints(TrainConfig))
                                      for name in recipe_names()}
