"""The :class:`Experiment` plugin protocol: what a task must say for the one pipeline to run it.

An experiment is built from a :class:`~advbench.pipeline.config.RunConfig` and

* :meth:`~Experiment.resolve` loads what it needs (model, evaluation stream) and returns a :class:`Plan`: the
  resolved config (hashed) and the number of samples.  The pipeline cuts the samples into batches of
  ``batch_size`` in selection order; batch ``b`` holds samples ``[b * batch_size, (b + 1) * batch_size)``.
* :meth:`~Experiment.dataset` gives those samples as a ``torch.utils.data.Dataset`` (item ``i`` is selected
  sample ``i``); the pipeline reads it through a ``DataLoader``, so only one batch is decoded at a time.
* :meth:`~Experiment.compute` evaluates one batch with a generator seeded from (seed, batch index) and returns
  a :class:`BatchResult`: plain JSON data (per-sample rows, counters, warnings), committed to the store as is.
* :meth:`~Experiment.merge` turns every batch's result, in batch order, into the record's metrics, cost and
  per-sample rows.  It reads only the batch results, so a run resumed from the store, or merged from shards
  that ran on different machines, gives the record an uninterrupted run gives.
* :meth:`~Experiment.render` prints the record's table.

Experiments are registered in :data:`EXPERIMENTS` by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from advbench.pipeline.config import ResolvedConfig, RunConfig
from advbench.registry import Registry

#: Per-sample row keys the store has columns for; anything else goes into the row's ``extra_json``.
BatchResult = dict[str, Any]


@dataclass
class Plan:
    """A resolved run: its hashed config, how many samples it evaluates, and warnings to record."""

    config: ResolvedConfig
    n_samples: int
    batch_size: int
    warnings: list[str] = field(default_factory=list)

    @property
    def n_batches(self) -> int:
        return -(-self.n_samples // self.batch_size) if self.n_samples else 0

    def batch_indices(self, batch: int) -> np.ndarray:
        """The selection positions of batch ``batch``."""
        start = batch * self.batch_size
        return np.arange(start, min(start + self.batch_size, self.n_samples))


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch ``batch`` of a run seeded ``seed``: independent of which process computes it, and of
    the batches before it, so a resumed or sharded run draws exactly what an uninterrupted one draws."""
    state = np.random.SeedSequence([int(seed), int(batch)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def batch_generator(seed: int, batch: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=torch.device(device)).manual_seed(batch_seed(seed, batch))


class Experiment(ABC):
    """A task the pipeline runs batch by batch (see the module docstring)."""

    #: The registry name, e.g. ``classifier``.
    name: ClassVar[str]

    def __init__(self, config: RunConfig) -> None:
        self.run_config = config
        #: A few clean/adversarial inputs kept by :meth:`compute` in this process, for W&B (empty on a driver).
        self.examples: dict[str, Any] = {}

    @abstractmethod
    def resolve(self) -> Plan:
        """Load the model(s) and open the data stream; return the plan.  Called once per process."""

    @abstractmethod
    def dataset(self) -> Dataset:
        """The selected samples (item ``i`` is sample ``i``), read lazily."""

    def collate(self, items: Sequence[Any]) -> Any:
        from torch.utils.data import default_collate

        return default_collate(items)

    @abstractmethod
    def compute(self, batch: int, indices: np.ndarray, inputs: Any, generator: torch.Generator) -> BatchResult:
        """Evaluate batch ``batch`` (selection positions ``indices``, collated ``inputs``); JSON-able result."""

    @abstractmethod
    def merge(self, config: dict[str, Any], warnings: Sequence[str], results: Sequence[BatchResult]) -> dict[str, Any]:
        """``{"metrics", "cost", "samples"}`` from the resolved ``config`` (as stored), the plan's ``warnings``
        and every batch's result, in batch order.  Runs where the store is (the driver), from these alone:
        it must not need :meth:`resolve`."""

    def render(self, record: Any) -> Any:
        """A rich renderable of the record (the CLI prints it); the default is the classifier table."""
        from advbench.pipeline.tables import run_table

        return run_table([record])

    def after_store(self, record: Any, wandb: dict[str, Any] | None) -> None:  # noqa: B027 - optional hook
        """Send the stored record to W&B (``wandb`` holds the sink options), if the experiment logs more."""


#: Experiment name -> class.
EXPERIMENTS: Registry[type[Experiment]] = Registry("experiment")
