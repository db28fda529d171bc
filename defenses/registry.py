"""The defense registry: name -> factory of an input-transform ``nn.Module`` (its own module, so the defenses
that register themselves import it without importing the package that imports them)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from advbench.registry import Registry

DEFENSES: Registry[Callable[..., nn.Module]] = Registry("defense")
