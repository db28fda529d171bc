"""Weights & Biases sink for run records.

:func:`resolve_wandb_mode` picks ``online``, ``offline`` or ``disabled`` without touching the
network: with no API key (``WANDB_API_KEY`` or a ``~/.netrc`` entry for the W&B host) it falls back
to offline logging, which can be uploaded later with ``wandb sync``.  :class:`WandbSink` wraps one
W&B run and logs a run record to it: config, scalar summary metrics, the robust-accuracy-vs-eps
curve, a table of per-sample outcomes and optionally a clean / adversarial / perturbation image grid.

``wandb`` is imported lazily, inside :class:`WandbSink`, never when this module is imported.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from advbench.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")
_MODE_ALIASES = {"run": "online", "dryrun": "offline"}  # older names wandb itself still accepts
_DEFAULT_HOST = "api.wandb.ai"
MAX_IMAGES = 8
"""At most this many samples go into the clean / adversarial / perturbation grid."""


def _normalise_mode(value: str, source: str) -> str:
    mode = str(value).strip().lower()
    mode = _MODE_ALIASES.get(mode, mode)
    if mode not in WANDB_MODES:
        raise ConfigError(f"unknown W&B mode {value!r} ({source}); use one of {', '.join(WANDB_MODES)}")
    return mode


def _wandb_host() -> str:
    base = os.environ.get("WANDB_BASE_URL", "").strip()
    if not base:
        return _DEFAULT_HOST
    return urlparse(base if "://" in base else f"https://{base}").hostname or _DEFAULT_HOST


def _netrc_path() -> Path:
    env = os.environ.get("NETRC")
    if env:
        return Path(env).expanduser()
    home = Path(os.environ.get("HOME") or Path.home())
    return home / ("_netrc" if os.name == "nt" and not (home / ".netrc").exists() else ".netrc")


def has_wandb_api_key() -> bool:
    """Whether a W&B API key is configured: ``WANDB_API_KEY`` or a netrc entry for the W&B host.

    Only the netrc text is read; nothing is imported from ``wandb`` and no network call is made.
    """
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    try:
        text = _netrc_path().read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    host = re.escape(_wandb_host())
    return re.search(rf"(?:^|\s)machine\s+{host}(?:\s|$)", text) is not None


def resolve_wandb_mode(requested: str | None, *, dir: str | os.PathLike[str] | None = None) -> tuple[str, str | None]:
    """The W&B mode to use and, when it differs from what was asked for, a message saying why.

    ``requested`` is ``"online"``, ``"offline"``, ``"disabled"`` or ``None``.  ``None`` means the
    ``WANDB_MODE`` environment variable if set, else ``"online"`` when an API key is configured and
    ``"offline"`` otherwise.  Online without an API key also falls back to offline.  ``dir`` only
    changes where the message says the offline run is written.  Never touches the network.

    Raises:
        ConfigError: ``requested`` or ``WANDB_MODE`` is not a known mode.
    """
    if requested is not None:
        mode = _normalise_mode(requested, "requested")
    elif os.environ.get("WANDB_MODE", "").strip():
        mode = _normalise_mode(os.environ["WANDB_MODE"], "from the WANDB_MODE environment variable")
    else:
        mode = "online"
    if mode == "online" and not has_wandb_api_key():
        where = "./wandb" if dir is None else os.fspath(Path(dir) / "wandb")
        return "offline", (
            f"no W&B API key found (WANDB_API_KEY or ~/.netrc); logging offline to {where} "
            "(upload later with `wandb sync`, or run `wandb login` first)"
        )
    return mode, None


def _flatten_scalars(value: Any, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Scalar leaves of nested dicts as ``a/b/c`` keys; lists and other objects are skipped."""
    out: dict[str, Any] = {}
    if isinstance(value, Mapping):
        for key, inner in value.items():
            out.update(_flatten_scalars(inner, f"{prefix}{sep}{key}" if prefix else str(key), sep))
    elif isinstance(value, (bool, int, float, str)):
        out[prefix] = value
    elif value is not None and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        out[prefix] = value.item()
    return out


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return str(value)


def perturbation_grid(clean: Any, adversarial: Any, max_images: int = MAX_IMAGES) -> Any:
    """A ``3xHxW`` uint8 numpy grid: clean row, adversarial row, amplified-perturbation row.

    The perturbation of each image is scaled by its own largest absolute value and centred on mid
    grey, so even an 8/255 perturbation is visible.

    Raises:
        InputError: the inputs are not matching NCHW tensors.
    """
    import torch
    from torchvision.utils import make_grid

    if not isinstance(clean, torch.Tensor) or not isinstance(adversarial, torch.Tensor):
        raise InputError("images['clean'] and images['adversarial'] must be torch tensors (NCHW, values in [0, 1])")
    if clean.ndim != 4 or clean.shape != adversarial.shape:
        raise InputError(
            f"images['clean'] {tuple(clean.shape)} and images['adversarial'] {tuple(adversarial.shape)} "
            "must be NCHW tensors of the same shape"
        )
    n = min(int(clean.shape[0]), max_images)
    clean = clean[:n].detach().float().cpu().clamp(0, 1)
    adversarial = adversarial[:n].detach().float().cpu().clamp(0, 1)
    delta = adversarial - clean
    scale = delta.abs().flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    amplified = (0.5 + 0.5 * delta / scale).clamp(0, 1)
    grid = make_grid(torch.cat([clean, adversarial, amplified]), nrow=max(n, 1), padding=2, pad_value=1.0)
    return grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


class WandbSink:
    """One W&B run that run records and metrics are logged to.

    Args:
        project: W&B project name.
        mode: ``"online"``, ``"offline"``, ``"disabled"`` or ``None`` (see :func:`resolve_wandb_mode`).
        name, group, tags: W&B run name, group and tags.
        dir: directory under which W&B writes its ``wandb/`` folder (created if missing).
        config: initial run config.

    ``message`` holds the reason when the mode fell back to offline (it is also logged as a
    warning).  Use as a context manager, or call :meth:`finish`.
    """

    def __init__(
        self,
        project: str = "advbench",
        mode: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: Sequence[str] = (),
        dir: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.mode, self.message = resolve_wandb_mode(mode, dir=dir)
        if self.message:
            logger.warning(self.message)
        import wandb

        self._wandb = wandb
        if dir is not None:
            Path(dir).mkdir(parents=True, exist_ok=True)
        self._finished = False
        self._run = wandb.init(
            project=project,
            mode=self.mode,  # type: ignore[arg-type]
            name=name,
            group=group,
            tags=list(tags) or None,
            dir=None if dir is None else os.fspath(dir),
            config=dict(config) if config else None,
            reinit="create_new",  # independent of wandb.run and of any other sink in the process
            settings=self._settings(wandb),
        )
        self._run_dir = None if self.mode == "disabled" else self._find_run_dir()

    @staticmethod
    def _settings(wandb: Any) -> Any:
        """Quiet settings without the system-metrics sampler, keeping only fields this wandb knows."""
        wanted = {
            "silent": True,
            "console": "off",
            "x_disable_stats": True,
            "_disable_stats": True,
            "disable_job_creation": True,
        }
        fields = getattr(wandb.Settings, "model_fields", None)
        if fields is not None:
            wanted = {k: v for k, v in wanted.items() if k in fields}
        else:  # very old wandb: only the long-standing public names
            wanted = {k: wanted[k] for k in ("silent", "console")}
        return wandb.Settings(**wanted)

    # ------------------------------------------------------------------ properties
    @property
    def run(self) -> Any:
        """The underlying ``wandb`` run object."""
        return self._run

    @property
    def run_id(self) -> str | None:
        """The W&B run id."""
        return getattr(self._run, "id", None)

    @property
    def run_dir(self) -> Path | None:
        """The local run folder (``.../wandb/offline-run-*`` offline), absolute; ``None`` when disabled."""
        if self.mode == "disabled":
            return None
        return self._run_dir

    def _find_run_dir(self) -> Path | None:
        settings = getattr(self._run, "settings", None)
        sync_dir = getattr(settings, "sync_dir", None)
        if sync_dir:
            return Path(sync_dir).absolute()
        files_dir = getattr(self._run, "dir", None)
        return Path(files_dir).absolute().parent if files_dir else None

    # ------------------------------------------------------------------ logging
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log a dict of metrics (``run.log``), optionally at ``step``."""
        self._run.log(dict(metrics), step=step)

    def log_weight_trace(self, trace: Sequence[Sequence[float]], names: Sequence[str]) -> None:
        """The min-max engine's mean learned weight per domain over the iterations, as a line plot."""
        if not trace or not names:
            return
        steps = list(range(len(trace)))
        series = [[float(row[i]) for row in trace] for i in range(len(names))]
        plot = self._wandb.plot.line_series(xs=steps, ys=series, keys=list(names), title="Learned domain weights",
                                            xname="iteration")
        self._run.log({"weight_trace": plot})

    def log_record(self, record: Mapping[str, Any], *, images: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Log a run record: config, summary metrics, the eps curve, the sample table and images.

        Args:
            record: a run record (see :mod:`advbench.store`).
            images: optional ``{"clean": NCHW tensor, "adversarial": NCHW tensor}`` in [0, 1]; the
                first :data:`MAX_IMAGES` become a clean / adversarial / perturbation grid.

        Returns:
            the summary values set and the names of the logged media (for inspection and tests).
        """
        wandb = self._wandb
        run = self._run
        config = dict(record.get("config") or {})
        for key in ("config_hash", "code_version", "device", "versions"):
            if record.get(key) is not None:
                config[key] = record[key]
        if config:
            run.config.update(config, allow_val_change=True)

        metrics = record.get("metrics") or {}
        summary = _flatten_scalars(metrics)
        summary.update(_flatten_scalars(record.get("cost") or {}, "cost"))
        for key in ("status", "error"):
            if record.get(key) is not None:
                summary[key] = record[key]
        for key, value in summary.items():
            run.summary[key] = value

        media: dict[str, Any] = {}
        curve = metrics.get("curve") if isinstance(metrics, Mapping) else None
        if curve:
            columns = _columns(curve)
            table = wandb.Table(columns=columns, data=[[_cell(p.get(c)) for c in columns] for p in curve])
            media["curve"] = table
            if "eps" in columns and "robust_accuracy" in columns:
                media["robust_accuracy_vs_eps"] = wandb.plot.line(
                    table, "eps", "robust_accuracy", title="Robust accuracy vs eps"
                )
        samples = record.get("samples") or []
        if samples:
            columns = _columns(samples)
            media["samples"] = wandb.Table(columns=columns, data=[[_cell(s.get(c)) for c in columns] for s in samples])
        if images is not None:
            missing = [k for k in ("clean", "adversarial") if k not in images]
            if missing:
                raise InputError(f"images is missing {missing}; pass {{'clean': tensor, 'adversarial': tensor}}")
            grid = perturbation_grid(images["clean"], images["adversarial"])
            media["examples"] = wandb.Image(
                grid, caption="rows: clean / adversarial / perturbation (amplified, grey = 0)"
            )
        if media:
            run.log(media)
        return {"summary": summary, "media": sorted(media)}

    def finish(self, exit_code: int | None = None) -> None:
        """Finish the run (idempotent); a non-zero ``exit_code`` marks it failed."""
        if self._finished:
            return
        self._finished = True
        self._run.finish(exit_code=exit_code)

    def __enter__(self) -> WandbSink:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(exit_code=1 if exc_type is not None else None)


__all__ = ["WANDB_MODES", "WandbSink", "has_wandb_api_key", "perturbation_grid", "resolve_wandb_mode"]
