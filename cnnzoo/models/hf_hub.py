"""Models on the Hugging Face Hub in timm's layout, both ways.

A repository holds ``model.safetensors`` (the state dict), ``config.json`` and a ``README.md`` model
card. ``config.json`` is timm's (``timm.models._hub.save_config_for_hf``): ``architecture``,
``num_classes``, ``num_features``, ``global_pool``, ``model_args`` (the constructor's arguments),
``label_names`` and ``pretrained_cfg`` (input size, mean, std, crop, interpolation, ...). cnnzoo adds
``cnnzoo``: the run's dataset, classes and image size, which ``cnnzoo eval`` needs to score it again.

``hf-hub:OWNER/NAME[@REVISION]`` (timm's syntax) names a repository. Its files are fetched with
``huggingface_hub.hf_hub_download`` into huggingface_hub's cache (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``)
from ``$HF_ENDPOINT`` (default https://huggingface.co) with the token of ``$HF_TOKEN`` or ``hf auth
login``; once cached they load without the network (``HF_HUB_OFFLINE=1``, or the hub unreachable).
A repository pushed by timm's ``push_to_hf_hub`` loads into the cnnzoo model of the same design
(``twin_architecture``). ``create_model`` and ``load_checkpoint`` build the models; uploads go
through ``upload_folder``.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.models import hub
from cnnzoo.models.registry import get_pretrained_cfg, list_models, unknown_name_error
from cnnzoo.models.weights import read_state_dict

HF_HUB_PREFIX = "hf-hub:"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# timm's order of preference for a repository's weights (timm/models/_hub.py, load_state_dict_from_hf).
WEIGHTS_FILES = (WEIGHTS_FILE, "pytorch_model.bin")
# timm names of designs cnnzoo registers under another name without a timm reference (their
# weights load through the model's KEY_MAPS; see mobilenet.py).
TIMM_TWINS = {"mobilenetv2_100": "mobilenet_v2"}
# The preprocessing fields of pretrained_cfg, as timm's resolve_data_config reads them.
PREPROCESSING = ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation", "test_input_size",
                 "test_crop_pct")
# What config.json's "cnnzoo" section keeps of a run's weights metadata (no local paths).
RUN_KEYS = ("model", "num_classes", "in_chans", "kwargs", "input_size", "mean", "std", "classes", "dataset",
            "data_size", "epoch", "test_top1")


def is_hub_name(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(HF_HUB_PREFIX)


def split_hub_name(name: str) -> tuple[str, str | None]:
    """``"hf-hub:owner/name@rev"`` -> ``("owner/name", "rev")`` (revision None: the main branch)."""
    repo_id, _, revision = name.removeprefix(HF_HUB_PREFIX).partition("@")
    if not repo_id or repo_id.count("/") > 1 or "@" in revision or repo_id.startswith("/") or repo_id.endswith("/"):
        raise ValueError(f"{name!r}: expected hf-hub:OWNER/NAME or hf-hub:OWNER/NAME@REVISION")
    return repo_id, revision or None


def twin_architecture(architecture: str, name: str) -> str:
    """The registered cnnzoo model a repository's ``architecture`` names: one of ours by its own
    name, or a timm model that one of ours reproduces (its ``reference``, or ``TIMM_TWINS``)."""
    registered = list_models()
    if architecture in registered:
        return architecture
    if architecture in TIMM_TWINS:
        return TIMM_TWINS[architecture]
    for model in registered:
        if get_pretrained_cfg(model).reference == f"timm:{architecture}":
            return model
    raise ValueError(f"{name} holds a {architecture!r} (its config.json), which cnnzoo has no twin of. "
                     f"{unknown_name_error('model', architecture, registered)}")


# ---------------------------------------------------------------------------------------------- downloads

def hub_download(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """A file of a repository through huggingface_hub's cache, its SHA-256 checked against the
    hub's; each way it can fail is an error naming the repository and what is wrong."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = f"{HF_HUB_PREFIX}{repo_id}" + (f"@{revision}" if revision else "")
    where = hub.hf_endpoint()
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub.hf_cache_dir(),
                                    endpoint=where))
    except RepositoryNotFoundError as exc:
        raise FileNotFoundError(f"{name}: no repository {repo_id} on {where} (a private one needs a token: "
                                f"HF_TOKEN or `hf auth login`)") from exc
    except RevisionNotFoundError as exc:
        raise FileNotFoundError(f"{name}: repository {repo_id} on {where} has no revision {revision!r}") from exc
    except RemoteEntryNotFoundError as exc:
        raise FileNotFoundError(f"{name}: repository {repo_id} has no file {filename}") from exc
    except LocalEntryNotFoundError as exc:
        raise OSError(f"{name}: {filename} is not in huggingface_hub's cache ({hub.hf_cache_dir()}) and {where} "
                      f"cannot be reached (offline?); fetch it once with the network") from exc
    except OSError as exc:  # the hub's other HTTP errors, and the network's
        raise OSError(f"{name}: could not download {filename} from {where} ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    hub.check_hub_blob(path, f"{name} {filename}")
    return path


@dataclass(frozen=True)
class HubRepo:
    """A repository's config.json, read; its weights are fetched by ``read_weights``."""

    name: str            # hf-hub:OWNER/NAME[@REVISION], as given
    repo_id: str
    revision: str | None
    config: dict[str, Any]
    architecture: str    # the cnnzoo model it holds

    def weights_path(self) -> Path:
        """The weights file in the cache: model.safetensors, else pytorch_model.bin (timm's order)."""
        for filename in WEIGHTS_FILES:
            with contextlib.suppress(FileNotFoundError):
                return hub_download(self.repo_id, filename, self.revision)
        raise FileNotFoundError(f"{self.name}: the repository has no weights file ({' or '.join(WEIGHTS_FILES)})")

    def read_weights(self) -> tuple[dict[str, torch.Tensor], Path]:
        """(state dict, its file in the cache)."""
        path = self.weights_path()
        try:
            return read_state_dict(path), path
        except ValueError as exc:
            raise ValueError(f"{self.name}: {path.name} is damaged or not a weights file ({exc}). Delete "
                             f"{hub.hf_cache_dir()}/models--{self.repo_id.replace('/', '--')} to fetch it "
                             f"again") from exc

    def model_args(self) -> tuple[int, int, dict[str, Any]]:
        """(num_classes, in_chans, other constructor arguments) the weights were built with."""
        args = dict(self.config.get("model_args") or {})
        cfg = self.config.get("pretrained_cfg") or {}
        num_classes = args.pop("num_classes", self.config.get("num_classes", cfg.get("num_classes", 1000)))
        in_chans = args.pop("in_chans", (cfg.get("input_size") or (3,))[0])
        args.pop("pretrained_cfg", None)
        return num_classes, in_chans, args

    def preprocessing(self) -> dict[str, Any]:
        """The pretrained_cfg fields that say how the weights want their inputs."""
        cfg = self.config.get("pretrained_cfg") or {}
        return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in PREPROCESSING
                and v is not None}

    def label_names(self) -> list[str] | None:
        names = self.config.get("label_names") or (self.config.get("pretrained_cfg") or {}).get("label_names")
        if isinstance(names, dict):  # timm allows {index: name} where indices have gaps
            return None
        return list(names) if names else None

    def run_meta(self) -> dict[str, Any]:
        """What a cnnzoo run recorded of its data (dataset, classes, image size); {} for others."""
        return dict(self.config.get("cnnzoo") or {})


def open_repo(name: str) -> HubRepo:
    """Fetch and read a repository's config.json: which model it holds, and how it was built."""
    repo_id, revision = split_hub_name(name)
    path = hub_download(repo_id, CONFIG_FILE, revision)
    try:
        config = json.loads(path.read_text())
        architecture = config["architecture"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{name}: config.json is not timm's model configuration (architecture, num_classes, "
                         f"pretrained_cfg): {type(exc).__name__}: {exc}") from exc
    return HubRepo(name, repo_id, revision, config, twin_architecture(architecture, name))


# ---------------------------------------------------------------------------------------------- uploads

def hub_config(model: nn.Module, run: dict[str, Any], license: str | None = None) -> dict[str, Any]:
    """config.json, in timm's layout, of a model built by ``create_model`` and the metadata of its
    weights file (``run``: classes, dataset, ...; see ``RUN_KEYS``)."""
    cfg = model.pretrained_cfg
    registered = get_pretrained_cfg(cfg["architecture"])
    pretrained: dict[str, Any] = dict(custom_load=False)  # no tag: these are a run's weights, not published ones
    pretrained.update({k: list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k] for k in (
        "input_size", "min_input_size", "fixed_input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std",
        "test_input_size", "test_crop_pct") if cfg.get(k) is not None})
    pretrained["num_classes"] = model.num_classes
    # the pooled map's size holds at the registered input size only
    same_size = tuple(cfg["input_size"][1:]) == tuple(registered.input_size[1:])
    pretrained["pool_size"] = list(registered.pool_size) if same_size and registered.pool_size else None
    pretrained.update(first_conv=model.first_conv, classifier=model.classifier_name, paper_name=registered.paper)
    if license:
        pretrained["license"] = license
    config: dict[str, Any] = dict(architecture=cfg["architecture"], num_classes=model.num_classes,
                                  num_features=model.num_features)
    pool = getattr(getattr(model, "global_pool", None), "pool_type", None)
    if pool:
        config["global_pool"] = pool
    config["model_args"] = dict(num_classes=model.num_classes, in_chans=cfg["in_chans"], **cfg.get("kwargs", {}))
    if run.get("classes"):
        config["label_names"] = list(run["classes"])
    config["pretrained_cfg"] = {k: v for k, v in pretrained.items() if v is not None or k == "pool_size"}
    config["cnnzoo"] = {k: run[k] for k in RUN_KEYS if k in run}
    return config


def upload_folder(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                  commit_message: str = "Add model", token: str | None = None) -> dict[str, str]:
    """Create the repository if needed (and the branch ``revision``, as ``hf upload`` does) and
    commit the folder's files to it; returns the repository's and the commit's URLs."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.hf_endpoint(), token=token, library_name="cnnzoo")
    repo = api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo.repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder), revision=revision,
                               commit_message=commit_message)
    return dict(repo_id=repo.repo_id, url=str(repo), commit_url=commit.commit_url)
