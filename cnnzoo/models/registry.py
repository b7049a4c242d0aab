"""The model registry: the only place that maps names to constructors and configurations.

``@register_model(...)`` records a constructor under its function name with a frozen
``PretrainedCfg`` per tag: published weights that need their own preprocessing get their own
configuration (``resnet50.tv_in1k``, ``resnet50.tv2_in1k``), the default tag first.
``create_model("name[.tag]")`` builds the model and gives it that configuration, fitted to the
model's ``num_classes`` and ``in_chans``, as the dict ``model.pretrained_cfg`` (timm's convention,
aliased as ``model.default_cfg``); ``timm.data.resolve_data_config(model=m)`` reads it.

Imports run one way: model modules import this module and register themselves when the ``cnnzoo``
package imports them, so the registry is full after any ``cnnzoo`` import and imports no model.
Weight files are read and converted in ``cnnzoo.models.weights``.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import fnmatch
import functools
import inspect
import textwrap
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    pass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
# torchvision's published ImageNet weights (their weight enums' transforms): IMAGENET1K_V1 resizes
# to 256 and crops 224 (crop_pct 0.875, the default); IMAGENET1K_V2, trained with a newer recipe,
# resizes to 232 (224 / 0.965).
TV_TAGS: dict[str, dict[str, Any]] = {"tv_in1k": {}}
TV2_TAGS: dict[str, dict[str, Any]] = {"tv_in1k": {}, "tv2_in1k": {"crop_pct": 0.965}}

_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}
_CFGS: dict[str, dict[str, PretrainedCfg]] = {}  # name -> {tag: cfg}, the default tag first


@dataclass(frozen=True)
class PretrainedCfg:
    """What is known of a registered model before it is built, for one set of weights (``tag``).

    ``reference`` names the implementation the model is verified against (``"torchvision:NAME"``
    or ``"timm:NAME"``); ``verified_by``, for a model without one, names what else it is checked
    against and the test that checks it (``"paper Table 1: test_vgg.py::test_cifar_layer_table"``,
    a test under tests/models/); ``verified_against`` gives the label. ``min_input_size`` is the smallest input
    the network accepts; ``fixed_input_size`` marks networks whose classifier needs exactly
    ``input_size``; ``small_variant`` names the registered variant for 28x28 / 32x32 images.
    The preprocessing fields are timm's: evaluation resizes the shorter side to
    ``input_size / crop_pct`` with ``interpolation`` and crops the centre (``crop_mode``);
    ``test_input_size`` / ``test_crop_pct`` are a larger evaluation size some weights score better at.
    ``pool_size`` is the spatial size of ``forward_features``' output at ``input_size`` (``None``:
    the features are not a map); ``first_conv`` and ``classifier`` are module paths.
    """

    architecture: str
    family: str
    paper: str
    year: int
    tag: str = ""
    input_size: tuple[int, int, int] = (3, 224, 224)
    min_input_size: tuple[int, int, int] = (3, 224, 224)
    fixed_input_size: bool = False
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    test_input_size: tuple[int, int, int] | None = None
    test_crop_pct: float | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    num_classes: int = 1000
    pool_size: tuple[int, int] | None = None
    first_conv: str = "conv1"
    classifier: str = "fc"
    reference: str | None = None
    verified_by: str | None = None
    small_variant: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not len(self.mean) == len(self.std) == self.input_size[0]:
            problems.append(f"mean {self.mean} and std {self.std} need one value per input channel "
                            f"({self.input_size[0]})")
        if any(m > s for m, s in zip(self.min_input_size, self.input_size)):
            problems.append(f"min_input_size {self.min_input_size} exceeds input_size {self.input_size}")
        if not 0 < self.crop_pct <= 1:
            problems.append(f"crop_pct must lie in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if problems:
            raise ValueError(f"model {self.name}: " + "; ".join(problems))

    @property
    def verified_against(self) -> str:
        """The reference implementation, else what ``verified_by`` names; ``-`` where nothing outside
        this project checks the network (the networks designed or scaled here)."""
        return self.reference or self.verified_by or "-"

    @property
    def name(self) -> str:
        """``architecture.tag``, or the architecture alone for an untagged configuration."""
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture


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
    crop_pct: float | None = None,
    interpolation: str = "bilinear",
    pool_size: tuple[int, int] | None = None,
    reference: str | None = None,
    verified_by: str | None = None,
    small_variant: str | None = None,
    num_classes: int | None = None,
    tags: dict[str, dict[str, Any]] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model constructor under its function name (see ``PretrainedCfg`` for the fields).

    ``min_input_size`` defaults to ``input_size``. ``num_classes=None`` means the paper's dataset:
    1000 ImageNet classes, or 10 (CIFAR-10) for networks configured for inputs of 32x32 or less;
    ``crop_pct=None`` means 0.875 (torchvision's resize to 256, crop 224) for those, 1.0 (no crop)
    for the small ones. ``tags`` maps each tag of published weights to the fields its preprocessing
    changes, the default tag first; without it the model has one untagged configuration.
    The constructor's return annotation names its model class, which gives ``first_conv`` and
    ``classifier``.
    """
    small = max(input_size[1:]) <= 32

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _ENTRYPOINTS:
            raise ValueError(f"model {name!r} is registered twice")
        cls = _model_class(fn)
        base = PretrainedCfg(
            architecture=name, family=family, paper=paper, year=year,
            input_size=tuple(input_size), min_input_size=tuple(min_input_size or input_size),
            fixed_input_size=fixed_input_size, interpolation=interpolation,
            crop_pct=(1.0 if small else 0.875) if crop_pct is None else crop_pct,
            **channel_stats(mean, std, input_size[0]), num_classes=num_classes or (10 if small else 1000),
            pool_size=pool_size, first_conv=cls.first_conv, classifier=cls.classifier_name,
            reference=reference, verified_by=verified_by, small_variant=small_variant,
        )
        _CFGS[name] = {tag: _tagged(base, tag, changes) for tag, changes in (tags or {"": {}}).items()}
        _ENTRYPOINTS[name] = fn
        return fn

    return decorate


def _model_class(fn: Callable[..., nn.Module]) -> type:
    cls = typing.get_type_hints(fn).get("return")
    if not (isinstance(cls, type) and hasattr(cls, "first_conv") and hasattr(cls, "classifier_name")):
        raise TypeError(f"model {fn.__name__!r}: annotate the constructor's return type with its model "
                        f"class (one with first_conv and classifier_name), got {cls!r}")
    return cls


def _tagged(base: PretrainedCfg, tag: str, changes: dict[str, Any]) -> PretrainedCfg:
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ValueError(f"model {base.architecture}, tag {tag!r}: {unknown} are not configuration fields")
    if "." in tag:
        raise ValueError(f"model {base.architecture}: tag {tag!r} may not contain '.'")
    return dataclasses.replace(base, tag=tag, **changes)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch pattern (``"resnet*"``, ``"*_cifar"``), sorted."""
    return sorted(n for n in _ENTRYPOINTS if fnmatch.fnmatchcase(n, pattern))


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The registered constructor of ``name`` (or ``name.tag``), as timm's ``model_entrypoint``."""
    return _ENTRYPOINTS[get_pretrained_cfg(name).architecture]


def list_tags(name: str) -> list[str]:
    """The tags of a registered model's configurations, the default first (``[""]``: untagged)."""
    return list(_cfgs_of(name))


def _cfgs_of(architecture: str) -> dict[str, PretrainedCfg]:
    if architecture not in _CFGS:
        raise unknown_name_error("model", architecture, list(_CFGS))
    return _CFGS[architecture]


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The registered configuration of ``name`` or ``name.tag`` (no tag: the default one)."""
    architecture, _, tag = name.partition(".")
    cfgs = _cfgs_of(architecture)
    if not tag:
        return next(iter(cfgs.values()))
    if tag not in cfgs:
        known = ", ".join(t for t in cfgs if t) or "none"
        raise ValueError(f"model {architecture} has no tag {tag!r} (its tags: {known})")
    return cfgs[tag]


def get_model_cfg(name: str) -> dict[str, Any]:
    """The registered configuration of ``name`` (or ``name.tag``) as a new dict."""
    return dataclasses.asdict(get_pretrained_cfg(name))


def unknown_name_error(kind: str, name: str, choices: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}.{hint} ({len(choices)} known; `cnnzoo models` lists them)")


def _source_value(node: ast.expr, fn: Callable[..., Any]) -> Any:
    """The value of a literal or of a module-level name in ``fn``'s source; KeyError otherwise."""
    if isinstance(node, ast.Name):
        return fn.__globals__[node.id]
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise KeyError(ast.dump(node)) from None


def _fixed_arguments(fn: Callable[..., Any]) -> tuple[set[str], dict[str, Any]]:
    """Keywords ``fn`` passes its model class itself (``Cls(width_mult=0.5, **kwargs)``), and the
    defaults it changes with ``kwargs.setdefault``; read from its source, following helpers of the
    same module that it forwards ``**kwargs`` to."""
    fixed: set[str] = set()
    defaults: dict[str, Any] = {}
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(fn)))):
        if not isinstance(node, ast.Call):
            continue
        fixed.update(k.arg for k in node.keywords if k.arg is not None)
        callee = node.func
        if isinstance(callee, ast.Attribute) and callee.attr == "setdefault" and len(node.args) == 2:
            with contextlib.suppress(KeyError):  # a computed default: the class's stands in the listing
                defaults[_source_value(node.args[0], fn)] = _source_value(node.args[1], fn)
        helper = fn.__globals__.get(callee.id) if isinstance(callee, ast.Name) else None
        if inspect.isfunction(helper) and helper.__module__ == fn.__module__:
            inner_fixed, inner_defaults = _fixed_arguments(helper)
            fixed |= inner_fixed
            defaults = {**inner_defaults, **defaults}
    return fixed - defaults.keys(), defaults


@functools.cache
def _model_signature(name: str) -> tuple[dict[str, Any], bool]:
    """(the keyword arguments the model takes, with defaults; whether it takes any other too)."""
    fn = _ENTRYPOINTS[get_pretrained_cfg(name).architecture]
    sig = inspect.signature(fn, eval_str=True)
    params = {k: p for k, p in sig.parameters.items() if p.kind is not p.VAR_KEYWORD}
    if len(params) < len(sig.parameters):  # **kwargs: the usual `def name(**kwargs) -> Cls: return Cls(...)`
        if sig.return_annotation is sig.empty or not inspect.isclass(sig.return_annotation):
            return {}, True  # forwarded where we cannot see: the constructor itself will judge them
        params.update(inspect.signature(sig.return_annotation).parameters)
    try:
        fixed, defaults = _fixed_arguments(fn)
    except (OSError, TypeError):  # no source (a frozen install): only the signatures can tell
        fixed, defaults = set(), {}
    accepted = {k: defaults.get(k, p.default) for k, p in params.items()
                if p.default is not p.empty and p.kind not in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL, p.VAR_KEYWORD)
                and k not in fixed and k not in ("num_classes", "in_chans")}
    return accepted, any(p.kind is p.VAR_KEYWORD for p in params.values())


def model_arguments(name: str) -> dict[str, Any]:
    """The keyword arguments ``create_model(name, ...)`` passes on to the model, with their defaults:
    those of the model class its registered function returns, less the ones that function fixes."""
    return dict(_model_signature(name)[0])


def check_model_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """A ValueError naming the model, the keys it does not take and the ones it does."""
    accepted, takes_any = _model_signature(name)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown and not takes_any:
        keys = ", ".join(repr(k) for k in unknown)
        raise ValueError(f"{name} takes no argument {keys}; it accepts: {', '.join(accepted) or 'none'}")


def model_kwargs_for(names: list[str], kwargs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model, the entries of ``kwargs`` it accepts; a key that none of ``names`` takes is an error."""
    takes = {name: _model_signature(name) for name in names}
    taken = {name: {k: v for k, v in kwargs.items() if k in accepted or takes_any}
             for name, (accepted, takes_any) in takes.items()}
    unused = [k for k in kwargs if not any(k in t for t in taken.values())]
    if unused:
        raise ValueError(f"no model of {', '.join(names)} takes {', '.join(map(repr, unused))}")
    return taken


def channel_stats(mean: tuple[float, ...], std: tuple[float, ...], in_chans: int) -> dict[str, tuple[float, ...]]:
    """``mean`` and ``std`` for a model of ``in_chans`` input channels (see the comment below)."""
    if in_chans != len(mean):
        # Channel statistics of the paper's RGB data do not apply; grey and other inputs get the
        # mean of the RGB statistics per channel.
        mean = (sum(mean) / len(mean),) * in_chans
        std = (sum(std) / len(std),) * in_chans
    return dict(mean=tuple(mean), std=tuple(std))


def channel_fields(cfg: PretrainedCfg, in_chans: int) -> dict[str, Any]:
    """The fields of ``cfg`` that change for a model built with ``in_chans`` input channels."""
    sizes = {k: getattr(cfg, k) for k in ("input_size", "min_input_size", "test_input_size")}
    sizes = {k: None if v is None else (in_chans, *v[1:]) for k, v in sizes.items()}
    return {**sizes, **channel_stats(cfg.mean, cfg.std, in_chans)}


