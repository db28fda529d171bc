"""A small U-Net (Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015), used two ways:

* as the salient-object-detection model (``out_channels=1``): it returns logits of the saliency map;
* as an image-to-image module (``residual=True``, ``out_channels=in_channels``): it returns ``x + f(x)``, the
  shape of DefenseNet's preprocessing network (Sun, Fu, Li et al., arXiv 2306.17431).  The last convolution
  starts at zero, so a fresh residual U-Net is exactly the identity.  The output is not clamped: a caller that
  needs an image in [0, 1] clamps it.

Differences from the paper, chosen for small CPU-trainable models: ``padding=1`` convolutions (the output has the
input's size), GroupNorm after every convolution (a sample's output never depends on the rest of its batch, in
train or eval mode), and bilinear upsampling followed by a 1x1 convolution instead of transposed convolutions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from advbench.errors import ConfigError, InputError


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def fitting_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    """The nearest ``(H, W)`` to ``h x w`` whose sides are positive multiples of ``multiple`` (for error hints).

    >>> fitting_size(30, 65, 8)
    (32, 64)
    """
    return max(multiple, round(h / multiple) * multiple), max(multiple, round(w / multiple) * multiple)


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by GroupNorm and ReLU (the U-Net's "double conv")."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), _norm(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), _norm(out_channels), nn.ReLU(inplace=True),
        )


class UpBlock(nn.Module):
    """Upsample by 2 (bilinear), reduce channels (1x1), concatenate the skip connection, then a :class:`ConvBlock`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, out_channels, 1)
        self.block = ConvBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.reduce(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        return self.block(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """U-Net with ``depth`` poolings and ``base * 2**i`` channels at level ``i``.

    Takes ``(B, in_channels, H, W)`` with ``H`` and ``W`` divisible by ``2**depth`` and returns
    ``(B, out_channels, H, W)``: raw outputs (logits), or ``x + f(x)`` when ``residual=True``.

    >>> UNet(base=4, depth=2)(torch.rand(2, 3, 16, 12)).shape
    torch.Size([2, 1, 16, 12])
    >>> net = UNet(out_channels=3, base=4, depth=2, residual=True)
    >>> x = torch.rand(1, 3, 8, 8)
    >>> bool(torch.equal(net(x), x))
    True
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base: int = 16, depth: int = 3,
                 residual: bool = False) -> None:
        super().__init__()
        for name, value, lo, hi in (("in_channels", in_channels, 1, 64), ("out_channels", out_channels, 1, 64),
                                    ("base", base, 1, 512), ("depth", depth, 1, 6)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"UNet: {name} must be an int between {lo} and {hi}, got {value!r}")
        if residual and out_channels != in_channels:
            raise ConfigError(f"UNet: residual=True returns x + f(x), so out_channels ({out_channels}) must equal "
                              f"in_channels ({in_channels})")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.base, self.depth, self.residual = base, depth, bool(residual)
        widths = [base * 2**i for i in range(depth + 1)]
        self.stem = ConvBlock(in_channels, widths[0])
        self.down = nn.ModuleList(ConvBlock(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(UpBlock(widths[i + 1], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        if self.residual:  # start as the identity map
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this (``2**depth``)."""
        return 2**self.depth

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` unless ``x`` is ``(B, in_channels, H, W)`` with H, W multiples of ``2**depth``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"UNet expects a (B, {self.in_channels}, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        h, w = int(x.shape[2]), int(x.shape[3])
        if h % self.multiple or w % self.multiple:
            fit_h, fit_w = fitting_size(h, w, self.multiple)
            raise InputError(f"UNet(depth={self.depth}) needs height and width divisible by {self.multiple}, got "
                             f"{h}x{w}; resize or pad the input to e.g. {fit_h}x{fit_w}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        feats = self.stem(x)
        skips = []
        for block in self.down:
            skips.append(feats)
            feats = block(F.max_pool2d(feats, 2))
        for block, skip in zip(self.up, reversed(skips), strict=True):
            feats = block(feats, skip)
        out = self.head(feats)
        return x + out if self.residual else out
