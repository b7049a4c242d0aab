"""MobileNet v1 (Howard et al. 2017) and MobileNet v2 (Sandler et al. 2018), with CIFAR-sized variants.

MobileNet v1 (paper Table 1, 224x224 input). "dw" is a depthwise 3x3 convolution, each followed by
a pointwise 1x1 convolution ("pw"); both carry batch norm and an activation. Grouped here into stages
that end at one resolution (the grouping timm's weight files use):

    stage  layers                        output
    stem   conv 3x3, 32, stride 2        32 x 112 x 112
    0      dw s1 + pw 64                 64 x 112 x 112
    1      dw s2 + pw 128, dw + pw 128   128 x 56 x 56
    2      dw s2 + pw 256, dw + pw 256   256 x 28 x 28
    3      dw s2 + pw 512, 5x dw + pw 512  512 x 14 x 14
    4      dw s2 + pw 1024, dw + pw 1024   1024 x 7 x 7
    head   global average pool, fully connected  num_classes

4,231,976 parameters and 569M multiply-adds. The paper's table lists the last depthwise layer
with stride 2, a known typo: its input and output are both 7x7, so every implementation uses
stride 1. The width multiplier alpha (paper section 4.2) scales every layer's channels; they are
rounded as TF-slim's reference does, ``max(int(c * alpha), 8)``, which for alpha = 0.75, 0.5, 0.25
gives exactly ``c * alpha`` (paper Table 6: 2.6M/1.3M/0.5M parameters, 325M/149M/41M mult-adds).
``separable=False`` replaces each depthwise-separable pair by a full 3x3 convolution (paper Table 4:
29.3M parameters, 4866M mult-adds, 1.1% more ImageNet top-1). The paper says ReLU; the released TF
weights and timm's use ReLU6 (it keeps activations in a range that survives low-precision
arithmetic), which is our default; ``act="relu"`` gives the paper's.

MobileNet v2 (paper Table 2, 224x224 input). Each row is a sequence of ``n`` inverted residual
blocks with expansion factor ``t`` and ``c`` output channels; the first block of a row has stride
``s``, the others stride 1:

    stage  operator           t   c     n  s   output
    stem   conv 3x3           -   32    1  2   32 x 112 x 112
    0      bottleneck         1   16    1  1   16 x 112 x 112
    1      bottleneck         6   24    2  2   24 x 56 x 56
    2      bottleneck         6   32    3  2   32 x 28 x 28
    3      bottleneck         6   64    4  2   64 x 14 x 14
    4      bottleneck         6   96    3  1   96 x 14 x 14
    5      bottleneck         6   160   3  2   160 x 7 x 7
    6      bottleneck         6   320   1  1   320 x 7 x 7
    last   conv 1x1           -   1280  1  1   1280 x 7 x 7
    head   global average pool, dropout 0.2, fully connected  num_classes

3,504,872 parameters and 300M multiply-adds (the paper's Table 4 rounds the parameters to 3.4M).
The width multiplier rounds every channel count to the nearest multiple of 8 (never less than 90%
of the exact value), and keeps the last convolution at 1280 channels for multipliers below one
(paper section 6.1), as the TF reference and torchvision do.

Both networks pad every convolution "same" and only halve with strides, so they run on any input of
at least 1x1 (at 224 the last feature map is 7x7). On 28x28 or 32x32 images their total stride of
32 leaves a 1x1 map for the last stage, so the ``_cifar`` variants keep more resolution, as the
widely used CIFAR-10 versions (kuangliu/pytorch-cifar) do:

- ``mobilenet_v1_cifar``: the stem has stride 1 instead of 2 (total stride 16): 32x32 ends at 2x2,
  28x28 at 2x2 (28 -> 14 -> 7 -> 4 -> 2).
- ``mobilenet_v2_cifar``: the stem and stage 1 (the first stride-2 row, 24 channels) have stride 1
  (total stride 8): 32x32 ends at 4x4, 28x28 at 4x4 (28 -> 14 -> 7 -> 4).
  v2 drops two strides where v1 drops one because v2 spends its first stage at the stem's
  resolution with only 16 channels; without the second change it would end at 2x2 with its widest
  layers (160, 320, 1280 channels) seeing only 2x2 maps.

Stages (``feature_info``): the last block at each resolution (the stem's where no block keeps
it). ``drop_path_rate`` (v2): stochastic depth on the blocks with a shortcut, rising linearly over
the blocks.

Weight files: timm's ``mobilenetv1_100`` (v1), torchvision's ``mobilenet_v2`` and timm's
``mobilenetv2_100`` (v2) load through ``KEY_MAPS``.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from cnnzoo.models.base import ZooModel
from cnnzoo.models.features import last_per_reduction
from cnnzoo.models.layers import ActLayer, ConvBnAct, DepthwiseSeparableConv, DropPath, drop_path_rates, init_weights
from cnnzoo.models.registry import TV2_TAGS, register_model

_ACTS: dict[str, ActLayer] = {"relu6": nn.ReLU6, "relu": nn.ReLU}

# TF's MobileNet v1 weights (and timm's) take inputs scaled to [-1, 1] ("inception" preprocessing).
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def _choose_act(act: str) -> ActLayer:
    if act not in _ACTS:
        raise ValueError(f"act must be one of {sorted(_ACTS)}, got {act!r}")
    return _ACTS[act]


def _check_width(width_mult: float) -> None:
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult!r}")


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of ``divisor`` (at least ``divisor``), bumped up one step when rounding
    down would lose more than 10% of ``value``: MobileNet v2's channel rounding."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


# --------------------------------------------------------------------------------------------------
# MobileNet v1

# (output channels, number of depthwise separable layers, stride of the first): paper Table 1.
MOBILENET_V1_STAGES: list[tuple[int, int, int]] = [
    (64, 1, 1),
    (128, 2, 2),
    (256, 2, 2),
    (512, 6, 2),
    (1024, 2, 2),
]


class _MobileNet(ZooModel):
    first_conv = "stem.conv"
    classifier_name = "classifier"
    stem_modules = ("stem",)

    def _declare_stages(self, stem_stride: int, strides: list[int], channels: list[int]) -> None:
        stages = [("stem", self.stem.conv.out_channels, stem_stride)]
        reduction = stem_stride
        for i, (stride, c) in enumerate(zip(strides, channels)):
            reduction *= stride
            stages.append((f"stages.{i}", c, reduction))
        self.feature_info = last_per_reduction(stages)
        self.stage_modules = tuple(f"stages.{i}" for i in range(len(strides)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = self._run_stage(stage, x)
        return x


class MobileNetV1(_MobileNet):
    KEY_MAPS = {
        "timm": [
            (r"^conv_stem\.", "stem.conv."),
            (r"^bn1\.", "stem.bn."),
            (r"^blocks\.(\d+)\.(\d+)\.conv_dw\.", r"stages.\1.\2.conv_dw.conv."),
            (r"^blocks\.(\d+)\.(\d+)\.bn1\.", r"stages.\1.\2.conv_dw.bn."),
            (r"^blocks\.(\d+)\.(\d+)\.conv_pw\.", r"stages.\1.\2.conv_pw.conv."),
            (r"^blocks\.(\d+)\.(\d+)\.bn2\.", r"stages.\1.\2.conv_pw.bn."),
        ],
    }

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        act: str = "relu6",
        stem_stride: int = 2,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        separable: bool = True,
    ) -> None:
        super().__init__()
        _check_width(width_mult)
        act_layer = _choose_act(act)
        # separable=False: every depthwise + pointwise pair becomes one full 3x3 ConvBnAct at the
        # same stride and width, the "Conv MobileNet" of the paper's Table 4 (29.3M parameters).
        layer = DepthwiseSeparableConv if separable else ConvBnAct
        kernel = {} if separable else dict(kernel_size=3)

        def width(channels: int) -> int:
            # TF-slim's rule (min_depth 8); exact for the paper's multipliers 0.75, 0.5, 0.25.
            return max(int(channels * width_mult), 8)

        channels = width(32)
        self.stem = ConvBnAct(in_chans, channels, 3, stride=stem_stride, act=act_layer)
        stages = []
        for out_channels, num_layers, stride in MOBILENET_V1_STAGES:
            layers = []
            for i in range(num_layers):
                # Only the first layer of a stage changes the resolution.
                layers.append(layer(channels, width(out_channels), stride=stride if i == 0 else 1, act=act_layer,
                                    **kernel))
                channels = width(out_channels)
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self._declare_stages(stem_stride, [s for _, _, s in MOBILENET_V1_STAGES],
                             [width(c) for c, _, _ in MOBILENET_V1_STAGES])
        self.num_features = channels
        # TF-slim keeps 99.9% of the activations (dropout 0.001); timm uses none: off by default.
        self._init_head(num_classes, global_pool, drop_rate)
        init_weights(self)


# --------------------------------------------------------------------------------------------------
# MobileNet v2


class InvertedResidual(nn.Module):
    """MobileNet v2's bottleneck: expand 1x1 (ReLU6) -> depthwise 3x3 (ReLU6) -> project 1x1 (linear).

    The block is narrow at its ends and wide inside (the inverse of ResNet's bottleneck), and the
    projection has no activation: the paper argues a ReLU on the narrow low-dimensional output
    would destroy information that cannot be recovered. The shortcut joins the narrow ends, when
    the block keeps both the resolution and the width. With ``expand_ratio == 1`` there is no
    expansion layer (the first block of the network).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        # Stochastic depth drops the residual branch: only blocks with a shortcut have one.
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.use_residual else None
        self.expand = ConvBnAct(in_channels, hidden, 1, act=nn.ReLU6) if expand_ratio != 1 else nn.Identity()
        self.depthwise = ConvBnAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        self.project = ConvBnAct(hidden, out_channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if self.drop_path is not None:
            out = self.drop_path(out)
        return x + out if self.use_residual else out


# Rows (t expansion, c channels, n blocks, s stride of the first block) of paper Table 2.
MOBILENET_V2_SETTING: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _v2_key_maps(setting: list[tuple[int, int, int, int]]) -> dict[str, list[tuple[str, str]]]:
    """Renaming rules for torchvision's and timm's MobileNet v2 keys, block by block.

    torchvision numbers the blocks through one ``features`` list (0 is the stem, 18 the last 1x1
    convolution) and numbers the layers inside a block, so the index of the depthwise layer depends
    on whether the block expands; timm groups blocks by table row like we do but calls the
    non-expanding first block's projection ``conv_pw``, the name of the expansion elsewhere.
    """
    tv = [(r"^features\.0\.0\.", "stem.conv."), (r"^features\.0\.1\.", "stem.bn.")]
    timm = [(r"^conv_stem\.", "stem.conv."), (r"^bn1\.", "stem.bn.")]
    index = 1
    for stage, (t, _, n, _) in enumerate(setting):
        for block in range(n):
            ours = f"stages.{stage}.{block}."
            if t == 1:
                tv_layers = {"0.0": "depthwise.conv", "0.1": "depthwise.bn", "1": "project.conv", "2": "project.bn"}
            else:
                tv_layers = {"0.0": "expand.conv", "0.1": "expand.bn", "1.0": "depthwise.conv",
                             "1.1": "depthwise.bn", "2": "project.conv", "3": "project.bn"}
            tv += [(rf"^features\.{index}\.conv\.{re.escape(k)}\.", f"{ours}{v}.") for k, v in tv_layers.items()]
            index += 1
        if t == 1:
            timm_layers = {"conv_dw": "depthwise.conv", "bn1": "depthwise.bn",
                           "conv_pw": "project.conv", "bn2": "project.bn"}
        else:
            timm_layers = {"conv_pw": "expand.conv", "bn1": "expand.bn", "conv_dw": "depthwise.conv",
                           "bn2": "depthwise.bn", "conv_pwl": "project.conv", "bn3": "project.bn"}
        timm += [(rf"^blocks\.{stage}\.(\d+)\.{k}\.", rf"stages.{stage}.\1.{v}.") for k, v in timm_layers.items()]
    tv += [(rf"^features\.{index}\.0\.", "last_conv.conv."), (rf"^features\.{index}\.1\.", "last_conv.bn."),
           (r"^classifier\.1\.", "classifier.")]
    timm += [(r"^conv_head\.", "last_conv.conv."), (r"^bn2\.", "last_conv.bn.")]
    return {"torchvision": tv, "timm": timm}


class MobileNetV2(_MobileNet):
    KEY_MAPS = _v2_key_maps(MOBILENET_V2_SETTING)

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        setting: list[tuple[int, int, int, int]] | None = None,
        stem_stride: int = 2,
        drop_rate: float = 0.2,
        global_pool: str = "avg",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_width(width_mult)
        setting = MOBILENET_V2_SETTING if setting is None else setting
        channels = make_divisible(32 * width_mult)
        self.stem = ConvBnAct(in_chans, channels, 3, stride=stem_stride, act=nn.ReLU6)
        rates = iter(drop_path_rates(drop_path_rate, sum(n for _, _, n, _ in setting)))
        stages = []
        for t, c, n, s in setting:
            out_channels = make_divisible(c * width_mult)
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, t, next(rates)))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self._declare_stages(stem_stride, [s for _, _, _, s in setting], [make_divisible(c * width_mult) for _, c, _, _ in setting])
        self.stage_modules += ("last_conv",)
        # Thinner networks keep the full 1280 features (section 6.1); wider ones widen them.
        self.num_features = make_divisible(1280 * max(1.0, width_mult))
        self.last_conv = ConvBnAct(channels, self.num_features, 1, act=nn.ReLU6)
        self._init_head(num_classes, global_pool, drop_rate)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_conv(super().forward_features(x))


# --------------------------------------------------------------------------------------------------
# Registered models

_V1 = dict(family="MobileNet", year=2017,
           paper="Howard et al. 2017, MobileNets: Efficient Convolutional Neural Networks for Mobile Vision "
                 "Applications")
_V2 = dict(family="MobileNet", year=2018,
           paper="Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks")
# timm's published weights for mobilenetv1_100 (its pretrained cfg): bicubic, 256x256 at 0.95 scores better.
_MOBILENETV1_100_TAGS = {"ra4_e3600_r224_in1k": dict(interpolation="bicubic", test_input_size=(3, 256, 256),
                                                     test_crop_pct=0.95)}
# Same-padded convolutions and strides only: any input of at least 1x1 runs (see module docstring).
_ANY = (3, 1, 1)


@register_model(**_V1, min_input_size=_ANY, mean=INCEPTION_MEAN, std=INCEPTION_STD,
                reference="timm:mobilenetv1_100", small_variant="mobilenet_v1_cifar",
                pool_size=(7, 7), tags=_MOBILENETV1_100_TAGS)
def mobilenet_v1(**kwargs) -> MobileNetV1:
    """MobileNet v1, width 1.0 (4.2M parameters). ``act="relu"`` for the paper's activation."""
    return MobileNetV1(**kwargs)


@register_model(**_V1, min_input_size=_ANY, mean=INCEPTION_MEAN, std=INCEPTION_STD, small_variant="mobilenet_v1_cifar",
                pool_size=(7, 7), verified_by="timm:mobilenetv1_100 at width 0.75: test_mobilenet.py::test_v1_widths_equal_timm")
def mobilenet_v1_075(**kwargs) -> MobileNetV1:
    """MobileNet v1, width 0.75 (2.6M parameters)."""
    return MobileNetV1(width_mult=0.75, **kwargs)


@register_model(**_V1, min_input_size=_ANY, mean=INCEPTION_MEAN, std=INCEPTION_STD, small_variant="mobilenet_v1_cifar",
                pool_size=(7, 7), verified_by="timm:mobilenetv1_100 at width 0.5: test_mobilenet.py::test_v1_widths_equal_timm")
def mobilenet_v1_050(**kwargs) -> MobileNetV1:
    """MobileNet v1, width 0.5 (1.3M parameters)."""
    return MobileNetV1(width_mult=0.5, **kwargs)


@register_model(**_V1, min_input_size=_ANY, mean=INCEPTION_MEAN, std=INCEPTION_STD, small_variant="mobilenet_v1_cifar",
                pool_size=(7, 7), verified_by="timm:mobilenetv1_100 at width 0.25: test_mobilenet.py::test_v1_widths_equal_timm")
def mobilenet_v1_025(**kwargs) -> MobileNetV1:
    """MobileNet v1, width 0.25 (0.5M parameters)."""
    return MobileNetV1(width_mult=0.25, **kwargs)


@register_model(**_V1, input_size=(3, 32, 32), min_input_size=_ANY, small_variant="mobilenet_v1_cifar",
                pool_size=(2, 2))
def mobilenet_v1_cifar(**kwargs) -> MobileNetV1:
    """MobileNet v1 for 28x28 / 32x32 images: stride-1 stem, so 32x32 ends at 2x2."""
    kwargs.setdefault("stem_stride", 1)
    return MobileNetV1(**kwargs)


@register_model(**_V2, min_input_size=_ANY, reference="torchvision:mobilenet_v2", small_variant="mobilenet_v2_cifar",
                pool_size=(7, 7), tags=TV2_TAGS)
def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNet v2 (3.5M parameters); ``width_mult`` for the paper's thinner or wider versions."""
    return MobileNetV2(**kwargs)


# Paper Table 2 with the second row's stride 2 -> 1 (with the stem's, total stride 32 -> 8).
MOBILENET_V2_CIFAR_SETTING: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


@register_model(**_V2, input_size=(3, 32, 32), min_input_size=_ANY, small_variant="mobilenet_v2_cifar",
                pool_size=(4, 4))
def mobilenet_v2_cifar(**kwargs) -> MobileNetV2:
    """MobileNet v2 for 28x28 / 32x32 images: stride-1 stem and stage 1, so 32x32 ends at 4x4."""
    kwargs.setdefault("stem_stride", 1)
    kwargs.setdefault("setting", MOBILENET_V2_CIFAR_SETTING)
    return MobileNetV2(**kwargs)
