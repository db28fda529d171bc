"""Input-transform defenses (JPEG, bit depth, median), BPDA, parse_defense, DefendedModel and `list defenses`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from advbench.defenses import DEFENSES, DefendedModel, list_defenses, parse_defense
from advbench.defenses.input_transforms import JPEG, BitDepth, Median, bpda
from advbench.errors import ConfigError, InputError, UnknownNameError
from advbench.models import NormalizedModel


def _images(seed: int = 0, shape: tuple[int, ...] = (2, 3, 16, 16)) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _smooth_images() -> torch.Tensor:
    """Natural-ish images (smooth gradients), on which JPEG at quality 75 is close to lossless."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    img = torch.stack((0.2 + 0.6 * xs, 0.3 + 0.4 * ys, 0.5 + 0.3 * xs * ys))
    return torch.stack((img, img.flip(-1)))


def _victim() -> NormalizedModel:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(4, 3 * 16 * 16, generator=g) * 0.05)
        net[1].bias.zero_()
    return NormalizedModel(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), input_shape=(3, 16, 16),
                           num_classes=4, arch="tiny_linear")


@pytest.mark.parametrize("spec", ["jpeg", "jpeg:quality=30", "bitdepth:bits=2", "median:k=3", "median:k=5"])
def test_outputs_keep_shape_and_stay_in_unit_box(spec: str) -> None:
    x = _images()
    y = parse_defense(spec)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_jpeg_changes_the_image_but_stays_close() -> None:
    x = _smooth_images()
    y = JPEG(quality=75)(x)
    diff = (y - x).abs()
    assert float(diff.max()) > 1 / 255  # a real lossy round trip, not just 8-bit rounding
    assert float(diff.mean()) < 0.03
    low = JPEG(quality=10)(x)
    assert float((low - x).abs().mean()) > float(diff.mean())  # lower quality, more distortion
    grey = JPEG()(x[:, :1])
    assert grey.shape == (2, 1, 16, 16) and float((grey - x[:, :1]).abs().mean()) < 0.03


def test_bpda_gives_nonzero_gradients_through_jpeg_and_plain_jpeg_gives_none() -> None:
    x = _images(1).requires_grad_(True)
    defended = JPEG()
    assert defended.bpda and not defended.differentiable
    (grad,) = torch.autograd.grad(defended(x).square().sum(), x)
    assert float(grad.abs().sum()) > 0
    plain = JPEG(bpda=False)
    assert not plain.bpda and not plain.differentiable
    (grad,) = torch.autograd.grad(plain(x).square().sum(), x)
    assert torch.equal(grad, torch.zeros_like(x))  # gradient masking: what BPDA exists to get around


def test_bpda_backward_is_the_identity() -> None:
    x = _images(2).requires_grad_(True)
    weights = _images(3)
    (grad,) = torch.autograd.grad((BitDepth(bits=1)(x) * weights).sum(), x)
    assert torch.equal(grad, weights)
    y = bpda(x, torch.round, approx=lambda t: 2 * t)  # a differentiable approximation other than the identity
    assert torch.equal(y, torch.round(x))
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(grad, torch.full_like(x, 2.0))


def test_bitdepth_hand_cases() -> None:
    x = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.51, 0.8, 1.0]).reshape(1, 1, 1, 7)
    assert BitDepth(bits=1)(x).flatten().tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # 0.5: half-to-even
    y = BitDepth(bits=2)(torch.tensor([0.1, 0.2, 0.6, 0.9]).reshape(1, 1, 2, 2))
    assert torch.allclose(y.flatten(), torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))


def test_median_removes_salt_noise() -> None:
    x = torch.full((1, 3, 12, 12), 0.4)
    noisy = x.clone()
    noisy[..., 3, 4] = 1.0
    noisy[..., 8, 9] = 1.0
    noisy[..., 0, 0] = 1.0  # a corner: the border is reflected, not zero-padded
    med = Median(k=3)
    assert med.differentiable and not med.bpda
    assert torch.allclose(med(noisy), x)
    g = noisy.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(med(g).sum(), g)  # kornia's median is differentiable almost everywhere
    assert float(grad.abs().sum()) > 0


@pytest.mark.parametrize(
    ("spec", "error", "fragment"),
    [
        ("blur", UnknownNameError, "known defenses: bitdepth, "),
        ("jpeg:q=60", ConfigError, "its parameters: quality, bpda"),
        ("jpeg:quality=0", ConfigError, "quality must be an integer in [1, 100]"),
        ("jpeg:quality=high", ConfigError, "quality must be an integer"),
        ("bitdepth:bits=9", ConfigError, "bits must be an integer in [1, 8]"),
        ("median:k=4", ConfigError, "k must be odd"),
        ("jpeg:60", ConfigError, "KEY=VALUE"),
        ("jpeg:quality=5,quality=6", ConfigError, "given twice"),
        ("median:bpda=sometimes", ConfigError, "bpda must be true, false"),
        ("", ConfigError, "non-empty"),
    ],
)
def test_parse_defense_errors(spec: str, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as info:
        parse_defense(spec)
    assert fragment in str(info.value)
    if error is UnknownNameError:
        assert all(name in str(info.value) for name in ("jpeg", "bitdepth", "median"))


def test_parse_defense_params_and_flags() -> None:
    assert parse_defense("jpeg").params == {"quality": 75}
    assert parse_defense("bitdepth").params == {"bits": 4}
    assert parse_defense("median").params == {"k": 3}
    assert parse_defense(" median:k=5 , bpda=true ").bpda
    assert not parse_defense("jpeg:quality=60,bpda=false").bpda


def test_inputs_outside_the_contract_are_refused() -> None:
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        JPEG()(torch.full((1, 3, 4, 4), 1.5))
    with pytest.raises(InputError, match="1- or 3-channel"):
        JPEG()(torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(InputError, match=r"\(B,C,H,W\)"):
        BitDepth()(torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0)))


def test_defended_model_runs_the_victim_and_reports_the_defense() -> None:
    victim = _victim()
    model = DefendedModel(parse_defense("jpeg:quality=60"), victim)
    assert model.input_shape == (3, 16, 16) and model.num_classes == 4 and model.arch == "tiny_linear"
    x = _smooth_images()
    with torch.no_grad():
        assert torch.equal(model(x), victim(JPEG(quality=60)(x)))
    info = model.defense_info()
    assert info == {"name": "jpeg", "params": {"quality": 60}, "differentiable": False, "bpda": True}
    json.dumps(info)  # goes into run records
    x = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1]))
    (grad,) = torch.autograd.grad(loss, x)
    assert float(grad.abs().sum()) > 0  # adaptive white-box attacks can run through the defense
    assert DefendedModel(Median(), victim).defense_info()["differentiable"] is True
    assert DefendedModel(nn.Identity(), nn.Flatten()).defense_info() == {
        "name": "identity", "params": {}, "differentiable": True, "bpda": False}
    assert not hasattr(DefendedModel(nn.Identity(), nn.Flatten()), "input_shape")
    with pytest.raises(ConfigError, match="preprocess"):
        DefendedModel("jpeg", victim)  # type: ignore[arg-type]


def test_registry_factories_follow_the_contract() -> None:
    import inspect

    for name in list_defenses():
        factory = DEFENSES.get(name)
        if next(iter(inspect.signature(factory).parameters), None) == "path":
            continue  # checkpoint-based (defensenet): covered by tests/test_adv_cloud_defense.py
        module = factory()
        assert isinstance(module, nn.Module) and module.name == name
        assert isinstance(module.params, dict) and isinstance(module.differentiable, bool)
        assert module.bpda == (not module.differentiable)


def test_cli_lists_the_defenses(run_cli) -> None:
    code, out, err = run_cli("list", "defenses")
    assert code == 0, err
    assert {"jpeg", "bitdepth", "median"} <= set(out.split())
