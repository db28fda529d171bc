"""The Dask executor of a sweep: every cell's batches on the workers at once, merged on the driver.

Each cell is resolved on a worker (:func:`~advbench.pipeline.dask_executor.plan_task`); its pending batches
become tasks (:func:`~advbench.pipeline.dask_executor.batch_task`) as soon as its plan is back, so the
batches of a big cell spread over every worker.  The driver commits each batch to the store as it arrives
and merges a cell's record when its last batch is in.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

log = logging.getLogger("advbench")


def run_cells_on_dask(cells: list[Any], report: Any, *, scheduler: str | None, workers: int | None, retries: int,
                      force: bool) -> None:
    """Run ``cells`` (sweep cells with a config) on Dask; ``report`` counts, stores failures and logs."""
    from distributed import as_completed

    from advbench.pipeline.dask_executor import Refused, batch_task, dask_client, plan_task, task_result
    from advbench.pipeline.engine import experiment_class, finish, pending_batches, stored_outcome

    store = report.store
    with dask_client(scheduler, workers) as client:
        plans = {client.submit(plan_task, c.config, pure=False, retries=retries,
                               key=f"advbench-plan-{c.index}-{uuid.uuid4().hex}"): c for c in cells}
        batches: dict[Any, tuple[Any, int]] = {}
        running: dict[int, tuple[Any, set[int]]] = {}  # cell index -> (plan, batches still out)
        stream = as_completed(list(plans))
        for future in stream:
            if future in plans:
                cell = plans.pop(future)
                info = task_result(future, retries)
                if isinstance(info, Refused):
                    log.warning("cell %d (%s) failed: %s", cell.index, cell.label, info.error)
                    report.failed(cell.request, cell.request_hash, info.error)
                    continue
                stored = stored_outcome(store, info, force)
                todo = [] if stored else pending_batches(store, info, (1, 1), force)
                if stored or not todo:
                    report.outcome(cell, stored or finish(store, experiment_class(info.experiment)(cell.config),
                                                          info, cell.config.device, force))
                    continue
                running[cell.index] = (info, set(todo))
                for b in todo:
                    task = client.submit(batch_task, cell.config, b, info.config_hash, pure=False, retries=retries,
                                         key=f"cell-{cell.index}-{info.config_hash[:12]}-batch-{b}")
                    batches[task] = (cell, b)
                    stream.add(task)
                continue
            cell, b = batches.pop(future)
            if cell.index not in running:  # the cell already failed; its other batches are dropped
                continue
            info, left = running[cell.index]
            result = task_result(future, retries)
            future.release()
            if isinstance(result, Refused):
                log.warning("cell %d (%s) failed in batch %d: %s", cell.index, cell.label, b, result.error)
                del running[cell.index]
                report.failed(info.config, info.config_hash, result.error)
                continue
            store.commit_batch(info.config_hash, result[0], result[1])
            left.discard(b)
            if not left:
                del running[cell.index]
                experiment = experiment_class(info.experiment)(cell.config)  # merging needs no model, no data
                report.outcome(cell, finish(store, experiment, info, cell.config.device, force))
