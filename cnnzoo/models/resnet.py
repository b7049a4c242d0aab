"""ResNet (He et al. 2015), ResNeXt (Xie et al. 2016) and SE-ResNet/SE-ResNeXt (Hu et al. 2017).

ImageNet ResNets, He et al. Table 1 (224x224 input; [k x k, c] is a convolution, a bracket a
residual block, xN its repetition; downsampling by the first block of conv3_x, conv4_x, conv5_x):

    stage    output   18-layer         34-layer         50-layer                       101   152
    conv1    112x112  7x7, 64, stride 2
    conv2_x  56x56    3x3 max pool, stride 2
                      [3x3, 64]x2 x2   [3x3, 64]x2 x3   [1x1, 64; 3x3, 64; 1x1, 256] x3  x3    x3
    conv3_x  28x28    [3x3,128]x2 x2   [3x3,128]x2 x4   [1x1,128; 3x3,128; 1x1, 512] x4  x4    x8
    conv4_x  14x14    [3x3,256]x2 x2   [3x3,256]x2 x6   [1x1,256; 3x3,256; 1x1,1024] x6  x23   x36
    conv5_x  7x7      [3x3,512]x2 x2   [3x3,512]x2 x3   [1x1,512; 3x3,512; 1x1,2048] x3  x3    x3
             1x1      global average pool, 1000-d fc, softmax
    FLOPs             1.8e9            3.6e9            3.8e9                          7.6e9 11.3e9

The 101- and 152-layer networks use the 50-layer bottleneck. Parameters (1000 classes):
11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 / 60,192,808.

Shortcuts are the paper's option B: the identity where a block keeps the shape, a projection
(1x1 convolution + BN) where it changes the channel count or strides. One detail follows
torchvision, whose weight files load here, rather than the paper's Caffe models: "ResNet v1.5", a
downsampling bottleneck strides in its 3x3 convolution, not in its first 1x1. A strided 1x1
convolution never looks at 3/4 of its input positions; striding the 3x3 one costs more FLOPs (4.1e9
for ResNet-50) and gains about 0.5% top-1.

ResNeXt (Xie et al. Table 1) replaces the bottleneck's 3x3 convolution by a grouped one with
cardinality C groups of width d ("32x4d"): a block with 4 * planes output channels has a
bottleneck of C * d * planes / 64 channels, e.g. ResNeXt-50 32x4d: [1x1,128; 3x3,128, C=32; 1x1,256] in
conv2_x, doubling per stage; 25.0M parameters, 4.2e9 FLOPs.

SE-ResNet / SE-ResNeXt (Hu et al. Fig. 3) rescale the channels of each residual branch with a
squeeze-and-excitation module (reduction r=16) just before the addition. The SE bottleneck width
follows timm, whose weight files load here: channels/16 rounded to the nearest multiple of 8 and
at least 8 (for the 64-channel blocks of SE-ResNet-18/34 that is 8, not 64 // 16 = 4).

CIFAR ResNets, He et al. section 4.2 (32x32 input, n blocks per stage, 6n+2 weighted layers):

    output map size   32x32     16x16    8x8
    # layers          1+2n      2n       2n
    # filters         16        32       64

a 3x3 convolution with 16 filters, the three stages (the first block of stages 2 and 3 strides
2), global average pooling and a 10-way fc. resnet20/32/44/56/110 (n = 3/5/7/9/18) have
0.27M/0.46M/0.66M/0.85M/1.7M parameters with the paper's shortcut option A used for CIFAR: the
identity, with stride-2 subsampling and zero-padded extra channels where the shape changes
(parameter-free; 269,722 parameters for resnet20 with 10 classes; ``shortcut="B"`` gives the
projection variant, 272,474). plain20 ... plain110 are the same layers with no shortcut at all,
the baselines of the paper's degradation experiment (Fig. 6): nothing else is added to them.

Other small-image variants (3x3 stride-1 stem, no max-pool, so 32x32 maps enter the first stage):

- resnet18_cifar / seresnet18_cifar: ResNet-18 / SE-ResNet-18 with that stem, as common CIFAR
  re-implementations use (11,173,962 parameters for resnet18_cifar with 10 classes).
- resnext29_8x64d: Xie et al.'s CIFAR ResNeXt-29 (section 5.3): a 3x3 stem with 64 filters, three
  stages of 3 bottlenecks with outputs 256/512/1024 and cardinality 8 of width 64 (grouped widths
  512/1024/2048): 34.4M parameters. resnext29_8x16d keeps the cardinality at a quarter of the
  width (grouped widths 128/256/512, 5.6M parameters), to train on a CPU.
- seresnet20: resnet20 with an SE module in each block. channels/16 would leave the 16-channel
  stage a single unit, so the SE width is max(channels // 16, 4) (4 in every stage).

Every network here runs on inputs down to 1x1 (padded convolutions and the padded max-pool keep
at least one position; a batch of 2 gives batch norm two values per channel in training).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.models.base import ZooModel
from cnnzoo.models.features import last_per_reduction
from cnnzoo.models.layers import ConvBnAct, DropPath, MaxPool2d, SqueezeExcite, drop_path_rates, init_weights
from cnnzoo.models.registry import TV2_TAGS, TV_TAGS, register_model

__all__ = ["BasicBlock", "Bottleneck", "PadShortcut", "ResNet"]

SHORTCUTS = ("A", "B", "none")


class PadShortcut(nn.Module):
    """He et al.'s shortcut option A: the identity, subsampled by ``stride`` and zero-padded with
    ``extra_channels`` channels. No parameters, so it adds nothing a plain network lacks."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x[..., ::2, ::2] has ceil(H/2) rows, as many as the 3x3 stride-2 convolution beside it.
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def make_shortcut(kind: str, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The shortcut of a block: ``None`` for a plain network, the identity where the shape is kept,
    else option A (zero padding) or option B (1x1 convolution + BN projection)."""
    if kind not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {kind!r}")
    if kind == "none":
        return None
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "A":
        if out_channels < in_channels:
            raise ValueError("shortcut option A can only add channels")
        return PadShortcut(out_channels - in_channels, stride)
    return ConvBnAct(in_channels, out_channels, 1, stride, act=None)


def _drop_path(rate: float, shortcut: nn.Module | None) -> DropPath | None:
    """Stochastic depth on the residual branch; none at rate 0, so the block is unchanged."""
    if rate > 0 and shortcut is None:
        raise ValueError("drop_path_rate needs shortcuts: dropping a plain network's block drops its whole output")
    return DropPath(rate) if rate > 0 else None


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR ResNets): [3x3, planes] x2."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        se_channels: int | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock has no grouped or widened form (ResNeXt uses Bottleneck)")
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcite(planes, rd_channels=se_channels) if se_channels else None
        self.shortcut = make_shortcut(shortcut, in_channels, planes, stride)
        self.drop_path = _drop_path(drop_path, self.shortcut)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.shortcut is not None:
            out += self.shortcut(x)  # in place: no new activation-sized tensor per block
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (grouped for ResNeXt, strided here: v1.5) -> 1x1 expand to 4 * planes."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        se_channels: int | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        # ResNet: width = planes. ResNeXt CxD: C groups of d * planes / 64 channels each.
        width = int(planes * base_width / 64) * groups
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcite(out_channels, rd_channels=se_channels) if se_channels else None
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride)
        self.drop_path = _drop_path(drop_path, self.shortcut)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.shortcut is not None:
            out += self.shortcut(x)  # in place: no new activation-sized tensor per block
        return self.relu(out)


# Reference layouts name the projection shortcut "downsample" as a Sequential(conv, bn); ours is a
# ConvBnAct called "shortcut" (it also projects without downsampling, e.g. in layer1 of ResNet-50).
# torchvision and timm use the same names otherwise (timm's SE module: se.fc1 / se.fc2, as ours).
_REFERENCE_KEYS = [(r"\.downsample\.0\.", ".shortcut.conv."), (r"\.downsample\.1\.", ".shortcut.bn.")]


class ResNet(ZooModel):
    """Stem -> stages of residual blocks (the first of each stage after the first strides 2)
    -> global average pool -> fc.

    ``widths`` are the stages' ``planes`` (block outputs are ``planes * block.expansion``); the
    stem has ``widths[0]`` filters. ``stem="imagenet"``: 7x7 stride-2 convolution and 3x3 stride-2
    max-pool; ``"cifar"``: one 3x3 convolution of stride ``stem_stride`` (1, or 2 to run every
    stage at half the input size, a quarter of the work, as the ImageNet stem does by 4).
    ``shortcut``: "B" (projection where the shape changes), "A" (zero padding) or "none" (a plain
    network). ``groups``/``base_width`` make
    a ResNeXt; ``se_width`` (channels -> SE bottleneck width) adds squeeze-and-excitation.
    ``zero_init_residual`` starts the last batch norm of every residual branch at scale 0, so that
    each block begins as its shortcut (Goyal et al. 2017): a deep net then starts as a shallow one.
    ``drop_rate``: dropout before the fc; ``drop_path_rate``: stochastic depth, rising linearly
    over the blocks from 0 to this rate. Stages (``feature_info``): the stem's ReLU (where it halves the
input), then each layer.
    """

    first_conv = "conv1"
    classifier_name = "fc"
    KEY_MAPS = {"torchvision": _REFERENCE_KEYS, "timm": _REFERENCE_KEYS}

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: str = "imagenet",
        shortcut: str = "B",
        groups: int = 1,
        base_width: int = 64,
        se_width: Callable[[int], int] | None = None,
        zero_init_residual: bool = False,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if stem_stride not in (1, 2) or (stem_stride != 1 and stem != "cifar"):
            raise ValueError(f"stem_stride must be 1 or 2 and only with stem='cifar', got {stem_stride}")
        if zero_init_residual and shortcut == "none":
            raise ValueError("zero_init_residual needs shortcuts: a plain network's blocks would output zeros")
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} differ in length")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        stem_width = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        # The ImageNet stem halves twice (strided convolution, then max-pool); the CIFAR stem keeps the
        # size, or halves it once with stem_stride 2.
        reduction = 2 if stem == "imagenet" else stem_stride
        stages = [("relu", stem_width, reduction)]
        reduction *= 2 if stem == "imagenet" else 1
        self.stem_modules = ("conv1", "bn1")

        in_channels = stem_width
        self.stage_names: list[str] = []
        rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
        for i, (depth, planes) in enumerate(zip(layers, widths)):
            out_channels = planes * block.expansion
            se_channels = se_width(out_channels) if se_width is not None else None
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(in_channels, planes, stride, shortcut, groups, base_width, se_channels, next(rates)))
                in_channels = out_channels
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            reduction *= 2 if i > 0 else 1
            stages.append((name, out_channels, reduction))
        self.stage_modules = tuple(self.stage_names)
        self.feature_info = last_per_reduction(stages)

        self.num_features = in_channels
        self._init_head(num_classes, global_pool, drop_rate)
        # He et al. initialise as in their PReLU paper; the fc keeps PyTorch's default.
        init_weights(self, linear_std=None)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.bn3.weight if isinstance(m, Bottleneck) else m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = self._run_stage(getattr(self, name), x)
        return x


def se_width_timm(channels: int) -> int:
    """SE bottleneck width of timm's SE-ResNets: channels / 16 rounded to the nearest multiple of 8
    (halves up), at least 8."""
    return max(8, int(channels / 16 + 4) // 8 * 8)


def se_width_cifar(channels: int, reduction: int = 16) -> int:
    """SE bottleneck width for the 16/32/64-channel CIFAR stages: channels // reduction, at least 4."""
    return max(channels // reduction, 4)


# --------------------------------------------------------------------------------------------------
# Registered models

_HE = dict(family="ResNet", paper="He et al. 2015, Deep residual learning for image recognition", year=2015,
           min_input_size=(3, 1, 1))
_XIE = dict(family="ResNeXt", paper="Xie et al. 2016, Aggregated residual transformations for deep neural networks",
            year=2016, min_input_size=(3, 1, 1))
_HU = dict(family="SENet", paper="Hu et al. 2017, Squeeze-and-excitation networks", year=2017,
           min_input_size=(3, 1, 1))
_CIFAR = dict(input_size=(3, 32, 32), reference=None)
# timm's published weights (their pretrained cfgs), timm's default first: bicubic resizing, and for
# most a larger size to evaluate at; a3_in1k was trained at 160x160.
_TIMM = dict(interpolation="bicubic")
_SERESNET50_TAGS = {
    "a1_in1k": dict(_TIMM, crop_pct=0.95, test_input_size=(3, 288, 288), test_crop_pct=1.0),
    "a2_in1k": dict(_TIMM, crop_pct=0.95, test_input_size=(3, 288, 288), test_crop_pct=1.0),
    "a3_in1k": dict(_TIMM, input_size=(3, 160, 160), pool_size=(5, 5), crop_pct=0.95, test_input_size=(3, 224, 224),
                    test_crop_pct=0.95),
    "ra2_in1k": dict(_TIMM, test_input_size=(3, 288, 288), test_crop_pct=0.95),
}
_SERESNEXT50_TAGS = {
    "racm_in1k": dict(_TIMM, test_input_size=(3, 288, 288), test_crop_pct=0.95),
    "gluon_in1k": dict(_TIMM),
}


@register_model(**_HE, reference="torchvision:resnet18", small_variant="resnet18_cifar",
                pool_size=(7, 7), tags=TV_TAGS)
def resnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model(**_HE, reference="torchvision:resnet34", small_variant="resnet18_cifar",
                pool_size=(7, 7), tags=TV_TAGS)
def resnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model(**_HE, reference="torchvision:resnet50", small_variant="resnet18_cifar",
                pool_size=(7, 7), tags=TV2_TAGS)
def resnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model(**_HE, reference="torchvision:resnet101", small_variant="resnet18_cifar",
                pool_size=(7, 7), tags=TV2_TAGS)
def resnet101(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model(**_HE, reference="torchvision:resnet152", small_variant="resnet18_cifar",
                pool_size=(7, 7), tags=TV2_TAGS)
def resnet152(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 8, 36, 3], **kwargs)


@register_model(**_HE, **_CIFAR, small_variant="resnet18_cifar", pool_size=(4, 4),
                verified_by="torchvision:resnet18 with a 3x3 stem: test_resnet.py::test_cifar_resnet18_is_reference_with_small_stem")
def resnet18_cifar(**kwargs) -> ResNet:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool, for 32x32 (and 28x28) images."""
    return ResNet(BasicBlock, [2, 2, 2, 2], stem="cifar", **kwargs)


def _cifar_resnet(n: int, **kwargs) -> ResNet:
    kwargs.setdefault("shortcut", "A")  # the paper's choice for CIFAR; "B" gives projections
    return ResNet(BasicBlock, [n, n, n], widths=(16, 32, 64), stem="cifar", **kwargs)


def _plain(n: int, **kwargs) -> ResNet:
    return ResNet(BasicBlock, [n, n, n], widths=(16, 32, 64), stem="cifar", shortcut="none", **kwargs)


@register_model(**_HE, **_CIFAR, small_variant="resnet20", pool_size=(8, 8),
                verified_by="paper section 4.2: test_resnet.py::test_cifar_resnet_table")
def resnet20(**kwargs) -> ResNet:
    return _cifar_resnet(3, **kwargs)


@register_model(**_HE, **_CIFAR, small_variant="resnet32", pool_size=(8, 8),
                verified_by="paper section 4.2: test_resnet.py::test_cifar_resnet_table")
def resnet32(**kwargs) -> ResNet:
    return _cifar_resnet(5, **kwargs)


@register_model(**_HE, **_CIFAR, small_variant="resnet44", pool_size=(8, 8),
                verified_by="paper section 4.2: test_resnet.py::test_cifar_resnet_table")
def resnet44(**kwargs) -> ResNet:
    return _cifar_resnet(7, **kwargs)


@register_model(**_HE, **_CIFAR, small_variant="resnet56", pool_size=(8, 8),
                verified_by="paper section 4.2: test_resnet.py::test_cifar_resnet_table")
def resnet56(**kwargs) -> ResNet:
    return _cifar_resnet(9, **kwargs)


@register_model(**_HE, **_CIFAR, small_variant="resnet110", pool_size=(8, 8),
                verified_by="paper section 4.2: test_resnet.py::test_cifar_resnet_table")
def resnet110(**kwargs) -> ResNet:
    return _cifar_resnet(18, **kwargs)


@register_model(**_HE, **_CIFAR, small_variant="plain20", pool_size=(8, 8),
                verified_by="paper section 4.2: test_resnet.py::test_cifar_resnet_table")
def plain20(**kwargs) -> ResNet:
    return _plain(3, **kwargs)


@register_model(**_HE, **_CIFAR, small_variant="plain32", pool_size=(8, 8),
                verified_by="paper section 4.2: test_resnet.py::test_cifar_resnet_table")
def plain32(**kwargs) -> ResNet:
    return _plain(5, **kwargs)


@register_model(**_HE, **_CIFAR, small_variant="plain44", pool_size=(8, 8),
                verified_by="paper section 4.2: test_resnet.py::test_cifar_resnet_table")
def plain44(**kwargs) -> ResNet:
    return _plain(7, **kwargs)


@register_model(**_HE, **_CIFAR, small_variant="plain56", pool_size=(8, 8),
                verified_by="paper section 4.2: test_resnet.py::test_cifar_resnet_table")
def plain56(**kwargs) -> ResNet:
    return _plain(9, **kwargs)


@register_model(**_HE, **_CIFAR, small_variant="plain110", pool_size=(8, 8),
                verified_by="paper section 4.2: test_resnet.py::test_cifar_resnet_table")
def plain110(**kwargs) -> ResNet:
    return _plain(18, **kwargs)


@register_model(**_XIE, reference="torchvision:resnext50_32x4d", small_variant="resnext29_8x16d",
                pool_size=(7, 7), tags=TV2_TAGS)
def resnext50_32x4d(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], groups=32, base_width=4, **kwargs)


@register_model(**_XIE, reference="torchvision:resnext101_32x8d", small_variant="resnext29_8x16d",
                pool_size=(7, 7), tags=TV2_TAGS)
def resnext101_32x8d(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], groups=32, base_width=8, **kwargs)


@register_model(**_XIE, **_CIFAR, small_variant="resnext29_8x64d", pool_size=(8, 8),
                verified_by="paper's CIFAR ResNeXt-29: test_resnet.py::test_resnext29_table")
def resnext29_8x64d(**kwargs) -> ResNet:
    """Xie et al.'s CIFAR ResNeXt-29, 8x64d (34.4M parameters)."""
    return ResNet(Bottleneck, [3, 3, 3], widths=(64, 128, 256), stem="cifar", groups=8, base_width=64, **kwargs)


@register_model(**_XIE, **_CIFAR, small_variant="resnext29_8x16d", pool_size=(8, 8),
                verified_by="paper's CIFAR ResNeXt-29: test_resnet.py::test_resnext29_table")
def resnext29_8x16d(**kwargs) -> ResNet:
    """ResNeXt-29 with cardinality 8 of width 16: a CPU-sized version of the paper's 8x64d."""
    return ResNet(Bottleneck, [3, 3, 3], widths=(64, 128, 256), stem="cifar", groups=8, base_width=16, **kwargs)


@register_model(**_XIE, **_CIFAR, small_variant="resnext11_cifar", pool_size=(8, 8))
def resnext11_cifar(**kwargs) -> ResNet:
    """One bottleneck per stage at planes 32/64/128 (outputs 128/256/512): a ResNeXt small enough to
    train in minutes on a CPU. ``groups`` x ``base_width`` as in the names (default 1x64d, a ResNet
    bottleneck); at equal parameters: 1x64d, 2x40d, 4x24d, 8x14d (Xie et al. Table 2). ``widths``
    sets other planes (the stem is as wide as the first)."""
    kwargs.setdefault("widths", (32, 64, 128))
    return ResNet(Bottleneck, [1, 1, 1], stem="cifar", **kwargs)


@register_model(**_HU, reference="timm:seresnet18", small_variant="seresnet18_cifar", pool_size=(7, 7))
def seresnet18(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], se_width=se_width_timm, **kwargs)


@register_model(**_HU, reference="timm:seresnet34", small_variant="seresnet18_cifar", pool_size=(7, 7))
def seresnet34(**kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], se_width=se_width_timm, **kwargs)


@register_model(**_HU, reference="timm:seresnet50", small_variant="seresnet18_cifar",
                pool_size=(7, 7), tags=_SERESNET50_TAGS)
def seresnet50(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], se_width=se_width_timm, **kwargs)


@register_model(**_HU, reference="timm:seresnet101", small_variant="seresnet18_cifar", pool_size=(7, 7))
def seresnet101(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 23, 3], se_width=se_width_timm, **kwargs)


@register_model(**_HU, reference="timm:seresnet152", small_variant="seresnet18_cifar", pool_size=(7, 7))
def seresnet152(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 8, 36, 3], se_width=se_width_timm, **kwargs)


@register_model(**_HU, reference="timm:seresnext50_32x4d", small_variant="seresnet18_cifar",
                pool_size=(7, 7), tags=_SERESNEXT50_TAGS)
def seresnext50_32x4d(**kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], groups=32, base_width=4, se_width=se_width_timm, **kwargs)


@register_model(**_HU, **_CIFAR, small_variant="seresnet18_cifar", pool_size=(4, 4),
                verified_by="timm:seresnet18 with a 3x3 stem: test_resnet.py::test_cifar_resnet18_is_reference_with_small_stem")
def seresnet18_cifar(**kwargs) -> ResNet:
    """SE-ResNet-18 (timm's SE widths) with the 3x3 stride-1 stem and no max-pool."""
    return ResNet(BasicBlock, [2, 2, 2, 2], stem="cifar", se_width=se_width_timm, **kwargs)


@register_model(**_HU, **_CIFAR, small_variant="seresnet20", pool_size=(8, 8))
def seresnet20(se_reduction: int = 16, **kwargs) -> ResNet:
    """resnet20 (shortcut option A) with an SE module of width max(channels // se_reduction, 4) per
    block (Hu et al. Table 10 compare reductions 2 to 32)."""
    if not (isinstance(se_reduction, int) and se_reduction >= 1):
        raise ValueError(f"seresnet20: se_reduction must be an integer >= 1, got {se_reduction!r}")
    kwargs.setdefault("shortcut", "A")
    return ResNet(BasicBlock, [3, 3, 3], widths=(16, 32, 64), stem="cifar",
                  se_width=functools.partial(se_width_cifar, reduction=se_reduction), **kwargs)
