"""One evaluation pipeline for every task: a typed config, experiments as plugins, streamed batches, resume, shards.

A run starts as a :class:`~advbench.pipeline.config.RunConfig` (validated once, at the edge: CLI, sweep spec,
Python API).  An :class:`~advbench.pipeline.experiment.Experiment` resolves it (loads the model, opens the data
stream) into a plan of batches; :func:`~advbench.pipeline.engine.run` computes the batches one at a
time, commits each batch's per-sample rows to the store in one transaction (the resume point), and merges them
into one :class:`~advbench.pipeline.record.Record`.  Shards are sets of batches (``--shard I/N`` by hand, or Dask
workers), so shards of one config merge into one record.
"""

from advbench.pipeline.config import CONFIG_SCHEMA, ResolvedConfig, RunConfig
from advbench.pipeline.record import Record

__all__ = ["CONFIG_SCHEMA", "Record", "ResolvedConfig", "RunConfig"]
