"""The model registry: the only place that maps names to constructors.

``@register_model(...)`` records a constructor with its default configuration (input size,
normalisation, paper, year, reference implementation). ``create_model`` builds a model by name,
checks its arguments, attaches ``default_cfg`` and optionally loads a weight file
(``cnnzoo.weights``).
"""
from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from cnnzoo.weights import load_pretrained

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}
_CFGS: dict[str, dict[str, Any]] = {}


def register_model(
    *,
    family: str,
    paper: str,
    year: int,
    input_size: tuple[int, int, int] = (3, 224, 224),
    min_input_size: tuple[int, int, int] | None = None,
    fixed_input_size: bool = False,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    reference: str | None = None,
    small_variant: str | None = None,
    num_classes: int | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model constructor under its function name.

    ``reference`` names the implementation the model is verified against, as ``"torchvision:NAME"``
    or ``"timm:NAME"``; ``None`` means it is verified against its paper's layer table.
    ``min_input_size`` is the smallest input the network accepts (default: ``input_size``);
    ``fixed_input_size`` marks networks whose classifier needs exactly ``input_size``.
    ``small_variant`` names the registered variant that suits 28x28 / 32x32 images.
    ``num_classes`` and ``input_size[0]`` are what ``create_model`` builds when not told otherwise;
    ``num_classes=None`` means the paper's dataset: 1000 ImageNet classes, or 10 (CIFAR-10) for
    networks configured for inputs of 32x32 or less.
    """

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _ENTRYPOINTS:
            raise ValueError(f"model {name!r} is registered twice")
        _ENTRYPOINTS[name] = fn
        _CFGS[name] = dict(
            architecture=name,
            family=family,
            paper=paper,
            year=year,
            input_size=tuple(input_size),
            min_input_size=tuple(min_input_size or input_size),
            fixed_input_size=fixed_input_size,
            mean=tuple(mean),
            std=tuple(std),
            reference=reference,
            small_variant=small_variant,
            num_classes=num_classes or (10 if max(input_size[1:]) <= 32 else 1000),
        )
        return fn

    return decorate


def _ensure_models_imported() -> None:
    # Importing the package registers every family; done lazily so registry has no import cycle.
    import cnnzoo.models  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch pattern (``"resnet*"``, ``"*_cifar"``), sorted."""
    _ensure_models_imported()
    return sorted(n for n in _ENTRYPOINTS if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    _ensure_models_imported()
    return name in _ENTRYPOINTS


def get_model_cfg(name: str) -> dict[str, Any]:
    """The registered default configuration of ``name`` (a copy)."""
    _ensure_models_imported()
    if name not in _ENTRYPOINTS:
        raise unknown_name_error("model", name, list(_ENTRYPOINTS))
    return dict(_CFGS[name])


def unknown_name_error(kind: str, name: str, choices: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}.{hint} ({len(choices)} known; `cnnzoo models` lists them)")


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    pretrained: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    ``num_classes`` and ``in_chans`` default to the model's own configuration (1000 and 3 for the
    ImageNet networks).
    ``pretrained`` is a path to a weights file (.safetensors, or .pth/.pt read with
    ``weights_only=True``) in cnnzoo's, torchvision's or timm's key layout.
    Extra keyword arguments go to the model's constructor (e.g. ``aux_logits=True``).
    """
    _ensure_models_imported()
    if name not in _ENTRYPOINTS:
        raise unknown_name_error("model", name, list(_ENTRYPOINTS))
    cfg = dict(_CFGS[name])
    num_classes = cfg["num_classes"] if num_classes is None else num_classes
    in_chans = cfg["input_size"][0] if in_chans is None else in_chans
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be an integer >= 1, got {in_chans!r}")
    model = _ENTRYPOINTS[name](num_classes=num_classes, in_chans=in_chans, **kwargs)
    cfg["num_classes"] = num_classes
    cfg["in_chans"] = in_chans
    cfg["input_size"] = (in_chans, *cfg["input_size"][1:])
    cfg["min_input_size"] = (in_chans, *cfg["min_input_size"][1:])
    if in_chans != len(cfg["mean"]):
        # Channel statistics of the paper's RGB data do not apply; grey and other inputs get the
        # mean of the RGB statistics per channel.
        cfg["mean"] = (sum(cfg["mean"]) / len(cfg["mean"]),) * in_chans
        cfg["std"] = (sum(cfg["std"]) / len(cfg["std"]),) * in_chans
    cfg["first_conv"] = model.first_conv
    cfg["classifier"] = model.classifier_name
    cfg["kwargs"] = dict(kwargs)
    model.default_cfg = cfg
    if pretrained:
        load_pretrained(model, pretrained)
    return model


def model_table(pattern: str = "*", macs: bool = True) -> list[dict[str, Any]]:
    """One row per registered model: name, family, year, params, GMACs at the default input size,
    default input size and what it is verified against (a reference implementation or its paper)."""
    rows = []
    for name in list_models(pattern):
        cfg = _CFGS[name]
        with torch.device("meta"):  # shapes and counts only: no memory, no initialisation cost
            model = create_model(name)
        gmacs = None
        if macs:
            from cnnzoo.analysis import count_macs

            gmacs = count_macs(model, cfg["input_size"]) / 1e9
        rows.append(dict(name=name, family=cfg["family"], year=cfg["year"],
                         params=sum(p.numel() for p in model.parameters()), gmacs=gmacs,
                         input_size=list(cfg["input_size"]), verified_against=cfg["reference"] or "paper",
                         paper=cfg["paper"]))
    return rows
