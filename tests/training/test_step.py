import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import cnnzoo
from cnnzoo.training.step import StepHooks, main_logits, train_step


def _toy():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    return model, x, y


def test_hooks_run_in_order_around_the_gradients_and_the_update():
    model, x, y = _toy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    before = model.weight.detach().clone()
    seen = []
    hooks = StepHooks(
        after_loss=lambda loss: seen.append(("loss", model.weight.grad is None, loss.detach().item())),
        after_gradients=lambda: seen.append(("gradients", model.weight.grad is not None,
                                             torch.equal(model.weight, before))),
        after_step=lambda: seen.append(("step", not torch.equal(model.weight, before), opt.param_groups[0]["lr"])))
    outputs, loss = train_step(model, x, y, F.cross_entropy, opt, scheduler=sched, hooks=hooks)
    assert [s[0] for s in seen] == ["loss", "gradients", "step"]
    assert seen[0][1:] == (True, loss.item()) and seen[1][1:] == (True, True) and seen[2][1:] == (True, 0.05)
    assert outputs.shape == (8, 3) and torch.equal(loss, F.cross_entropy(outputs, y))


def test_the_update_is_the_optimisers_on_the_callers_loss():
    model, x, y = _toy()
    twin = nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    loss_fn = lambda out, y: 2.0 * F.cross_entropy(out, y)  # noqa: E731
    for _ in range(3):
        train_step(model, x, y, loss_fn, torch.optim.SGD(model.parameters(), lr=0.1))
    opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(twin(x), y).backward()
        opt.step()
    assert torch.equal(model.weight, twin.weight) and torch.equal(model.bias, twin.bias)


def test_without_optimizer_the_gradients_of_one_step_do_not_accumulate():
    model, x, y = _toy()
    before = model.weight.detach().clone()
    train_step(model, x, y, F.cross_entropy, None)
    first = model.weight.grad.clone()
    train_step(model, x, y, F.cross_entropy, None)
    assert torch.equal(model.weight.grad, first) and torch.equal(model.weight, before)


def test_amp_runs_forward_and_loss_in_bfloat16_autocast():
    model, x, y = _toy()
    dtypes = []

    def loss_fn(out, y):
        dtypes.append((out.dtype, torch.is_autocast_enabled("cpu")))
        return F.cross_entropy(out.float(), y)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_step(model, x, y, loss_fn, opt, amp=True)
    train_step(model, x, y, loss_fn, opt)
    assert dtypes == [(torch.bfloat16, True), (torch.float32, False)]
    assert model.weight.dtype == torch.float32


def test_main_logits_of_models_with_auxiliary_heads():
    logits, aux = torch.zeros(2, 3), torch.ones(2, 3)
    assert main_logits(logits) is logits and main_logits((logits, aux)) is logits


def test_backward_is_called_in_train_step_only():
    # one place where a batch becomes a gradient (custom autograd Functions' backward methods aside)
    root = Path(cnnzoo.__file__).parent
    calls = [(p.relative_to(root).as_posix(), line.strip()) for p in sorted(root.rglob("*.py"))
             for line in p.read_text().splitlines() if re.search(r"\.backward\(", line)]
    assert calls == [("training/step.py", "loss.backward()")]
