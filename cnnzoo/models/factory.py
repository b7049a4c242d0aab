"""Building a registered model by name: ``create_model`` with published or local weights, and the
model table ``cnnzoo models`` prints."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.analysis import count_macs
from cnnzoo.models import hf_hub, hub
from cnnzoo.models.features import feature_extractor
from cnnzoo.models.hub import PublishedWeights
from cnnzoo.models.registry import channel_fields, check_model_kwargs, get_pretrained_cfg, list_models, model_entrypoint
from cnnzoo.models.weights import load_pretrained


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    pretrained: bool | str | Path | None = None,
    features_only: bool = False,
    out_indices: int | list[int] | tuple[int, ...] | None = None,
    feature_cls: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model; ``name`` may carry a tag (``"resnet50.tv2_in1k"``) that picks the
    configuration the model gets.

    ``num_classes`` and ``in_chans`` default to the model's own configuration (1000 and 3 for the
    ImageNet networks); ``num_classes=0`` leaves out the classifier (the model returns pre-logits
    features).
    ``pretrained``: ``True`` for the published weights of the tag in ``name`` or else the model's
    default ones; a tag of published weights (``"tv2_in1k"``, or torchvision's ``"IMAGENET1K_V2"``);
    or a path to a weights file (.safetensors, or .pth/.pt read with ``weights_only=True``) in
    cnnzoo's, torchvision's or timm's key layout. Published files are fetched into the reference's
    cache (``cnnzoo.models.hub``); the model's configuration becomes the weights' tag's, with the ImageNet
    class names (``label_names``, when the classifier is kept) and where the weights came from
    (``url`` or ``hf_hub_id``, ``file``, ``sha256``). ``cnnzoo weights`` lists the published files.
    Extra keyword arguments go to the model's constructor (e.g. ``aux_logits=True``, and timm's
    ``global_pool``, ``drop_rate``, ``drop_path_rate``).
    ``features_only=True`` returns a ``cnnzoo.models.features.FeatureExtractor`` whose forward gives the
    feature maps of the stages ``out_indices`` (default: all; see ``ZooModel.forward_intermediates``);
    ``feature_cls`` picks timm's kind of extractor (``"list"``, ``"getter"``, ``"hook"``, ``"dict"``,
    ``"fx"``; see ``cnnzoo.models.features``).

    Models on the Hugging Face Hub in timm's layout (``cnnzoo push``, timm's ``push_to_hf_hub``), as
    timm names them: ``name="hf-hub:OWNER/NAME[@REVISION]"`` builds the cnnzoo model the repository's
    config.json names (timm's names included, for models cnnzoo reproduces) with its arguments,
    preprocessing and class names, and its weights unless ``pretrained=False`` (the name names the
    weights, so ``None`` loads them too); ``pretrained="hf-hub:..."`` loads a repository's weights
    into the model ``name``. See ``cnnzoo.models.hf_hub``.
    """
    if hf_hub.is_hub_name(name):
        model = _create_from_hub(hf_hub.open_repo(name), num_classes, in_chans, pretrained, kwargs)
    else:
        model = _create_registered(name, num_classes, in_chans, pretrained, kwargs)
    # timm's feature extraction: the model cut after the chosen stages, returning their maps.
    if features_only:
        return feature_extractor(model, out_indices, feature_cls)
    if out_indices is not None or feature_cls is not None:
        raise ValueError("out_indices and feature_cls shape a features_only model; pass features_only=True")
    return model


def _create_registered(name: str, num_classes: int | None, in_chans: int | None, pretrained: bool | str | Path | None,
                       kwargs: dict[str, Any], repo: hf_hub.HubRepo | None = None) -> nn.Module:
    """A registered model, with the weights ``pretrained`` asks for (or ``repo``'s)."""
    if repo is None and hf_hub.is_hub_name(pretrained):
        repo = hf_hub.open_repo(pretrained)
    published, file = _resolve_pretrained(name, pretrained) if repo is None else (None, None)
    cfg = get_pretrained_cfg(published.name if published else name)
    num_classes = cfg.num_classes if num_classes is None else num_classes
    in_chans = cfg.input_size[0] if in_chans is None else in_chans
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be an integer >= 1, got {in_chans!r}")
    check_model_kwargs(cfg.architecture, kwargs)
    model = model_entrypoint(cfg.architecture)(num_classes=num_classes, in_chans=in_chans, **kwargs)
    cfg = dataclasses.replace(cfg, **channel_fields(cfg, in_chans), num_classes=num_classes,
                              first_conv=model.first_conv, classifier=model.classifier_name)
    # What the instance was built with, beside the configuration: checkpoints rebuild from these.
    model.pretrained_cfg = {**dataclasses.asdict(cfg), "in_chans": in_chans, "kwargs": dict(kwargs)}
    if published or file:
        _load_weights(model, published, file)
    if repo is not None:
        _load_hub_weights(model, repo)
    return model


def _create_from_hub(repo: hf_hub.HubRepo, num_classes: int | None, in_chans: int | None,
                     pretrained: bool | str | Path | None, kwargs: dict[str, Any]) -> nn.Module:
    """The model a hub repository holds, built with its arguments (``kwargs`` on top)."""
    if pretrained not in (None, True, False):
        raise ValueError(f"{repo.name} brings its own weights: pretrained may be True or False, got {pretrained!r}")
    repo_classes, repo_chans, repo_kwargs = repo.model_args()
    num_classes = repo_classes if num_classes is None else num_classes
    in_chans = repo_chans if in_chans is None else in_chans
    model = _create_registered(repo.architecture, num_classes, in_chans, None, {**repo_kwargs, **kwargs},
                               repo=None if pretrained is False else repo)
    if pretrained is False:  # timm's create_model("hf-hub:...", pretrained=False): the design alone
        _apply_repo_cfg(model, repo)
    return model


def _load_hub_weights(model: nn.Module, repo: hf_hub.HubRepo) -> None:
    """A hub repository's weights into ``model`` (which must be the design it holds), and the
    repository's preprocessing, class names and address into the model's configuration."""
    arch = model.pretrained_cfg["architecture"]
    if repo.architecture != arch:
        theirs = repo.config["architecture"]
        same = "" if theirs == repo.architecture else f" (cnnzoo's {repo.architecture})"
        raise ValueError(f"{repo.name} holds a {theirs}{same}, not a {arch}: build the repository's model "
                         f"(create_model({repo.name!r}), or --model {repo.architecture})")
    state, path = repo.read_weights()
    try:
        load_pretrained(model, path, state=state)
    except ValueError as exc:
        raise ValueError(f"{repo.name}: {exc}") from exc
    model.pretrained_cfg.update(weights=repo.name, source="hf-hub", hf_hub_id=repo.repo_id, file=str(path),
                                sha256=hub.file_sha256(path))
    _apply_repo_cfg(model, repo)


def _apply_repo_cfg(model: nn.Module, repo: hf_hub.HubRepo) -> None:
    """The repository's preprocessing (for a model of its input channels) and class names (for a
    model of its classes) into the model's configuration."""
    cfg = model.pretrained_cfg
    num_classes, in_chans, _ = repo.model_args()
    if cfg["in_chans"] == in_chans:
        cfg.update(repo.preprocessing())
    if cfg["num_classes"] == num_classes and repo.label_names():
        cfg["label_names"] = repo.label_names()


def _resolve_pretrained(name: str, pretrained: bool | str | Path | None) -> tuple[PublishedWeights | None, Path | None]:
    """(published weights, or None; a weights file, or None) that ``pretrained`` asks for."""
    if pretrained is None or pretrained is False:
        return None, None

    architecture, _, tag = name.partition(".")
    if isinstance(pretrained, str) and not Path(pretrained).is_file() and hub.is_weights_tag(architecture, pretrained):
        published = hub.find_weights(architecture, pretrained)
        if tag and tag != published.tag:
            raise ValueError(f"{name}: the name's tag {tag!r} and pretrained={pretrained!r} disagree; give one")
        return published, None
    if pretrained is True:
        return hub.find_weights(architecture, tag or None), None
    if not isinstance(pretrained, (str, Path)):
        raise TypeError(f"pretrained must be True, a tag of published weights or a file path, got {pretrained!r}")
    path = Path(pretrained)
    if not path.exists() and not path.suffix and hub.has_weights(architecture):
        known = ", ".join(w.tag for w in hub.list_weights(architecture))
        raise ValueError(f"pretrained={str(pretrained)!r} is neither a file nor a tag of {architecture}'s published "
                         f"weights ({known})")
    # A reference's own file, given by path, is recognised by its exact published name.
    same = [w for w in hub.list_weights(architecture) if w.file == path.name and w.source == "torchvision"]
    return (same[0] if same else None), path


def _load_weights(model: nn.Module, published: PublishedWeights | None, file: Path | None) -> None:
    """Load published weights (fetched into the reference's cache) or a file; record in the
    model's configuration where they came from, and the class names when the classifier is kept."""

    if file is not None:
        load_pretrained(model, file)
        origin = dict(file=str(file), sha256=hub.file_sha256(file) if file.is_file() else None)
        if published is not None:
            origin = dict(weights=published.name, source=published.source, url=published.url, **origin)
    else:
        state, origin = hub.fetch(published)
        load_pretrained(model, origin["file"], state=state)
    cfg = model.pretrained_cfg
    cfg.update(origin)
    if published is not None and cfg["num_classes"] == 1000:
        cfg["label_names"] = hub.imagenet_classes()


def model_table(pattern: str = "*", macs: bool = True) -> list[dict[str, Any]]:
    """One row per registered model: name, family, year, params, GMACs at the default input size,
    default input size and what it is verified against (``PretrainedCfg.verified_against``)."""
    rows = []
    for name in list_models(pattern):
        cfg = get_pretrained_cfg(name)
        with torch.device("meta"):  # shapes and counts only: no memory, no initialisation cost
            model = create_model(name)
        gmacs = None
        if macs:

            gmacs = count_macs(model, cfg.input_size) / 1e9
        rows.append(dict(name=name, family=cfg.family, year=cfg.year,
                         params=sum(p.numel() for p in model.parameters()), gmacs=gmacs,
                         input_size=list(cfg.input_size), verified_against=cfg.verified_against,
                         paper=cfg.paper))
    return rows
