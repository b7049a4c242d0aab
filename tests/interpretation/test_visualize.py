"""cnnzoo.interpretation.maps, cnnzoo.interpretation.drawing and `cnnzoo visualize`: the maps point at what decides the
class, projections stay inside receptive fields, clamp-like activations get the ReLU rules, models
come back untouched, and every method runs on every family."""
import json

import numpy as np
import pytest
import torch
from captum.attr import Deconvolution as _CaptumDeconvolution
from PIL import Image
from torch import nn

from cnnzoo import create_model
from cnnzoo.analysis import receptive_field
from cnnzoo.cli import main
from cnnzoo.interpretation import drawing, maps

SIZE, PATTERN = 24, 4


class PatternNet(nn.Module):
    """Conv -> pool -> conv -> conv -> global max pool -> linear: finds a pattern anywhere."""

    def __init__(self, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), act(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), act(inplace=True),
                                      nn.Conv2d(16, 16, 3, padding=1), act(inplace=True))
        self.fc = nn.Linear(16, 2)
        self.pretrained_cfg = dict(architecture="patternnet", mean=(0.5,), std=(0.5,), input_size=(1, SIZE, SIZE),
                                   num_classes=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).amax(dim=(2, 3)))


def pattern_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dim noise with one small bright pattern at a random place: a cross (class 1) or a filled
    square (class 0), so only the pattern's shape tells the class. Returns normalised images,
    labels and the patterns' top-left corners."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, SIZE, SIZE, generator=g) * 0.3
    labels = torch.randint(0, 2, (n,), generator=g)
    corners = torch.randint(0, SIZE - PATTERN + 1, (n, 2), generator=g)
    cross = torch.zeros(PATTERN, PATTERN)
    cross[PATTERN // 2 - 1: PATTERN // 2 + 1] = cross[:, PATTERN // 2 - 1: PATTERN // 2 + 1] = 1
    for i, ((r, c), y) in enumerate(zip(corners.tolist(), labels.tolist())):
        x[i, 0, r: r + PATTERN, c: c + PATTERN] = cross if y else torch.full((PATTERN, PATTERN), 0.7)
    return (x - 0.5) / 0.5, labels, corners


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These networks are tiny: on a loaded machine, two threads per convolution cost more in
    # waiting for each other than they gain (a 50x slower training step was seen).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pattern_net():
    torch.manual_seed(0)
    net = PatternNet()
    x, y, _ = pattern_images(1024, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(80):
        idx = torch.randint(0, len(x), (32,))
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    xt, yt, _ = pattern_images(200, seed=1)
    with torch.no_grad():
        assert (net(xt).argmax(1) == yt).float().mean() > 0.95  # it learnt the patterns
    return net


def mass_ratio(heat: torch.Tensor, corner: tuple[int, int], margin: int = 2) -> float:
    """Share of the map's positive mass within ``margin`` pixels of the pattern, over the share a
    uniform map would put there."""
    heat = heat.clamp_min(0)
    r, c = corner
    box = heat[max(r - margin, 0): r + PATTERN + margin, max(c - margin, 0): c + PATTERN + margin]
    return float(box.sum() / heat.sum()) / (box.numel() / heat.numel())


def test_grad_cam_and_occlusion_mass_lies_on_the_pattern(pattern_net):
    # Images of the cross class: there the cross alone decides (the square class can be learnt as
    # "no cross anywhere", whose evidence is everywhere).
    x, y, corners = pattern_images(24, seed=2)
    crosses = (y == 1).nonzero().flatten().tolist()
    assert len(crosses) >= 8
    for i in crosses:
        xi, corner = x[i: i + 1], tuple(corners[i].tolist())
        cam, target = maps.grad_cam(pattern_net, xi, layer="features.6")
        assert target == 1 and cam.shape == (SIZE, SIZE)
        assert float(cam.min()) >= 0 and float(cam.max()) == pytest.approx(1.0)
        occ, _ = maps.occlusion(pattern_net, xi, target=target, window=4, stride=2, baseline="black")
        assert occ.shape == (SIZE, SIZE)
        assert mass_ratio(cam, corner) >= 2, f"image {i}: Grad-CAM misses the pattern at {corner}"
        assert mass_ratio(occ, corner) >= 2, f"image {i}: occlusion misses the pattern at {corner}"


def test_a_uniform_map_does_not_pass_the_mass_test():
    assert mass_ratio(torch.ones(SIZE, SIZE), (10, 10)) == pytest.approx(1.0)


def _nonzero_box(t: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = t.abs().sum(0).nonzero(as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


@pytest.mark.parametrize("name, layer", [("vgg11_cifar", "stage2.conv1"), ("resnet20", "layer1"),
                                         ("mobilenet_v2_cifar", "stages.1"), ("alexnet_cifar", "pool2"),
                                         ("resnet20", "layer1.1.relu")])  # a ReLU each block calls twice
def test_deconv_projection_stays_inside_the_receptive_field(name, layer):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(1, *model.pretrained_cfg["input_size"])
    res = maps.deconv(model, x, layer=layer)
    row, col = res["position"]
    # The field as the receptive-field analysis (`cnnzoo summary`) gives it.
    field = next(f for f in reversed(receptive_field(model, leaves_only=False)) if f.name == layer)
    top, left = (field.start[a] - (field.rf[a] - 1) / 2 + p * field.jump[a] for a, p in ((0, row), (1, col)))
    assert field.rf[0] < x.shape[2]  # a field smaller than the image: the test can fail
    assert res["field"] == (int(np.floor(top)), int(np.floor(left)), int(np.ceil(top + field.rf[0])),
                            int(np.ceil(left + field.rf[1])))
    for key in ("deconv", "guided"):
        t = res[key]
        assert t.shape == x.shape[1:] and t.abs().sum() > 0
        r0, c0, r1, c1 = _nonzero_box(t)
        assert r0 >= top and c0 >= left and r1 <= top + field.rf[0] and c1 <= left + field.rf[1], \
            f"{key} of {name}.{layer} at {(row, col)} reaches {(r0, c0, r1, c1)}, outside its field {res['field']}"


class Negate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x


def test_relu6_gets_the_deconvnet_and_guided_rules():
    up = nn.Sequential(nn.ReLU6())
    down = nn.Sequential(nn.ReLU6(), Negate())  # the gradient from above is -1 everywhere

    def rule(method, model, i):
        # A fresh input each time: Captum's hooks sit on the tensor that enters the activation.
        x = torch.tensor([[-1.0, 3.0, 7.0]])  # below 0, inside (0, 6), above 6
        return float(method(model).attribute(x, target=i)[0, i])

    for i in range(3):
        # guided: the activation's own gradient (zero where ReLU6 is flat), then its positive part
        assert rule(maps.GuidedBackprop, up, i) == (1.0 if i == 1 else 0.0)
        assert rule(maps.GuidedBackprop, down, i) == 0.0
        # deconvnet: the positive part of the gradient from above, whatever the input was
        assert rule(maps.Deconvolution, up, i) == 1.0
        assert rule(maps.Deconvolution, down, i) == 0.0
    # Captum's own classes leave ReLU6 alone: plain gradients, which these rules change.
    assert rule(_CaptumDeconvolution, up, 0) == 0.0 and rule(_CaptumDeconvolution, down, 1) == -1.0


def test_relu6_net_projects_as_its_relu_twin_where_nothing_saturates():
    torch.manual_seed(0)
    relu, relu6 = PatternNet(nn.ReLU).eval(), PatternNet(nn.ReLU6).eval()
    relu6.load_state_dict(relu.state_dict())
    x = torch.randn(1, 1, SIZE, SIZE) * 0.5
    assert relu.features(x).max() < 6  # ReLU6 never saturates here
    a, b = maps.deconv(relu, x, layer="features.6"), maps.deconv(relu6, x, layer="features.6")
    assert a["position"] == b["position"]
    for key in ("deconv", "guided"):
        torch.testing.assert_close(a[key], b[key])
    assert not torch.allclose(a["deconv"], a["guided"])  # the two rules differ: the test can tell them apart


def _state(model: nn.Module):
    return ([(m.training, getattr(m, "inplace", None), len(m._forward_hooks), len(m._forward_pre_hooks),
              len(m._backward_hooks)) for m in model.modules()],
            {k: v.clone() for k, v in model.state_dict().items()})


def test_models_come_back_untouched():
    torch.manual_seed(0)
    model = create_model("resnet20").train()  # training mode must survive too
    x = torch.randn(1, 3, 32, 32)
    before, weights = _state(model)
    maps.grad_cam(model, x)
    maps.occlusion(model, x, window=16, stride=16)
    maps.feature_maps(model, x, top=4)
    maps.deconv(model, x)
    after, weights_after = _state(model)
    assert before == after and any(inplace for _, inplace, *_ in after)
    assert all(torch.equal(weights[k], weights_after[k]) for k in weights)
    assert not x.requires_grad


def test_feature_maps_filters_and_errors():
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    x = torch.randn(1, 3, 32, 32)
    fmaps, channels = maps.feature_maps(model, x, layer="layer2", top=5)
    assert fmaps.shape == (5, 16, 16) and len(set(channels)) == 5
    means = fmaps.mean(dim=(1, 2))
    assert torch.all(means[:-1] >= means[1:])  # most active first
    assert maps.first_layer_filters(model).shape == (16, 3, 3, 3)
    assert maps.default_layer(model) == "layer3"
    with pytest.raises(ValueError, match=r"no layer 'layer9'.*layer3"):
        maps.grad_cam(model, x, layer="layer9")
    with pytest.raises(ValueError, match=r"not a feature map"):
        maps.feature_maps(model, x, layer="fc")
    with pytest.raises(ValueError, match=r"target class 10 is out of range: resnet20 has 10 classes"):
        maps.grad_cam(model, x, target=10)
    with pytest.raises(ValueError, match=r"unit 99 is out of range"):
        maps.deconv(model, x, layer="layer1", unit=99)
    with pytest.raises(ValueError, match=r"no first convolution"):
        maps.first_layer_filters(create_model("lenet_300_100"))


def test_drawing():
    img = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    heat = torch.zeros(8, 8)
    heat[2, 3] = 1
    over = np.asarray(drawing.overlay(img, heat))
    assert over.shape == (8, 8, 3) and over[2, 3, 0] > over[2, 3, 2]  # hot is red
    assert np.array_equal(over[0, 0], (0.5 * np.asarray(img[0, 0, 0]).repeat(3) + 0.5 * np.array([0, 0, 127.5])).round())
    with pytest.raises(ValueError, match="differ in size"):
        drawing.overlay(img, torch.zeros(4, 4))
    assert drawing.filter_grid(torch.randn(6, 1, 5, 5)).size == (3 * 45 + 4 * 2, 2 * 45 + 3 * 2)
    assert drawing.filter_grid(torch.randn(4, 3, 3, 3)).mode == "RGB"
    assert drawing.to_png_bytes(drawing.feature_grid(torch.rand(3, 4, 4)))[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------------
# The command


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


FAMILIES = ["lenet5", "alexnet_cifar", "vgg11_cifar", "googlenet_cifar", "inception_v3_cifar", "resnet20",
            "seresnet18_cifar", "mobilenet_v1_cifar", "mobilenet_v2_cifar", "vgg_airbench"]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_method_runs_on_every_family(name, tmp_path, capsys):
    c, h, w = create_model(name).pretrained_cfg["input_size"]
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h + 5, w + 3, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    extra = dict(occlusion=["--window", str(h // 2), "--stride", str(h // 2)])
    for method in ("features", "cam", "occlusion", "deconv"):
        code, text, err = run_cli(capsys, "visualize", method, "--model", name, image, "--out", out, "--save-array",
                                  *extra.get(method, []), "--json")
        assert code == 0, err
        files = json.loads(text.strip().splitlines()[-1])[0]["files"]
        assert files[0].endswith(f"in_{method}.png") and Image.open(files[0]).size[1] >= 256
        for f in files[1:]:
            assert np.load(f).shape[-2:] == (h, w)
    code, text, err = run_cli(capsys, "visualize", "filters", "--model", name, "--out", out, "--save-array")
    assert code == 0, err
    assert (out / "filters.png").exists() and np.load(out / "filters.npy").ndim == 4


def test_a_run_without_images_shows_its_test_images(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--epochs", "1", "--train-subset", "128", "--test-subset", "64",
                 "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    code, text, err = run_cli(capsys, "visualize", "cam", "--checkpoint", run, "--out", tmp_path / "o",
                              "--target", "class3", "--json")
    assert code == 0, err
    res = json.loads(text.strip().splitlines()[-1])
    assert len(res) == 4 and {r["target"] for r in res} == {3} and res[0]["class"] == "class3"
    assert res[0]["image"].startswith("test0_")
    code, text, err = run_cli(capsys, "visualize", "occlusion", "--checkpoint", run, "--out", tmp_path / "o", "--json")
    assert code == 0, err
    assert json.loads(text.strip().splitlines()[-1])[0]["baseline"] == "grey"  # synthetic images are not on black


def test_command_errors_are_one_line(tmp_path, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(image)
    cases = [(["cam", "--layer", "layer9"], "resnet20 has no layer 'layer9'"),
             (["cam", "--target", "10"], "target class 10 is out of range: resnet20 has 10 classes (0..9)"),
             (["occlusion", "--target", "cat"], "--target 'cat' is neither a class index nor a class name"),
             (["occlusion", "--baseline", "1.5"], "baseline must be one pixel value in [0, 1]"),
             (["features", "--layer", "fc"], "not a feature map")]
    for argv, message in cases:
        code, _, err = run_cli(capsys, "visualize", *argv, "--model", "resnet20", image, "--out", tmp_path / "o")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(capsys, "visualize", "cam", "--model", "resnet20", "--out", tmp_path / "o")
    assert code == 2 and "needs IMAGE files" in err


def test_an_onnx_export_is_refused_with_a_reason(tmp_path, capsys):
    from cnnzoo.models.checkpoint import model_meta, save_weights

    model = create_model("lenet5")
    save_weights(model, tmp_path / "w.safetensors", model_meta(model, classes=[str(i) for i in range(10)]))
    code, _, err = run_cli(capsys, "export", "--checkpoint", tmp_path / "w.safetensors", "--format", "onnx",
                           "--out", tmp_path / "w.onnx")
    assert code == 0, err
    code, _, err = run_cli(capsys, "visualize", "filters", "--checkpoint", tmp_path / "w.onnx", "--out", tmp_path / "o")
    assert code == 2 and "visualize needs the PyTorch network" in err
    code, _, err = run_cli(capsys, "visualize", "filters", "--checkpoint", tmp_path / "w.safetensors",
                           "--out", tmp_path / "o")
    assert code == 0 and (tmp_path / "o" / "filters.png").exists()
