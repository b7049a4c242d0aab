import pytest
import torch
from torch import nn

from cnnzoo.models.factory import create_model
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.loop import build_optimizer, train
from cnnzoo.training.optim import MUON_MOMENTUM, Muon, orthogonalize


@pytest.mark.parametrize("shape", [(16, 72), (72, 16), (32, 32)])
def test_orthogonalize_flattens_the_spectrum_along_the_svd_directions(shape):
    torch.manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k))
    g = u @ torch.diag(torch.logspace(-1, 1, k)) @ v.T  # singular values over two decades
    o = orthogonalize(g, steps=5)
    assert o.shape == g.shape
    s = torch.linalg.svdvals(o)
    assert s.max() < 1.25 and s.min() > 0.5, s  # about 1, where g's spread a hundredfold
    # the same singular directions: o is U S' V^T with S' near the identity
    assert torch.nn.functional.cosine_similarity((u @ v.T).flatten(), o.flatten(), dim=0) > 0.95


def test_muon_step_normalises_the_filters_and_takes_the_orthogonalised_step():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(8, 3, 3, 3) * 5)
    w.grad = torch.randn_like(w)
    start, grad = w.detach().clone(), w.grad.clone()
    Muon([{"params": [w], "muon": True, "momentum": 0.6}], lr=0.1).step()
    # first step: the Nesterov update is (1 + momentum) g, and orthogonalisation ignores the scale
    expected = start * (8 ** 0.5 / start.norm()) - 0.1 * orthogonalize(grad.reshape(8, -1), 3).view_as(w)
    torch.testing.assert_close(w.detach(), expected)


def test_muon_sgd_groups_match_torch_sgd_with_nesterov_and_weight_decay():
    torch.manual_seed(0)
    ours, ref = nn.Linear(6, 4), nn.Linear(6, 4)
    ref.load_state_dict(ours.state_dict())
    opt_ours = Muon([{"params": [ours.weight], "weight_decay": 5e-4}, {"params": [ours.bias]}], lr=0.1, momentum=0.9)
    opt_ref = torch.optim.SGD([{"params": [ref.weight], "weight_decay": 5e-4}, {"params": [ref.bias]}], lr=0.1,
                              momentum=0.9, nesterov=True)
    x = torch.randn(32, 6)
    for _ in range(4):
        for net, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    torch.testing.assert_close(ours.weight, ref.weight)
    torch.testing.assert_close(ours.bias, ref.bias)


def test_muon_rejects_vectors_in_a_muon_group_and_bad_settings():
    with pytest.raises(ValueError, match=r"got a parameter of shape \(5,\)"):
        Muon([{"params": [nn.Parameter(torch.zeros(5))], "muon": True}])
    with pytest.raises(ValueError, match=r"got lr=-0.1 momentum=0.6 \(--muon-lr\)"):
        build_optimizer(create_model("lenet5"), TrainConfig(opt="muon", muon_lr=-0.1))


def test_build_optimizer_puts_conv_filters_under_muon_and_the_rest_under_sgd():
    net = create_model("lenet5")
    cfg = TrainConfig(opt="muon", lr=0.2, muon_lr=0.05, weight_decay=5e-4, momentum=0.9)
    muon, decayed, plain = build_optimizer(net, cfg).param_groups
    filters = [p for p in net.parameters() if p.ndim == 4]
    assert len(filters) == 3 and {id(p) for p in muon["params"]} == {id(p) for p in filters}
    assert muon["muon"] and (muon["lr"], muon["momentum"]) == (0.05, MUON_MOMENTUM)
    assert {id(p) for p in decayed["params"]} == {id(p) for p in net.parameters() if p.ndim == 2}
    assert not decayed["muon"] and (decayed["lr"], decayed["weight_decay"], decayed["momentum"]) == (0.2, 5e-4, 0.9)
    assert {id(p) for p in plain["params"]} == {id(p) for p in net.parameters() if p.ndim == 1}
    assert plain["weight_decay"] == 0.0
    # the other optimisers keep their two groups
    assert len(build_optimizer(net, TrainConfig(opt="sgd")).param_groups) == 2


def test_fast_recipe_with_muon_learns(fmnist_small, tmp_path):
    cfg = TrainConfig(model="vgg_airbench", dataset="fashion-mnist", data_dir=str(fmnist_small), epochs=2,
                      batch_size=64, opt="muon", lr=0.1, muon_lr=0.08, sched="linear", label_smoothing=0.1,
                      tta_flip=False, out=str(tmp_path / "run"), seed=0)
    assert train(cfg, progress=False)["test_top1"] > 0.6  # chance is 0.1
