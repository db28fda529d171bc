"""Small built-in classifiers sized from the dataset: ``mlp``, ``small_cnn``, ``lenet5``, ``resnet20``.

* LeNet-5: LeCun et al., "Gradient-based learning applied to document recognition", Proc. IEEE 1998
  (the ADMM pruning papers report per-layer ratios for its conv1/conv2/fc1/fc2 layers).
* ResNet-20: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, the CIFAR variant
  (3 stages of 3 basic blocks, 16/32/64 channels).

Every factory takes ``(input_shape, num_classes)`` and returns a net for *normalized* input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advbench.models.registry import register_model


def _flat_size(features: nn.Module, input_shape: Sequence[int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).flatten(1).shape[1])


@register_model("mlp")
def mlp(input_shape: Sequence[int], num_classes: int, hidden: int = 256) -> nn.Module:
    """Two hidden ReLU layers on the flattened image."""
    d = int(torch.tensor(input_shape).prod())
    return nn.Sequential(
        nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


@register_model("small_cnn")
def small_cnn(input_shape: Sequence[int], num_classes: int, width: int = 32) -> nn.Module:
    """Two 3×3 conv blocks (the second strided) and a small classifier head."""
    c = int(input_shape[0])
    features = nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.ReLU(),
    )
    flat = _flat_size(features, input_shape)
    return nn.Sequential(features, nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, num_classes))


class LeNet5(nn.Module):
    """LeNet-5 with named layers conv1, conv2, fc1, fc2, fc3 (max-pooling only when the map allows)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        c, h, _ = (int(v) for v in input_shape)
        pad = 2 if h >= 28 else 1
        self.conv1 = nn.Conv2d(c, 6, 5, padding=pad)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=0 if h >= 28 else 2)
        self.pool = nn.MaxPool2d(2) if h >= 16 else nn.Identity()
        self.act = nn.ReLU()
        flat = _flat_size(nn.Sequential(self.conv1, self.act, self.pool, self.conv2, self.act, self.pool),
                          input_shape)
        self.fc1 = nn.Linear(flat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.act(self.fc1(x.flatten(1)))
        return self.fc3(self.act(self.fc2(x)))


@register_model("lenet5")
def lenet5(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998)."""
    return LeNet5(input_shape, num_classes)


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR-style ResNet (He et al. 2016): 3 stages of ``depth`` basic blocks."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, depth: int = 3, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(int(input_shape[0]), width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, ch = [], width
        for stage, out in enumerate((width, 2 * width, 4 * width)):
            for block in range(depth):
                layers.append(BasicBlock(ch, out, 2 if stage > 0 and block == 0 else 1))
                ch = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(self.pool(self.layers(x)).flatten(1))


@register_model("resnet20")
def resnet20(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """ResNet-20 for CIFAR-sized inputs (He et al. 2016), works on any input size."""
    return ResNetCifar(input_shape, num_classes, depth=3)
