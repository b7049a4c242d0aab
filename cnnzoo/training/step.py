"""One training step, the only place in cnnzoo where a batch becomes a loss and a gradient.

Everything that trains calls ``train_step``: the trainer, the league's speed measurement, the
benchmark's training mode and operator trace, and compression's fine-tuning. The loss is the
caller's (``loss_fn(outputs, y) -> loss``); what differs between callers around the step (a
non-finite check, gradient masks, tied weights) plugs in through ``StepHooks``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Outputs = Any  # a model's training-mode output: logits, or (logits, *auxiliary logits)
LossFn = Callable[[Outputs, torch.Tensor], torch.Tensor]


@dataclass
class StepHooks:
    """Callbacks at fixed points of ``train_step``; each is optional.

    after_loss(loss): before any gradient exists (e.g. stop on a non-finite loss).
    after_gradients(): gradients computed, optimiser not yet stepped (e.g. mask or tie gradients).
    after_step(): weights updated (e.g. re-impose masks or shared values on them)."""
    after_loss: Callable[[torch.Tensor], None] | None = None
    after_gradients: Callable[[], None] | None = None
    after_step: Callable[[], None] | None = None


def main_logits(outputs: Outputs) -> torch.Tensor:
    """The main head's logits: models with auxiliary classifiers return (logits, *aux) in training."""
    return outputs if isinstance(outputs, torch.Tensor) else outputs[0]


def train_step(model: nn.Module | Callable[[torch.Tensor], Outputs], x: torch.Tensor, y: torch.Tensor,
               loss_fn: LossFn, optimizer: torch.optim.Optimizer | None, *, amp: bool = False,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
               hooks: StepHooks | None = None) -> tuple[Outputs, torch.Tensor]:
    """Forward ``x``, ``loss_fn(outputs, y)``, backward, optimiser step, scheduler step; returns
    (outputs, loss). ``amp`` runs forward and loss under bfloat16 autocast (no loss scaling: bf16
    has fp32's range). Without ``optimizer`` the step ends at the gradients (an operator trace)."""
    hooks = hooks or StepHooks()
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    elif isinstance(model, nn.Module):
        model.zero_grad(set_to_none=True)  # a second call must not accumulate into the first's gradients
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with autocast:
        outputs = model(x)
        loss = loss_fn(outputs, y)
    if hooks.after_loss is not None:
        hooks.after_loss(loss)
    loss.backward()
    if hooks.after_gradients is not None:
        hooks.after_gradients()
    if optimizer is not None:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if hooks.after_step is not None:
        hooks.after_step()
    return outputs, loss
