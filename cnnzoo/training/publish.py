"""Sharing a finished run on the Hugging Face Hub (``cnnzoo push``), in timm's layout.

``write_hub_folder`` writes what the repository holds: ``model.safetensors`` (the run's final
weights, or its best), ``config.json`` (``cnnzoo.models.hf_hub.hub_config``) and a ``README.md``
model card generated from the run folder's config.json, summary.json and metrics.csv: the model and
its paper, the dataset, the measured test top-1, the ``cnnzoo train`` command that reproduces the
run, its training time and machine, and the licence given (none stated otherwise). ``push_run``
uploads the folder; ``create_model("hf-hub:OWNER/NAME")`` loads it back.
"""
from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

from cnnzoo.models import hf_hub
from cnnzoo.models.checkpoint import load_checkpoint, save_weights
from cnnzoo.models.registry import get_pretrained_cfg
from cnnzoo.training.config import TrainConfig, train_command
from cnnzoo.utils.io import write_json, write_text


def read_run(run_dir: str | Path, best: bool = False) -> dict[str, Any]:
    """A finished run's records: ``config`` and ``summary`` (JSON), ``metrics`` (metrics.csv rows)
    and ``weights``, the file to share (last.safetensors, or best.safetensors with ``best``)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: not a folder; --checkpoint takes a run folder written by `cnnzoo train`")
    missing = [f for f in ("config.json", "summary.json", "metrics.csv") if not (run / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{run}: no {', '.join(missing)}; push a run folder of `cnnzoo train` whose training "
                                f"has finished (summary.json is written at its end)")
    weights = run / ("best.safetensors" if best else "last.safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"{run}: no {weights.name}")
    with open(run / "metrics.csv", newline="") as f:
        metrics = list(csv.DictReader(f))
    return dict(config=json.loads((run / "config.json").read_text()),
                summary=json.loads((run / "summary.json").read_text()), metrics=metrics, weights=weights)


def run_command(config: dict[str, Any]) -> str:
    """The ``cnnzoo train`` command of a run, from its config.json: the settings as requested
    (``experiment``), over the rest as recorded."""
    return train_command(TrainConfig.from_dict({**config, **config.get("experiment", {})}))


def write_hub_folder(run_dir: str | Path, folder: str | Path, repo_id: str, *, best: bool = False,
                     license: str | None = None) -> dict[str, Any]:
    """model.safetensors, config.json and README.md of a run in ``folder``; returns what was written
    (model, weights file, its test top-1 and epoch)."""
    run = read_run(run_dir, best)
    model, meta = load_checkpoint(run["weights"])
    shared = {k: meta[k] for k in hf_hub.RUN_KEYS if k in meta}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / hf_hub.WEIGHTS_FILE, shared)  # the same tensors, without local paths
    write_json(folder / hf_hub.CONFIG_FILE, hf_hub.hub_config(model, shared, license))
    write_text(folder / "README.md", model_card(repo_id, run, meta, license))
    return dict(model=meta["model"], weights=str(run["weights"]), test_top1=meta.get("test_top1"),
                epoch=meta.get("epoch"), files=sorted(p.name for p in folder.iterdir()))


def push_run(run_dir: str | Path, repo_id: str, *, best: bool = False, license: str | None = None,
             private: bool = False, revision: str | None = None, commit_message: str | None = None,
             token: str | None = None) -> dict[str, Any]:
    """Upload a run to the repository ``repo_id`` (created if needed); returns what was pushed and
    where (``url``, ``commit_url``)."""
    with tempfile.TemporaryDirectory(prefix="cnnzoo-push-") as folder:
        pushed = write_hub_folder(run_dir, folder, repo_id, best=best, license=license)
        message = commit_message or f"Add {pushed['model']} trained with cnnzoo"
        where = hf_hub.upload_folder(folder, repo_id, private=private, revision=revision, commit_message=message,
                                     token=token)
    return {**pushed, **where, "name": f"{hf_hub.HF_HUB_PREFIX}{where['repo_id']}"
            + (f"@{revision}" if revision else "")}


def _percent(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * float(x):.2f}%"


def model_card(repo_id: str, run: dict[str, Any], meta: dict[str, Any], license: str | None) -> str:
    """The README.md of a pushed run (Hub metadata in the YAML front matter, then the card)."""
    config, summary = run["config"], run["summary"]
    cfg = get_pretrained_cfg(meta["model"])
    which = "best" if run["weights"].name.startswith("best") else "final"
    front = ["---", "library_name: cnnzoo", "pipeline_tag: image-classification",
             "tags:", "- image-classification", "- cnnzoo", f"- {cfg.family.lower()}"]
    front += [f"license: {license}"] if license else []
    tta = " with flip test-time augmentation" if summary.get("tta_flip") else ""
    ranks = summary.get("world_size", 1)
    machine = (f"{summary.get('device_name') or summary.get('device', '?')} ({summary.get('device', '?')}, "
               f"{summary.get('threads', '?')} threads, {ranks} process{'es' if ranks > 1 else ''}, "
               f"{(summary.get('precision') or {}).get('dtype', 'float32')})")
    lines = [*front, "---", f"# {repo_id.split('/')[-1]}", "",
             f"A `{meta['model']}` ({cfg.paper}) trained with cnnzoo on {config['dataset']}: "
             f"**test top-1 {_percent(meta.get('test_top1'))}**{tta} with the {which} weights "
             f"(epoch {meta.get('epoch', '?')} of {summary.get('epochs', '?')}).", "",
             "## Model details", "",
             f"- **Model:** `{meta['model']}` ({cfg.family}, {config.get('params', '?')} parameters"
             + (f", arguments {json.dumps(meta['kwargs'])})" if meta.get("kwargs") else ")"),
             f"- **Paper:** {cfg.paper}",
             f"- **Dataset:** {config['dataset']}, {len(meta.get('classes') or [])} classes "
             f"({', '.join(map(str, (meta.get('classes') or [])[:20]))}); {summary.get('train_images', '?')} "
             f"training and {summary.get('test_images', '?')} test images",
             f"- **Input:** {'x'.join(map(str, meta['input_size']))}, mean {list(meta['mean'])}, std {list(meta['std'])}",
             f"- **Test top-1:** {_percent(meta.get('test_top1'))} ({which} weights, epoch {meta.get('epoch', '?')}; "
             f"final {_percent(summary.get('test_top1'))}, best {_percent(summary.get('best_test_top1'))})",
             f"- **Training:** {summary.get('train_seconds', '?')} s on {machine}, finished "
             f"{summary.get('finished', '?')}",
             f"- **License:** {license or 'none stated'}", "",
             "## Training curve (metrics.csv)", "", *_metrics_table(run["metrics"]), "",
             "## Reproduce", "", "```bash", run_command(config), "```", "",
             "## Use", "", "```python", "import cnnzoo", "",
             f'model = cnnzoo.create_model("hf-hub:{repo_id}").eval()', "```", "",
             "```bash", f"cnnzoo eval --checkpoint hf-hub:{repo_id}", "```", ""]
    return "\n".join(lines)


def _metrics_table(rows: list[dict[str, str]]) -> list[str]:
    """metrics.csv's epochs as a Markdown table: losses, top-1 and learning rate."""
    columns = [c for c in ("epoch", "train_loss", "train_top1", "test_loss", "test_top1", "lr") if rows and c in rows[0]]
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return table + ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
