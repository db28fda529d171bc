"""The experiments the one pipeline runs (see :mod:`advbench.pipeline.experiment`), registered by name.

Importing this package registers every built-in experiment in
:data:`advbench.pipeline.experiment.EXPERIMENTS`; :func:`choose_experiment` picks one for a config.
"""

from __future__ import annotations

from advbench.experiments import classifier, compare, detection, minmax, multitask, sod  # noqa: F401 - registers them
from advbench.experiments.choose import choose_experiment

__all__ = ["choose_experiment"]
