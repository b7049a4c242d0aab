"""Published weight files by name: the catalogue, the caches they are fetched into, ImageNet's classes.

``weights_catalogue.json`` (package data, written by ``scripts/make_weights_catalogue.py`` from the
installed torchvision and timm) lists, per model and tag, the file's URL, exact name, published hash,
size, ImageNet-1k top-1 and licence. Files are fetched the way the references fetch them, so each
reuses the other's cache:

- torchvision's through ``torch.hub.load_state_dict_from_url`` into ``$TORCH_HOME/hub/checkpoints/``
  under torchvision's file names; torch.hub checks the SHA-256 prefix in the name, downloads into a
  temporary file beside the target and renames it only when complete.
- timm's Hugging Face hub files through ``huggingface_hub.hf_hub_download`` (its cache,
  ``$HF_HUB_CACHE`` or ``$HF_HOME/hub``); the hub names each blob by its SHA-256, checked here.

``CNNZOO_WEIGHTS_URL`` replaces torchvision's base URL (a mirror holding the same file names, or a
test server); ``HF_ENDPOINT`` replaces the hub's, as huggingface_hub itself reads it. Both are read
at each call.
"""
from __future__ import annotations

import csv
import fnmatch
import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnzoo.models.registry import list_tags
from cnnzoo.models.weights import read_state_dict

CATALOGUE_FILE = Path(__file__).with_name("weights_catalogue.json")
CLASSES_FILE = Path(__file__).with_name("imagenet_classes.csv")
MIRROR_ENV = "CNNZOO_WEIGHTS_URL"


@dataclass(frozen=True)
class PublishedWeights:
    """One published weight file for a registered model and tag (see ``weights_catalogue.json``)."""

    model: str
    tag: str
    source: str  # "torchvision" or "timm"
    reference: str
    aliases: tuple[str, ...]
    url: str
    hf_hub_id: str | None
    file: str
    sha256: str | None  # torchvision: the prefix in its file name; timm: checked against the hub's blob name
    sha256_kind: str
    size_mb: float | None
    top1: float | None
    license: str
    num_params: int | None

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    def download_url(self) -> str:
        """Where the file is fetched from now: the published URL, or the same file name under
        ``$CNNZOO_WEIGHTS_URL`` (torchvision files) / ``$HF_ENDPOINT`` (hub files)."""
        if self.hf_hub_id:
            return f"{hf_endpoint()}/{self.hf_hub_id}/resolve/main/{self.file}"
        base = os.environ.get(MIRROR_ENV)
        return f"{base.rstrip('/')}/{self.file}" if base else self.url


@functools.cache
def _catalogue() -> tuple[PublishedWeights, ...]:
    rows = json.loads(CATALOGUE_FILE.read_text())["weights"]
    return tuple(PublishedWeights(**{**r, "aliases": tuple(r["aliases"])}) for r in rows)


def list_weights(pattern: str = "*") -> list[PublishedWeights]:
    """Published files whose model name (or ``model.tag``) matches an fnmatch pattern."""
    return [w for w in _catalogue() if fnmatch.fnmatchcase(w.model, pattern) or fnmatch.fnmatchcase(w.name, pattern)]


def list_pretrained(pattern: str = "*") -> list[str]:
    """``model.tag`` of every published file matching ``pattern`` (timm's ``list_pretrained``)."""
    return sorted(w.name for w in list_weights(pattern))


def has_weights(model: str) -> bool:
    return any(w.model == model for w in _catalogue())


def find_weights(model: str, tag: str | None = None) -> PublishedWeights:
    """The published file of ``model`` for ``tag``: a registry tag (``tv2_in1k``), torchvision's
    weight name in any case (``IMAGENET1K_V2``), or None / ``"default"`` for the model's default
    weights (its first tag with a published file)."""
    entries = [w for w in _catalogue() if w.model == model]
    if not entries:
        with_weights = sorted({w.model for w in _catalogue()})
        raise ValueError(f"no published weights for model {model!r}; models with published weights: "
                         f"{', '.join(with_weights)} (`cnnzoo weights` lists them)")
    if tag is None or tag.lower() == "default":
        order = {t: i for i, t in enumerate(list_tags(model))}
        return min(entries, key=lambda w: order.get(w.tag, len(order)))
    for w in entries:
        if tag == w.tag or tag.lower() in w.aliases:
            return w
    known = ", ".join(w.tag + (f" ({'/'.join(a.upper() for a in w.aliases)})" if w.aliases else "") for w in entries)
    raise ValueError(f"model {model} has no published weights tagged {tag!r} (its tags: {known})")


def is_weights_tag(model: str, text: str) -> bool:
    """Whether ``text`` names published weights of ``model`` (rather than a file path)."""
    try:
        find_weights(model, text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- caches

def torchvision_cache_dir() -> Path:
    """torch.hub's checkpoint folder, ``$TORCH_HOME/hub/checkpoints`` (read now, as torch.hub does)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hf_cache_dir() -> Path:
    """huggingface_hub's cache folder, from the environment at this call (huggingface_hub reads it
    once, when imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_path(w: PublishedWeights) -> Path | None:
    """The file in its cache, or None when it has not been downloaded."""
    if w.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(w.hf_hub_id, w.file, cache_dir=hf_cache_dir())
        return Path(found) if isinstance(found, str) else None
    path = torchvision_cache_dir() / w.file
    return path if path.is_file() else None


def cache_folder(w: PublishedWeights) -> Path:
    """The folder a file of ``w`` lives in once fetched (for messages and listings)."""
    if w.hf_hub_id:
        return hf_cache_dir() / f"models--{w.hf_hub_id.replace('/', '--')}"
    return torchvision_cache_dir()


# ---------------------------------------------------------------------------------------------- fetching

def fetch(w: PublishedWeights) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, where it came from) for published weights, downloading into the reference's
    cache if needed. The second item holds timm-like keys: ``url`` or ``hf_hub_id``, ``file`` (the
    local path), ``sha256`` (of the file), ``source`` and ``weights`` (``model.tag``)."""
    if w.hf_hub_id:
        path = _fetch_hf(w)
        state = read_state_dict(path)
        origin = dict(hf_hub_id=w.hf_hub_id)
    else:
        state, path = _fetch_torchvision(w)
        origin = dict(url=w.url)
    return state, dict(weights=w.name, source=w.source, **origin, file=str(path), sha256=file_sha256(path))


def _offline_error(w: PublishedWeights, url: str, exc: BaseException) -> OSError:
    if w.hf_hub_id:  # the hub's cache is a tree of snapshots and blobs: let its own tool fill it
        where = (f"On a machine with internet, `huggingface-cli download {w.hf_hub_id} {w.file}` fills the cache; "
                 f"copy {cache_folder(w)} here (or set HF_ENDPOINT to a mirror)")
    else:
        where = f"Put the file {w.file} (from {w.url}) into {cache_folder(w)}/ (or set {MIRROR_ENV} to a mirror holding it)"
    return OSError(f"could not download the {w.name} weights from {url} ({type(exc).__name__}: {exc}). Offline? "
                   f"{where}, or pass the downloaded file with --weights PATH")


def _fetch_torchvision(w: PublishedWeights) -> tuple[dict[str, torch.Tensor], Path]:
    import urllib.error

    folder, url = torchvision_cache_dir(), w.download_url()
    try:
        state = torch.hub.load_state_dict_from_url(url, model_dir=str(folder), map_location="cpu", progress=False,
                                                   check_hash=True, file_name=w.file, weights_only=True)
    except RuntimeError as exc:
        match = re.search(r'expected "([0-9a-f]+)", got "([0-9a-f]+)"', str(exc))
        if not match:
            raise
        raise ValueError(f"{url}: the downloaded file's SHA-256 is {match.group(2)}, but {w.file} is published "
                         f"with hash prefix {match.group(1)}; refused, nothing was written to {folder}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise _offline_error(w, url, exc) from exc
    return state, folder / w.file


def _fetch_hf(w: PublishedWeights) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    # A cached file is used as it is, without asking the hub (as torch.hub does with its files).
    path = cached_path(w)
    try:
        path = path or Path(hf_hub_download(w.hf_hub_id, w.file, cache_dir=hf_cache_dir(), endpoint=hf_endpoint()))
    except LocalEntryNotFoundError as exc:  # offline (or the endpoint unreachable) and not cached
        raise _offline_error(w, w.download_url(), exc) from exc
    except OSError as exc:  # HTTP errors of the hub (a missing repository or file) are OSErrors too
        raise _offline_error(w, w.download_url(), exc) from exc
    check_hub_blob(path, w.download_url())
    return path


def check_hub_blob(path: Path, what: str) -> None:
    """A ValueError when a file of huggingface_hub's cache differs from the hub's published hash."""
    blob = path.resolve()
    published = blob.name  # the hub stores each file under its LFS etag, the SHA-256 of its content
    if re.fullmatch(r"[0-9a-f]{64}", published):
        got = file_sha256(blob)
        if got != published:
            raise ValueError(f"{what}: the file's SHA-256 is {got}, the hub publishes {published}; "
                             f"refused. Delete {blob} and {path} to download it again")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- classes

@functools.cache
def _imagenet_rows() -> tuple[tuple[str, str], ...]:
    with open(CLASSES_FILE, newline="") as f:
        return tuple((r["wnid"], r["name"]) for r in csv.DictReader(f))


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in label order (torchvision's weights' ``categories``)."""
    return [name for _, name in _imagenet_rows()]


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids (``n01440764``...) in label order: the folder names of ImageNet's train/val."""
    return [wnid for wnid, _ in _imagenet_rows()]


ORIGIN_KEYS = ("weights", "source", "url", "hf_hub_id", "file", "sha256")


def weights_origin(pretrained_cfg: dict[str, Any]) -> dict[str, Any]:
    """Where a model's weights came from (``create_model(pretrained=...)`` records it), for run records."""
    return {k: pretrained_cfg[k] for k in ORIGIN_KEYS if pretrained_cfg.get(k)}


def catalogue_row(w: PublishedWeights) -> dict[str, Any]:
    """One line of ``cnnzoo weights``: model, tag, source, size, top-1, cached or not, path."""
    path = cached_path(w)
    return dict(model=w.model, tag=w.tag, source=w.source, size_mb=w.size_mb, top1=w.top1,
                cached=path is not None, path=str(path or cache_folder(w) / w.file), url=w.url,
                sha256=w.sha256, license=w.license, aliases=list(w.aliases))
