"""Building a registered model by name: ``create_model`` with published or local weights, and the
model table ``cnnzoo models`` prints."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.analysis import count_macs
from cnnzoo.models import hub
from cnnzoo.models.features import FeatureExtractor
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
    feature maps of the stages ``out_indices`` (default: all; see ``ZooModel.forward_intermediates``).
    """
    published, file = _resolve_pretrained(name, pretrained)
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
    # timm's feature extraction: the model cut after the chosen stages, returning their maps.
    if features_only:

        return FeatureExtractor(model, out_indices)
    if out_indices is not None:
        raise ValueError("out_indices chooses the stages of a features_only model; pass features_only=True")
    return model


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
