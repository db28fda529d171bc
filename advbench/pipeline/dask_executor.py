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

import asyncio
import logging
import os
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from advbench.errors import AdvbenchError, ConfigError
from advbench.pipeline.config import RunConfig

log = logging.getLogger("advbench")

#: Per worker process: config JSON -> (experiment name, experiment, plan), the most recently used last.
_RESOLVED: OrderedDict[str, tuple[str, Any, Any]] = OrderedDict()
#: How many resolved experiments (each holding a model) a worker keeps: a sweep interleaves a few cells' batches.
RESOLVED_CACHE_SIZE = 2


def _resolved(config: RunConfig, expected_hash: str | None = None) -> tuple[str, Any, Any]:
    """The experiment for ``config``, resolved once per worker process and reused for its batches.

    A cached resolve whose hash is not ``expected_hash`` (the plan the driver holds) is stale: a long-lived
    worker of an external scheduler saw other weights or files under the same paths.  It is resolved again,
    and if the hash still differs, the batch is refused: its result would belong to another run."""
    from advbench.pipeline.engine import make_experiment

    key = config.model_dump_json()
    entry = _RESOLVED.get(key)
    if entry is not None and expected_hash is not None and entry[2].config.config_hash() != expected_hash:
        del _RESOLVED[key]
        entry = None
    if entry is None:
        name, experiment = make_experiment(config)
        entry = (name, experiment, experiment.resolve())
        _RESOLVED[key] = entry
        while len(_RESOLVED) > RESOLVED_CACHE_SIZE:
            _RESOLVED.popitem(last=False)
    _RESOLVED.move_to_end(key)
    if expected_hash is not None and entry[2].config.config_hash() != expected_hash:
        raise ConfigError(f"the run's inputs changed while it ran: this worker resolves it to "
                          f"{entry[2].config.config_hash()[:12]}, the plan is {expected_hash[:12]} (weights or data "
                          "files were replaced); rerun it")
    return entry


def remote_plan(config: RunConfig) -> Any:
    """Worker task: resolve ``config`` and return its plan as plain data."""
    from advbench.pipeline.engine import PlanInfo

    name, _, plan = _resolved(config)
    return PlanInfo.of(name, plan)


def remote_batch(config: RunConfig, batch: int, expected_hash: str | None = None) -> tuple[int, dict[str, Any]]:
    """Worker task: compute batch ``batch`` of ``config`` (whose plan hashes to ``expected_hash``)."""
    from advbench.pipeline.engine import compute_recording_warnings, stream_batches
    from advbench.pipeline.experiment import batch_generator

    _, experiment, plan = _resolved(config, expected_hash)
    for index, indices, inputs in stream_batches(experiment, plan.batch_indices, [batch]):
        return index, compute_recording_warnings(experiment, index, indices, inputs,
                                                 batch_generator(config.seed, index, config.device))
    raise ConfigError(f"batch {batch} is outside the plan's {plan.n_batches} batches")


#: Seconds to wait for the Dask client, the worker processes and the local cluster to shut down.
CLOSE_TIMEOUT_S = 30


@contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None, threads: int | None = None):
    """A Dask client on ``scheduler``, or on a local cluster started (and closed, within bounds) here.

    Local workers are single-threaded processes with ``cores / workers`` torch threads each, on 127.0.0.1 and
    without a dashboard.  Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in workers by default; with torch
    it makes every allocation trim memory and halves the speed of an evaluation, so it is unset.  ``threads``
    overrides the torch threads per local worker."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - distributed is a dependency
        raise ConfigError("--executor dask needs dask[distributed]: pip install 'dask[distributed]'") from err
    logging.getLogger("distributed").setLevel(logging.WARNING)  # progress is ours; keep Dask's chatter out
    cluster = client = None
    finished = False
    try:
        with warnings.catch_warnings(record=True) as caught:  # e.g. "Port 8787 is already in use": not ours
            if scheduler:
                client = Client(scheduler, timeout="30s")
            else:
                gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
                if gpus > 1 and workers in (None, gpus):
                    try:
                        from dask_cuda import LocalCUDACluster
                    except ImportError as err:
                        raise ConfigError(f"this machine has {gpus} GPUs; one Dask worker per GPU needs dask-cuda: "
                                          "pip install dask-cuda (or pass --workers 1)") from err
                    cluster = LocalCUDACluster(host="127.0.0.1", dashboard_address=None, threads_per_worker=1)
                else:
                    cores = os.cpu_count() or 1
                    n_workers = workers or cores
                    threads = threads or max(1, cores // n_workers)  # torch threads per worker
                    environ = {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": threads,
                               "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
                    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in environ.items()}):
                        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None)
                client = Client(cluster)
        for w in caught:
            log.info("Dask: %s: %s", w.category.__name__, w.message)
        yield client
        finished = True
    finally:  # bounded: a cluster whose worker died mid-task must not hold the run open forever
        if client is not None:
            close_within_bound(client)
        if cluster is not None:
            if finished:  # idle workers: let them exit on their own; an interrupted run closes at once
                close_workers_within_bound(cluster)
            close_within_bound(cluster)


def close_workers_within_bound(cluster: Any) -> None:
    """Close the local cluster's workers, giving each worker process ``0.8 * CLOSE_TIMEOUT_S`` to exit.

    ``LocalCluster.close`` gives them 4 s, then kills them with "Worker process still alive after 4.0
    seconds, killing": an idle worker that has imported torch takes 2-4 s to tear its interpreter down, more
    on a busy machine.  A close that runs over is logged, not raised.
    """
    nannies = list(getattr(cluster, "workers", {}).values())

    async def close_all() -> None:
        await asyncio.gather(*(n.close(timeout=CLOSE_TIMEOUT_S) for n in nannies), return_exceptions=True)

    try:
        cluster.sync(close_all, callback_timeout=2 * CLOSE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - shutdown of a finished run must not fail it
        log.warning("Dask workers did not close cleanly: %s: %s", type(err).__name__, err)


def close_within_bound(closable: Any) -> None:
    """``closable.close(timeout=CLOSE_TIMEOUT_S)``; a shutdown that runs over is logged, not raised: every
    finished batch is already in the store."""
    try:
        closable.close(timeout=CLOSE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - shutdown of a finished run must not fail it
        log.warning("Dask %s did not close cleanly: %s: %s", type(closable).__name__, type(err).__name__, err)


def run_on_dask(config: RunConfig, db: Any, *, force: bool, shard: tuple[int, int], scheduler: str | None,
                workers: int | None, progress: bool, wandb: dict[str, Any] | None, client: Any = None) -> Any:
    """:func:`advbench.pipeline.engine.run` with the batches computed on Dask workers (see the module docstring)."""
    if client is None:
        with dask_client(scheduler, workers) as own:
            return run_on_dask(config, db, force=force, shard=shard, scheduler=scheduler, workers=workers,
                               progress=progress, wandb=wandb, client=own)
    from distributed import as_completed

    from advbench.pipeline.engine import experiment_class, finish, pending_batches, stored_outcome
    from advbench.progress import progress_bar

    info = client.submit(remote_plan, config, pure=False).result()
    outcome = stored_outcome(db, info, force)
    if outcome is not None:
        return outcome
    todo = pending_batches(db, info, shard, force)
    futures = [client.submit(remote_batch, config, b, info.config_hash, pure=False,
                             key=f"advbench-{info.config_hash[:16]}-batch-{b}") for b in todo]
    bar = progress_bar(total=sum(min(info.batch_size, info.n_samples - b * info.batch_size) for b in todo),
                       desc=f"{info.experiment} on dask", unit="sample", enabled=progress and bool(todo))
    try:
        for future in as_completed(futures):
            batch, result = future.result()
            if not db.commit_batch(info.config_hash, batch, result):
                log.info("batch %d of run %s was already committed; the copy is dropped", batch, info.config_hash[:12])
            bar.update(min(info.batch_size, info.n_samples - batch * info.batch_size))
            future.release()
    finally:
        bar.close()
    experiment = experiment_class(info.experiment)(config)  # merge needs no resolve: no model, no data here
    outcome = finish(db, experiment, info, config.device, force)
    outcome.experiment = experiment
    if outcome.record is not None and not outcome.skipped:
        experiment.after_store(outcome.record, wandb)
    return outcome


@dataclass
class Refused:
    """A task that failed with an advbench error (bad input): returned, not raised, so Dask does not retry it
    (it would fail the same way)."""

    error: str


def plan_task(config: RunConfig) -> Any:
    """:func:`remote_plan`, with an advbench error returned as :class:`Refused`."""
    try:
        return remote_plan(config)
    except AdvbenchError as err:
        return Refused(f"{type(err).__name__}: {err}")


def batch_task(config: RunConfig, batch: int, expected_hash: str | None = None) -> Any:
    """:func:`remote_batch`, with an advbench error returned as :class:`Refused`."""
    try:
        return remote_batch(config, batch, expected_hash)
    except AdvbenchError as err:
        return Refused(f"{type(err).__name__}: {err}")


def task_result(future: Any, retries: int) -> Any:
    """A finished task's value, or :class:`Refused` when it raised on every one of its ``1 + retries`` tries
    (a lost worker counts as a try)."""
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - failed 1 + retries times: recorded, the run goes on
        return Refused(f"{type(err).__name__}: {err} (after {retries + 1} attempt(s))")
