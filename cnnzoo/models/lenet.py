"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), its 300-100 MLP, and Caffe's LeNet.

LeNet-5, as in the paper's Fig. 2 on a 32x32 input (a 28x28 digit padded by 2):

    layer  operation                  output
    C1     conv 6 @ 5x5               6 x 28 x 28
    S2     2x2 subsampling, stride 2  6 x 14 x 14
    C3     conv 16 @ 5x5              16 x 10 x 10
    S4     2x2 subsampling, stride 2  16 x 5 x 5
    C5     conv 120 @ 5x5             120 x 1 x 1
    F6     fully connected 84         84
    output fully connected            num_classes

61,706 parameters for 10 classes. Two simplifications every modern re-implementation makes: C3
connects to all six S2 maps (the paper's sparse connection table leaves 1,516 of C3's 2,416
weights), and the output layer is a linear layer rather than Euclidean RBF units. By default the
activations are ReLU and the subsampling is max-pooling; ``act="tanh", pool="avg"`` gives the paper's
squashing function and averaging subsampling.

The three networks' heads are fully connected layers on the flattened map of a fixed input size:
there is no global pooling to choose (``global_pool=""``, the only choice), and ``drop_rate`` (0 by
default, as in the paper) adds dropout before the output layer. Gradient checkpointing recomputes
the convolutions as one segment (there are two or three).
"""
from __future__ import annotations

import torch
from torch import nn

from cnnzoo.models.base import ZooModel, classifier
from cnnzoo.models.layers import AvgPool2d, MaxPool2d
from cnnzoo.models.registry import register_model

_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh}
_POOLS = {"max": MaxPool2d, "avg": AvgPool2d}


def _choose(table: dict, key: str, what: str):
    if key not in table:
        raise ValueError(f"{what} must be one of {sorted(table)}, got {key!r}")
    return table[key]


class _LeNetBase(ZooModel):
    global_pools = ("",)

    def _build_head(self, num_features: int, hidden: int, num_classes: int, drop_rate: float, global_pool: str) -> None:
        self._check_global_pool(global_pool, num_classes)
        self.num_classes = num_classes
        self.num_features = num_features
        self.head_hidden_size = hidden
        self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_stage(self._convolutions, x)

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LeNet5(_LeNetBase):
    """Stages (``feature_info``): the subsampling layers S2 and S4."""

    first_conv = "c1"
    classifier_name = "output"
    stem_modules = ("c1",)
    stage_modules = ("c3", "c5")

    def __init__(self, num_classes: int = 10, in_chans: int = 1, act: str = "relu", pool: str = "max",
                 drop_rate: float = 0.0, global_pool: str = "") -> None:
        super().__init__()
        act_layer = _choose(_ACTS, act, "act")
        pool_layer = _choose(_POOLS, pool, "pool")
        self._build_head(120, 84, num_classes, drop_rate, global_pool)
        self.feature_info = [dict(num_chs=6, reduction=2, module="s2"), dict(num_chs=16, reduction=4, module="s4")]
        self.c1 = nn.Conv2d(in_chans, 6, kernel_size=5)
        self.s2 = pool_layer(2, 2)
        self.c3 = nn.Conv2d(6, 16, kernel_size=5)
        self.s4 = pool_layer(2, 2)
        self.c5 = nn.Conv2d(16, 120, kernel_size=5)
        self.f6 = nn.Linear(120, 84)
        self.output = classifier(84, num_classes)
        self.act = act_layer()

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        x = self.s2(self.act(self.c1(x)))
        x = self.s4(self.act(self.c3(x)))
        return self.act(self.c5(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.act(self.f6(torch.flatten(x, 1))))
        return x if pre_logits else self.output(x)


class LeNet300100(_LeNetBase):
    """The 784-300-100-10 perceptron of LeCun et al. 1998 (section C), the first network that
    Deep Compression (Han et al. 2016) compresses: 266,610 parameters for 10 classes.
    ``forward_features`` only flattens the image: there are no stages (``feature_info`` is empty)
    and nothing for gradient checkpointing to recompute."""

    first_conv = "fc1"  # no convolution: weight files with other channel counts do not adapt
    classifier_name = "fc3"
    stem_modules = ("fc1",)
    stage_modules = ("fc2",)

    def __init__(self, num_classes: int = 10, in_chans: int = 1, image_size: int = 28, drop_rate: float = 0.0,
                 global_pool: str = "") -> None:
        super().__init__()
        self._build_head(in_chans * image_size * image_size, 100, num_classes, drop_rate, global_pool)
        self.feature_info = []
        self.fc1 = nn.Linear(in_chans * image_size * image_size, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = classifier(100, num_classes)
        self.act = nn.ReLU(inplace=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.act(self.fc2(self.act(self.fc1(x)))))
        return x if pre_logits else self.fc3(x)


class CaffeLeNet(_LeNetBase):
    """Caffe's MNIST LeNet (conv 20@5x5, max-pool, conv 50@5x5, max-pool, fc 500, fc 10): the
    network Deep Compression calls "LeNet-5" (431,080 parameters, 1720 KB in fp32). Stages
    (``feature_info``): the two convolutions, before their max-pool."""

    first_conv = "conv1"
    classifier_name = "fc2"
    stem_modules = ("conv1",)
    stage_modules = ("conv2",)

    def __init__(self, num_classes: int = 10, in_chans: int = 1, drop_rate: float = 0.0, global_pool: str = "") -> None:
        super().__init__()
        self._build_head(50, 500, num_classes, drop_rate, global_pool)
        self.feature_info = [dict(num_chs=20, reduction=1, module="conv1"), dict(num_chs=50, reduction=2, module="conv2")]
        self.conv1 = nn.Conv2d(in_chans, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.pool = MaxPool2d(2, 2)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = classifier(500, num_classes)
        self.act = nn.ReLU(inplace=True)

    def _convolutions(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv2(self.pool(self.conv1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.act(self.fc1(torch.flatten(x, 1))))
        return x if pre_logits else self.fc2(x)


_LECUN = dict(family="LeNet", paper="LeCun et al. 1998, Gradient-based learning applied to document recognition",
              year=1998, mean=(0.5,), std=(0.5,), num_classes=10)


@register_model(**_LECUN, input_size=(1, 32, 32), fixed_input_size=True, small_variant="lenet5", pool_size=(1, 1),
                verified_by="paper Fig. 2: test_registry.py::test_lenet5_layer_table")
def lenet5(**kwargs) -> LeNet5:
    """LeNet-5 on 32x32 images (28x28 ones padded by 2, as in the paper)."""
    return LeNet5(**kwargs)


@register_model(**_LECUN, input_size=(1, 28, 28), fixed_input_size=True, small_variant="lenet_300_100",
                verified_by="Han et al. 2016 Table 2: test_registry.py::test_lenet_mlp_and_caffe_counts")
def lenet_300_100(**kwargs) -> LeNet300100:
    return LeNet300100(**kwargs)


@register_model(family="LeNet", paper="Han, Mao, Dally 2016 (Deep Compression), Caffe's LeNet", year=2016,
                input_size=(1, 28, 28), fixed_input_size=True, mean=(0.5,), std=(0.5,), num_classes=10,
                small_variant="lenet5_caffe", pool_size=(4, 4),
                verified_by="Han et al. 2016 Table 3: test_registry.py::test_lenet_mlp_and_caffe_counts")
def lenet5_caffe(**kwargs) -> CaffeLeNet:
    return CaffeLeNet(**kwargs)
