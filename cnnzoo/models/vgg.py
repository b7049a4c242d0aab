"""VGG (Simonyan & Zisserman 2014, "Very deep convolutional networks for large-scale image recognition").

Every VGG is five stages of 3x3 convolutions (stride 1, padding 1: resolution kept) at widths 64,
128, 256, 512, 512, each stage ending in a 2x2 max-pool of stride 2, then three fully connected
layers. The paper's Table 1 configurations differ only in how many convolutions each stage has:

    configuration    A (vgg11)  B (vgg13)  D (vgg16)  E (vgg19)   output (224x224 input)
    stage1  64         1          2          2          2         64 x 112 x 112
    stage2  128        1          2          2          2         128 x 56 x 56
    stage3  256        2          2          3          4         256 x 28 x 28
    stage4  512        2          2          3          4         512 x 14 x 14
    stage5  512        2          2          3          4         512 x 7 x 7
    fc6     FC-4096, ReLU, dropout 0.5                            4096
    fc7     FC-4096, ReLU, dropout 0.5                            4096
    fc8     FC-num_classes                                        num_classes

    parameters (1000 classes)   vgg11 132,863,336   vgg13 133,047,848   vgg16 138,357,544   vgg19 143,667,240

Two stacked 3x3 convolutions see a 5x5 window and three see 7x7, with fewer weights (27C^2 against
49C^2) and a ReLU between each. The ``_bn`` variants (torchvision's) put batch norm between each
convolution and its ReLU, which the paper predates (vgg16_bn: 138,365,992 parameters). As in
torchvision, an adaptive average pool brings the last map to 7x7 (identity at 224x224), so any input
of at least 32x32 (five halvings down to 1x1) runs.

``vgg11_cifar`` ... ``vgg19_cifar``: the CIFAR VGG of the pruning literature (Li et al. 2017, "Pruning
filters for efficient ConvNets"; Liu et al. 2017, "Network slimming"): the same conv stacks, with
batch norm, on 32x32 inputs; stages 1-4 end in 2x2 max-pools (32 -> 2x2) and the fifth pooling is a
global average pool (2x2 -> 1x1), then FC-512, ReLU, dropout and FC-num_classes. A fifth 2x2 max-pool
would fail on 28x28 images (28 -> 14 -> 7 -> 3 -> 1 -> 0): with the global pool a 28x28 input ends on a
1x1 map after four halvings and the classifier sees 512 features either way; the smallest input is
16x16.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnzoo.models.base import ZooModel, classifier
from cnnzoo.models.layers import MaxPool2d, init_weights, scale_widths
from cnnzoo.models.registry import TV_TAGS, register_model

WIDTHS = (64, 128, 256, 512, 512)
# Convolutions per stage of the paper's configurations A, B, D and E.
DEPTHS: dict[int, tuple[int, int, int, int, int]] = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}


class VggConv(nn.Module):
    """3x3 convolution (stride 1, padding 1) -> batch norm (optional) -> ReLU; ``vgg_mini`` also
    builds it with 5x5, 1x5 and 5x1 kernels (padded to keep the resolution).

    Not the shared ``ConvBnAct``: torchvision's vgg*_bn keep the convolution's bias in front of the
    batch norm, and their weight files (and parameter counts) carry it.
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool,
                 kernel_size: tuple[int, int] = (3, 3)) -> None:
        super().__init__()
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)  # odd kernels: the resolution is kept
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class VggStage(nn.Sequential):
    """``depth`` VggConv layers (conv1, conv2, ...) at one width, then a 2x2 max-pool (``pool``)
    that halves the resolution, unless ``pool=False``."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, batch_norm: bool, pool: bool = True) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(depth):
            layers[f"conv{i + 1}"] = VggConv(in_channels if i == 0 else out_channels, out_channels, batch_norm)
        if pool:
            layers["pool"] = MaxPool2d(kernel_size=2, stride=2)
        super().__init__(layers)


def _torchvision_key_map(depths: tuple[int, ...], batch_norm: bool) -> list[tuple[str, str]]:
    """torchvision numbers VGG's layers in one flat ``features`` Sequential (conv, [bn], relu per
    convolution, one max-pool per stage): map those indices to our stage/conv names."""
    rules: list[tuple[str, str]] = []
    index = 0
    for s, depth in enumerate(depths, start=1):
        for j in range(1, depth + 1):
            rules.append((rf"^features\.{index}\.", f"stage{s}.conv{j}.conv."))
            if batch_norm:
                rules.append((rf"^features\.{index + 1}\.", f"stage{s}.conv{j}.bn."))
            index += 3 if batch_norm else 2
        index += 1  # the stage's max-pool
    rules += [(r"^classifier\.0\.", "fc6."), (r"^classifier\.3\.", "fc7."), (r"^classifier\.6\.", "fc8.")]
    return rules


def _stage_info(depths: tuple[int, ...], widths: tuple[int, ...] = WIDTHS) -> list[dict]:
    """VGG's stages end in the activation of their last convolution, before the max-pool."""
    return [dict(num_chs=widths[i], reduction=2 ** i, module=f"stage{i + 1}.conv{depth}")
            for i, depth in enumerate(depths)]


class _VggBase(ZooModel):
    first_conv = "stage1.conv1.conv"
    stem_modules = ("stage1.conv1",)
    stage_modules = ("stage1", "stage2", "stage3", "stage4", "stage5")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.stage_modules:
            x = self._run_stage(getattr(self, name), x)
        return x


class VGG(_VggBase):
    """The paper's ImageNet VGG. Its head is fixed: an adaptive average pool to the 7x7 map fc6
    was built for (``global_pool="avg"``, the only choice), fc6, fc7 (``head_hidden_size`` 4096)
    with dropout ``drop_rate`` after each, and fc8."""

    classifier_name = "fc8"
    global_pools = ("avg",)

    def __init__(
        self,
        depths: tuple[int, int, int, int, int],
        num_classes: int = 1000,
        in_chans: int = 3,
        batch_norm: bool = False,
        drop_rate: float = 0.5,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        self._check_global_pool(global_pool, num_classes)
        self.num_classes = num_classes
        self.num_features = WIDTHS[4]
        self.head_hidden_size = 4096
        self.feature_info = _stage_info(depths)
        self.stage1 = VggStage(in_chans, WIDTHS[0], depths[0], batch_norm)
        self.stage2 = VggStage(WIDTHS[0], WIDTHS[1], depths[1], batch_norm)
        self.stage3 = VggStage(WIDTHS[1], WIDTHS[2], depths[2], batch_norm)
        self.stage4 = VggStage(WIDTHS[2], WIDTHS[3], depths[3], batch_norm)
        self.stage5 = VggStage(WIDTHS[3], WIDTHS[4], depths[4], batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.fc6 = nn.Linear(WIDTHS[4] * 7 * 7, 4096)
        self.drop6 = nn.Dropout(drop_rate)
        self.fc7 = nn.Linear(4096, 4096)
        self.drop7 = nn.Dropout(drop_rate)
        self.fc8 = classifier(4096, num_classes)
        self.act = nn.ReLU(inplace=True)
        # The flat torchvision indices depend on the configuration, so the map is per instance.
        self.KEY_MAPS = {"torchvision": _torchvision_key_map(depths, batch_norm)}
        init_weights(self)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        x = self.drop6(self.act(self.fc6(x)))
        x = self.drop7(self.act(self.fc7(x)))
        return x if pre_logits else self.fc8(x)


class CifarVGG(_VggBase):
    """The CIFAR VGG: global pooling (any kind but none: fc1 needs a vector), fc1 (``hidden``),
    ReLU, dropout ``drop_rate``, fc2. ``width_mult`` scales every stage's width (64-128-256-512-512
    at 1.0), the one knob that keeps the configuration's depths and 3x3 stacks."""

    classifier_name = "fc2"
    global_pools = ("avg", "max", "avgmax")

    def __init__(
        self,
        depths: tuple[int, int, int, int, int],
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.5,
        hidden: int = 512,
        global_pool: str = "avg",
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        w = scale_widths(WIDTHS, width_mult)
        self.num_classes = num_classes
        self.num_features = w[4]
        self.head_hidden_size = hidden
        self.feature_info = _stage_info(depths, w)
        self.stage1 = VggStage(in_chans, w[0], depths[0], batch_norm=True)
        self.stage2 = VggStage(w[0], w[1], depths[1], batch_norm=True)
        self.stage3 = VggStage(w[1], w[2], depths[2], batch_norm=True)
        self.stage4 = VggStage(w[2], w[3], depths[3], batch_norm=True)
        # The fifth pooling is the global average pool: see the module docstring.
        self.stage5 = VggStage(w[3], w[4], depths[4], batch_norm=True, pool=False)
        self.global_pool = self._make_pool(global_pool, num_classes)
        # One 512-wide hidden layer instead of two of 4096: the input is a 512-vector rather than a
        # 7x7x512 map, and the ImageNet classifier's 120M weights would be 8x the conv stack's for
        # 10 classes (slow on CPU and easy to overfit on 50k-60k small images).
        self.fc1 = nn.Linear(w[4], hidden)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = classifier(hidden, num_classes)
        init_weights(self)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.drop(self.act(self.fc1(x)))
        return x if pre_logits else self.fc2(x)


_VGG = dict(family="VGG", paper="Simonyan, Zisserman 2014, Very deep convolutional networks for large-scale "
            "image recognition", year=2014, min_input_size=(3, 32, 32))
_VGG_CIFAR = dict(_VGG, input_size=(3, 32, 32), min_input_size=(3, 16, 16))


@register_model(**_VGG, reference="torchvision:vgg11", small_variant="vgg11_cifar", pool_size=(7, 7), tags=TV_TAGS)
def vgg11(**kwargs) -> VGG:
    """VGG configuration A (8 convolutions + 3 FC)."""
    return VGG(DEPTHS[11], **kwargs)


@register_model(**_VGG, reference="torchvision:vgg13", small_variant="vgg13_cifar", pool_size=(7, 7), tags=TV_TAGS)
def vgg13(**kwargs) -> VGG:
    """VGG configuration B (10 convolutions + 3 FC)."""
    return VGG(DEPTHS[13], **kwargs)


@register_model(**_VGG, reference="torchvision:vgg16", small_variant="vgg16_cifar", pool_size=(7, 7), tags=TV_TAGS)
def vgg16(**kwargs) -> VGG:
    """VGG configuration D (13 convolutions + 3 FC)."""
    return VGG(DEPTHS[16], **kwargs)


@register_model(**_VGG, reference="torchvision:vgg19", small_variant="vgg19_cifar", pool_size=(7, 7), tags=TV_TAGS)
def vgg19(**kwargs) -> VGG:
    """VGG configuration E (16 convolutions + 3 FC)."""
    return VGG(DEPTHS[19], **kwargs)


@register_model(**_VGG, reference="torchvision:vgg11_bn", small_variant="vgg11_cifar", pool_size=(7, 7), tags=TV_TAGS)
def vgg11_bn(**kwargs) -> VGG:
    """VGG configuration A with batch norm after every convolution."""
    return VGG(DEPTHS[11], batch_norm=True, **kwargs)


@register_model(**_VGG, reference="torchvision:vgg13_bn", small_variant="vgg13_cifar", pool_size=(7, 7), tags=TV_TAGS)
def vgg13_bn(**kwargs) -> VGG:
    """VGG configuration B with batch norm after every convolution."""
    return VGG(DEPTHS[13], batch_norm=True, **kwargs)


@register_model(**_VGG, reference="torchvision:vgg16_bn", small_variant="vgg16_cifar", pool_size=(7, 7), tags=TV_TAGS)
def vgg16_bn(**kwargs) -> VGG:
    """VGG configuration D with batch norm after every convolution."""
    return VGG(DEPTHS[16], batch_norm=True, **kwargs)


@register_model(**_VGG, reference="torchvision:vgg19_bn", small_variant="vgg19_cifar", pool_size=(7, 7), tags=TV_TAGS)
def vgg19_bn(**kwargs) -> VGG:
    """VGG configuration E with batch norm after every convolution."""
    return VGG(DEPTHS[19], batch_norm=True, **kwargs)


@register_model(**_VGG_CIFAR, small_variant="vgg11_cifar", pool_size=(2, 2),
                verified_by="paper Table 1's conv stacks: test_vgg.py::test_cifar_layer_table")
def vgg11_cifar(**kwargs) -> CifarVGG:
    """Configuration A's conv stack with batch norm, global average pool, FC-512 (CIFAR VGG)."""
    return CifarVGG(DEPTHS[11], **kwargs)


@register_model(**_VGG_CIFAR, small_variant="vgg13_cifar", pool_size=(2, 2),
                verified_by="paper Table 1's conv stacks: test_vgg.py::test_cifar_layer_table")
def vgg13_cifar(**kwargs) -> CifarVGG:
    """Configuration B's conv stack with batch norm, global average pool, FC-512 (CIFAR VGG)."""
    return CifarVGG(DEPTHS[13], **kwargs)


@register_model(**_VGG_CIFAR, small_variant="vgg16_cifar", pool_size=(2, 2),
                verified_by="paper Table 1's conv stacks: test_vgg.py::test_cifar_layer_table")
def vgg16_cifar(**kwargs) -> CifarVGG:
    """Configuration D's conv stack with batch norm, global average pool, FC-512 (CIFAR VGG)."""
    return CifarVGG(DEPTHS[16], **kwargs)


@register_model(**_VGG_CIFAR, small_variant="vgg19_cifar", pool_size=(2, 2),
                verified_by="paper Table 1's conv stacks: test_vgg.py::test_cifar_layer_table")
def vgg19_cifar(**kwargs) -> CifarVGG:
    """Configuration E's conv stack with batch norm, global average pool, FC-512 (CIFAR VGG)."""
    return CifarVGG(DEPTHS[19], **kwargs)


# --------------------------------------------------------------------------------------------------
# A small VGG for the design experiments (``cnnzoo experiment stack3x3`` and ``bn-dropout``)

# The convolutions of one stage, each (kh, kw): every choice sees a 5x5 window. Simonyan & Zisserman
# section 2.3: two 3x3 layers have 18C^2 weights against 25C^2 and a ReLU between them; Szegedy et
# al. 2016 section 3.2: a 1x5 then a 5x1 layer have 10C^2.
MINI_UNITS: dict[str, tuple[tuple[int, int], ...]] = {
    "5x5": ((5, 5),),
    "3x3": ((3, 3), (3, 3)),
    "1x5": ((1, 5), (5, 1)),
}


class MiniVggStage(nn.Sequential):
    """The convolutions of ``unit`` (conv1, conv2, ...; the first changes the width) and a 2x2
    max-pool (``pool``)."""

    def __init__(self, in_channels: int, out_channels: int, unit: str, batch_norm: bool) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, kernel in enumerate(MINI_UNITS[unit]):
            layers[f"conv{i + 1}"] = VggConv(in_channels if i == 0 else out_channels, out_channels, batch_norm, kernel)
        layers["pool"] = MaxPool2d(kernel_size=2, stride=2)
        super().__init__(layers)


class MiniVGG(ZooModel):
    """VGG in small, for 28x28 images: three stages (``widths``), each one ``unit`` of convolutions
    with a 5x5 receptive field and a 2x2 max-pool (28 -> 14 -> 7 -> 3), then VGG's classifier in
    small: global pooling, fc1 (``hidden``), ReLU, dropout ``drop_rate`` (where VGG has it), fc2.

        unit    convolutions per stage    weights per stage (C_in -> C)
        "5x5"   5x5                       25 C_in C
        "3x3"   3x3, 3x3                  9 C_in C + 9 C^2
        "1x5"   1x5, 5x1                  5 C_in C + 5 C^2

    Every convolution has a bias and, with ``batch_norm``, a batch norm before its ReLU.
    """

    first_conv = "stage1.conv1.conv"
    classifier_name = "fc2"
    stem_modules = ("stage1.conv1",)
    stage_modules = ("stage1", "stage2", "stage3")
    global_pools = ("avg", "max", "avgmax")

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), num_classes: int = 10, in_chans: int = 1,
                 unit: str = "3x3", batch_norm: bool = True, drop_rate: float = 0.0, hidden: int = 256,
                 global_pool: str = "avg") -> None:
        super().__init__()
        if unit not in MINI_UNITS:
            raise ValueError(f"vgg_mini: unit must be one of {', '.join(map(repr, MINI_UNITS))}, got {unit!r}")
        if len(widths) != 3:
            raise ValueError(f"vgg_mini: widths must be 3 stage widths, got {tuple(widths)}")
        self.num_classes = num_classes
        self.num_features = widths[2]
        self.head_hidden_size = hidden
        depth = len(MINI_UNITS[unit])
        self.feature_info = [dict(num_chs=w, reduction=2 ** i, module=f"stage{i + 1}.conv{depth}")
                             for i, w in enumerate(widths)]
        self.stage1 = MiniVggStage(in_chans, widths[0], unit, batch_norm)
        self.stage2 = MiniVggStage(widths[0], widths[1], unit, batch_norm)
        self.stage3 = MiniVggStage(widths[1], widths[2], unit, batch_norm)
        self.global_pool = self._make_pool(global_pool, num_classes)
        self.fc1 = nn.Linear(widths[2], hidden)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = classifier(hidden, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.stage_modules:
            x = self._run_stage(getattr(self, name), x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.drop(self.act(self.fc1(x)))
        return x if pre_logits else self.fc2(x)


@register_model(**{**_VGG, "min_input_size": (1, 8, 8)}, input_size=(1, 28, 28), small_variant="vgg_mini",
                pool_size=(3, 3))
def vgg_mini(**kwargs) -> MiniVGG:
    """A three-stage VGG for 28x28 images with a choice of 5x5 unit (one 5x5, two 3x3, 1x5 + 5x1),
    batch norm and classifier dropout: the network of the stack3x3 and bn-dropout experiments."""
    return MiniVGG(**kwargs)


# --------------------------------------------------------------------------------------------------
# A VGG for training in minutes on a CPU (the fast recipe, ``cnnzoo train --recipe fast``)


class WhitenedStem(nn.Module):
    """A frozen kxk convolution (no padding) whose filters whiten the image's kxk patches: the
    eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue), each with its negative, so a
    following ReLU-like activation loses nothing. Set from data by ``init_from_data``; until then
    an ordinary trainable convolution. ``act``: a GELU after it, as airbench has. (Jordan 2024,
    airbench, after Coates & Ng 2011.)"""

    def __init__(self, in_channels: int, kernel_size: int = 2, act: bool = False) -> None:
        super().__init__()
        patch = in_channels * kernel_size * kernel_size
        self.conv = nn.Conv2d(in_channels, 2 * patch, kernel_size, padding=0)
        self.act = nn.GELU() if act else nn.Identity()

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        k = self.conv.kernel_size[0]
        patches = nn.functional.unfold(images.float(), k).transpose(1, 2).reshape(-1, self.conv.in_channels * k * k)
        patches = patches.double() - patches.double().mean(0)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)).T.float()
        filters = filters.reshape(-1, self.conv.in_channels, k, k)
        self.conv.weight.copy_(torch.cat([filters, -filters]))
        self.conv.bias.zero_()
        self.conv.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class AirbenchStage(nn.Module):
    """conv 3x3 -> 2x2 max-pool -> BN -> GELU -> conv 3x3 -> BN -> GELU. Pooling right after the
    first convolution runs the normalisation, activation and second convolution at a quarter of
    the pixels, which is where a CPU spends its time. A ``depth`` past 2 adds that many more
    conv -> BN -> GELU layers, each added to its input (a residual), at the same quarter resolution."""

    def __init__(self, in_channels: int, out_channels: int, depth: int = 2) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"an airbench stage has at least 2 convolutions, got depth={depth}")
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.pool = MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.GELU()
        self.residuals = nn.Sequential(*(AirbenchResidual(out_channels) for _ in range(depth - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return self.residuals(self.act(self.bn2(self.conv2(x))))


class AirbenchResidual(nn.Module):
    """x + GELU(BN(conv 3x3 (x))): a convolution added to a stage past its second, at its width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.bn(self.conv(x)))


class AirbenchVGG(ZooModel):
    """airbench's network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU") scaled to
    a CPU: a whitened 2x2 stem, three stages that each halve the resolution, global max-pool, one
    linear layer. On 28x28 images: 27 -> 13 -> 6 -> 3."""

    first_conv = "stem.conv"
    classifier_name = "fc"
    stem_modules = ("stem",)
    stage_modules = ("stage1", "stage2", "stage3")

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), num_classes: int = 10, in_chans: int = 1,
                 stem_kernel: int = 2, global_pool: str = "max", drop_rate: float = 0.0,
                 depths: tuple[int, int, int] = (2, 2, 2), stem_act: bool = False) -> None:
        super().__init__()
        self.num_features = widths[2]
        self.stem = WhitenedStem(in_chans, stem_kernel, stem_act)
        stem_width = self.stem.conv.out_channels
        self.stage1 = AirbenchStage(stem_width, widths[0], depths[0])
        self.stage2 = AirbenchStage(widths[0], widths[1], depths[1])
        self.stage3 = AirbenchStage(widths[1], widths[2], depths[2])
        self.feature_info = [dict(num_chs=stem_width, reduction=1, module="stem")] + [
            dict(num_chs=w, reduction=2 ** (i + 1), module=f"stage{i + 1}") for i, w in enumerate(widths)]
        self._init_head(num_classes, global_pool, drop_rate, bias=False)  # airbench's classifier has no bias
        init_weights(self)

    def init_from_data(self, images: torch.Tensor) -> None:
        """Whiten the stem on a sample of normalised training images (N, C, H, W)."""
        self.stem.init_from_data(images)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.stage_modules:
            x = self._run_stage(getattr(self, name), x)
        return x


# what the airbench variants share in the registry
_AIRBENCH_CFG = dict(family="VGG", paper="Jordan 2024, 94% on CIFAR-10 in 3.29 seconds on a single GPU (airbench)",
                     year=2024, input_size=(1, 28, 28), min_input_size=(1, 9, 9), pool_size=(3, 3))


@register_model(small_variant="vgg_airbench", **_AIRBENCH_CFG)
def vgg_airbench(**kwargs) -> AirbenchVGG:
    """airbench's whitened-stem VGG at widths 32/64/128: the fast recipe's network for 28x28 images."""
    return AirbenchVGG(**kwargs)


@register_model(small_variant="vgg_airbench_96", **_AIRBENCH_CFG)
def vgg_airbench_96(**kwargs) -> AirbenchVGG:
    """vgg_airbench with its last two stages 1.5x as wide (32/96/192), 1.7x the MACs: the
    fast-long recipe's network."""
    return AirbenchVGG(widths=(32, 96, 192), **kwargs)


@register_model(small_variant="vgg_airbench_wide", **_AIRBENCH_CFG)
def vgg_airbench_wide(**kwargs) -> AirbenchVGG:
    """vgg_airbench at twice the width (64/128/256), four times the MACs."""
    return AirbenchVGG(widths=(64, 128, 256), **kwargs)
