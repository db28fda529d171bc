"""The experiments the one pipeline runs (see :mod:`advbench.pipeline.experiment`), registered by name.

The classification experiments live here (:mod:`~advbench.experiments.classifier`,
:mod:`~advbench.experiments.minmax`, :mod:`~advbench.experiments.compare`); each other task's experiment lives
next to its metrics: :mod:`advbench.sod.experiment`, :mod:`advbench.multitask.experiment` and
:mod:`advbench.detection.experiment`.  Importing this package registers all of them in
:data:`advbench.pipeline.experiment.EXPERIMENTS`; :func:`choose_experiment` picks one for a config.
"""

from __future__ import annotations

import advbench.detection.experiment  # noqa: F401 - registers "detection"
import advbench.multitask.experiment  # noqa: F401 - registers "multitask"
import advbench.sod.experiment  # noqa: F401 - registers "sod"
from advbench.experiments import classifier, compare, minmax  # noqa: F401 - registers them
from advbench.experiments.choose import choose_experiment

__all__ = ["choose_experiment"]
