"""AlexNet (Krizhevsky, Sutskever, Hinton 2012), ZFNet (Zeiler & Fergus 2013) and a CIFAR AlexNet.

AlexNet as torchvision builds it: the single-GPU layout of Krizhevsky's "One weird trick for
parallelizing convolutional neural networks" (2014), on a 224x224 input:

    layer  operation                               output
    conv1  conv 64 @ 11x11, stride 4, pad 2, ReLU  64 x 55 x 55
    pool1  3x3 max-pool, stride 2                  64 x 27 x 27
    conv2  conv 192 @ 5x5, pad 2, ReLU             192 x 27 x 27
    pool2  3x3 max-pool, stride 2                  192 x 13 x 13
    conv3  conv 384 @ 3x3, pad 1, ReLU             384 x 13 x 13
    conv4  conv 256 @ 3x3, pad 1, ReLU             256 x 13 x 13
    conv5  conv 256 @ 3x3, pad 1, ReLU             256 x 13 x 13
    pool5  3x3 max-pool, stride 2                  256 x 6 x 6
           adaptive average pool to 6x6            256 x 6 x 6 (identity at 224)
    fc6    dropout 0.5, fully connected, ReLU      4096
    fc7    dropout 0.5, fully connected, ReLU      4096
    fc8    fully connected                         num_classes

61,100,840 parameters for 1000 classes. The 2012 paper's network was split over two GPUs: conv1-5
have 96, 256, 384, 384, 256 filters (conv2, conv4 and conv5 only see the maps of their own GPU) and
local response normalisation follows conv1 and conv2 (about 60M parameters). The pooling is
"overlapping" (3x3 windows, stride 2), which the paper reports lowers top-1 error by 0.4%.

ZFNet, the network of Zeiler & Fergus's Fig. 3, on a 224x224 input:

    layer  operation                                   output
    conv1  conv 96 @ 7x7, stride 2, pad 1, ReLU        96 x 110 x 110
    pool1  3x3 max-pool, stride 2; contrast norm       96 x 55 x 55
    conv2  conv 256 @ 5x5, stride 2, ReLU              256 x 26 x 26
    pool2  3x3 max-pool, stride 2; contrast norm       256 x 13 x 13
    conv3  conv 384 @ 3x3, pad 1, ReLU                 384 x 13 x 13
    conv4  conv 384 @ 3x3, pad 1, ReLU                 384 x 13 x 13
    conv5  conv 256 @ 3x3, pad 1, ReLU                 256 x 13 x 13
    pool5  3x3 max-pool, stride 2                      256 x 6 x 6
    fc6    dropout 0.5, fully connected, ReLU          4096
    fc7    dropout 0.5, fully connected, ReLU          4096
    fc8    fully connected                             num_classes

62,357,608 parameters for 1000 classes. Its changes to AlexNet, found by visualising the first
layers: 7x7 stride-2 filters in conv1 instead of 11x11 stride 4 (fewer dead and aliased filters),
stride 2 in conv2, and one GPU's dense connections throughout. Fig. 3 pins the paddings down: conv1
pads by 1 (224 -> 110), conv2 by 0 (55 -> 26), and the max-pools round their output size up
(cuda-convnet's and Caffe's convention: 110 -> 55, 26 -> 13, 13 -> 6).

``alexnet_cifar``: AlexNet's five convolutions (64-192-384-256-256) and overlapping 3x3 pools for
28x28 and 32x32 images, as CIFAR re-implementations shrink it: conv1 is 5x5 at stride 1 (an 11x11
stride-4 filter would leave a 7x7 map after the first layer), each convolution is followed by
batch norm, and the classifier is 1024 wide:

    layer  operation                                   output (32x32 / 28x28 input)
    conv1  conv 64 @ 5x5, pad 2, BN, ReLU              64 x 32 x 32  / 64 x 28 x 28
    pool1  3x3 max-pool, stride 2, pad 1               64 x 16 x 16  / 64 x 14 x 14
    conv2  conv 192 @ 5x5, pad 2, BN, ReLU             192 x 16 x 16 / 192 x 14 x 14
    pool2  3x3 max-pool, stride 2, pad 1               192 x 8 x 8   / 192 x 7 x 7
    conv3  conv 384 @ 3x3, pad 1, BN, ReLU             384 x 8 x 8   / 384 x 7 x 7
    conv4  conv 256 @ 3x3, pad 1, BN, ReLU             256 x 8 x 8   / 256 x 7 x 7
    conv5  conv 256 @ 3x3, pad 1, BN, ReLU             256 x 8 x 8   / 256 x 7 x 7
    pool5  3x3 max-pool, stride 2                      256 x 3 x 3   (both)
    fc6    dropout 0.5, fully connected, ReLU          1024
    fc7    dropout 0.5, fully connected, ReLU          1024
    fc8    fully connected                             num_classes

The first two pools pad by one ("SAME" pooling, as in the TensorFlow CIFAR-10 tutorial's model) and
the last does not, so 28x28 and 32x32 inputs both end on the same 3x3 map that fc6 reads.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnzoo.models.base import ZooModel, classifier
from cnnzoo.models.layers import ConvBnAct, MaxPool2d, init_weights, scale_widths
from cnnzoo.models.registry import TV_TAGS, register_model


class _ConvFcNet(ZooModel):
    """The part AlexNet-style networks share: an average pool to the map size fc6 was built for,
    then dropout -> fc6 -> ReLU -> dropout -> fc7 -> ReLU -> fc8 (torchvision's order).

    The head is fixed: that average pool is its only pooling (``global_pool="avg"``), and
    ``drop_rate`` is the rate of its two dropouts. Stages (``feature_info``): the output of each
    max-pool (with ZFNet's contrast normalisation). Gradient checkpointing recomputes the five
    convolutions as one segment: they share the activation module and are few.
    """

    first_conv = "conv1"
    classifier_name = "fc8"
    global_pools = ("avg",)
    stem_modules = ("conv1",)
    stage_modules = ("conv2", "conv3", "conv4", "conv5")

    def _build_head(self, channels: int, map_size: int, hidden: int, num_classes: int, drop_rate: float,
                    global_pool: str) -> None:
        self._check_global_pool(global_pool, num_classes)
        self.num_classes = num_classes
        self.num_features = channels
        self.head_hidden_size = hidden
        # Identity at the design input size; lets other sizes reach the map size fc6 expects.
        self.avgpool = nn.AdaptiveAvgPool2d(map_size)
        self.drop6 = nn.Dropout(drop_rate)
        self.fc6 = nn.Linear(channels * map_size * map_size, hidden)
        self.drop7 = nn.Dropout(drop_rate)
        self.fc7 = nn.Linear(hidden, hidden)
        self.fc8 = classifier(hidden, num_classes)
        self.act = nn.ReLU(inplace=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_stage(self._convolutions, x)

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        x = self.act(self.fc6(self.drop6(x)))
        x = self.act(self.fc7(self.drop7(x)))
        return x if pre_logits else self.fc8(x)


class AlexNet(_ConvFcNet):
    KEY_MAPS = {
        "torchvision": [
            (r"^features\.0\.", "conv1."),
            (r"^features\.3\.", "conv2."),
            (r"^features\.6\.", "conv3."),
            (r"^features\.8\.", "conv4."),
            (r"^features\.10\.", "conv5."),
            (r"^classifier\.1\.", "fc6."),
            (r"^classifier\.4\.", "fc7."),
            (r"^classifier\.6\.", "fc8."),
        ]
    }

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5, global_pool: str = "avg") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2)
        self.pool1 = MaxPool2d(kernel_size=3, stride=2)
        self.conv2 = nn.Conv2d(64, 192, kernel_size=5, padding=2)
        self.pool2 = MaxPool2d(kernel_size=3, stride=2)
        self.conv3 = nn.Conv2d(192, 384, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, kernel_size=3, padding=1)
        self.pool5 = MaxPool2d(kernel_size=3, stride=2)
        self._build_head(256, 6, 4096, num_classes, drop_rate, global_pool)
        self.feature_info = [dict(num_chs=64, reduction=8, module="pool1"), dict(num_chs=192, reduction=16, module="pool2"),
                             dict(num_chs=256, reduction=32, module="pool5")]
        init_weights(self)

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act(self.conv1(x)))
        x = self.pool2(self.act(self.conv2(x)))
        x = self.act(self.conv3(x))
        x = self.act(self.conv4(x))
        return self.pool5(self.act(self.conv5(x)))


class ZFNet(_ConvFcNet):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5, lrn: bool = True,
                 global_pool: str = "avg") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 96, kernel_size=7, stride=2, padding=1)
        self.pool1 = MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self.norm1 = self._contrast_norm(lrn)
        self.conv2 = nn.Conv2d(96, 256, kernel_size=5, stride=2)
        self.pool2 = MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self.norm2 = self._contrast_norm(lrn)
        self.conv3 = nn.Conv2d(256, 384, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(384, 256, kernel_size=3, padding=1)
        self.pool5 = MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        self._build_head(256, 6, 4096, num_classes, drop_rate, global_pool)
        self.feature_info = [dict(num_chs=96, reduction=4, module="norm1"), dict(num_chs=256, reduction=16, module="norm2"),
                             dict(num_chs=256, reduction=32, module="pool5")]
        init_weights(self)

    @staticmethod
    def _contrast_norm(enabled: bool) -> nn.Module:
        # "Contrast normalized across feature maps" after pools 1 and 2; the paper gives no
        # constants, so AlexNet's (n=5, alpha=1e-4, beta=0.75, k=2). It has no parameters.
        return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0) if enabled else nn.Identity()

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(self.pool1(self.act(self.conv1(x))))
        x = self.norm2(self.pool2(self.act(self.conv2(x))))
        x = self.act(self.conv3(x))
        x = self.act(self.conv4(x))
        return self.pool5(self.act(self.conv5(x)))


class CifarAlexNet(_ConvFcNet):
    """AlexNet's five convolutions and two hidden fc layers, sized for 28x28 / 32x32 images.

    ``widths`` and ``conv1_kernel`` select the variant: AlexNet's single-GPU widths with a 5x5
    conv1, or ZFNet's change — a smaller first filter and the two-GPU widths 96-256-384-384-256.
    ``width_mult`` scales all five widths (the layout and kernels stay the variant's).
    """

    first_conv = "conv1.conv"

    def __init__(self, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.5, hidden: int = 1024,
                 widths: tuple[int, int, int, int, int] = (64, 192, 384, 256, 256), conv1_kernel: int = 5,
                 global_pool: str = "avg", width_mult: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = scale_widths(widths, width_mult)
        # Batch norm after every convolution (ConvBnAct, no conv bias): AlexNet without it needs
        # hand-tuned learning rates on small images; with it it trains at the usual SGD settings.
        self.conv1 = ConvBnAct(in_chans, c1, conv1_kernel)
        self.pool1 = MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv2 = ConvBnAct(c1, c2, 5)
        self.pool2 = MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv3 = ConvBnAct(c2, c3, 3)
        self.conv4 = ConvBnAct(c3, c4, 3)
        self.conv5 = ConvBnAct(c4, c5, 3)
        self.pool5 = MaxPool2d(kernel_size=3, stride=2)
        # 1024 units, not 4096: fc6 reads a 3x3 map (2,304 values, not 9,216), 10 classes need far
        # less than 1000, and two 4096-wide layers would be 4/5 of the parameters and of the CPU
        # time for no accuracy on 28x28 data.
        self._build_head(c5, 3, hidden, num_classes, drop_rate, global_pool)
        self.feature_info = [dict(num_chs=c1, reduction=2, module="pool1"), dict(num_chs=c2, reduction=4, module="pool2"),
                             dict(num_chs=c5, reduction=8, module="pool5")]
        init_weights(self)

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.conv5(self.conv4(self.conv3(x)))
        return self.pool5(x)


_ALEXNET = dict(family="AlexNet", paper="Krizhevsky, Sutskever, Hinton 2012, ImageNet classification with deep "
                "convolutional neural networks", year=2012)


@register_model(**_ALEXNET, min_input_size=(3, 63, 63), reference="torchvision:alexnet", small_variant="alexnet_cifar",
                pool_size=(6, 6), tags=TV_TAGS)
def alexnet(**kwargs) -> AlexNet:
    """AlexNet in torchvision's single-GPU layout (64-192-384-256-256 filters)."""
    return AlexNet(**kwargs)


@register_model(**_ALEXNET, input_size=(3, 32, 32), min_input_size=(3, 9, 9), small_variant="alexnet_cifar",
                pool_size=(3, 3))
def alexnet_cifar(**kwargs) -> CifarAlexNet:
    """AlexNet for 28x28 / 32x32 images: 5x5 stride-1 conv1, batch norm, 1024-wide classifier."""
    return CifarAlexNet(**kwargs)


_ZFNET = dict(family="ZFNet", paper="Zeiler, Fergus 2013, Visualizing and understanding convolutional networks",
              year=2013)


@register_model(**_ZFNET, min_input_size=(3, 47, 47), small_variant="zfnet_cifar", pool_size=(6, 6),
                verified_by="paper Fig. 3: test_alexnet.py::test_zfnet_fig3_layer_table")
def zfnet(**kwargs) -> ZFNet:
    """ZFNet as in the paper's Fig. 3 (``lrn=False`` leaves out the contrast normalisation)."""
    return ZFNet(**kwargs)


@register_model(**_ZFNET, input_size=(3, 32, 32), min_input_size=(3, 9, 9), small_variant="zfnet_cifar",
                pool_size=(3, 3))
def zfnet_cifar(**kwargs) -> CifarAlexNet:
    """ZFNet's changes to AlexNet on small images: a 3x3 first filter, widths 96-256-384-384-256."""
    return CifarAlexNet(widths=(96, 256, 384, 384, 256), conv1_kernel=3, **kwargs)
