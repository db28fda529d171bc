"""shrink_model: removing zeroed conv filters gives a smaller, cheaper model with the same outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advbench.compression.shrink import count_flops, count_params, shrink_model
from advbench.errors import ConfigError, InputError
from advbench.models import create_model

TOL = {"rtol": 1e-5, "atol": 1e-5}

# Convs whose output reaches a single Conv2d / flatten->Linear through channel-wise ops only.
SHRINKABLE = {
    "small_cnn": ["net.0.0", "net.0.2"],
    "lenet5": ["net.conv1", "net.conv2"],
    "resnet20": [f"net.layers.{i}.conv1" for i in range(9)],
}
CASES = [("small_cnn", (1, 28, 28)), ("lenet5", (1, 28, 28)), ("resnet20", (3, 16, 16))]


def _build(arch: str, shape: tuple[int, int, int], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(arch, input_shape=shape, num_classes=10, mean=[0.4] * shape[0], std=[0.3] * shape[0])


def _randomise_norms(model: nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.5, generator=g)


def _zero_filters(model: nn.Module, g: torch.Generator, fraction: float = 0.5) -> dict[str, torch.Tensor]:
    """Zero ``fraction`` of the filters (weights and bias) of every Conv2d; returns name -> zeroed mask."""
    zeroed = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                idx = torch.randperm(m.out_channels, generator=g)[: int(m.out_channels * fraction)]
                mask = torch.zeros(m.out_channels, dtype=torch.bool)
                mask[idx] = True
                m.weight[mask] = 0
                if m.bias is not None:
                    m.bias[mask] = 0
                zeroed[name] = mask
    return zeroed


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _bn_constant(bn: nn.BatchNorm2d) -> torch.Tensor:
    """What an eval-mode BatchNorm followed by ReLU makes of an all-zero channel."""
    c = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return torch.relu(c.detach())


@pytest.mark.parametrize(("arch", "shape"), CASES)
def test_shrunk_model_matches_masked_model_and_is_smaller(arch: str, shape: tuple[int, int, int]) -> None:
    model = _build(arch, shape)
    g = torch.Generator().manual_seed(1)
    if arch == "resnet20":
        _randomise_norms(model, g)
    zeroed = _zero_filters(model, g)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    small = shrink_model(model)
    x = torch.rand(16, *shape, generator=g)
    torch.testing.assert_close(_outputs(small, x), _outputs(model, x), **TOL)

    assert count_params(small) < count_params(model)
    assert count_flops(small, shape) < count_flops(model, shape)

    convs = dict(small.named_modules())
    originals = dict(model.named_modules())
    removed_total = kept_for_constant = 0
    for name in SHRINKABLE[arch]:
        expected = int((~zeroed[name]).sum())
        if arch == "resnet20":  # a zero filter that BN+ReLU turns into a positive constant must stay
            block = name.rsplit(".", 1)[0]
            stays = zeroed[name] & (_bn_constant(originals[f"{block}.bn1"]) > 0)
            expected += int(stays.sum())
            kept_for_constant += int(stays.sum())
            assert convs[f"{block}.bn1"].num_features == expected
            assert convs[f"{block}.conv2"].in_channels == expected
        assert convs[name].out_channels == expected, name
        removed_total += originals[name].out_channels - expected
    assert removed_total > 0
    if arch == "resnet20":
        assert kept_for_constant > 0  # the seeded BN stats exercise the keep rule
        # convs feeding a residual add (and the stem, whose output also feeds the first shortcut) stay whole
        for name, m in originals.items():
            if isinstance(m, nn.Conv2d) and name not in SHRINKABLE[arch]:
                assert convs[name].out_channels == m.out_channels, name
    # the input model is left as it was, and the copy keeps the wrapper's attributes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert small.input_shape == model.input_shape and small.arch == model.arch
    assert not small.training


@pytest.mark.parametrize(("arch", "shape"), CASES)
def test_model_without_zero_filters_is_returned_unchanged(arch: str, shape: tuple[int, int, int]) -> None:
    model = _build(arch, shape).eval()
    small = shrink_model(model)
    assert small is not model
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(2))
    assert torch.equal(_outputs(small, x), _outputs(model, x))
    assert count_params(small) == count_params(model)
    assert count_flops(small, shape) == count_flops(model, shape)
    assert [p.shape for p in small.parameters()] == [p.shape for p in model.parameters()]


def test_model_without_conv_is_an_unchanged_copy() -> None:
    model = _build("mlp", (1, 8, 8)).eval()
    small = shrink_model(model)
    assert small is not model and small.net[1].weight is not model.net[1].weight
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(_outputs(small, x), _outputs(model, x))


def test_bn_constants_fold_into_unpadded_conv_and_linear_biases() -> None:
    """Zero filters that BN turns into non-zero constants are removed when the consumer allows an exact fold."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=0, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * 7 * 7, 5),
    )
    g = torch.Generator().manual_seed(3)
    _randomise_norms(net, g)
    with torch.no_grad():
        for i in (1, 4):
            net[i].bias.uniform_(0.5, 1.0, generator=g)  # every zero channel becomes a positive constant
    zeroed = _zero_filters(net, g)
    net.eval()

    small = shrink_model(net, example_input_shape=(3, 16, 16))
    x = torch.rand(8, 3, 16, 16, generator=g)
    torch.testing.assert_close(_outputs(small, x), _outputs(net, x), **TOL)
    kept1, kept2 = int((~zeroed["0"]).sum()), int((~zeroed["3"]).sum())
    assert small[0].out_channels == kept1 and small[1].num_features == kept1
    assert small[3].in_channels == kept1 and small[3].out_channels == kept2
    assert small[3].bias is not None  # created to hold the folded constants
    assert small[4].num_features == kept2
    assert small[8].in_features == kept2 * 49


def test_channel_pruned_consumer_removes_producer_filters() -> None:
    """Input channels with all-zero consumer weights are removed, whatever the producer computes there."""
    model = _build("small_cnn", (1, 28, 28)).eval()
    with torch.no_grad():
        model.net[0][2].weight[:, ::4] = 0  # 8 of the 32 input channels of the second conv
    small = shrink_model(model)
    assert small.net[0][0].out_channels == 24 and small.net[0][2].in_channels == 24
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(_outputs(small, x), _outputs(model, x), **TOL)


def test_count_flops_small_cnn_by_hand() -> None:
    model = _build("small_cnn", (1, 28, 28))
    model.train()
    conv1 = 32 * 28 * 28 * 1 * 9
    conv2 = 64 * 14 * 14 * 32 * 9
    fc = 64 * 14 * 14 * 128 + 128 * 10
    assert count_flops(model, (1, 28, 28)) == conv1 + conv2 + fc
    assert model.training  # the eval switch for counting is undone
    assert count_params(model) == sum(p.numel() for p in model.parameters())


def test_untraceable_model_raises_config_error() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow
                return self.conv(x)
            return x

    with pytest.raises(ConfigError, match="Branchy"):
        shrink_model(Branchy())


def test_example_input_shape_that_does_not_fit_raises_input_error() -> None:
    model = _build("small_cnn", (1, 28, 28)).eval()
    _zero_filters(model, torch.Generator().manual_seed(5))
    with pytest.raises(InputError, match="example_input_shape"):
        shrink_model(model.net, example_input_shape=(1, 20, 20))
    small = shrink_model(model.net, example_input_shape=(1, 28, 28))  # a bare net, shapes given
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(_outputs(small, x), _outputs(model.net, x), **TOL)


def test_zero_weights_with_nonzero_bias_fold_into_linear() -> None:
    """A filter with zero weights but a bias outputs a constant; before a Linear it is folded, not kept."""
    model = _build("small_cnn", (1, 28, 28)).eval()
    conv2 = model.net[0][2]
    with torch.no_grad():
        conv2.weight[::2] = 0
        conv2.bias[::2] = torch.linspace(-0.5, 0.5, 32)  # ReLU keeps the positive half as constants
    small = shrink_model(model)
    assert small.net[0][2].out_channels == 32 and small.net[2].in_features == 32 * 14 * 14
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(_outputs(small, x), _outputs(model, x), **TOL)
