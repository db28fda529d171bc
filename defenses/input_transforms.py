"""Input-transform defenses (JPEG, bit-depth reduction, median filter) and BPDA to attack through them.

The transforms are the classic preprocessing defenses:

* ``jpeg`` — JPEG compression and decompression (Dziugaite, Ghahramani & Roy, arXiv 1608.00853; Guo et al.,
  "Countering Adversarial Images using Input Transformations", ICLR 2018), a real libjpeg round trip through
  torchvision on 8-bit images.
* ``bitdepth`` — colour bit-depth reduction, the squeezer of Xu, Evans & Qi, "Feature Squeezing", NDSS 2018.
* ``median`` — median smoothing over a ``k x k`` window (also from Feature Squeezing), via kornia.

JPEG and bit-depth reduction have no useful gradient (it is zero or undefined almost everywhere), which is
*gradient masking*, not robustness.  Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of
Security", ICML 2018, evaluate such defenses adaptively with BPDA (Backward Pass Differentiable
Approximation): the forward pass applies the real transform and the backward pass uses a differentiable
approximation, here the identity (a straight-through estimator), since each transform keeps ``f(x) ≈ x``.

Each transform is a module (B,C,H,W) -> (B,C,H,W) in [0,1] with the attributes of the factory contract in
:mod:`advbench.defenses`: ``name``, ``params``, ``differentiable`` (is the forward pass's own gradient the true
one) and ``bpda`` (is the backward pass replaced).  BPDA is on by default exactly when the transform is not
differentiable; without it a non-differentiable transform returns an exactly zero input gradient, which
advbench's sanity check reports as :class:`~advbench.sanity.ZeroGradientWarning`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advbench.defenses.registry import DEFENSES
from advbench.errors import ConfigError, InputError

Transform = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------------------- BPDA
class StraightThrough(torch.autograd.Function):
    """BPDA with the identity as the approximation (Athalye, Carlini & Wagner, ICML 2018).

    ``StraightThrough.apply(x, fn)`` returns ``fn(x)`` in the forward pass and passes the incoming gradient
    through unchanged in the backward pass, as if ``fn`` were the identity.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Transform) -> torch.Tensor:
        with torch.no_grad():
            out = fn(x.detach())
        if out.shape != x.shape:
            raise InputError(f"a straight-through (BPDA) transform must keep the shape: {tuple(x.shape)} became "
                             f"{tuple(out.shape)}; give an approximation with approx=")
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output, None


class ZeroGradient(torch.autograd.Function):
    """``fn(x)`` with an exactly zero input gradient: what a non-differentiable transform honestly gives.

    The output stays connected to ``x`` so that a white-box attack runs (and finds nothing) instead of
    failing inside autograd; that is the gradient masking which BPDA is there to get around.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Transform) -> torch.Tensor:
        ctx.input_shape = x.shape
        with torch.no_grad():
            return fn(x.detach())

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        # zeros (not None), so torch.autograd.grad(loss, x) returns a zero gradient instead of failing
        return grad_output.new_zeros(ctx.input_shape), None


def bpda(x: torch.Tensor, fn: Transform, approx: Transform | None = None) -> torch.Tensor:
    """``fn(x)`` forward, the gradient of ``approx`` backward (identity when ``approx`` is None).

    BPDA of Athalye, Carlini & Wagner (ICML 2018).  With ``approx`` the result is
    ``approx(x) + (fn(x) - approx(x)).detach()``: its value is ``fn(x)`` and its gradient that of ``approx``.

    >>> x = torch.tensor([0.2, 0.7], requires_grad=True)
    >>> y = bpda(x, torch.round)
    >>> y.tolist(), torch.autograd.grad(y.sum(), x)[0].tolist()
    ([0.0, 1.0], [1.0, 1.0])
    """
    if approx is None:
        return StraightThrough.apply(x, fn)
    smooth = approx(x)
    with torch.no_grad():
        exact = fn(x.detach())
    return smooth + (exact - smooth).detach()


# ------------------------------------------------------------------------------------------------ transforms
class InputTransform(nn.Module):
    """Base class: checks the [0,1] NCHW contract and routes the gradient (true, BPDA or zero).

    Subclasses set ``name`` and ``differentiable``, implement :meth:`transform` and :attr:`params`.
    ``bpda=None`` means BPDA exactly when the transform is not differentiable; ``bpda=True`` forces the
    straight-through backward pass also for a differentiable transform, ``bpda=False`` switches it off.
    """

    name: str = ""
    differentiable: bool = False

    def __init__(self, *, bpda: bool | None = None) -> None:
        super().__init__()
        if bpda is not None and not isinstance(bpda, bool):
            raise ConfigError(f"defense '{self.name}': bpda must be true, false or left out (automatic), got {bpda!r}")
        self.bpda: bool = (not self.differentiable) if bpda is None else bpda

    @property
    def params(self) -> dict[str, Any]:
        """The parameters that define the transform (JSON-ready, for run records)."""
        raise NotImplementedError

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The transform itself, on a checked (B,C,H,W) batch in [0,1]."""
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`InputError` unless ``x`` is a float (B,C,H,W) tensor in [0,1]."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"defense '{self.name}' needs float images of shape (B,C,H,W), got {shape}")
        if x.numel():
            with torch.no_grad():
                low, high = float(x.min()), float(x.max())
            if low < 0 or high > 1:
                raise InputError(f"defense '{self.name}' needs images in [0, 1], got values in [{low:.4g}, "
                                 f"{high:.4g}]; normalisation belongs inside the victim model")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if x.numel() == 0:
            return x.clone()
        if self.bpda:
            return StraightThrough.apply(x, self.transform)
        if not self.differentiable:
            return ZeroGradient.apply(x, self.transform)
        return self.transform(x)

    def extra_repr(self) -> str:
        items = [f"{k}={v}" for k, v in self.params.items()]
        return ", ".join([*items, f"bpda={self.bpda}"])


def _require_int(defense: str, key: str, value: Any, low: int, high: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"defense '{defense}': {key} must be an integer in [{low}, {high}], got {value!r}; "
                          f"e.g. '{example}'")
    return value


@DEFENSES.register("jpeg")
class JPEG(InputTransform):
    """JPEG round trip at ``quality`` (1-100) per image: 8-bit rounding, libjpeg encode, decode.

    Guo et al., ICLR 2018; Dziugaite et al., arXiv 1608.00853.  Not differentiable: BPDA by default.
    Works on 1- or 3-channel images; computed on the CPU and returned on the input's device and dtype.
    """

    name = "jpeg"
    differentiable = False

    def __init__(self, quality: int = 75, *, bpda: bool | None = None) -> None:
        self.quality = _require_int("jpeg", "quality", quality, 1, 100, "jpeg:quality=75")
        super().__init__(bpda=bpda)

    @property
    def params(self) -> dict[str, Any]:
        return {"quality": self.quality}

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.shape[1] not in (1, 3):
            raise InputError(f"defense 'jpeg' encodes 1- or 3-channel images, got {x.shape[1]} channels "
                             f"(shape {tuple(x.shape)})")

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.io import decode_jpeg, encode_jpeg

        pixels = x.detach().mul(255).round().clamp(0, 255).to(device="cpu", dtype=torch.uint8).contiguous()
        encoded = encode_jpeg(list(pixels), quality=self.quality)
        decoded = decode_jpeg(encoded)
        return torch.stack(decoded).to(device=x.device, dtype=x.dtype).div(255)


@DEFENSES.register("bitdepth")
class BitDepth(InputTransform):
    """Reduce each channel to ``bits`` bits (1-8): ``round(x (2^bits - 1)) / (2^bits - 1)``.

    Xu, Evans & Qi, "Feature Squeezing", NDSS 2018.  Rounding is half-to-even (``torch.round``), so with
    ``bits=1`` the value 0.5 maps to 0.  Not differentiable (zero gradient almost everywhere): BPDA by default.
    """

    name = "bitdepth"
    differentiable = False

    def __init__(self, bits: int = 4, *, bpda: bool | None = None) -> None:
        self.bits = _require_int("bitdepth", "bits", bits, 1, 8, "bitdepth:bits=4")
        super().__init__(bpda=bpda)

    @property
    def params(self) -> dict[str, Any]:
        return {"bits": self.bits}

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        return torch.round(x * levels) / levels


@DEFENSES.register("median")
class Median(InputTransform):
    """Median filter over a ``k x k`` window (odd ``k`` >= 3), per channel, via kornia's ``median_blur``.

    Xu, Evans & Qi, "Feature Squeezing", NDSS 2018.  Borders are reflected (replicated when the image is
    smaller than the window's radius).  The median is differentiable almost everywhere (the gradient goes
    to the selected pixel), so the true gradient is used unless ``bpda=True``.
    """

    name = "median"
    differentiable = True

    def __init__(self, k: int = 3, *, bpda: bool | None = None) -> None:
        self.k = _require_int("median", "k", k, 3, 99, "median:k=3")
        if self.k % 2 == 0:
            raise ConfigError(f"defense 'median': k must be odd so the window has a centre, got {k}; e.g. "
                              "'median:k=3' or 'median:k=5'")
        super().__init__(bpda=bpda)

    @property
    def params(self) -> dict[str, Any]:
        return {"k": self.k}

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        from kornia.filters import median_blur

        border = "reflect" if min(x.shape[-2:]) > self.k // 2 else "replicate"
        return median_blur(x, (self.k, self.k), border_type=border)
