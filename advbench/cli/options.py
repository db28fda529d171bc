"""Shared pieces of every command: the consoles, help texts, option enums and small parsers."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from rich.console import Console

from advbench.errors import ConfigError

out = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("advbench")


MODEL_HELP = (
    "checkpoint path(s) or model spec(s), comma separated: model.safetensors (with its JSON sidecar); "
    "timm:NAME[?weights=PATH&ema=true]; torchvision:NAME[?weights=PATH]; "
    "robustbench:NAME[?dataset=cifar10&threat=Linf&model_dir=DIR]; ARCH?weights=PATH (e.g. resnet20, wrn-28-10); "
    "torchscript:PATH; py:FILE.py:FACTORY[?weights=PATH] (this imports and runs your own Python file). "
    "Options: quantized=dynamic|static (torch.ao int8 weights), surrogate=PATH or gradients=bpda (gradients "
    "for int8 models). Nothing is ever downloaded")
DATASET_HELP = (
    "digits, mnist5k, cifar10:/path, cifar100:/path (python layout; only the test batch is read), "
    "imagefolder:/path (class subfolders, or val/ or test/ inside; never split), synthetic; "
    "see `advbench list datasets`")
DEFAULT_STORE = "advbench-results.db"


class Norm(str, Enum):
    linf = "linf"
    l2 = "l2"
    l1 = "l1"
    l0 = "l0"


class ExportFormat(str, Enum):
    csv = "csv"
    json = "json"


class WandbMode(str, Enum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


class Executor(str, Enum):
    local = "local"
    dask = "dask"


def split_csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--param pgd.steps=20`` → ``{'pgd': {'steps': 20}}`` (values parsed as JSON when possible)."""
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        attack, dot, name = key.partition(".")
        if not sep or not dot or not attack or not name:
            raise ConfigError(f"--param '{item}' must look like ATTACK.NAME=VALUE, e.g. pgd.steps=20")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params.setdefault(attack, {})[name] = value
    return params


def accepts_param(attack: str, pname: str) -> bool:
    from advbench.pipeline.request import accepts

    return accepts(attack, pname)


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in split_csv(text))
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, one per channel, e.g. 0.485,0.456,0.406; got "
                          f"'{text}'") from None


def wandb_options(enabled: bool, mode: WandbMode | None, project: str, store: Path) -> dict[str, Any] | None:
    """W&B options for a run, or None when ``--wandb`` is off.  The mode is resolved (online only with an API
    key) and W&B's local files go next to the results store (``<store dir>/wandb``), not into the working
    directory."""
    if not enabled:
        return None
    from advbench.tracking import resolve_wandb_mode

    resolved, message = resolve_wandb_mode(mode.value if mode else None, dir=store.resolve().parent)
    if message:
        err.print(message)
    return {"project": project, "mode": resolved, "dir": str(store.resolve().parent)}


def print_run_table(records: list[dict[str, Any]], title: str = "robustness") -> None:
    """Print the tables of run records (see :mod:`advbench.pipeline.tables`)."""
    from advbench.pipeline.tables import run_tables

    for table in run_tables(records, title=title):
        out.print(table)


def renderer_for(record: Any) -> Any:
    """The experiment that renders ``record`` (rendering needs no resolve)."""
    import advbench.experiments  # noqa: F401 - registers the experiments
    from advbench.pipeline.config import RunConfig
    from advbench.pipeline.experiment import EXPERIMENTS

    placeholder = RunConfig(models=["-"], dataset="-", attacks=["-"], eps=[0.0])
    return EXPERIMENTS.get(record.experiment)(placeholder)


def require_store(store: Path) -> None:
    from advbench.errors import MissingPathError

    if not store.exists():
        raise MissingPathError(f"results store {store} does not exist; run `advbench run ... --store "
                               f"{shlex.quote(str(store))}` first")

#: What an interrupted command says: finished batches and records are kept, nothing half-written is.
INTERRUPTED = ("interrupted; every finished batch is in the store and the same command resumes after it "
               "(nothing half-written was kept)")
