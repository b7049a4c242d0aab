"""timm's model API on every registered model: head widths and options, feature maps, graph capture
(FX, torchvision's feature extractor, torch.export), gradient checkpointing and parameter groups.

Shapes are checked on the meta device (no memory, no arithmetic); values at minimum input sizes on
small models. benchmarks/timm_api_sweep.py runs the value checks on every model at real sizes.
"""
import math

import pytest
import torch
from timm.models._manipulate import group_with_matcher
from timm.optim import create_optimizer_v2
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import cnnzoo
from cnnzoo.models.features import FeatureExtractor, take_indices
from cnnzoo.models.layers import DropPath, GlobalPool2d, MaxPool2d

ALL = cnnzoo.list_models()
# Heads of fully connected layers on a map of fixed size: the pooling is part of the design.
FIXED_HEAD = {"lenet5", "lenet_300_100", "lenet5_caffe", "alexnet", "alexnet_cifar", "zfnet", "zfnet_cifar",
              "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"}
CIFAR_VGG = {"vgg11_cifar", "vgg13_cifar", "vgg16_cifar", "vgg19_cifar"}
RESIDUAL = [n for n in ALL if n.startswith(("resnet", "resnext", "seresnet", "seresnext")) or n.startswith("mobilenet_v2")]
# One model per constructor configuration (family, stem, head kind), for the detailed checks; the
# conventions every model must follow are checked on all of them in test_every_model_conventions.
REPRESENTATIVE = ["lenet5", "lenet_300_100", "lenet5_caffe", "alexnet", "alexnet_cifar", "zfnet", "zfnet_cifar", "vgg11",
                  "vgg16_bn", "vgg11_cifar", "vgg_airbench", "resnet18", "resnet50", "resnet18_cifar", "resnet20",
                  "plain20", "resnext29_8x16d", "seresnet18", "seresnext50_32x4d", "seresnet20", "mobilenet_v1",
                  "mobilenet_v1_cifar", "mobilenet_v2", "mobilenet_v2_cifar", "googlenet", "googlenet_cifar",
                  "inception_v2", "inception_v2_cifar", "inception_v3", "inception_v3_cifar"]
# One small model per family (and per head kind), for checks that compute values.
# (ZFNet and Inception v3 share their mechanisms with these; benchmarks/timm_api_sweep.py computes them.)
SMALL = ["lenet5", "lenet5_caffe", "alexnet_cifar", "vgg11_cifar", "vgg_airbench", "resnet20", "seresnet20",
         "resnext29_8x16d", "mobilenet_v1_cifar", "mobilenet_v2_cifar", "googlenet_cifar", "inception_v2_cifar"]


def meta_model(name, **kwargs):
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


def input_size(name, minimum=False):
    return cnnzoo.get_model_cfg(name)["min_input_size" if minimum else "input_size"]


def small_model(name, **kwargs):
    torch.manual_seed(0)
    return cnnzoo.create_model(name, **kwargs).eval()


def small_input(name, batch=2):
    return torch.randn(batch, *input_size(name, minimum=True), generator=torch.Generator().manual_seed(1))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------
# Head


@pytest.mark.parametrize("name", ALL)
def test_every_model_conventions(name):
    """One meta-device build per model: head widths, num_classes=0, stages, parameter groups, FX."""
    model = meta_model(name, num_classes=7)
    x = torch.empty(2, *input_size(name), device="meta")
    # two passes on the meta device (its cost is per operation): the stages, then the FX graph
    if model.feature_info:
        feats, maps = model.forward_intermediates(x)
        assert [t.shape[1] for t in maps] == [d["num_chs"] for d in model.feature_info]
        reductions = [d["reduction"] for d in model.feature_info]
        assert reductions == sorted(set(reductions)), "one stage per resolution, in forward order"
        for fmap, d in zip(maps, model.feature_info):
            # valid (unpadded) convolutions shrink a map below input / reduction, never above
            assert x.shape[2] / d["reduction"] / 2 <= fmap.shape[2] <= math.ceil(x.shape[2] / d["reduction"]), d
    else:
        feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
    assert model.forward_head(feats).shape == (2, 7)
    assert model.get_classifier().in_features == model.head_hidden_size

    _check_group_matcher(model)
    graph = torch.fx.symbolic_trace(model)
    assert graph(torch.empty(2, *input_size(name, minimum=True), device="meta")).shape == (2, 7)
    assert not any("autograd" in str(n.target) or n.target == "contiguous" for n in graph.graph.nodes)

    keys = set(model.state_dict())
    params = n_params(model)
    head = n_params(model.get_classifier())
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity) and model.num_classes == 0
    assert model.forward_head(feats).shape == (2, model.head_hidden_size)
    assert set(model.state_dict()) == keys - {k for k in keys if k.startswith(model.classifier_name + ".")}
    assert n_params(model) == params - head
    model.reset_classifier(3)
    assert model.forward_head(feats).shape == (2, 3) and model.num_classes == 3


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_num_classes_zero_builds_no_classifier(name):
    headless, full = meta_model(name, num_classes=0), meta_model(name)
    assert isinstance(headless.get_classifier(), nn.Identity)
    assert n_params(headless) == n_params(full) - n_params(full.get_classifier())
    x = torch.empty(1, *input_size(name), device="meta")
    assert headless(x).shape == (1, full.head_hidden_size)


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_global_pool_choices(name):
    x = torch.empty(2, *input_size(name), device="meta")
    if name in FIXED_HEAD:
        for pool in ("max", "avgmax", "" if not name.startswith("lenet") else "avg"):
            with pytest.raises(ValueError, match="supports global_pool in"):
                meta_model(name, global_pool=pool)
            with pytest.raises(ValueError, match="supports global_pool in"):
                meta_model(name).reset_classifier(5, global_pool=pool)
        return
    model = meta_model(name, num_classes=5, global_pool="max")
    assert model(x).shape == (2, 5)
    feats = model.forward_features(x)
    for pool in ("avg", "max", "avgmax"):
        model.reset_classifier(4, global_pool=pool)
        assert model.forward_head(feats).shape == (2, 4)
    if name in CIFAR_VGG:  # fc1 needs a vector
        with pytest.raises(ValueError, match="supports global_pool in"):
            meta_model(name, num_classes=0, global_pool="")
        return
    with pytest.raises(ValueError, match="needs num_classes=0"):
        meta_model(name, global_pool="")
    with pytest.raises(ValueError, match="needs num_classes=0"):
        model.reset_classifier(3, global_pool="")
    model.reset_classifier(0, global_pool="")
    assert model.forward_head(feats).shape == feats.shape
    assert meta_model(name, num_classes=0, global_pool="")(x).shape == feats.shape


def test_global_pool_values():
    x = torch.randn(2, 3, 5, 4)
    torch.testing.assert_close(GlobalPool2d("avg")(x), x.mean((2, 3)), rtol=0, atol=1e-6)
    torch.testing.assert_close(GlobalPool2d("max")(x), x.amax((2, 3)), rtol=0, atol=0)
    torch.testing.assert_close(GlobalPool2d("avgmax")(x), (x.mean((2, 3)) + x.amax((2, 3))) / 2, rtol=0, atol=1e-6)
    assert GlobalPool2d("")(x) is x
    with pytest.raises(ValueError, match="global_pool must be one of"):
        GlobalPool2d("catavgmax")


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_head_options_keep_the_default_network(name):
    """drop_rate, drop_path_rate and global_pool add no parameters, and in eval mode the rates
    change nothing: a model built with them computes what the default model computes."""
    kwargs = dict(drop_rate=0.3, **(dict(drop_path_rate=0.2) if name in RESIDUAL else {}))
    default, varied = meta_model(name), meta_model(name, **kwargs)
    assert [(k, v.shape) for k, v in default.state_dict().items()] == [(k, v.shape) for k, v in varied.state_dict().items()]
    if name in SMALL or name in ("resnet20", "mobilenet_v2_cifar"):
        default, varied = small_model(name), small_model(name, **kwargs)
        varied.load_state_dict(default.state_dict())
        x = small_input(name)
        with torch.no_grad():
            torch.testing.assert_close(varied(x), default(x), rtol=0, atol=0)
        varied.train()
        varied(x).sum().backward()  # the training path of the options runs


def test_drop_rate_reaches_every_head():
    for name in REPRESENTATIVE:
        model = meta_model(name, drop_rate=0.25)
        assert any(isinstance(m, nn.Dropout) and m.p == 0.25 for m in model.modules()), name


def test_drop_path_is_linear_over_the_blocks_and_only_on_residual_branches():
    model = meta_model("resnet50", drop_path_rate=0.3)
    rates = [b.drop_path.drop_prob if b.drop_path is not None else 0.0
             for stage in model.stage_names for b in getattr(model, stage)]
    assert len(rates) == 16 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert all(b - a == pytest.approx(0.3 / 15) for a, b in zip(rates, rates[1:]))
    v2 = meta_model("mobilenet_v2", drop_path_rate=0.2)
    blocks = [b for stage in v2.stages for b in stage]
    assert all((b.drop_path is not None) == b.use_residual for b in blocks[1:])
    assert sum(b.use_residual for b in blocks) == 10  # 17 blocks, 10 with shortcuts
    with pytest.raises(ValueError, match="needs shortcuts"):
        meta_model("plain20", drop_path_rate=0.1)
    with pytest.raises(ValueError, match="vgg11 takes no argument .drop_path_rate."):
        meta_model("vgg11", drop_path_rate=0.1)


def test_drop_path_drops_whole_samples():
    layer = DropPath(0.5).train()
    torch.manual_seed(0)
    out = layer(torch.ones(2000, 3, 2, 2))
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # a sample is kept or dropped as a whole
    assert abs(per_sample.mean().item() - 1.0) < 0.1  # unbiased
    x = torch.randn(4, 3, 2, 2)
    assert layer.eval()(x) is x
    with pytest.raises(ValueError, match="drop path rate"):
        DropPath(1.0)


# --------------------------------------------------------------------------------------------------
# Feature maps


def test_take_indices():
    assert take_indices(5, None) == ([0, 1, 2, 3, 4], 4)
    assert take_indices(5, 2) == ([3, 4], 4)
    assert take_indices(5, [-1, 0, 2]) == ([0, 2, 4], 4)
    for bad in (0, 6, [5], [-6], []):
        with pytest.raises(ValueError):
            take_indices(5, bad)
    with pytest.raises(ValueError, match="no convolutional stages"):
        take_indices(0, None)


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_forward_intermediates_options(name):
    model = meta_model(name)
    if name == "lenet_300_100":  # a perceptron: no maps
        assert model.feature_info == []
        with pytest.raises(ValueError, match="no convolutional stages"):
            cnnzoo.create_model(name, features_only=True)
        return
    x = torch.empty(1, *input_size(name), device="meta")
    final, maps = model.forward_intermediates(x)
    assert final.shape == model.forward_features(x).shape
    info = model.feature_info
    assert len(maps) == len(info) >= 2
    assert all(set(d) >= {"num_chs", "reduction", "module"} for d in info)
    assert [t.shape for t in model.forward_intermediates(x, indices=2, intermediates_only=True)] == [
        maps[-2].shape, maps[-1].shape]
    final, first = model.forward_intermediates(x, indices=[0], stop_early=True)
    assert final.shape == first[0].shape == maps[0].shape
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[len(info)])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_features_only(name):
    if name == "lenet_300_100":
        return
    full = meta_model(name)
    last = len(full.feature_info) - 1
    extractor = meta_model(name, features_only=True, out_indices=(0, -1))
    assert isinstance(extractor, FeatureExtractor)
    fi = extractor.feature_info
    assert fi.out_indices == (0, last) and len(fi) == len(full.feature_info)
    assert fi.channels() == [full.feature_info[0]["num_chs"], full.feature_info[-1]["num_chs"]]
    assert fi.reduction() == [full.feature_info[0]["reduction"], full.feature_info[-1]["reduction"]]
    assert fi.module_name(0) == full.feature_info[0]["module"]
    x = torch.empty(1, *input_size(name), device="meta")
    assert [t.shape[1] for t in extractor(x)] == fi.channels()
    # the head (classifier, pooling, fully connected layers) is gone
    assert not any(k.startswith(f"model.{full.classifier_name}.") for k in extractor.state_dict())
    first_only = meta_model(name, features_only=True, out_indices=[0])
    assert n_params(first_only) < n_params(extractor)
    assert [t.shape for t in first_only(x)] == [extractor(x)[0].shape]


def test_features_only_keeps_the_convolutional_part():
    # torchvision's counts: resnet18 without its fc, vgg16.features, alexnet.features
    for name, params in (("resnet18", 11_689_512 - 513_000), ("vgg16", 14_714_688), ("alexnet", 2_469_696)):
        assert n_params(meta_model(name, features_only=True)) == params, name
    # up to layer2 of ResNet-50: stem and two stages (torchvision's counts: 9,408 + 128 + 215,808 + 1,219,584)
    assert n_params(meta_model("resnet50", features_only=True, out_indices=(1, 2))) == 1_444_928


@pytest.mark.parametrize("name", SMALL)
def test_feature_values_match_the_full_model(name):
    full = small_model(name)
    extractor = small_model(name, features_only=True, out_indices=[0, 1])
    extractor.model.load_state_dict(full.state_dict(), strict=False)
    x = small_input(name)
    with torch.no_grad():
        want = full.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        got = extractor(x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_features_only_carries_the_configuration():
    # timm's generic tests size their inputs from model.default_cfg, on full and features_only models
    extractor = meta_model("resnet50.tv2_in1k", features_only=True)
    cfg = extractor.pretrained_cfg
    assert extractor.default_cfg is cfg is extractor.model.pretrained_cfg
    assert (cfg["architecture"], cfg["tag"], cfg["crop_pct"]) == ("resnet50", "tv2_in1k", 0.965)


def test_features_only_arguments():
    with pytest.raises(ValueError, match="features_only=True"):
        cnnzoo.create_model("resnet20", out_indices=[1])
    with pytest.raises(ValueError, match="out of range"):
        cnnzoo.create_model("resnet20", features_only=True, out_indices=[4])


def _timm_feature_input_size(cfg, target=96):
    """timm's tests/test_models.py ``_get_input_size(model=..., target=TARGET_FFEAT_SIZE)``: the
    default input, or the minimum one where the default is larger than ``target``."""
    if cfg.get("fixed_input_size"):
        return cfg["input_size"]
    return cfg["min_input_size"] if max(cfg["input_size"]) > target else cfg["input_size"]


def _materialise(model):
    """A model built on the meta device, given real memory and each layer's own initialisation
    (features_only cuts the head first, so VGG's 100M-parameter classifier is never allocated)."""
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model.eval()


# Every model but the perceptron, which has no feature maps to give (test_forward_intermediates_options).
WITH_MAPS = [n for n in ALL if n != "lenet_300_100"]


@pytest.mark.parametrize("name", WITH_MAPS)
def test_timm_forward_intermediates_features(name):
    """timm's test_model_forward_intermediates_features on every model: timm's FeatureGetterNet
    (``feature_cls="getter"``) at timm's feature-test input size, one image."""
    with torch.device("meta"):
        model = cnnzoo.create_model(name, pretrained=False, features_only=True, feature_cls="getter")
    model = _materialise(model)
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    size = _timm_feature_input_size(model.default_cfg)
    assert max(size) <= 256  # timm skips larger fixed inputs; none of ours is
    with torch.no_grad():
        outputs = model(torch.randn(1, *size))
    assert len(outputs) == len(channels)
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[0] == 1 and o.shape[1] == c
        assert o.shape[2] <= math.ceil(size[1] / r) + 1 and o.shape[3] <= math.ceil(size[2] / r) + 1
        assert not torch.isnan(o).any()


@pytest.mark.parametrize("name", ["resnet20", "googlenet_cifar", "vgg11_cifar"])
def test_every_feature_class_gives_the_same_maps(name):
    full = small_model(name)
    x = small_input(name)
    with torch.no_grad():
        want = full.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
    last = len(full.feature_info) - 1
    for kind in ("list", "getter", "hook", "dict", "fx", "GETTER"):
        extractor = small_model(name, features_only=True, out_indices=(0, -1), feature_cls=kind)
        missing, unexpected = extractor.load_state_dict(
            {f"{'graph_module' if kind == 'fx' else 'model'}.{k}": v for k, v in full.state_dict().items()},
            strict=False)
        assert not missing and extractor.feature_info.out_indices == (0, last), kind
        with torch.no_grad():
            got = extractor(x)
        if kind == "dict":
            assert list(got) == ["0", str(last)]  # timm's FeatureDictNet keys: the stage indices
            got = list(got.values())
        assert isinstance(got, list) and len(got) == 2, kind
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=kind)
    graph = small_model(name, features_only=True, feature_cls="fx")
    assert isinstance(graph.graph_module, torch.fx.GraphModule) and graph.default_cfg["architecture"] == name


def test_feature_class_errors():
    with pytest.raises(ValueError, match="feature_cls must be one of 'list', 'getter', 'hook', 'dict', 'fx'"):
        meta_model("resnet20", features_only=True, feature_cls="pyramid")
    with pytest.raises(ValueError, match="feature_cls must be one of"):
        meta_model("resnet20", features_only=True, feature_cls=nn.Module)
    with pytest.raises(ValueError, match="pass features_only=True"):
        meta_model("resnet20", feature_cls="getter")


# --------------------------------------------------------------------------------------------------
# Graph capture


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_torchvision_feature_extractor(name):
    model = meta_model(name)
    x = torch.empty(2, *input_size(name, minimum=True), device="meta")
    nodes = [d["module"] for d in model.feature_info]
    if nodes:
        extractor = create_feature_extractor(model, return_nodes=nodes)
        assert [t.shape for t in extractor(x).values()] == [
            t.shape for t in model.forward_intermediates(x, intermediates_only=True)]


@pytest.mark.parametrize("name", SMALL)
def test_graphs_compute_what_eager_computes(name):
    model = small_model(name)
    x = small_input(name)
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), want, rtol=0, atol=0)
        nodes = [d["module"] for d in model.feature_info]
        got = create_feature_extractor(model, return_nodes=nodes)(x)
        for a, b in zip(got.values(), model.forward_intermediates(x, intermediates_only=True)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "vgg11_cifar", "mobilenet_v2_cifar", "googlenet_cifar"])
def test_torch_export(name):
    model = small_model(name)
    x = small_input(name)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)


def test_traced_pools_take_torchs_path():
    """Under FX the pools are torch's pooling calls: no layout round trip, no autograd.Function."""
    pool = nn.Sequential(MaxPool2d(2), nn.ReLU())
    graph = torch.fx.symbolic_trace(pool)
    calls = [n for n in graph.graph.nodes if n.op in ("call_function", "call_method")]
    assert len(calls) == 1 and calls[0].name == "max_pool2d"
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    torch.testing.assert_close(graph(x), pool(x), rtol=0, atol=0)


def test_input_checks_stay_in_eager():
    model = cnnzoo.create_model("lenet5")
    with pytest.raises(ValueError, match="exactly 32x32"):
        model(torch.randn(1, 1, 28, 28))
    graph = torch.fx.symbolic_trace(model)
    assert graph(torch.randn(1, 1, 32, 32)).shape == (1, 10)


# --------------------------------------------------------------------------------------------------
# Training helpers


@pytest.mark.parametrize("name", SMALL)
def test_grad_checkpointing_keeps_gradients_and_statistics(name):
    kwargs = dict(drop_path_rate=0.2) if name in RESIDUAL else {}
    plain, ckpt = small_model(name, drop_rate=0.2, **kwargs), small_model(name, drop_rate=0.2, **kwargs)
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing()
    x = small_input(name, batch=4)
    calls = []
    ckpt.get_submodule(ckpt.stage_modules[0]).register_forward_pre_hook(lambda *a: calls.append(1))
    for model in (plain, ckpt):
        model.train()
        torch.manual_seed(3)  # same dropout and drop-path masks
        model(x).square().mean().backward()
    assert len(calls) == 2  # forward, then the recomputation
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-6, msg=n)
    for (n, b), c in zip(plain.named_buffers(), ckpt.buffers()):
        torch.testing.assert_close(c, b, rtol=0, atol=0, msg=n)  # the recomputation counts no batch twice


def test_grad_checkpointing_is_training_only():
    model = small_model("resnet20")
    model.set_grad_checkpointing()
    calls = []
    model.layer3.register_forward_hook(lambda *a: calls.append(1))
    model(small_input("resnet20")).sum().backward()  # eval mode
    assert len(calls) == 1


def _check_group_matcher(model):
    names = [n for n, _ in model.named_parameters()]
    sizes = []
    for coarse in (True, False):
        matcher = model.group_matcher(coarse=coarse)
        assert set(matcher) == {"stem", "blocks"}
        groups = group_with_matcher(model.named_parameters(), matcher)
        sizes.append(len(groups))
        layer_of = {n: lid for lid, ns in groups.items() for n in ns}
        assert set(layer_of) == set(names)
        assert layer_of[f"{model.first_conv}.weight"] == 0  # the stem comes first
        head = layer_of[f"{model.classifier_name}.weight"]
        assert head == max(layer_of.values()) and list(layer_of.values()).count(head) <= 6
        # groups follow the forward order: a later stage never gets a smaller id
        stage_ids = [layer_of[n] for s in model.stage_modules for n in names if n.startswith(s + ".")]
        assert stage_ids == sorted(stage_ids) and len(set(stage_ids)) >= min(2, len(model.stage_modules))
    assert sizes[0] <= sizes[1]  # coarse groups are stages, fine ones blocks


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "mobilenet_v2", "googlenet", "lenet5"])
def test_timm_layer_decay_gives_stages_their_own_learning_rate(name):
    model = meta_model(name)
    optimizer = create_optimizer_v2(model, "sgd", lr=0.1, layer_decay=0.7)
    scale = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    stem = scale[id(model.get_submodule(model.first_conv).weight)]
    head = scale[id(model.get_classifier().weight)]
    last_stage = scale[id(next(model.get_submodule(model.stage_modules[-1]).parameters()))]
    assert stem < last_stage < head == 1.0
    assert len({round(s, 6) for s in scale.values()}) >= 3
