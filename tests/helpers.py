"""Shared test helpers."""
import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo.compression import pipeline


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


def assert_min_input_is_true_minimum(name: str) -> None:
    """At its registered minimum input the model runs forward and backward; one pixel less in either
    side is a ValueError from check_input, and without that check the network itself fails."""
    c, h, w = cnnzoo.get_model_cfg(name)["min_input_size"]
    model = cnnzoo.create_model(name, num_classes=5).train()
    out = model(torch.randn(2, c, h, w))
    assert out.shape == (2, 5)
    out.sum().backward()
    assert model.get_submodule(model.first_conv).weight.grad is not None
    for smaller in ((h - 1, w), (h, w - 1)):
        try:
            model(torch.randn(2, c, *smaller))
        except ValueError as exc:
            assert "at least" in str(exc)
        else:
            raise AssertionError(f"{name} accepted {smaller}, below its minimum {(h, w)}")
    del model.pretrained_cfg  # check_input steps aside without a cfg
    model.eval()
    try:
        with torch.no_grad():
            model(torch.randn(1, c, h - 1, w - 1))
    except RuntimeError:
        return
    raise AssertionError(f"{name} runs below its registered minimum {(h, w)}: the minimum is wrong")


def compress_cut_in_third_retraining(monkeypatch, run, out, **kw) -> None:
    """``compress(run, out, **kw)`` interrupted (KeyboardInterrupt) as its third retraining starts,
    as Ctrl-C would stop it; the pipeline's own ``finetune`` is back in place afterwards."""
    calls, real = [], pipeline.finetune

    def stop_in_third_retraining(*args, **kwargs):
        calls.append(kwargs["seed"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "finetune", stop_in_third_retraining)
    with pytest.raises(KeyboardInterrupt):
        pipeline.compress(run, out, **kw)
    monkeypatch.setattr(pipeline, "finetune", real)
