"""RobustBench's CIFAR architectures as registered advbench models, for bare RobustBench-style state dicts.

Most CIFAR-10/100 entries of the RobustBench zoo (Croce et al., "RobustBench: a standardized adversarial
robustness benchmark", NeurIPS 2021 Datasets and Benchmarks) are one of these networks.  They take [0,1]
images: RobustBench's convention is that any normalization is inside the model, so advbench wraps them with
mean 0 / std 1 unless ``--mean``/``--std`` say otherwise.  Use them as ``wrn-28-10?weights=PATH``.

* ``wrn-28-10``, ``wrn-34-10``: WideResNet (Zagoruyko & Komodakis, BMVC 2016) as in Madry et al.'s and most
  zoo entries;
* ``preact-resnet18``: pre-activation ResNet-18 (He et al., ECCV 2016);
* ``resnet18-cifar``, ``resnet50-cifar``: CIFAR-style ResNet-18/50 (3x3 stem, no max-pool).

The classes come from the ``robustbench`` package (installed with ``--no-deps``, see the README).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from advbench.errors import ConfigError
from advbench.models.registry import register_model


def _architectures():
    from advbench.models.resolve import import_robustbench

    import_robustbench()
    from robustbench.model_zoo.architectures import resnet, wide_resnet

    return resnet, wide_resnet


def _check(input_shape: Sequence[int], name: str) -> None:
    if int(input_shape[0]) != 3:
        raise ConfigError(f"{name} takes RGB images (3 channels), got input shape {tuple(input_shape)}")


def _wide(depth: int):
    def build(input_shape: Sequence[int], num_classes: int) -> nn.Module:
        _check(input_shape, f"wrn-{depth}-10")
        _, wide_resnet = _architectures()
        return wide_resnet.WideResNet(depth=depth, widen_factor=10, num_classes=num_classes)

    return build


register_model("wrn-28-10")(_wide(28))
register_model("wrn-34-10")(_wide(34))


@register_model("preact-resnet18")
def preact_resnet18(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    _check(input_shape, "preact-resnet18")
    resnet, _ = _architectures()
    return resnet.PreActResNet(resnet.PreActBlock, [2, 2, 2, 2], num_classes=num_classes)


@register_model("resnet18-cifar")
def resnet18_cifar(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    _check(input_shape, "resnet18-cifar")
    resnet, _ = _architectures()
    return resnet.ResNet(resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)


@register_model("resnet50-cifar")
def resnet50_cifar(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    _check(input_shape, "resnet50-cifar")
    resnet, _ = _architectures()
    return resnet.ResNet(resnet.Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
