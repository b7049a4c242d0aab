"""Opening any checkpoint a command is given: a run folder or safetensors weights file, a Hugging Face
Hub repository in timm's layout (``hf-hub:OWNER/NAME``), an exported .onnx file (run through ONNX
Runtime), a Deep-Compression .cnnz file, or a registered model by name."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnzoo.inference.cnnz import load_compressed_checkpoint
from cnnzoo.inference.onnx import load_onnx_checkpoint
from cnnzoo.models.checkpoint import load_checkpoint, model_meta
from cnnzoo.models.factory import create_model


def load_any_checkpoint(checkpoint: str | Path, model_name: str | None = None,
                        model_kwargs: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """A run folder or weights file, a hub repository (``hf-hub:OWNER/NAME[@REVISION]``, fetched
    through huggingface_hub's cache), an exported .onnx file (run through ONNX Runtime), or a
    Deep-Compression .cnnz file (rebuilt as a dense model). ``model_kwargs`` apply to weights files
    and repositories, whose model is built from its name (the other two hold their network whole)."""
    suffix = Path(checkpoint).suffix
    if model_kwargs and suffix in (".onnx", ".cnnz"):
        raise ValueError(f"{checkpoint}: a {suffix} file holds its network whole; model arguments do not apply")
    if suffix == ".onnx":

        return load_onnx_checkpoint(checkpoint)
    if suffix == ".cnnz":

        return load_compressed_checkpoint(checkpoint)
    return load_checkpoint(checkpoint, model_name, model_kwargs)


def load_model(checkpoint: str | Path | None = None, model_name: str | None = None, *,
               pretrained: bool | str | Path | None = None,
               model_kwargs: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, metadata) from a checkpoint (``load_any_checkpoint``), or built from a
    registered name with ``create_model(model_name, pretrained=...)``. The metadata's ``classes``
    are the weights' class names (``pretrained_cfg["label_names"]``) where known, else indices."""
    if checkpoint is not None:
        return load_any_checkpoint(checkpoint, model_name, model_kwargs)
    if model_name is None:
        raise ValueError("say which network: --checkpoint RUN_DIR|FILE, or --model NAME [--pretrained]")

    model = create_model(model_name, pretrained=pretrained, **(model_kwargs or {})).eval()
    cfg = model.pretrained_cfg
    classes = list(cfg.get("label_names") or [str(i) for i in range(cfg["num_classes"])])
    return model, model_meta(model, classes=classes)
