"""Starting a run from trained weights: the initial checkpoint, and which layers train.

``train --initial-checkpoint RUN_DIR|FILE`` is a new run (fresh optimiser and schedule, epoch 0)
whose weights come from one of our runs or weights files, read with ``cnnzoo.models.weights``: the first
convolution is fitted to the input channels, and the classifier starts fresh when the classes
differ from the checkpoint's. ``--freeze-backbone`` trains the classifier alone (a linear probe);
the trainer's ``build_optimizer`` gives the backbone its own learning rate (``--backbone-lr-scale``).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from cnnzoo.models import hf_hub
from cnnzoo.models.checkpoint import read_weights_meta, resolve_weights
from cnnzoo.models.hub import file_sha256
from cnnzoo.models.registry import channel_stats, get_model_cfg
from cnnzoo.models.weights import load_pretrained

D = TypeVar("D")


def published_normalization(data: D, model_name: str, weights: str | None = None) -> D:
    """``data`` (a RunData) normalised as ``model_name``'s published weights were trained (ImageNet's
    mean and std, or those of the hub repository ``weights`` names, fitted to the data's channels),
    so that fine-tuning feeds them what they know."""
    cfg = get_model_cfg(model_name)
    if hf_hub.is_hub_name(weights):
        cfg = {**cfg, **hf_hub.open_repo(weights).preprocessing()}
    return dataclasses.replace(data, **channel_stats(cfg["mean"], cfg["std"], data.input_size[0]))


def classifier_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the final classifier (``get_classifier()``); the rest is the backbone."""
    return list(model.get_classifier().parameters())


def freeze_backbone(model: nn.Module) -> None:
    """A linear probe: every parameter but the classifier's stops taking gradients."""
    head = {id(p) for p in classifier_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)


def backbone_eval(model: nn.Module) -> None:
    """Put every layer outside the classifier in eval mode (the model itself stays in training
    mode, for its auxiliary outputs): a frozen backbone is a fixed function, so its batch norms use
    and keep their running statistics and its dropout is off."""
    head = model.classifier_name
    for name, module in model.named_modules():
        if name and name != head and not name.startswith(head + ".") and not head.startswith(name + "."):
            module.eval()


def _weights_file(spec: str | Path) -> Path:
    try:
        return resolve_weights(spec)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"--initial-checkpoint: {exc}") from exc


def _cnnzoo_meta(file: Path) -> dict[str, Any]:
    """The rebuild information a cnnzoo weights file carries; {} for other files."""
    if file.suffix != ".safetensors":
        return {}
    try:
        return read_weights_meta(file)
    except ValueError:
        return {}


def checkpoint_model(spec: str | Path) -> tuple[str, dict[str, Any]]:
    """(model name, constructor arguments) recorded in a run folder or cnnzoo weights file."""
    file = _weights_file(spec)
    meta = _cnnzoo_meta(file)
    if "model" not in meta:
        raise ValueError(f"--initial-checkpoint {file}: no cnnzoo metadata says which model it holds; pass --model NAME")
    return meta["model"], dict(meta.get("kwargs") or {})


@dataclass
class InitialCheckpoint:
    file: Path              # the weights file (a run folder's best, else last, weights)
    sha256: str
    meta: dict[str, Any]    # its cnnzoo metadata ({} for a torchvision / timm file)

    def record(self) -> dict[str, Any]:
        """What config.json keeps of it."""
        return {"file": str(self.file.resolve()), "sha256": self.sha256, "model": self.meta.get("model"),
                "classes": self.meta.get("classes")}

    def fit_normalization(self, data: D) -> D:
        """``data`` (a RunData) normalised with the checkpoint's mean and std, so that a pixel
        reaches the network as the same value it was trained on; unchanged when the checkpoint
        has none for this many channels."""
        mean, std = self.meta.get("mean"), self.meta.get("std")
        if mean is None or std is None or len(mean) != data.input_size[0]:
            return data
        return dataclasses.replace(data, mean=tuple(mean), std=tuple(std))

    def load_into(self, model: nn.Module, classes: list[str]) -> None:
        """The checkpoint's weights into ``model``. The classifier keeps the model's fresh
        initialisation when the checkpoint was trained on other classes, even as many of them."""
        head = model.get_classifier()
        fresh = {k: v.clone() for k, v in head.state_dict().items()}
        load_pretrained(model, self.file)
        theirs = self.meta.get("classes")
        if theirs is not None and list(theirs) != list(classes) and len(theirs) == len(classes):
            warnings.warn(f"{self.file}: trained on classes {theirs}, this run's are {classes}; the classifier "
                          f"'{model.classifier_name}' is left freshly initialised", stacklevel=2)
            head.load_state_dict(fresh)


def read_initial_checkpoint(spec: str | Path, model_name: str) -> InitialCheckpoint:
    """The weights file of ``spec`` (a run folder or file), checked to hold ``model_name``'s
    architecture when its metadata says which (a file without is checked key by key on loading)."""
    file = _weights_file(spec)
    meta = _cnnzoo_meta(file)
    arch = get_model_cfg(model_name)["architecture"]
    theirs = meta.get("model")
    if theirs is not None and theirs != arch:
        raise ValueError(f"--initial-checkpoint {file} holds a {theirs}, but --model is {model_name}; "
                         f"leave out --model to train the checkpoint's network")
    return InitialCheckpoint(file, file_sha256(file), meta)
