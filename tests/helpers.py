"""Shared test helpers."""
import torch
from torch import nn

import cnnzoo


def sgd_losses(name: str, *, batch: int, steps: int, lr: float, size: int = 28) -> list[float]:
    """Build ``name`` for 1-channel images and 10 classes, train it for ``steps`` SGD steps on one
    fixed random batch of ``batch`` 1x``size``x``size`` images with random labels, and return the
    loss after each step. A model whose gradients flow memorises the batch, so the loss falls."""
    torch.manual_seed(0)
    model = cnnzoo.create_model(name, in_chans=1, num_classes=10)
    x, y = torch.randn(batch, 1, size, size), torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
