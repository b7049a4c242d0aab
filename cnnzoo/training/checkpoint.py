"""A run folder and its resumable train state.

A run folder holds
    config.json          every setting of the run
    metrics.csv          one row per epoch
    last.safetensors     weights at the latest checkpoint  (metadata: how to rebuild the model)
    best.safetensors     weights of the best test top-1 so far
    train_state.pt       what --resume needs, in one file: weights, optimizer, scheduler, the RNG
                         states of every rank, epoch and step within it, the metrics rows so far
                         (read back with weights_only=True)
    summary.json         written when the run ends
    tensorboard/         with --log tensorboard: the event files (``cnnzoo.training.loggers``)
    mlflow_run.json      with --log mlflow: the MLflow run it logs to, and where (mlruns/: the
                         local store, unless MLFLOW_TRACKING_URI names a server)
Each is written atomically (``cnnzoo.utils.io``); the weights files are
``cnnzoo.models.checkpoint``'s, which every command reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnzoo.utils.io import atomic_write


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_train_state(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)
