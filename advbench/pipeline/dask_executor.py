"""Running the batches of one evaluation on Dask workers.

The driver (the process that called :func:`run_on_dask`) never loads a model or reads data: one task on a
worker resolves the config and sends the plan back as plain data, then every pending batch is one task.  Each
worker process resolves an experiment once and keeps it for the batches it is given.  The driver commits each
batch's result to the store as it arrives, so an interrupted run resumes like a local one, and a batch that
comes back twice (a worker lost after finishing it, its task recomputed elsewhere) is stored once.

Clusters: an existing scheduler (``scheduler="tcp://host:8786"``); else, on a machine with several GPUs,
dask-cuda's ``LocalCUDACluster`` (one worker per GPU, each seeing its GPU as ``cuda:0``); else a
``LocalCluster`` of ``workers`` single-threaded processes listening on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

import torch

from advbench.errors import ConfigError
from advbench.pipeline.config import RunConfig

log = logging.getLogger("advbench")

#: Per worker process: config JSON -> (experiment name, experiment, plan); resolved once, reused per batch.
_RESOLVED: dict[str, tuple[str, Any, Any]] = {}


def _resolved(config: RunConfig) -> tuple[str, Any, Any]:
    from advbench.pipeline.engine import make_experiment

    key = config.model_dump_json()
    if key not in _RESOLVED:
        torch.set_num_threads(max(1, _worker_threads()))
        name, experiment = make_experiment(config)
        _RESOLVED[key] = (name, experiment, experiment.resolve())
    return _RESOLVED[key]


def _worker_threads() -> int:
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return torch.get_num_threads()


def remote_plan(config: RunConfig) -> Any:
    """Worker task: resolve ``config`` and return its plan as plain data."""
    from advbench.pipeline.engine import PlanInfo

    name, _, plan = _resolved(config)
    return PlanInfo.of(name, plan)


def remote_batch(config: RunConfig, batch: int) -> tuple[int, dict[str, Any]]:
    """Worker task: compute batch ``batch`` of ``config``."""
    from advbench.pipeline.engine import stream_batches
    from advbench.pipeline.experiment import batch_generator

    _, experiment, plan = _resolved(config)
    for index, indices, inputs in stream_batches(experiment, plan.batch_indices, [batch]):
        return index, experiment.compute(index, indices, inputs, batch_generator(config.seed, index, config.device))
    raise ConfigError(f"batch {batch} is outside the plan's {plan.n_batches} batches")


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None):
    """A Dask client on ``scheduler``, or on a local cluster started (and closed) here."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - distributed is a dependency
        raise ConfigError("--executor dask needs dask[distributed]: pip install 'dask[distributed]'") from err
    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > 1 and workers in (None, gpus):
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as err:
            raise ConfigError(f"this machine has {gpus} GPUs; one Dask worker per GPU needs dask-cuda: "
                              "pip install dask-cuda (or pass --workers 1)") from err
        cluster = LocalCUDACluster(host="127.0.0.1", dashboard_address=None, threads_per_worker=1)
    else:
        cluster = LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def run_on_dask(config: RunConfig, db: Any, *, force: bool, shard: tuple[int, int], scheduler: str | None,
                workers: int | None, progress: bool, wandb: dict[str, Any] | None, client: Any = None) -> Any:
    """:func:`advbench.pipeline.engine.run` with the batches computed on Dask workers (see the module docstring)."""
    if client is None:
        with dask_client(scheduler, workers) as own:
            return run_on_dask(config, db, force=force, shard=shard, scheduler=scheduler, workers=workers,
                               progress=progress, wandb=wandb, client=own)
    from distributed import as_completed

    from advbench.pipeline.engine import _stored, finish, pending_batches
    from advbench.pipeline.experiment import EXPERIMENTS
    from advbench.progress import progress_bar

    info = client.submit(remote_plan, config, pure=False).result()
    outcome = _stored(db, info, force)
    if outcome is not None:
        return outcome
    todo = pending_batches(db, info, shard, force)
    futures = [client.submit(remote_batch, config, b, pure=False, key=f"advbench-{info.config_hash[:16]}-batch-{b}")
               for b in todo]
    bar = progress_bar(total=sum(min(info.batch_size, info.n_samples - b * info.batch_size) for b in todo),
                       desc=f"{info.experiment} on dask", unit="sample", enabled=progress and bool(todo), leave=False)
    try:
        for future in as_completed(futures):
            batch, result = future.result()
            if not db.commit_batch(info.config_hash, batch, result):
                log.info("batch %d of run %s was already committed; the copy is dropped", batch, info.config_hash[:12])
            bar.update(min(info.batch_size, info.n_samples - batch * info.batch_size))
            future.release()
    finally:
        bar.close()
    experiment = EXPERIMENTS.get(info.experiment)(config)  # merge needs no resolve: no model, no data here
    return finish(db, experiment, info, config.device, force)
