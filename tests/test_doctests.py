"""Docstring examples run as tests (the public API docs must stay true)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "advbench",
    "advbench.registry",
    "advbench.compression.admm",
    "advbench.experiments.compare",
    "advbench.spec_query",
    "advbench.threat",
    "advbench.losses",
    "advbench.checkpoints",
    "advbench.models.loading",
    "advbench.models.specs",
    "advbench.evaluate",
    "advbench.records",
    "advbench.datasets",
    "advbench.attacks.apgd",
    "advbench.leaderboards.schema",
    "advbench.leaderboards.storage",
    "advbench.models.detectors",
    "advbench.attacks.patches",
    "advbench.attacks.clouds",
    "advbench.defenses",
    "advbench.defenses.input_transforms",
    "advbench.defenses.defensenet",
    "advbench.minmax",
    "advbench.objectives",
    "advbench.listing",
    "advbench.datasets.options",
    "advbench.devices",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
