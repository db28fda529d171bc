"""Defenses.  DefenseNet, input transforms with BPDA and adversarial-training recipes are planned
(issue 7); the registry exists so ``advbench list defenses`` and later recipes have one place to live.
"""

from __future__ import annotations

from advbench.registry import Registry

DEFENSES: Registry = Registry("defense")


def list_defenses() -> list[str]:
    """Registered defense names (none yet)."""
    return DEFENSES.names()
