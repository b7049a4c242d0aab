"""Watching a run as it trains (``--log tensorboard``, ``--log mlflow``), beside its metrics.csv.

``RunLogs`` is what a training loop calls, at fixed points: ``step`` after every training step (a
record every ``every`` steps: the epoch's running loss and top-1, the learning rate, images per
second), ``scalars`` and ``pictures`` at the end of an epoch (the first layer's filters and a few
test images with their Grad-CAM, drawn by ``cnnzoo.interpretation``), ``hparams`` with the final
scores, ``checkpoint`` just before a resume point is written, and ``close``. The x-axis is the
global training step (steps done, from 1). Each backend is a ``Logger``:

    TensorBoardLogger  event files in RUN/tensorboard/ (``tensorboard --logdir RUN``, or the folder
                       of a league or experiment to overlay its runs); a resumed run purges what was
                       logged past its checkpoint (which it logs again) and continues the same curves
    MLflowLogger       MLflow's tracking API: the server in MLFLOW_TRACKING_URI, else a local store
                       in RUN/mlruns/ (a group's: GROUP/mlruns/). MLflow cannot take a value back, so
                       values wait until a checkpoint is written; every write is idempotent (a
                       step it already holds is not logged again), and a resumed run continues the
                       same MLflow run, recorded in RUN/mlflow_run.json

Under torchrun only rank 0 has loggers; every rank takes part in the step sums (one all-reduce
every ``every`` steps), so that a step's numbers are over the whole global batch. (torchrun takes
``--log`` for an abbreviation of its own ``--log-dir``: ``torchrun ... -m cnnzoo -- train --log ...``.) Nothing here
draws from a random generator or changes the model: a run trains to the same weights with or
without logs.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnzoo.data.datasets import Normalize
from cnnzoo.interpretation import drawing, maps
from cnnzoo.training.config import LOGGERS
from cnnzoo.utils import distributed as dist_util
from cnnzoo.utils.distributed import World
from cnnzoo.utils.io import write_json

MLFLOW_RECORD = "mlflow_run.json"
PICTURE_IMAGES = 4  # test images shown with their Grad-CAM at each epoch's end
PICTURE_SIDE = 96   # pixels: each Grad-CAM image is enlarged to at least this side


def check_loggers(kinds: list[str] | tuple[str, ...]) -> None:
    """Refuse unknown names (``LOGGERS``), and MLflow where it is not installed, before a run starts."""
    unknown = [k for k in kinds if k not in LOGGERS]
    if unknown:
        raise ValueError(f"--log {' '.join(unknown)}: unknown; choose from {', '.join(LOGGERS)}")
    if "mlflow" in kinds:
        try:
            import mlflow  # noqa: F401
        except ImportError as exc:
            raise ValueError("--log mlflow needs MLflow, an optional extra of cnnzoo: pip install 'cnnzoo[mlflow]' "
                             "(or pip install mlflow-skinny)") from exc


@dataclass(frozen=True)
class LogGroup:
    """Runs logged side by side (a league, an experiment): one MLflow experiment ``name``, whose
    local store is ``root/mlruns``. TensorBoard needs nothing: ``--logdir root`` overlays the runs
    below it."""
    root: Path
    name: str


def flat_params(settings: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """Settings as hyper-parameters, which both libraries take as numbers, booleans or text: None,
    lists and dicts as their JSON text."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in settings.items()}


class Logger:
    """One backend of RunLogs."""

    def describe(self) -> str:
        """Where the log goes, for the user."""
        raise NotImplementedError

    def scalars(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def image(self, step: int, tag: str, img: Image.Image) -> None:
        raise NotImplementedError

    def text(self, step: int, tag: str, text: str) -> None:
        raise NotImplementedError

    def hparams(self, step: int, params: dict[str, Any], metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def checkpoint(self) -> None:
        """A resume point at the last step logged is about to be written: make it all durable."""
        raise NotImplementedError

    def close(self, status: str) -> None:
        """``status``: FINISHED, KILLED (stopped, resumable) or FAILED."""
        raise NotImplementedError


class TensorBoardLogger(Logger):
    """Event files in ``log_dir``. The files are opened at this process's first record, purging
    whatever an earlier process logged at or past its step: a run continued from a checkpoint
    logs every record after it again, on the same schedule, so its first record comes no later
    than the first one the earlier process made past the checkpoint."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writer: Any = None

    def writer(self, step: int) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir), purge_step=step, flush_secs=30)
        return self._writer

    def describe(self) -> str:
        return f"TensorBoard {self.log_dir} (tensorboard --logdir {self.log_dir.parent})"

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer(step).add_scalar(tag, value, step)

    def image(self, step: int, tag: str, img: Image.Image) -> None:
        self.writer(step).add_image(tag, np.asarray(img.convert("RGB")), step, dataformats="HWC")

    def text(self, step: int, tag: str, text: str) -> None:
        self.writer(step).add_text(tag, text, step)

    def hparams(self, step: int, params: dict[str, Any], metrics: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        # Into the run's own event files (not a sub-run, as SummaryWriter.add_hparams would): the
        # HParams dashboard then lists each run once, with its curves.
        for summary in hparams(params, {tag: 0.0 for tag in metrics}):
            self.writer(step).file_writer.add_summary(summary, step)
        self.scalars(step, metrics)

    def checkpoint(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self, status: str) -> None:
        if self._writer is not None:
            self._writer.close()


class MLflowLogger(Logger):
    """A run of MLflow's tracking API. Values wait in memory until ``checkpoint`` (or ``close``)
    writes them; a value whose key already has its step in MLflow is not written again (a process
    killed after writing and before its checkpoint reached the store is repeated by the resumed
    run, which finds those steps there)."""

    def __init__(self, run_dir: Path, run_name: str, params: dict[str, Any], group: LogGroup | None) -> None:
        from mlflow.tracking import MlflowClient

        self.record_path = run_dir / MLFLOW_RECORD
        record = json.loads(self.record_path.read_text()) if self.record_path.is_file() else None
        if record is None:
            uri = os.environ.get("MLFLOW_TRACKING_URI")
            store = None if uri else os.path.relpath((group.root if group else run_dir) / "mlruns", run_dir)
        else:
            uri, store = record["tracking_uri"], record["store"]
        self.client = MlflowClient(uri or _local_store(run_dir / store))
        if record is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or (group.name if group else "cnnzoo")
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            self.run_id = self.client.create_run(experiment_id, run_name=run_name,
                                                 tags={"cnnzoo.run_dir": str(run_dir.resolve())}).info.run_id
            run_dir.mkdir(parents=True, exist_ok=True)  # a compression's log folder, with a tracking server
            write_json(self.record_path, dict(tracking_uri=uri, store=store, experiment_id=experiment_id,
                                              run_id=self.run_id))
            self._log_params(params)
            self.logged: dict[str, int] = {}
        else:
            self.run_id = record["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.logged = self._last_steps()
        self.pending: list[Any] = []
        self.images: list[tuple[str, Image.Image]] = []
        self.tags: dict[str, str] = {}

    def describe(self) -> str:
        return f"MLflow {self.client.tracking_uri}, run {self.run_id}"

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # MLflow keeps at most 6000 characters of a parameter (a long list of class names)
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start: start + 100])

    def _last_steps(self) -> dict[str, int]:
        """The last step MLflow holds of each key of this run."""
        keys = self.client.get_run(self.run_id).data.metrics
        return {k: max(m.step for m in self.client.get_metric_history(self.run_id, k)) for k in keys}

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in values.items()]

    def image(self, step: int, tag: str, img: Image.Image) -> None:
        self.images.append((f"images/{tag}/step{step:08d}.png", img))  # the same path again overwrites

    def text(self, step: int, tag: str, text: str) -> None:
        self.tags[f"cnnzoo.{tag}"] = text

    def hparams(self, step: int, params: dict[str, Any], metrics: dict[str, float]) -> None:
        self.scalars(step, metrics)  # the settings are the run's parameters from its start

    def checkpoint(self) -> None:
        new = [m for m in self.pending if m.step > self.logged.get(m.key, 0)]
        for start in range(0, len(new), 1000):  # MLflow's most metrics in one batch
            self.client.log_batch(self.run_id, metrics=new[start: start + 1000])
        for m in new:
            self.logged[m.key] = max(m.step, self.logged.get(m.key, 0))
        for path, img in self.images:
            self.client.log_image(self.run_id, img, artifact_file=path)
        for key, value in self.tags.items():
            self.client.set_tag(self.run_id, key, value)
        self.pending, self.images, self.tags = [], [], {}

    def close(self, status: str) -> None:
        if status == "FINISHED":
            self.checkpoint()
        self.client.set_terminated(self.run_id, status=status)


def _local_store(folder: Path) -> str:
    # MLflow 3 keeps its file store behind this switch, in favour of a database; the run folder's
    # store is a file store so that it needs neither a database nor a server.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return folder.resolve().as_uri()


class RunLogs:
    """What a training loop calls; without loggers (no --log, or a rank but 0) it records nothing.
    ``enabled``: --log was given (on every rank, which then all take part in the step sums)."""

    def __init__(self, loggers: list[Logger] | None = None, *, enabled: bool = False, every: int = 0,
                 world: World | None = None, device: torch.device | None = None,
                 pictures: tuple[torch.Tensor, Normalize] | None = None, params: dict[str, Any] | None = None,
                 progress: bool = False) -> None:
        self.loggers = loggers or []
        self.enabled, self.every = enabled, every
        self.world, self.device = world or World(), device or torch.device("cpu")
        self.pictures_of = pictures  # (uint8 test images, their normalisation)
        self.params = params or {}
        self.progress = progress
        self.skipped: set[str] = set()  # pictures that do not apply to this model, said once

    def step(self, step: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, seconds: float,
             lr: float) -> None:
        """After training step ``step``: every ``every`` steps, the epoch so far (running loss and
        top-1 over all ranks, images per second) and the learning rate. Collective when due."""
        if not self.enabled or not self.every or step % self.every:
            return
        loss_total, correct_total, seen_total = dist_util.all_reduce_sum(
            self.world, [float(loss_sum), float(correct), seen], self.device)
        self.scalars(step, {"train/loss": loss_total / seen_total, "train/top1": correct_total / seen_total,
                            "train/lr": lr, "train/images_per_second": seen_total / seconds})

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Values at ``step``; NaN (a score not computed) is left out."""
        values = {k: float(v) for k, v in values.items() if not math.isnan(v)}
        for logger in self.loggers:
            logger.scalars(step, values)

    def pictures(self, step: int, net: nn.Module) -> None:
        """The first layer's filters and the test images with their Grad-CAM; a picture that does
        not apply to ``net`` is skipped with a note in the logs, once."""
        if not self.loggers or self.pictures_of is None:
            return
        images, normalize = self.pictures_of
        device = next(net.parameters()).device
        drawn = {"filters": lambda: drawing.filter_grid(maps.first_layer_filters(net)),
                 "grad_cam": lambda: grad_cam_row(net, images, normalize, device)}
        for tag, draw in drawn.items():
            if tag in self.skipped:
                continue
            try:
                img = draw()
            # Any model can be trained; a picture that fails on one (no convolution, no spatial
            # map, an operator Captum cannot differentiate) must not stop its training.
            except Exception as exc:  # noqa: BLE001
                self.skipped.add(tag)
                self.note(step, f"no {tag} pictures for this model: {exc}")
                continue
            for logger in self.loggers:
                logger.image(step, tag, img)

    def note(self, step: int, text: str) -> None:
        if self.progress:
            print(f"logs: {text}", file=sys.stderr, flush=True)
        for logger in self.loggers:
            logger.text(step, "notes", text)

    def hparams(self, step: int, metrics: dict[str, float]) -> None:
        """The run's settings with its final ``metrics`` (logged as ``final/NAME``)."""
        final = {f"final/{k}": float(v) for k, v in metrics.items() if not math.isnan(v)}
        for logger in self.loggers:
            logger.hparams(step, self.params, final)

    def checkpoint(self) -> None:
        for logger in self.loggers:
            logger.checkpoint()

    def __enter__(self) -> RunLogs:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        status = ("FINISHED" if exc_type is None else
                  "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
        for logger in self.loggers:
            logger.close(status)


@torch.no_grad()
def _as_batch(img: torch.Tensor, normalize: Normalize, device: torch.device) -> torch.Tensor:
    return normalize(img[None].to(device))


def grad_cam_row(net: nn.Module, images: torch.Tensor, normalize: Normalize, device: torch.device) -> Image.Image:
    """Each image with the Grad-CAM of its predicted class over it, in a row."""
    cells = []
    for img in images:
        cam, _ = maps.grad_cam(net, _as_batch(img, normalize, device))
        cells.append(drawing.enlarge(drawing.overlay(img, cam.cpu()), PICTURE_SIDE))
    return drawing.side_by_side(cells)


def open_logs(kinds: list[str] | tuple[str, ...], run_dir: Path, *, every: int, world: World, device: torch.device,
              params: dict[str, Any], run_name: str, group: LogGroup | None = None,
              pictures: tuple[torch.Tensor, Normalize] | None = None, progress: bool = False) -> RunLogs:
    """The loggers ``kinds`` of the run in ``run_dir`` (rank 0's; none on the others), continuing
    what an earlier process logged there. ``pictures``: the test images to draw Grad-CAM over, and
    their normalisation."""
    check_loggers(kinds)
    params = flat_params(params)
    loggers: list[Logger] = []
    if world.is_main:
        if "tensorboard" in kinds:
            loggers.append(TensorBoardLogger(run_dir / "tensorboard"))
        if "mlflow" in kinds:
            loggers.append(MLflowLogger(run_dir, run_name, params, group))
        if progress and loggers:
            print(f"logging to {'; '.join(logger.describe() for logger in loggers)}", flush=True)
    return RunLogs(loggers, enabled=bool(kinds), every=every, world=world, device=device, pictures=pictures,
                   params=params, progress=progress)

