"""Scaffolding shared by the ``bench_*.py`` timing scripts: environment defaults, the interleaved timing
loop, the common command-line options, model training / test batches, accuracies and report output.

The scripts run as ``python benchmarks/bench_x.py`` (so this folder is ``sys.path[0]``); each one also puts
this folder on ``sys.path`` itself, so ``import _common`` works from any working directory.

Importing this module sets ``WANDB_MODE=disabled``, ``HF_HUB_OFFLINE=1`` and ``NO_ALBUMENTATIONS_UPDATE=1``
unless they are already set; advbench and torchattacks are only imported later, inside the helpers and the
scripts' ``main``.
"""

from __future__ import annotations

import os

ENV_DEFAULTS = (("WANDB_MODE", "disabled"), ("HF_HUB_OFFLINE", "1"), ("NO_ALBUMENTATIONS_UPDATE", "1"))
for _key, _value in ENV_DEFAULTS:
    os.environ.setdefault(_key, _value)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

THREADS_HELP = "torch.set_num_threads (default: torch's default). On a shared machine 1 is far less noisy"


# --- timing -------------------------------------------------------------------------------------------------


def measure(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> tuple[dict, dict]:
    """Run every function ``warmup`` times, then ``repeats`` rounds in rotating order.

    Returns ``(times, results)``: the list of wall times per name and each function's last result.
    Interleaving the candidates spreads background load evenly over them.  When CUDA is in use, each timed
    call ends with ``torch.cuda.synchronize()``, so a time covers the GPU work the call queued.
    """
    names = list(fns)
    results: dict[str, Any] = {}
    for _ in range(warmup):
        for name in names:
            results[name] = fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            _synchronize()
            t0 = time.perf_counter()
            results[name] = fns[name]()
            _synchronize()
            times[name].append(time.perf_counter() - t0)
    return times, results


def _synchronize() -> None:
    """Wait for queued CUDA work (a no-op unless CUDA has been used in this process)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """The median wall time of each candidate."""
    return {k: statistics.median(v) for k, v in times.items()}


# --- command line -------------------------------------------------------------------------------------------


def make_parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with ``--quick`` and ``--json``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p


def add_run_options(p: argparse.ArgumentParser, repeats_help: str) -> None:
    """The trailing options every script has: ``--repeats``, ``--threads`` and ``--seed``."""
    p.add_argument("--repeats", type=int, default=None, help=repeats_help)
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--seed", type=int, default=0)


def add_device_option(p: argparse.ArgumentParser) -> None:
    """``--device`` (cpu, cuda, cuda:N), for the scripts that can put their models and batches on a GPU."""
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the models and batches live")


def apply_threads(args: argparse.Namespace) -> None:
    """``torch.set_num_threads(args.threads)`` when ``--threads`` was given; checks ``--device`` (and makes a
    ``cuda:N`` the current device)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "device", "cpu") != "cpu":
        from advbench.devices import check_device

        dev = check_device(args.device)
        args.device = str(dev)
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)  # so the timing loop's synchronize() waits for this GPU


# --- models and data ----------------------------------------------------------------------------------------


def train_model(**config: Any) -> tuple[torch.nn.Module, dict]:
    """``train_classifier(TrainConfig(**config), progress=False)``, the model put in eval mode.

    Its parameters stay trainable, as a user's model would be; advbench freezes them itself.
    """
    from advbench.training import TrainConfig, train_classifier

    model, meta = train_classifier(TrainConfig(**config), progress=False)
    model.eval()
    return model, meta


def load_test_batch(dataset: str, seed: int, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test samples of ``dataset`` (all of them when ``n`` is None), contiguous."""
    from advbench.datasets import load_dataset

    data = load_dataset(dataset, seed=seed)
    return data.x_test[:n].contiguous(), data.y_test[:n].contiguous()


def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels, without gradients."""
    with torch.no_grad():
        return model(x).argmax(1)


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of correct predictions (exact count over ``y.numel()``)."""
    return int((pred == y).sum()) / y.numel()


def robust_accuracy(success: torch.Tensor, y: torch.Tensor) -> float:
    """1 - attack success rate (exact count over ``y.numel()``)."""
    return (y.numel() - int(success.sum())) / y.numel()


# --- report -------------------------------------------------------------------------------------------------


def runtime_setup(repeats: int, torchattacks_key: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """The ``repeats``, threads, device and versions part of a report's setup (torchattacks' version under
    ``torchattacks_key``)."""
    from advbench.records import device_name

    setup: dict[str, Any] = {"repeats": repeats, "threads": torch.get_num_threads(), "torch": torch.__version__,
                             "device": device_name(device)}
    if torchattacks_key is not None:
        import torchattacks

        setup[torchattacks_key] = torchattacks.__version__
    setup["python"] = platform.python_version()
    return setup


def print_json(report: dict[str, Any], args: argparse.Namespace) -> bool:
    """With ``--json``, print the report as one JSON object and return True."""
    if args.json:
        print(json.dumps(report))
    return args.json


def print_title(what: str, setup: dict[str, Any], versions: tuple[str, ...] = ()) -> None:
    """Print ``what | threads=T repeats=R (median)``, then `` | torch X, ...`` for the ``versions`` keys of
    ``setup`` (a key's ``_version`` suffix is left out of its label)."""
    line = f"{what} | threads={setup['threads']} repeats={setup['repeats']} (median)"
    if setup.get("device", "cpu") != "cpu":
        line += f" | device {setup['device']}"
    if versions:
        line += " | " + ", ".join(f"{key.removesuffix('_version')} {setup[key]}" for key in versions)
    print(line)


def print_table(columns: list[tuple[str, str]], rows: list[list[Any]]) -> None:
    """Print a header line and one line per row, cells separated by one space.

    ``columns`` holds ``(title, format spec)`` pairs such as ``("clean", ">6.3f")``; each title is aligned
    and padded like its column (the spec's alignment and width).
    """
    heads = []
    for title, spec in columns:
        match = re.match(r"[<>^]?\d*", spec)
        heads.append(format(title, match.group() if match else ""))
    print(" ".join(heads))
    for row in rows:
        print(" ".join(format(value, spec) for value, (_, spec) in zip(row, columns, strict=True)))


def print_ratio(label: str, value: float) -> None:
    print(f"RATIO {label} = {value:.3f}")
