"""Named settings as TOML files shipped with the package, and the one loader that reads them.

- ``*.toml`` here: training recipes, sets of ``TrainConfig`` values (``cnnzoo train --recipe NAME``,
  the file's name less ``.toml``; ``--recipe FILE`` and ``--config FILE`` read a copy of one).
- ``league/*.toml``: the league's tiers, each a recipe name plus per-member overrides.
- ``compress/defaults.toml``: Deep Compression's per-model targets and retraining schedule.

A recipe file may start from another with ``base = "NAME"`` (or a file, relative to its own
folder) and list only what differs. Values are checked against the settings' annotations, so an
unknown key or a wrong type names the file, the key, and what was expected.
"""
from __future__ import annotations

import tomllib
import types
import typing
from pathlib import Path
from typing import Any

RECIPE_DIR = Path(__file__).parent


def recipe_names() -> list[str]:
    """The recipes shipped with the package (``--recipe NAME``)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a ValueError naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"recipe file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None


def recipe_path(source: str | Path, relative_to: Path = RECIPE_DIR) -> Path:
    """The file of a recipe given by name (shipped) or as a path (``.toml``)."""
    text = str(source)
    if text in recipe_names():
        return RECIPE_DIR / f"{text}.toml"
    if text.endswith(".toml") or "/" in text:
        path = Path(text)
        return path if path.is_absolute() or path.exists() else relative_to / path
    raise ValueError(f"unknown recipe {text!r}; known: {', '.join(recipe_names())} (or a .toml file)")


def load_recipe(source: str | Path, hints: dict[str, Any], *, relative_to: Path = RECIPE_DIR,
                _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The values of the recipe ``source`` (name or file), its ``base`` chain applied, each checked
    against ``hints`` (a dataclass's type hints): ``{field: value}``."""
    path = recipe_path(source, relative_to)
    if path.resolve() in _seen:
        raise ValueError(f"{path}: base recipes form a loop ({' -> '.join(map(str, _seen))})")
    raw = read_toml(path)
    base = raw.pop("base", None)
    values = check_values(raw, hints, path)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ValueError(f"{path}: base must be a recipe name or file (a string), got {base!r}")
    inherited = load_recipe(base, hints, relative_to=path.parent, _seen=(*_seen, path.resolve()))
    return {**inherited, **values}


def check_values(values: dict[str, Any], hints: dict[str, Any], source: str | Path) -> dict[str, Any]:
    """``values`` with each key known to ``hints`` and each value of its annotated type (TOML
    arrays become tuples where a tuple is expected, integers floats where a float is); else a
    ValueError naming ``source``, the key, what was expected and what was given."""
    out = {}
    for key, value in values.items():
        if key not in hints:
            raise ValueError(f"{source}: unknown key {key!r}; known: {', '.join(sorted(hints))}")
        ok, converted = _convert(value, hints[key])
        if not ok:
            raise ValueError(f"{source}: {key} must be {_describe(hints[key])}, got {value!r} "
                             f"({type(value).__name__})")
        out[key] = converted
    return out


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits ``hint``, the value as the field's type)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            ok, converted = _convert(value, arm)
            if ok:
                return True, converted
        return False, value
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:  # TOML writes 1 for 1.0
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        fixed = origin is tuple and Ellipsis not in args
        if fixed and len(value) != len(args):
            return False, value
        item_hints = args if fixed else [args[0] if args else Any] * len(value)
        items = [_convert(v, h) for v, h in zip(value, item_hints)]
        return all(ok for ok, _ in items), origin(v for _, v in items)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return False, value
        items = {k: _convert(v, args[1] if args else Any) for k, v in value.items()}
        return all(ok for ok, _ in items.values()), {k: v for k, (_, v) in items.items()}
    raise TypeError(f"no TOML form for the annotation {hint!r}")


def _describe(hint: Any) -> str:
    """An annotation as a reader names it: ``int | None`` -> ``int``, Literal["auto"] -> ``'auto'``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin is tuple and Ellipsis not in args:
        return f"an array of {len(args)} {_describe(args[0])}s"
    if origin in (tuple, list):
        return f"an array of {_describe(args[0]) if args else 'values'}s"
    if origin is dict or hint is dict:
        return f"a table of {_describe(args[1])}s" if args and args[1] is not Any else "a table"
    return getattr(hint, "__name__", str(hint))


def load_compress_defaults(schedule_hints: dict[str, Any]) -> tuple[dict, dict, dict]:
    """(per-model defaults, the generic model's, the retraining schedule) of Deep Compression from
    ``compress/defaults.toml``; schedule values are checked against ``schedule_hints``
    (CompressConfig's annotations), a model's own schedule against the keys of ``[schedule]``."""
    path = RECIPE_DIR / "compress" / "defaults.toml"
    raw = check_values(read_toml(path), {"schedule": dict, "generic": dict, "models": dict[str, dict]}, path)
    schedule = check_values(raw.get("schedule", {}), schedule_hints, f"{path} [schedule]")
    own = {k: schedule_hints[k] for k in schedule}
    table = {"sparsity": dict[str, float], "bits": dict[str, int], "schedule": dict}
    models = {}
    for name, values in raw.get("models", {}).items():
        models[name] = check_values(values, table, f"{path} [models.{name}]")
        if "schedule" in models[name]:
            models[name]["schedule"] = check_values(models[name]["schedule"], own, f"{path} [models.{name}.schedule]")
    generic = check_values(raw.get("generic", {}), table, f"{path} [generic]")
    return models, generic, schedule


def tier_names() -> list[str]:
    """The league's tiers (``cnnzoo league --tier NAME``): the files ``league/NAME.toml``."""
    return sorted(p.stem for p in (RECIPE_DIR / "league").glob("*.toml"))


def load_tier(name: str, config_hints: dict[str, Any]) -> dict[str, Any]:
    """A league tier from ``league/NAME.toml``: its recipe, budget, threads and device, and its
    members, each with its model_kwargs, amp and settings (TrainConfig fields, checked against
    ``config_hints``)."""
    path = RECIPE_DIR / "league" / f"{name}.toml"
    tier = check_values(read_toml(path), {"recipe": str, "budget_minutes": float, "threads": int | None,
                                          "device": str, "members": dict[str, dict]}, path)
    member_hints = {"model_kwargs": dict[str, Any], "amp": config_hints["amp"], "settings": dict}
    for model, member in tier.get("members", {}).items():
        where = f"{path} [members.{model}]"
        member.update(check_values(member, member_hints, where))
        if "settings" in member:
            member["settings"] = check_values(member["settings"], config_hints, f"{where} settings")
    return {"threads": None, **tier}
