"""A 16-cell sweep: Dask with 2 single-thread worker processes vs the local executor (one process, torch's
default threads), in the same process run.  Reports the throughput ratio (local wall time / Dask wall
time, cluster start included and excluded) and the per-cell scheduling overhead: Dask wall time x workers
minus the cells' own compute time, per cell, as a fraction of a cell.

    .venv/bin/python benchmarks/bench_sweep_dask.py [--samples 500] [--steps 20] [--json]

Goals: throughput >= 1.5x; overhead < 5% for cells of 2 s or more.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from advbench.checkpoints import save_checkpoint  # noqa: E402
from advbench.store import ResultsStore  # noqa: E402
from advbench.sweep import run_sweep  # noqa: E402
from advbench.sweep_spec import load_sweep_spec  # noqa: E402
from advbench.training import TrainConfig, train_classifier  # noqa: E402

SPEC = """\
name: bench
store: {store}
models: [{models}]
datasets: [mnist5k]
attacks: [{{name: pgd, params: {{steps: {steps}}}}}, {{name: pgd-cw, params: {{steps: {steps}}}}}]
norms: [linf, l2]
eps: {{linf: [0.05, 0.1], l2: [1.0, 2.0]}}
seeds: [0, 1, 2, 3]
defaults: {{n_samples: {samples}}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="advbench-sweep-bench-"))
    model, meta = train_classifier(TrainConfig(arch="small_cnn", dataset="mnist5k", epochs=1), progress=False)
    ckpt = save_checkpoint(model, work / "cnn.safetensors", meta)
    import torch

    timings = {}
    default_threads = torch.get_num_threads()
    for run, executor, threads in (("local", "local", default_threads), ("local-1thread", "local", 1),
                                   ("dask", "dask", default_threads)):
        torch.set_num_threads(threads)
        spec_path = work / f"{run}.yaml"
        spec_path.write_text(SPEC.format(store=work / f"{run}.db", models=ckpt, steps=args.steps,
                                         samples=args.samples))
        spec = load_sweep_spec(spec_path)
        start = time.perf_counter()
        summary = run_sweep(spec, executor=executor, workers=2, progress=False)
        wall = time.perf_counter() - start
        with ResultsStore(spec.store) as db:
            cell_times = [db.get_run(r["id"])["cost"]["wall_time_s"] for r in db.list_runs()]
        timings[run] = {"wall_s": wall, "cells": summary.finished, "cell_s": cell_times}
    torch.set_num_threads(default_threads)
    from distributed import LocalCluster

    start = time.perf_counter()
    LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None).close()
    startup = time.perf_counter() - start
    local, single, dask = timings["local"], timings["local-1thread"], timings["dask"]
    n = len(dask["cell_s"])
    mean_cell = sum(dask["cell_s"]) / n
    overhead = (dask["wall_s"] * 2 - sum(dask["cell_s"])) / n
    net = ((dask["wall_s"] - startup) * 2 - sum(dask["cell_s"])) / n
    result = {
        "cells": n, "local_wall_s": local["wall_s"], "local_1thread_wall_s": single["wall_s"],
        "dask_wall_s": dask["wall_s"], "cluster_start_s": startup,
        "throughput_ratio": local["wall_s"] / dask["wall_s"],
        "throughput_ratio_vs_1thread_local": single["wall_s"] / dask["wall_s"],
        "mean_cell_s_local": sum(local["cell_s"]) / n, "mean_cell_s_dask_worker": mean_cell,
        "overhead_per_cell_s": overhead, "overhead_fraction": overhead / mean_cell,
        "overhead_per_cell_s_without_start": net, "overhead_fraction_without_start": net / mean_cell,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{n} cells (small_cnn on mnist5k, {args.samples} samples, {args.steps} steps): local "
          f"{local['wall_s']:.1f} s, Dask 2x1-thread {dask['wall_s']:.1f} s (cluster start included)")
    print(f"mean cell: {result['mean_cell_s_local']:.2f} s local (2 threads), "
          f"{mean_cell:.2f} s on a Dask worker (1 thread)")
    print(f"RATIO throughput dask/local = {result['throughput_ratio']:.2f}  (goal >= 1.5; local uses "
          f"{default_threads} torch threads)")
    print(f"RATIO throughput dask/local-1thread = {result['throughput_ratio_vs_1thread_local']:.2f}")
    print(f"RATIO overhead per cell = {overhead:.3f} s = {100 * result['overhead_fraction']:.1f}% of a cell "
          f"(cluster start {startup:.1f} s included); {net:.3f} s = "
          f"{100 * result['overhead_fraction_without_start']:.1f}% without it  (goal < 5% for cells >= 2 s)")


if __name__ == "__main__":
    main()
