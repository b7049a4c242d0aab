"""The model registry: the only place that maps names to constructors.

``@register_model(...)`` records a constructor with its default configuration (input size,
normalisation, paper, year, reference implementation). ``create_model`` builds a model by name,
checks its arguments, attaches ``default_cfg`` and optionally loads a weight file in cnnzoo's own
key layout or in torchvision's or timm's (detected from the keys), adapting the first convolution
to ``in_chans`` and the classifier to ``num_classes``.
"""
from __future__ import annotations

import difflib
import fnmatch
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

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
    features_only: bool = False,
    out_indices: int | list[int] | tuple[int, ...] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    ``num_classes`` and ``in_chans`` default to the model's own configuration (1000 and 3 for the
    ImageNet networks); ``num_classes=0`` leaves out the classifier (the model returns pre-logits
    features).
    ``pretrained`` is a path to a weights file (.safetensors, or .pth/.pt read with
    ``weights_only=True``) in cnnzoo's, torchvision's or timm's key layout.
    Extra keyword arguments go to the model's constructor (e.g. ``aux_logits=True``, and timm's
    ``global_pool``, ``drop_rate``, ``drop_path_rate``).
    ``features_only=True`` returns a ``cnnzoo.features.FeatureExtractor`` whose forward gives the
    feature maps of the stages ``out_indices`` (default: all; see ``ZooModel.forward_intermediates``).
    """
    _ensure_models_imported()
    if name not in _ENTRYPOINTS:
        raise unknown_name_error("model", name, list(_ENTRYPOINTS))
    cfg = dict(_CFGS[name])
    num_classes = cfg["num_classes"] if num_classes is None else num_classes
    in_chans = cfg["input_size"][0] if in_chans is None else in_chans
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
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
    # timm's feature extraction: the model cut after the chosen stages, returning their maps.
    if features_only:
        from cnnzoo.features import FeatureExtractor

        return FeatureExtractor(model, out_indices)
    if out_indices is not None:
        raise ValueError("out_indices chooses the stages of a features_only model; pass features_only=True")
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


# --------------------------------------------------------------------------------------------------
# Weight files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file without unpickling arbitrary objects.

    .safetensors files are read with safetensors; anything else goes through
    ``torch.load(weights_only=True)``, which refuses pickles that would run code.
    Wrapped checkpoints (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped.
    """
    path = Path(path)
    if path.is_dir():
        for candidate in ("best.safetensors", "last.safetensors", "model.safetensors"):
            if (path / candidate).is_file():
                path = path / candidate
                break
        else:
            raise FileNotFoundError(f"{path} is a folder without best/last/model.safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError...
        raise ValueError(
            f"{path}: refused or unreadable as a weights-only torch file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). cnnzoo never unpickles code."
        ) from exc
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state_dict), got {type(obj).__name__}")
    # DataParallel / DistributedDataParallel prefixes.
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _apply_key_map(state: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def convert_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """Detect the key layout of ``state`` and rename its keys to ``model``'s.

    Each model class lists the layouts it can read in ``KEY_MAPS`` ({layout: [(regex, repl)]});
    cnnzoo's own layout is the identity. The layout whose renamed keys match the model's best wins.
    """
    target = set(model.state_dict().keys())
    layouts: dict[str, list[tuple[str, str]]] = {"cnnzoo": []}
    layouts.update(getattr(model, "KEY_MAPS", {}))
    best: tuple[int, str, dict[str, torch.Tensor]] | None = None
    for layout, rules in layouts.items():
        renamed = _apply_key_map(state, rules)
        mismatch = len(target ^ set(renamed))
        if best is None or mismatch < best[0]:
            best = (mismatch, layout, renamed)
        if mismatch == 0:
            break
    assert best is not None
    return best[1], best[2]


def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a first-layer filter bank of shape (out, c, kh, kw) to ``in_chans`` input channels.

    One channel: the sum over the file's channels (a grey image seen as R=G=B gives the same
    response). N channels: the file's channels repeated and scaled by c/N, so an input that repeats
    the original channels gives the original response.
    """
    file_chans = weight.shape[1]
    if in_chans == file_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // file_chans)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (file_chans / in_chans)


def load_pretrained(model: nn.Module, path: str | Path, *, strict_head: bool = False) -> str:
    """Load a weights file into ``model``; returns the detected layout.

    A classifier of another size is left freshly initialised (with a warning), unless
    ``strict_head``; a first convolution with another channel count is adapted.
    Any other mismatch raises a ValueError that names the keys.
    """
    state = read_state_dict(path)
    layout, state = convert_state_dict(model, state)
    own = model.state_dict()
    first = f"{model.first_conv}.weight"
    if first in state and first in own and own[first].dim() == 4 and state[first].shape[1] != own[first].shape[1]:
        state[first] = adapt_first_conv(state[first], own[first].shape[1])

    # Auxiliary classifiers (GoogLeNet, Inception v3) exist only when the model is built with them:
    # a file's aux weights are skipped for a model without, and follow the main head otherwise.
    aux_prefixes = tuple(f"{name}." for name in getattr(model, "aux_heads", ()))
    if aux_prefixes:
        state = {k: v for k, v in state.items() if k in own or not k.startswith(aux_prefixes)}
    head_prefix = f"{model.classifier_name}."
    head_keys = [k for k in own if k.startswith(head_prefix)]
    if not head_keys:  # built with num_classes=0: the file's classifier has nothing to fill
        state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    head_mismatch = [k for k in head_keys if k in state and state[k].shape != own[k].shape]
    if head_mismatch:
        if strict_head:
            k = head_mismatch[0]
            raise ValueError(
                f"{path}: classifier {k} has shape {tuple(state[k].shape)}, the model expects "
                f"{tuple(own[k].shape)} (trained for another number of classes?)"
            )
        warnings.warn(
            f"{path}: classifier has {state[head_mismatch[0]].shape[0]} outputs, the model "
            f"{own[head_mismatch[0]].shape[0]}; the classifier '{model.classifier_name}' is left "
            "freshly initialised",
            stacklevel=2,
        )
        head_keys += [k for k in own if k.startswith(aux_prefixes) and k in state and state[k].shape != own[k].shape]
        for k in head_keys:
            state.pop(k, None)

    missing = sorted(set(own) - set(state) - set(head_keys if head_mismatch else []))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        arch = model.default_cfg.get("architecture", type(model).__name__) if hasattr(model, "default_cfg") else type(model).__name__
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:4])})")
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(
                f"{len(wrong_shape)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} vs "
                f"model {tuple(own[k].shape)})"
            )
        raise ValueError(
            f"{path} does not fit model {arch} (closest key layout: {layout}): " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=not head_mismatch)
    return layout
