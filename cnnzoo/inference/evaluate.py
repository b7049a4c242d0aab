"""Scoring a network on a dataset held in memory or streamed: top-1, top-5 and loss, with
test-time augmentation. The trainer scores its epochs with it, and every command that evaluates a
checkpoint does too."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.data.datasets import ImageDataset, Normalize, iterate_batches, translate
from cnnzoo.data.stream import StreamSource
from cnnzoo.utils import distributed as dist_util
from cnnzoo.utils.distributed import World


def tta_views(x: torch.Tensor, flip: bool = False, shift: int = 0) -> list[torch.Tensor]:
    """The views whose logits test-time augmentation averages: the image, moved 1 to ``shift``
    pixels each way if asked, and the mirror image of each if ``flip``."""
    moves = [(0, 0)] + [move for d in range(1, shift + 1) for move in ((d, 0), (-d, 0), (0, d), (0, -d))]
    views = [translate(x, dy, dx) for dy, dx in moves]
    return views + [v.flip(3) for v in views] if flip else views


@torch.inference_mode()
def evaluate(model: nn.Module, ds: ImageDataset, normalize: Normalize, batch_size: int = 1024,
             device: str | torch.device = "cpu", world: World | None = None, tta_flip: bool = False,
             tta_shift: int = 0, amp: bool = False) -> dict[str, float]:
    """Top-1, top-5 (top-k with k = min(5, classes)) and mean cross-entropy over ``ds``; with
    ``tta_flip`` / ``tta_shift`` the logits are the mean over the image's views (``tta_views``);
    with ``amp`` the forward passes run in bfloat16 autocast, as the training run's did.
    In a world of several ranks each scores every ``world.size``-th image and the sums are added
    up, so that every rank returns the numbers of the whole set at 1/N of the work."""
    world = world or World()
    was_training = model.training
    model.eval()
    k = min(5, len(ds.classes))
    correct1 = correct5 = 0
    loss_sum = 0.0
    shard = torch.arange(world.rank, len(ds), world.size) if world.distributed else None
    if isinstance(ds, StreamSource):
        batches = ds.eval_batches(batch_size, world.rank, world.size, pin_memory=torch.device(device).type == "cuda")
    else:
        batches = iterate_batches(ds, batch_size, indices=shard)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        views = tta_views(x, tta_flip, tta_shift)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            logits = sum(model(normalize(v)).float() for v in views) / len(views)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        topk = logits.topk(k, dim=1).indices
        correct1 += (topk[:, 0] == y).sum().item()
        correct5 += (topk == y[:, None]).any(dim=1).sum().item()
    model.train(was_training)
    correct1, correct5, loss_sum = dist_util.all_reduce_sum(world, [correct1, correct5, loss_sum], torch.device(device))
    n = len(ds)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n}
