"""What the zoo and model pages show: the model table and the layer tables, each computed once.

Everything here runs on the meta device (shapes and counts, no weights), so a VGG costs no memory;
the first call still traces the network, which is why results are cached per (model, input size).
"""
from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from cnnzoo.analysis import summary, summary_to_json
from cnnzoo.models.factory import create_model, model_table
from cnnzoo.models.registry import get_model_cfg, get_pretrained_cfg, list_models

# ?input=C,H,W is the client's to choose: bounded so that a request cannot ask for a huge trace.
MAX_CHANNELS = 16
MAX_SIDE = 2048

_TABLE_LOCK = threading.Lock()


class UnknownName(LookupError):
    """A model, checkpoint or sample the client named that does not exist (HTTP 404)."""

_TABLE: list[dict[str, Any]] | None = None


def zoo_table() -> list[dict[str, Any]]:
    """``registry.model_table()``, computed on the first call (about ten seconds on two cores)."""
    global _TABLE
    with _TABLE_LOCK:
        if _TABLE is None:
            _TABLE = model_table()
        return _TABLE


def check_model(name: str) -> str:
    """``name`` if it is a registered model, else a LookupError that says what exists."""
    if name not in set(list_models()):
        raise UnknownName(f"unknown model {name!r}; GET /api/models lists the {len(list_models())} models")
    return name


def parse_input(text: str | None, name: str) -> tuple[int, int, int]:
    """``"C,H,W"`` (from ``?input=``) as three bounded integers; None: the model's default size."""
    if text is None or text == "":
        return tuple(get_model_cfg(name)["input_size"])
    parts = text.split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) != 3:
        raise ValueError(f"input must be three integers C,H,W (e.g. 3,224,224), got {text!r}")
    c, h, w = size
    if not (1 <= c <= MAX_CHANNELS and 1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f"input {c},{h},{w} out of range: 1 <= C <= {MAX_CHANNELS}, 1 <= H, W <= {MAX_SIDE}")
    return size


@lru_cache(maxsize=256)
def model_summary(name: str, input_size: tuple[int, int, int]) -> dict[str, Any]:
    """``cnnzoo summary NAME --input-size C H W --json`` with the stage diagram's data added."""
    import torch

    with torch.device("meta"):
        model = create_model(name, in_chans=input_size[0])
    result = summary_to_json(summary(model, input_size))
    cfg = get_model_cfg(name)
    result["stages"] = stage_diagram(result["layers"], list(getattr(model, "feature_info", None) or []))
    result["info"] = dict(family=cfg["family"], year=cfg["year"], paper=cfg["paper"],
                          verified_against=get_pretrained_cfg(name).verified_against,
                          default_input_size=list(cfg["input_size"]))
    return result


def stage_diagram(layers: list[dict[str, Any]], feature_info: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The network's top-level parts in order, each with its blocks (the rows one level down) and,
    where it ends a ``feature_info`` stage, that stage's channels and reduction."""
    stage_of = {info["module"]: dict(index=i, num_chs=info["num_chs"], reduction=info["reduction"])
                for i, info in enumerate(feature_info)}
    parts: list[dict[str, Any]] = []
    for row in layers:
        if row["depth"] == 1:
            parts.append(dict(name=row["name"], type=row["type"], output_shape=row["output_shape"],
                              params=row["params"], macs=row["macs"], stage=stage_of.get(row["name"]), blocks=[]))
        elif row["depth"] == 2 and parts and row["name"].startswith(parts[-1]["name"] + "."):
            parts[-1]["blocks"].append(dict(name=row["name"], type=row["type"], output_shape=row["output_shape"],
                                            stage=stage_of.get(row["name"])))
    return parts


def warm() -> None:
    """Fill the caches the pages read first: the zoo table, and resnet50's layer table."""
    zoo_table()
    if "resnet50" in list_models():
        model_summary("resnet50", tuple(get_model_cfg("resnet50")["input_size"]))
