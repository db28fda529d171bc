"""Transformation-robust attack: one perturbation that survives K transformation families, each family a
domain of the min-max engine, against EOT (Athalye et al., ICML 2018), which averages them (Wang et
al., NeurIPS 2021, §4: identity, horizontal flip, vertical flip, brightness +0.1, gamma 1.3,
crop-and-resize; rotation added here).

Families are differentiable kornia-style transforms that *sample* their parameters (from an explicit
``torch.Generator``) separately from *applying* them, so the expectation can be replayed exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from advbench.attack import AttackContext, register_attack
from advbench.attacks.multidomain import MultiDomainAttack, domain_success
from advbench.errors import ConfigError
from advbench.registry import Registry


@dataclass(frozen=True)
class TransformFamily:
    """``sample(n, generator, device)`` draws per-sample parameters; ``apply(x, params)`` is differentiable."""

    name: str
    sample: Callable[[int, torch.Generator, torch.device], torch.Tensor]
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


TRANSFORMS: Registry[TransformFamily] = Registry("transform")
PUBLISHED_SET = ("identity", "hflip", "vflip", "brightness", "gamma", "crop_resize")


def _no_params(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.zeros(n, device=device)


def _register(name: str, apply, sample=_no_params) -> None:
    TRANSFORMS.add(name, TransformFamily(name, sample, apply))


def _rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    import kornia

    return kornia.geometry.transform.rotate(x, degrees, padding_mode="zeros")


def _crop_resize(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Crop a box covering 80% of each side at a sampled offset (params in [0,1]^2) and resize back."""
    import kornia

    n, _, h, w = x.shape
    ch, cw = max(1, round(0.8 * h)), max(1, round(0.8 * w))
    top = params[:, 0] * (h - ch)
    left = params[:, 1] * (w - cw)
    boxes = torch.stack([torch.stack([left, top], 1), torch.stack([left + cw - 1, top], 1),
                         torch.stack([left + cw - 1, top + ch - 1], 1), torch.stack([left, top + ch - 1], 1)], 1)
    return kornia.geometry.transform.crop_and_resize(x, boxes, (h, w))


def _kornia(name: str):
    """A kornia op by dotted name, imported on first use (kornia is not needed to import advbench)."""

    def call(*args):
        import kornia

        fn = kornia
        for part in name.split("."):
            fn = getattr(fn, part)
        return fn(*args)

    return call


_register("identity", lambda x, p: x)
_register("hflip", lambda x, p: _kornia("geometry.transform.hflip")(x))
_register("vflip", lambda x, p: _kornia("geometry.transform.vflip")(x))
_register("brightness", lambda x, p: _kornia("enhance.adjust_brightness")(x, 0.1))
_register("gamma", lambda x, p: _kornia("enhance.adjust_gamma")(x.clamp_min(1e-6), 1.3))
_register("crop_resize", _crop_resize, lambda n, g, d: torch.rand((n, 2), generator=g, device=d))
_register("rotation", _rotate, lambda n, g, d: (torch.rand(n, generator=g, device=d) * 2 - 1) * 15.0)


def list_transforms() -> list[str]:
    """Registered transformation families."""
    return TRANSFORMS.names()


class _TransformDomains:
    def __init__(self, model, x, labels, families: Sequence[TransformFamily], params, attack) -> None:
        self.model, self.x, self.labels, self.families, self.params, self.attack = (
            model, x, labels, families, params, attack)
        self.names = [f.name for f in families]

    def evaluate(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.x + delta
        batch = torch.cat([f.apply(x_adv, p) for f, p in zip(self.families, self.params, strict=True)])
        logits = self.model(batch)  # all K domains in one forward pass (same shapes)
        k, n = len(self.families), self.x.shape[0]
        labels = self.labels.repeat(k)
        losses = self.attack.domain_loss(logits, labels).reshape(k, n).T
        success = domain_success(logits, labels, self.attack.targeted).reshape(k, n).T
        return losses, success


class _TransformBase(MultiDomainAttack):
    def __init__(self, *, transforms: Sequence[str] | str = PUBLISHED_SET, **kwargs) -> None:
        super().__init__(**kwargs)
        names = [t.strip() for t in transforms.split(",")] if isinstance(transforms, str) else list(transforms)
        if not names:
            raise ConfigError("give at least one transformation family")
        self.transforms = [TRANSFORMS.get(name).name for name in names]  # unknown names raise here

    def build(self, ctx: AttackContext, x: torch.Tensor):
        families = [TRANSFORMS.get(n) for n in self.transforms]
        params = [f.sample(x.shape[0], ctx.generator, x.device) for f in families]
        domains = _TransformDomains(ctx.model, x, ctx.labels, families, params, self)

        def project(delta: torch.Tensor) -> torch.Tensor:
            return self.threat.project_delta(delta, x)

        return domains, torch.zeros_like(x), project, lambda d: x + d


@register_attack("minmax-transform")
class MinMaxTransform(_TransformBase):
    """APGDA over K transformation families."""


@register_attack("eot")
class EOT(_TransformBase):
    """Expectation over transformations: the same loop with the weights fixed to 1/K."""

    averaging = True


