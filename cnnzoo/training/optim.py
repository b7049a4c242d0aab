"""Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks"), as the
CIFAR-10 speed records use it on convolution filters (airbench94_muon): Nesterov momentum, then
the update of each filter bank, flattened to (out, in*kh*kw), replaced by its nearest
semi-orthogonal matrix (a few Newton-Schulz iterations), every singular direction moving at one
rate. Groups flagged ``muon=False`` (biases, norm layers, the classifier) take plain Nesterov SGD.
"""
from __future__ import annotations

import torch

# Quintic Newton-Schulz coefficients of Jordan et al.: they push small singular values up fast
# and leave every one in about [0.5, 1.5], which trains as well as the exact polar factor.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# airbench94_muon's momentum for the filters: lower than SGD's, as each orthogonalised step is
# already full-sized in every direction.
MUON_MOMENTUM = 0.6


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """About U V^T for g = U S V^T (2-D), by Newton-Schulz iteration on the wider orientation."""
    a, b, c = NS_COEFFICIENTS
    x = g.float()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (x.norm() + eps)  # every singular value <= 1: inside the iteration's basin
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Muon on the groups with ``muon=True``, Nesterov SGD with L2 ``weight_decay`` on the others.

    One optimizer for both, so that the schedule, checkpoints and resume see one object as they do
    with SGD. torch.optim.Muon takes 2-D parameters only; a filter bank (out, in, kh, kw) is
    orthogonalised here as the (out, in*kh*kw) matrix it multiplies patches by. As in airbench, each such
    parameter is rescaled to norm sqrt(out) before its step (a no-op for the function where a
    batch norm follows), so ``lr`` is the step's size relative to the weights throughout training.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.9, weight_decay: float = 0.0,
                 ns_steps: int = 3) -> None:  # 3 iterations: airbench's, enough at its coefficients
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, muon=False,
                                      ns_steps=ns_steps))
        for group in self.param_groups:
            if group["lr"] < 0 or not 0 <= group["momentum"] < 1:
                raise ValueError(f"Muon: lr must be >= 0 and momentum in [0, 1), got lr={group['lr']} "
                                 f"momentum={group['momentum']}" + (" (--muon-lr)" if group["muon"] else ""))
            for p in group["params"] if group["muon"] else ():
                if p.ndim < 2:
                    raise ValueError(f"Muon: a muon=True group holds matrices or filter banks (>= 2-D), "
                                     f"got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["muon"] and group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:  # not setdefault: that would allocate every step
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(g)
                g = g.add(buf, alpha=momentum)  # Nesterov
                if group["muon"]:
                    p.mul_(p.shape[0] ** 0.5 / p.norm().clamp_min(1e-12))
                    g = orthogonalize(g.reshape(len(g), -1), group["ns_steps"]).view_as(p)
                p.add_(g, alpha=-lr)
        return loss
