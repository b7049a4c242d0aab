"""The Inception family: GoogLeNet (Inception v1), BN-Inception (Inception v2) and Inception v3.

An Inception module runs several convolution branches of different receptive fields (1x1, 3x3,
5x5, pooling) side by side on the same input and concatenates their outputs along channels; 1x1
"reduce" convolutions in front of the large kernels keep the cost down. Every module below is a
``Concat`` of its branches, each branch a ``ConvBnAct`` or a ``Sequential`` of them.

GoogLeNet (Szegedy et al. 2014, Going deeper with convolutions), Table 1, on a 224x224 input.
Inception columns are #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj:

    layer           patch/stride   output          1x1  3x3r  3x3  5x5r  5x5  pool
    conv1           7x7/2          112x112x64
    pool1           3x3/2 max      56x56x64
    conv2, conv3    1x1, 3x3/1     56x56x192
    pool2           3x3/2 max      28x28x192
    inception (3a)                 28x28x256        64    96  128    16   32    32
    inception (3b)                 28x28x480       128   128  192    32   96    64
    pool3           3x3/2 max      14x14x480
    inception (4a)                 14x14x512       192    96  208    16   48    64
    inception (4b)                 14x14x512       160   112  224    24   64    64
    inception (4c)                 14x14x512       128   128  256    24   64    64
    inception (4d)                 14x14x528       112   144  288    32   64    64
    inception (4e)                 14x14x832       256   160  320    32  128   128
    pool4           max            7x7x832
    inception (5a)                 7x7x832         256   160  320    32  128   128
    inception (5b)                 7x7x1024        384   192  384    48  128   128
    avg pool, dropout 40%, linear  num_classes

``googlenet`` follows torchvision's GoogLeNet so that its weight files load (6,624,904 parameters
without the auxiliary heads). That implementation differs from the paper in four ways, kept here
on purpose: every convolution is followed by batch normalisation (eps 0.001), which the 2014 paper
predates; the "5x5" branch uses a 3x3 convolution (as in the TensorFlow Inception v1 these weights
were ported from; pytorch/vision#906 keeps it so that the weights still fit); pool4 is a 2x2/2
max pool (3x3/2 in the paper: the same 7x7 output); and the auxiliary heads pool adaptively to 4x4
(the paper's 5x5/3 average pool also gives 4x4 on 14x14). Every pooling rounds up
(``ceil_mode``), as Caffe did. The main head's dropout is the paper's 40% (torchvision uses 20%;
dropout does not change the weights).

BN-Inception (Ioffe & Szegedy 2015, Batch normalization, Fig. 5), on a 224x224 input. The 5x5
branch becomes two stacked 3x3 convolutions ("double 3x3"); 3c and 4e reduce the grid with stride-2
branches next to a max-pool pass-through; columns are #1x1, #3x3 reduce, #3x3, double #3x3 reduce,
double #3x3, pool + proj:

    layer           output          1x1  3x3r  3x3  d3x3r  d3x3  pool
    conv1 7x7/2     112x112x64
    pool1 3x3/2     56x56x64
    conv2, conv3    56x56x192
    pool2 3x3/2     28x28x192
    inception (3a)  28x28x256        64    64   64     64    96  avg + 32
    inception (3b)  28x28x320        64    64   96     64    96  avg + 64
    inception (3c)  14x14x576         0   128  160     64    96  max + pass through (stride 2)
    inception (4a)  14x14x576       224    64   96     96   128  avg + 128
    inception (4b)  14x14x576       192    96  128     96   128  avg + 128
    inception (4c)  14x14x608       160   128  160    128   160  avg + 128
    inception (4d)  14x14x608        96   128  192    160   192  avg + 128
    inception (4e)  7x7x1056          0   128  192    192   256  max + pass through (stride 2)
    inception (5a)  7x7x1024        352   192  320    160   224  avg + 128
    inception (5b)  7x7x1024        352   192  320    192   224  max + 128
    avg pool, linear                num_classes

The paper's figure prints 576 for 4c/4d and 1024 for 4e in its output column, but its own branch
columns add up to 608, 608 and 1056 (as in the Caffe BN-Inception release); the branch columns are
what we build. 11.3M parameters and 2.0 GMACs at 224x224 for 1000 classes. The paper removes
dropout from this network, so ``drop_rate`` defaults to 0. There is no reference implementation in
torchvision or timm: the layer table above is what the tests check.

Inception v3 (Szegedy et al. 2015, Rethinking the Inception architecture), as released with
TensorFlow and ported to torchvision (whose weight files load: 23,834,568 parameters, 27,161,264
with the auxiliary head). On a 299x299 input:

    layer                                             output
    stem: conv1a 3x3/2, conv2a 3x3, conv2b 3x3 pad    147x147x64
          pool1 3x3/2 max, conv3b 1x1, conv4a 3x3     71x71x192
          pool2 3x3/2 max                             35x35x192
    mixed5b, 5c, 5d    Inception35x35 (Fig. 5)        35x35x256, 288, 288
    mixed6a            Reduction35to17 (Fig. 10)      17x17x768
    mixed6b..6e        Inception17x17 (Fig. 6, n=7)   17x17x768
    aux                auxiliary head on mixed6e      num_classes (training only)
    mixed7a            Reduction17to8                 8x8x1280
    mixed7b, 7c        Inception8x8 (Fig. 7)          8x8x2048
    avg pool, dropout, linear                         num_classes

The released network differs from the paper's Table 1: its stem ends with 1x1/80 + 3x3/192
convolutions and a max pool, the 35x35 modules keep a 5x5 branch next to a double 3x3 one, and
there are four 17x17 modules, not five. Batch norm eps is 0.001 throughout.

Auxiliary classifiers (``aux_logits=True``): in training mode ``forward`` returns a named tuple,
``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`` for GoogLeNet and
``InceptionV3Outputs(logits, aux_logits)`` for v3 (torchvision's order), and in eval mode just the
logits. The GoogLeNet paper weights each auxiliary loss by 0.3. The v3 auxiliary head needs the
17x17 grid of a full-size input: inputs of at least 299x299 (see ``InceptionV3Aux``).

Input normalisation: torchvision's googlenet and inception_v3 weights expect pixels scaled to
[-1, 1] (mean = std = 0.5; torchvision's ``transform_input`` converts ImageNet-normalised inputs to
that), so those two models are registered with mean = std = 0.5 and need no ``transform_input``.

Small-input variants (``googlenet_cifar``, ``inception_v2_cifar``, ``inception_v3_cifar``) keep the
modules and replace the ImageNet stem, which divides the resolution by 8, by stride-1
convolutions, so a 28x28 or 32x32 image reaches the first modules at full resolution (as in the
common CIFAR GoogLeNet: a 3x3 conv of 192 channels, then 3a). At full width they cost 1.3-3.6
GMACs per 32x32 image, too much to train on a CPU, so every channel count is multiplied by
``width_mult`` (rounded to a multiple of 8, at least 8): 0.25 by default for these variants
(``width_mult=1.0`` gives the full-width networks of the literature).

Stages (``feature_info``): the last layer or module at each resolution (the stem's convolutions at
1/2 and 1/4, then the modules before each grid reduction and the last one).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from cnnzoo.models.base import ZooModel
from cnnzoo.models.features import last_per_reduction
from cnnzoo.models.layers import AvgPool2d, Concat, ConvBnAct, MaxPool2d, init_weights, is_tracing
from cnnzoo.models.registry import TV_TAGS, register_model

# The TensorFlow-born weights (GoogLeNet port, Inception v3) use eps 0.001; BN-Inception the default.
TF_BN_EPS = 1e-3


def scale_channels(channels: int, width_mult: float) -> int:
    """``channels * width_mult`` rounded to a multiple of 8, at least 8 (unchanged at 1.0)."""
    if width_mult == 1.0:
        return channels
    return max(8, int(channels * width_mult + 4) // 8 * 8)


def _seq(**layers: nn.Module) -> nn.Sequential:
    """A Sequential with named children (``reduce``, ``conv1``... read better than 0, 1...)."""
    return nn.Sequential(OrderedDict(layers))


def _check_aux(aux_logits: bool, num_classes: int) -> None:
    if aux_logits and num_classes == 0:
        raise ValueError("auxiliary classifiers need classes: num_classes=0 needs aux_logits=False")


class _InceptionNet(ZooModel):
    """What the three networks share: the stem, and the modules as stages (``stage_modules``)."""

    stem_modules = ("stem",)


# ==================================================================================================
# GoogLeNet (Inception v1)


class InceptionV1Block(Concat):
    """GoogLeNet's Inception module (Fig. 2b): 1x1 | 1x1 -> 3x3 | 1x1 -> "5x5" | 3x3 max pool -> 1x1.

    The "5x5" branch is a 3x3 convolution, as in torchvision's weights (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        c1x1: int,
        c3x3_reduce: int,
        c3x3: int,
        c5x5_reduce: int,
        c5x5: int,
        pool_proj: int,
        bn_eps: float = TF_BN_EPS,
    ) -> None:
        super().__init__({
            "branch1x1": ConvBnAct(in_channels, c1x1, 1, bn_eps=bn_eps),
            "branch3x3": _seq(
                reduce=ConvBnAct(in_channels, c3x3_reduce, 1, bn_eps=bn_eps),
                conv1=ConvBnAct(c3x3_reduce, c3x3, 3, bn_eps=bn_eps),
            ),
            "branch5x5": _seq(
                reduce=ConvBnAct(in_channels, c5x5_reduce, 1, bn_eps=bn_eps),
                conv1=ConvBnAct(c5x5_reduce, c5x5, 3, bn_eps=bn_eps),
            ),
            "branch_pool": _seq(
                pool=MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                proj=ConvBnAct(in_channels, pool_proj, 1, bn_eps=bn_eps),
            ),
        })
        self.out_channels = c1x1 + c3x3 + c5x5 + pool_proj


class GoogLeNetAux(nn.Module):
    """Auxiliary classifier on 4a and 4d (paper section 5): pool to 4x4, 1x1 conv 128, fc 1024,
    ReLU, dropout 70%, linear. Pooling is adaptive (torchvision), so it runs on any grid size."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        reduce_channels: int = 128,
        hidden: int = 1024,
        drop_rate: float = 0.7,
        bn_eps: float = TF_BN_EPS,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.reduce = ConvBnAct(in_channels, reduce_channels, 1, bn_eps=bn_eps)
        self.fc1 = nn.Linear(reduce_channels * 4 * 4, hidden)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.reduce(self.pool(x)), 1)
        return self.fc2(self.drop(self.act(self.fc1(x))))


class GoogLeNetOutputs(NamedTuple):
    """What GoogLeNet returns in training mode with ``aux_logits=True`` (torchvision's order)."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor
    aux_logits1: torch.Tensor


class GoogLeNet(_InceptionNet):
    first_conv = "stem.conv1.conv"
    classifier_name = "fc"
    aux_heads = ("aux1", "aux2")
    KEY_MAPS = {
        "torchvision": [
            (r"^(conv\d|maxpool\d)\.", r"stem.\1."),
            (r"\.branch1\.", ".branch1x1."),
            (r"\.branch2\.0\.", ".branch3x3.reduce."),
            (r"\.branch2\.1\.", ".branch3x3.conv1."),
            (r"\.branch3\.0\.", ".branch5x5.reduce."),
            (r"\.branch3\.1\.", ".branch5x5.conv1."),
            (r"\.branch4\.1\.", ".branch_pool.proj."),
            (r"^(aux\d)\.conv\.", r"\1.reduce."),
        ],
    }

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool = False,
        drop_rate: float = 0.4,
        aux_drop_rate: float = 0.7,
        width_mult: float = 1.0,
        small_input: bool = False,
        global_pool: str = "avg",
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        _check_aux(aux_logits, num_classes)
        if stem_stride not in (1, 2) or (stem_stride != 1 and not small_input):
            raise ValueError(f"stem_stride must be 1 or 2 and only with small_input=True, got {stem_stride}")
        self.aux_logits = aux_logits

        def c(channels: int) -> int:
            return scale_channels(channels, width_mult)

        if small_input:
            # CIFAR GoogLeNet: one 3x3 convolution straight to 3a's input width, no downsampling;
            # stride 2 runs 3a/3b at half the input size (the paper's stem reduces by 8), 1/4 the work.
            self.stem = _seq(conv1=ConvBnAct(in_chans, c(192), 3, stride=stem_stride, bn_eps=TF_BN_EPS))
        else:
            self.stem = _seq(
                conv1=ConvBnAct(in_chans, c(64), 7, stride=2, padding=3, bn_eps=TF_BN_EPS),
                pool1=MaxPool2d(3, stride=2, ceil_mode=True),
                conv2=ConvBnAct(c(64), c(64), 1, bn_eps=TF_BN_EPS),
                conv3=ConvBnAct(c(64), c(192), 3, bn_eps=TF_BN_EPS),
                pool2=MaxPool2d(3, stride=2, ceil_mode=True),
            )
        self.inception3a = InceptionV1Block(c(192), c(64), c(96), c(128), c(16), c(32), c(32))
        self.inception3b = InceptionV1Block(self.inception3a.out_channels, c(128), c(128), c(192), c(32), c(96), c(64))
        self.pool3 = MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = InceptionV1Block(self.inception3b.out_channels, c(192), c(96), c(208), c(16), c(48), c(64))
        self.inception4b = InceptionV1Block(self.inception4a.out_channels, c(160), c(112), c(224), c(24), c(64), c(64))
        self.inception4c = InceptionV1Block(self.inception4b.out_channels, c(128), c(128), c(256), c(24), c(64), c(64))
        self.inception4d = InceptionV1Block(self.inception4c.out_channels, c(112), c(144), c(288), c(32), c(64), c(64))
        self.inception4e = InceptionV1Block(self.inception4d.out_channels, c(256), c(160), c(320), c(32), c(128), c(128))
        self.pool4 = MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = InceptionV1Block(self.inception4e.out_channels, c(256), c(160), c(320), c(32), c(128), c(128))
        self.inception5b = InceptionV1Block(self.inception5a.out_channels, c(384), c(192), c(384), c(48), c(128), c(128))
        self.num_features = self.inception5b.out_channels
        self.stage_modules = tuple(n for n, _ in self.named_children() if n.startswith("inception"))
        stem = ([("stem.conv1", c(192), stem_stride)] if small_input
                else [("stem.conv1", c(64), 2), ("stem.conv3", c(192), 4)])
        r = stem[-1][2] * (1 if small_input else 2)
        self.feature_info = last_per_reduction(stem + [("inception3b", self.inception3b.out_channels, r),
                                                       ("inception4e", self.inception4e.out_channels, 2 * r),
                                                       ("inception5b", self.num_features, 4 * r)])

        self.aux1: GoogLeNetAux | None = None
        self.aux2: GoogLeNetAux | None = None
        if aux_logits:
            self.aux1 = GoogLeNetAux(self.inception4a.out_channels, num_classes, c(128), c(1024), aux_drop_rate)
            self.aux2 = GoogLeNetAux(self.inception4d.out_channels, num_classes, c(128), c(1024), aux_drop_rate)

        self._init_head(num_classes, global_pool, drop_rate)
        init_weights(self)

    def _features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x = self.stem(x)
        x = self.pool3(self._run_stages(x, ("inception3a", "inception3b")))
        x = self._run_stages(x, ("inception4a",))
        aux1 = self.aux1(x) if with_aux and self.aux1 is not None else None
        x = self._run_stages(x, ("inception4b", "inception4c", "inception4d"))
        aux2 = self.aux2(x) if with_aux and self.aux2 is not None else None
        x = self.pool4(self._run_stages(x, ("inception4e",)))
        x = self._run_stages(x, ("inception5a", "inception5b"))
        return x, aux1, aux2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x, with_aux=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:  # type: ignore[override]
        self.check_input(x)
        if self.training and self.aux_logits:
            x, aux1, aux2 = self._features(x, with_aux=True)
            return GoogLeNetOutputs(self.forward_head(x), aux2, aux1)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        _check_aux(self.aux_logits, num_classes)
        super().reset_classifier(num_classes, global_pool)
        # The auxiliary heads predict the same classes as the main one.
        for aux in (self.aux1, self.aux2):
            if aux is not None and num_classes > 0:
                aux.fc2 = nn.Linear(aux.fc2.in_features, num_classes)


# ==================================================================================================
# BN-Inception (Inception v2)


class InceptionV2Block(Concat):
    """BN-Inception module: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | 3x3 avg or max pool -> 1x1."""

    def __init__(
        self,
        in_channels: int,
        c1x1: int,
        c3x3_reduce: int,
        c3x3: int,
        c3x3dbl_reduce: int,
        c3x3dbl: int,
        pool_proj: int,
        pool: str = "avg",
    ) -> None:
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        pool_layer = AvgPool2d(3, 1, 1) if pool == "avg" else MaxPool2d(3, 1, 1)
        super().__init__({
            "branch1x1": ConvBnAct(in_channels, c1x1, 1),
            "branch3x3": _seq(
                reduce=ConvBnAct(in_channels, c3x3_reduce, 1),
                conv1=ConvBnAct(c3x3_reduce, c3x3, 3),
            ),
            "branch3x3dbl": _seq(
                reduce=ConvBnAct(in_channels, c3x3dbl_reduce, 1),
                conv1=ConvBnAct(c3x3dbl_reduce, c3x3dbl, 3),
                conv2=ConvBnAct(c3x3dbl, c3x3dbl, 3),
            ),
            "branch_pool": _seq(pool=pool_layer, proj=ConvBnAct(in_channels, pool_proj, 1)),
        })
        self.out_channels = c1x1 + c3x3 + c3x3dbl + pool_proj


class InceptionV2Reduction(Concat):
    """BN-Inception's grid reduction (3c, 4e): stride-2 3x3 and double 3x3 branches next to a
    3x3/2 max pool whose output passes through unprojected, so channels grow by the branches'.

    The pool pads by 1 like the stride-2 convolutions, so all three branches agree on the output
    size for every input size."""

    def __init__(self, in_channels: int, c3x3_reduce: int, c3x3: int, c3x3dbl_reduce: int, c3x3dbl: int) -> None:
        super().__init__({
            "branch3x3": _seq(
                reduce=ConvBnAct(in_channels, c3x3_reduce, 1),
                conv1=ConvBnAct(c3x3_reduce, c3x3, 3, stride=2),
            ),
            "branch3x3dbl": _seq(
                reduce=ConvBnAct(in_channels, c3x3dbl_reduce, 1),
                conv1=ConvBnAct(c3x3dbl_reduce, c3x3dbl, 3),
                conv2=ConvBnAct(c3x3dbl, c3x3dbl, 3, stride=2),
            ),
            "branch_pool": MaxPool2d(3, stride=2, padding=1),
        })
        self.out_channels = c3x3 + c3x3dbl + in_channels


class InceptionV2(_InceptionNet):
    first_conv = "stem.conv1.conv"
    classifier_name = "fc"

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        width_mult: float = 1.0,
        small_input: bool = False,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()

        def c(channels: int) -> int:
            return scale_channels(channels, width_mult)

        if small_input:
            self.stem = _seq(conv1=ConvBnAct(in_chans, c(192), 3))
        else:
            self.stem = _seq(
                conv1=ConvBnAct(in_chans, c(64), 7, stride=2, padding=3),
                pool1=MaxPool2d(3, stride=2, ceil_mode=True),
                conv2=ConvBnAct(c(64), c(64), 1),
                conv3=ConvBnAct(c(64), c(192), 3),
                pool2=MaxPool2d(3, stride=2, ceil_mode=True),
            )
        self.inception3a = InceptionV2Block(c(192), c(64), c(64), c(64), c(64), c(96), c(32))
        self.inception3b = InceptionV2Block(self.inception3a.out_channels, c(64), c(64), c(96), c(64), c(96), c(64))
        self.inception3c = InceptionV2Reduction(self.inception3b.out_channels, c(128), c(160), c(64), c(96))
        self.inception4a = InceptionV2Block(self.inception3c.out_channels, c(224), c(64), c(96), c(96), c(128), c(128))
        self.inception4b = InceptionV2Block(self.inception4a.out_channels, c(192), c(96), c(128), c(96), c(128), c(128))
        self.inception4c = InceptionV2Block(self.inception4b.out_channels, c(160), c(128), c(160), c(128), c(160), c(128))
        self.inception4d = InceptionV2Block(self.inception4c.out_channels, c(96), c(128), c(192), c(160), c(192), c(128))
        self.inception4e = InceptionV2Reduction(self.inception4d.out_channels, c(128), c(192), c(192), c(256))
        self.inception5a = InceptionV2Block(self.inception4e.out_channels, c(352), c(192), c(320), c(160), c(224), c(128))
        self.inception5b = InceptionV2Block(
            self.inception5a.out_channels, c(352), c(192), c(320), c(192), c(224), c(128), pool="max"
        )
        self.num_features = self.inception5b.out_channels
        stem = [("stem.conv1", c(192), 1)] if small_input else [("stem.conv1", c(64), 2), ("stem.conv3", c(192), 4)]
        r = stem[-1][2] * (1 if small_input else 2)
        self.feature_info = last_per_reduction(stem + [("inception3b", self.inception3b.out_channels, r),
                                                       ("inception4d", self.inception4d.out_channels, 2 * r),
                                                       ("inception5b", self.num_features, 4 * r)])
        self.stage_modules = tuple(n for n, _ in self.named_children() if n.startswith("inception"))
        self._init_head(num_classes, global_pool, drop_rate)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_stages(self.stem(x), self.stage_modules)


# ==================================================================================================
# Inception v3


class Inception35x35(Concat):
    """Inception v3's module on the 35x35 grid (torchvision's InceptionA):
    1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | 3x3 avg pool -> 1x1."""

    def __init__(
        self,
        in_channels: int,
        c1x1: int,
        c5x5_reduce: int,
        c5x5: int,
        c3x3dbl_reduce: int,
        c3x3dbl: int,
        pool_proj: int,
    ) -> None:
        eps = TF_BN_EPS
        super().__init__({
            "branch1x1": ConvBnAct(in_channels, c1x1, 1, bn_eps=eps),
            "branch5x5": _seq(
                reduce=ConvBnAct(in_channels, c5x5_reduce, 1, bn_eps=eps),
                conv1=ConvBnAct(c5x5_reduce, c5x5, 5, bn_eps=eps),
            ),
            "branch3x3dbl": _seq(
                reduce=ConvBnAct(in_channels, c3x3dbl_reduce, 1, bn_eps=eps),
                conv1=ConvBnAct(c3x3dbl_reduce, c3x3dbl, 3, bn_eps=eps),
                conv2=ConvBnAct(c3x3dbl, c3x3dbl, 3, bn_eps=eps),
            ),
            "branch_pool": _seq(
                pool=AvgPool2d(3, stride=1, padding=1),
                proj=ConvBnAct(in_channels, pool_proj, 1, bn_eps=eps),
            ),
        })
        self.out_channels = c1x1 + c5x5 + c3x3dbl + pool_proj


class Reduction35to17(Concat):
    """Grid reduction 35x35 -> 17x17 (Fig. 10, torchvision's InceptionB): a stride-2 3x3 conv and a
    stride-2 double 3x3 next to a 3x3/2 max pool, all unpadded; the pool's output passes through."""

    def __init__(self, in_channels: int, c3x3: int, c3x3dbl_reduce: int, c3x3dbl: int) -> None:
        eps = TF_BN_EPS
        super().__init__({
            "branch3x3": ConvBnAct(in_channels, c3x3, 3, stride=2, padding=0, bn_eps=eps),
            "branch3x3dbl": _seq(
                reduce=ConvBnAct(in_channels, c3x3dbl_reduce, 1, bn_eps=eps),
                conv1=ConvBnAct(c3x3dbl_reduce, c3x3dbl, 3, bn_eps=eps),
                conv2=ConvBnAct(c3x3dbl, c3x3dbl, 3, stride=2, padding=0, bn_eps=eps),
            ),
            "branch_pool": MaxPool2d(3, stride=2),
        })
        self.out_channels = c3x3 + c3x3dbl + in_channels


class Inception17x17(Concat):
    """Inception v3's module on the 17x17 grid (Fig. 6 with n=7, torchvision's InceptionC): 7x7
    convolutions factorised into 1x7 and 7x1 ones. 1x1 | 1x1 -> 1x7 -> 7x1 |
    1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | 3x3 avg pool -> 1x1."""

    def __init__(self, in_channels: int, c1x1: int, c7x7_mid: int, c7x7: int, pool_proj: int) -> None:
        eps = TF_BN_EPS
        m = c7x7_mid
        super().__init__({
            "branch1x1": ConvBnAct(in_channels, c1x1, 1, bn_eps=eps),
            "branch7x7": _seq(
                reduce=ConvBnAct(in_channels, m, 1, bn_eps=eps),
                conv1=ConvBnAct(m, m, (1, 7), bn_eps=eps),
                conv2=ConvBnAct(m, c7x7, (7, 1), bn_eps=eps),
            ),
            "branch7x7dbl": _seq(
                reduce=ConvBnAct(in_channels, m, 1, bn_eps=eps),
                conv1=ConvBnAct(m, m, (7, 1), bn_eps=eps),
                conv2=ConvBnAct(m, m, (1, 7), bn_eps=eps),
                conv3=ConvBnAct(m, m, (7, 1), bn_eps=eps),
                conv4=ConvBnAct(m, c7x7, (1, 7), bn_eps=eps),
            ),
            "branch_pool": _seq(
                pool=AvgPool2d(3, stride=1, padding=1),
                proj=ConvBnAct(in_channels, pool_proj, 1, bn_eps=eps),
            ),
        })
        self.out_channels = c1x1 + c7x7 + c7x7 + pool_proj


class Reduction17to8(Concat):
    """Grid reduction 17x17 -> 8x8 (torchvision's InceptionD): 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2
    | 3x3/2 max pool passing through."""

    def __init__(self, in_channels: int, c3x3_reduce: int, c3x3: int, c7x7x3: int) -> None:
        eps = TF_BN_EPS
        super().__init__({
            "branch3x3": _seq(
                reduce=ConvBnAct(in_channels, c3x3_reduce, 1, bn_eps=eps),
                conv1=ConvBnAct(c3x3_reduce, c3x3, 3, stride=2, padding=0, bn_eps=eps),
            ),
            "branch7x7x3": _seq(
                reduce=ConvBnAct(in_channels, c7x7x3, 1, bn_eps=eps),
                conv1=ConvBnAct(c7x7x3, c7x7x3, (1, 7), bn_eps=eps),
                conv2=ConvBnAct(c7x7x3, c7x7x3, (7, 1), bn_eps=eps),
                conv3=ConvBnAct(c7x7x3, c7x7x3, 3, stride=2, padding=0, bn_eps=eps),
            ),
            "branch_pool": MaxPool2d(3, stride=2),
        })
        self.out_channels = c3x3 + c7x7x3 + in_channels


def _split_1x3_3x1(channels: int, out_channels: int) -> Concat:
    """Fig. 7's expanded filter bank: a 1x3 and a 3x1 convolution side by side on the same input."""
    return Concat({
        "conv1x3": ConvBnAct(channels, out_channels, (1, 3), bn_eps=TF_BN_EPS),
        "conv3x1": ConvBnAct(channels, out_channels, (3, 1), bn_eps=TF_BN_EPS),
    })


class Inception8x8(Concat):
    """Inception v3's module on the 8x8 grid (Fig. 7, torchvision's InceptionE): the last
    convolution of the 3x3 and double-3x3 branches splits into parallel 1x3 and 3x1 ones, widening
    the output (each split branch gives 2 * its width). 1x1 | 1x1 -> [1x3, 3x1] |
    1x1 -> 3x3 -> [1x3, 3x1] | 3x3 avg pool -> 1x1."""

    def __init__(
        self,
        in_channels: int,
        c1x1: int,
        c3x3: int,
        c3x3dbl_reduce: int,
        c3x3dbl: int,
        pool_proj: int,
    ) -> None:
        eps = TF_BN_EPS
        super().__init__({
            "branch1x1": ConvBnAct(in_channels, c1x1, 1, bn_eps=eps),
            "branch3x3": _seq(
                reduce=ConvBnAct(in_channels, c3x3, 1, bn_eps=eps),
                split=_split_1x3_3x1(c3x3, c3x3),
            ),
            "branch3x3dbl": _seq(
                reduce=ConvBnAct(in_channels, c3x3dbl_reduce, 1, bn_eps=eps),
                conv1=ConvBnAct(c3x3dbl_reduce, c3x3dbl, 3, bn_eps=eps),
                split=_split_1x3_3x1(c3x3dbl, c3x3dbl),
            ),
            "branch_pool": _seq(
                pool=AvgPool2d(3, stride=1, padding=1),
                proj=ConvBnAct(in_channels, pool_proj, 1, bn_eps=eps),
            ),
        })
        self.out_channels = c1x1 + 2 * c3x3 + 2 * c3x3dbl + pool_proj


class InceptionV3Aux(nn.Module):
    """Auxiliary head on mixed6e: 5x5/3 avg pool (17x17 -> 5x5), 1x1 conv 128, 5x5 conv 768
    (-> 1x1), linear. The unpadded 5x5 convolution needs a grid of at least 17x17, which inputs of
    299x299 and more give; it refuses smaller grids with a ValueError."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = AvgPool2d(5, stride=3)
        self.reduce = ConvBnAct(in_channels, 128, 1, bn_eps=TF_BN_EPS)
        self.conv = ConvBnAct(128, 768, 5, padding=0, bn_eps=TF_BN_EPS)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_tracing() and min(x.shape[-2:]) < 17:
            raise ValueError(
                f"the Inception v3 auxiliary head needs a 17x17 grid (inputs of at least 299x299), got "
                f"{x.shape[-2]}x{x.shape[-1]}; use a larger input or aux_logits=False"
            )
        x = self.conv(self.reduce(self.pool(x)))
        return self.fc(torch.flatten(self.global_pool(x), 1))


class InceptionV3Outputs(NamedTuple):
    """What Inception v3 returns in training mode with ``aux_logits=True`` (torchvision's order)."""

    logits: torch.Tensor
    aux_logits: torch.Tensor


class InceptionV3(_InceptionNet):
    first_conv = "stem.conv1a.conv"
    classifier_name = "fc"
    aux_heads = ("aux",)
    # torchvision and timm share the TensorFlow names: Conv2d_1a_3x3, Mixed_5b.branch5x5_1, ...
    _TF_NAMES = [
        (r"^Conv2d_(\d[ab])_\dx\d\.", r"stem.conv\1."),
        (r"^Mixed_(\d[a-e])\.", r"mixed\1."),
        (r"^AuxLogits\.conv0\.", "aux.reduce."),
        (r"^AuxLogits\.conv1\.", "aux.conv."),
        (r"^AuxLogits\.", "aux."),
        (r"\.branch_pool\.", ".branch_pool.proj."),
        (r"\.(branch\w+?)_1\.", r".\1.reduce."),
        (r"\.(branch\w+?)_2\.", r".\1.conv1."),
        (r"\.(branch\w+?)_3\.", r".\1.conv2."),
        (r"\.(branch\w+?)_4\.", r".\1.conv3."),
        (r"\.(branch\w+?)_5\.", r".\1.conv4."),
        (r"\.(branch\w+?)_\da\.", r".\1.split.conv1x3."),
        (r"\.(branch\w+?)_\db\.", r".\1.split.conv3x1."),
    ]
    KEY_MAPS = {"torchvision": _TF_NAMES, "timm": _TF_NAMES}

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool = False,
        drop_rate: float = 0.5,
        width_mult: float = 1.0,
        small_input: bool = False,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if aux_logits and small_input:
            raise ValueError("the Inception v3 auxiliary head needs a 17x17 grid; small-input variants have none")
        _check_aux(aux_logits, num_classes)
        self.aux_logits = aux_logits
        eps = TF_BN_EPS

        def c(channels: int) -> int:
            return scale_channels(channels, width_mult)

        if small_input:
            # The ImageNet stem's layers without its three stride-2 steps: 28x28 stays 28x28.
            self.stem = _seq(
                conv1a=ConvBnAct(in_chans, c(32), 3, bn_eps=eps),
                conv2a=ConvBnAct(c(32), c(32), 3, bn_eps=eps),
                conv2b=ConvBnAct(c(32), c(64), 3, bn_eps=eps),
                conv3b=ConvBnAct(c(64), c(80), 1, bn_eps=eps),
                conv4a=ConvBnAct(c(80), c(192), 3, bn_eps=eps),
            )
        else:
            self.stem = _seq(
                conv1a=ConvBnAct(in_chans, c(32), 3, stride=2, padding=0, bn_eps=eps),
                conv2a=ConvBnAct(c(32), c(32), 3, padding=0, bn_eps=eps),
                conv2b=ConvBnAct(c(32), c(64), 3, bn_eps=eps),
                pool1=MaxPool2d(3, stride=2),
                conv3b=ConvBnAct(c(64), c(80), 1, bn_eps=eps),
                conv4a=ConvBnAct(c(80), c(192), 3, padding=0, bn_eps=eps),
                pool2=MaxPool2d(3, stride=2),
            )
        self.mixed5b = Inception35x35(c(192), c(64), c(48), c(64), c(64), c(96), c(32))
        self.mixed5c = Inception35x35(self.mixed5b.out_channels, c(64), c(48), c(64), c(64), c(96), c(64))
        self.mixed5d = Inception35x35(self.mixed5c.out_channels, c(64), c(48), c(64), c(64), c(96), c(64))
        self.mixed6a = Reduction35to17(self.mixed5d.out_channels, c(384), c(64), c(96))
        self.mixed6b = Inception17x17(self.mixed6a.out_channels, c(192), c(128), c(192), c(192))
        self.mixed6c = Inception17x17(self.mixed6b.out_channels, c(192), c(160), c(192), c(192))
        self.mixed6d = Inception17x17(self.mixed6c.out_channels, c(192), c(160), c(192), c(192))
        self.mixed6e = Inception17x17(self.mixed6d.out_channels, c(192), c(192), c(192), c(192))
        self.aux: InceptionV3Aux | None = InceptionV3Aux(self.mixed6e.out_channels, num_classes) if aux_logits else None
        self.mixed7a = Reduction17to8(self.mixed6e.out_channels, c(192), c(320), c(192))
        self.mixed7b = Inception8x8(self.mixed7a.out_channels, c(320), c(384), c(448), c(384), c(192))
        self.mixed7c = Inception8x8(self.mixed7b.out_channels, c(320), c(384), c(448), c(384), c(192))
        self.num_features = self.mixed7c.out_channels
        self.stage_modules = tuple(n for n, _ in self.named_children() if n.startswith("mixed"))
        stem = [("stem.conv4a", c(192), 1)] if small_input else [("stem.conv2b", c(64), 2), ("stem.conv4a", c(192), 4)]
        r = stem[-1][2] * (1 if small_input else 2)
        self.feature_info = last_per_reduction(stem + [("mixed5d", self.mixed5d.out_channels, r),
                                                       ("mixed6e", self.mixed6e.out_channels, 2 * r),
                                                       ("mixed7c", self.num_features, 4 * r)])
        self._init_head(num_classes, global_pool, drop_rate)
        init_weights(self)

    def _features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self._run_stages(self.stem(x), ("mixed5b", "mixed5c", "mixed5d", "mixed6a", "mixed6b", "mixed6c",
                                            "mixed6d", "mixed6e"))
        aux = self.aux(x) if with_aux and self.aux is not None else None
        x = self._run_stages(x, ("mixed7a", "mixed7b", "mixed7c"))
        return x, aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x, with_aux=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor | InceptionV3Outputs:  # type: ignore[override]
        self.check_input(x)
        if self.training and self.aux_logits:
            x, aux = self._features(x, with_aux=True)
            return InceptionV3Outputs(self.forward_head(x), aux)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        _check_aux(self.aux_logits, num_classes)
        super().reset_classifier(num_classes, global_pool)
        if self.aux is not None and num_classes > 0:
            self.aux.fc = nn.Linear(self.aux.fc.in_features, num_classes)


# ==================================================================================================
# Registered models

_V1 = dict(family="Inception", paper="Szegedy et al. 2014, Going deeper with convolutions", year=2014)
_V2 = dict(family="Inception", paper="Ioffe, Szegedy 2015, Batch normalization: accelerating deep network "
           "training by reducing internal covariate shift", year=2015)
_V3 = dict(family="Inception", paper="Szegedy et al. 2015, Rethinking the Inception architecture for computer "
           "vision", year=2015)
# torchvision's googlenet and inception_v3 weights were trained on pixels scaled to [-1, 1].
_INCEPTION_NORM = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
# Width of the small-input variants: a quarter of the ImageNet networks' (see the module docstring).
SMALL_WIDTH = 0.25


@register_model(**_V1, **_INCEPTION_NORM, input_size=(3, 224, 224), min_input_size=(3, 15, 15),
                reference="torchvision:googlenet", small_variant="googlenet_cifar", pool_size=(7, 7), tags=TV_TAGS)
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet as in torchvision (BN after every conv, 3x3 "5x5" branch); ``aux_logits=True``
    adds the two auxiliary classifiers."""
    return GoogLeNet(**kwargs)


@register_model(**_V1, input_size=(3, 32, 32), min_input_size=(3, 2, 2), small_variant="googlenet_cifar",
                pool_size=(8, 8))
def googlenet_cifar(**kwargs) -> GoogLeNet:
    """The CIFAR GoogLeNet: a 3x3 conv stem, 3a/3b at full resolution, 4a-4e at 1/2, 5a/5b at 1/4;
    ``width_mult`` 0.25 by default (361K parameters for 10 classes, 68M MACs on 1x28x28); 1.0 gives
    the full width, 5.5M parameters (the common version's extra 3x3 in the 5x5 branch makes 6.2M)."""
    kwargs.setdefault("width_mult", SMALL_WIDTH)
    return GoogLeNet(small_input=True, **kwargs)


@register_model(**_V2, input_size=(3, 224, 224), min_input_size=(3, 7, 7), small_variant="inception_v2_cifar",
                pool_size=(7, 7), verified_by="paper Fig. 5: test_inception.py::test_inception_v2_layer_table")
def inception_v2(**kwargs) -> InceptionV2:
    """BN-Inception, Fig. 5 of the batch normalisation paper (11.3M parameters, 2.0 GMACs)."""
    return InceptionV2(**kwargs)


@register_model(**_V2, input_size=(3, 32, 32), min_input_size=(3, 1, 1), small_variant="inception_v2_cifar",
                pool_size=(8, 8))
def inception_v2_cifar(**kwargs) -> InceptionV2:
    """BN-Inception with a 3x3 conv stem: 3a/3b at full resolution, 4a-4d at 1/2, 5a/5b at 1/4;
    ``width_mult`` 0.25 by default."""
    kwargs.setdefault("width_mult", SMALL_WIDTH)
    return InceptionV2(small_input=True, **kwargs)


@register_model(**_V3, **_INCEPTION_NORM, input_size=(3, 299, 299), min_input_size=(3, 75, 75),
                reference="torchvision:inception_v3", small_variant="inception_v3_cifar",
                pool_size=(8, 8), crop_pct=299 / 342, tags=TV_TAGS)
def inception_v3(**kwargs) -> InceptionV3:
    """Inception v3 as released with TensorFlow and torchvision; ``aux_logits=True`` adds the
    auxiliary classifier (which needs inputs of at least 299x299)."""
    return InceptionV3(**kwargs)


@register_model(**_V3, input_size=(3, 32, 32), min_input_size=(3, 7, 7), small_variant="inception_v3_cifar",
                pool_size=(7, 7))
def inception_v3_cifar(**kwargs) -> InceptionV3:
    """Inception v3's modules behind a stride-1 stem: the 35x35 modules run at 28x28 (32x32), the
    17x17 ones at 13x13 (15x15), the 8x8 ones at 6x6 (7x7); ``width_mult`` 0.25 by default."""
    kwargs.setdefault("width_mult", SMALL_WIDTH)
    return InceptionV3(small_input=True, **kwargs)
