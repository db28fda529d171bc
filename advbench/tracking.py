"""Weights & Biases sink for run records.

:func:`resolve_wandb_mode` picks ``online``, ``offline`` or ``disabled`` without touching the
network: with no API key (``WANDB_API_KEY`` or a ``~/.netrc`` entry for the W&B host) it falls back
to offline logging, which can be uploaded later with ``wandb sync``.  :class:`WandbSink` wraps one
W&B run and logs a run record to it:

* the config (plus config hash and provenance);
* summary values: run-level metrics under their own name (``clean_accuracy``, ``n``), every metric
  that depends on eps under its eps (``robust_accuracy/eps=0.1``, ``per_attack/pgd/broken/eps=0.1``);
* one history step per eps, with ``eps`` as the step metric (``by_eps/robust_accuracy``, ...), so
  W&B's own line charts draw robust accuracy against eps;
* tables (the curve, per-sample outcomes) whose dict and list cells are JSON text;
* optionally a clean / adversarial / perturbation image grid, upscaled so small images are visible.

:meth:`WandbSink.log_sweep_summary` logs a sweep's table and robust-accuracy-vs-eps plots, one per
(data set, norm), with one line per run.

``wandb`` is imported lazily, inside :class:`WandbSink`, never when this module is imported.
"""

from __future__ import annotations

import json
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
MIN_TILE_PX = 64
"""Images smaller than this (8x8 digits, 32x32 CIFAR) are upscaled, nearest neighbour, to at least this size."""
MIN_GRID_WIDTH_PX = 256
"""The grid is upscaled until it is at least this wide."""
GRID_PADDING_PX = 4
PER_EPS_METRICS = (
    "robust_accuracy",
    "attack_success_rate",
    "mean_perturbation",
    "max_perturbation",
    "per_attack",
    "per_class_robust_accuracy",
)
"""Metrics that hold the value at one eps: summary keys get an ``/eps=<eps>`` suffix."""
HISTORY_METRICS = ("robust_accuracy", "attack_success_rate", "mean_perturbation", "per_attack")
"""The per-eps metrics every eps has (the curve's); they go to history, one step per eps."""
HISTORY_PREFIX = "by_eps/"
"""History keys of the per-eps steps (``by_eps/robust_accuracy``); their step metric is ``eps``."""


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


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _cell(value: Any) -> Any:
    """A table cell: scalars stay, dicts and lists become JSON text (never a Python repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, sort_keys=True, default=_json_default)
    return str(value)


def summary_values(record: Mapping[str, Any]) -> dict[str, Any]:
    """The W&B summary of a run record: scalar leaves, every per-eps metric keyed by its eps.

    Run-level metrics keep their name (``clean_accuracy``, ``n``, ``defense/name``); the metrics
    in :data:`PER_EPS_METRICS` and those of a curve point get ``/eps=<eps>`` appended
    (``robust_accuracy/eps=0.1``, ``per_attack/pgd/broken/eps=0.1``), one key per eps evaluated.
    A single-eps run also keeps ``eps`` itself (its other metrics, e.g. a min-max run's ``asr_all``,
    are at that eps); a multi-eps run has no bare ``eps``.
    Cost leaves are ``cost/...``; ``status`` and ``error`` are copied when set.
    """
    from advbench.records import format_eps
    from advbench.store import eps_metrics

    metrics = record.get("metrics") or {}
    per_eps = eps_metrics(record)
    eps_keys = set(PER_EPS_METRICS)
    curve = metrics.get("curve")
    if isinstance(curve, list):
        eps_keys.update(k for point in curve if isinstance(point, Mapping) for k in point if k != "eps")
    run_level = {k: v for k, v in metrics.items() if k not in eps_keys and k not in ("curve", "eps")}
    summary = _flatten_scalars(run_level)
    if "curve" not in metrics and isinstance(metrics.get("eps"), (int, float)):
        summary["eps"] = metrics["eps"]  # a single-eps run: every number above is at this eps
    for eps, values in per_eps:
        suffix = "" if eps is None else f"/eps={format_eps(eps)}"
        for key in sorted(eps_keys & set(values)):
            for name, value in _flatten_scalars(values[key], key).items():
                summary[name + suffix] = value
    summary.update(_flatten_scalars(record.get("cost") or {}, "cost"))
    for key in ("status", "error"):
        if record.get(key) is not None:
            summary[key] = record[key]
    return summary


def history_steps(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One history row per eps evaluated: ``eps`` and the metrics at that eps under ``by_eps/``.

    The metrics are those of a curve point (for a cascade run :data:`HISTORY_METRICS`); empty for a
    run without an eps or without per-eps numbers (nothing to plot)."""
    from advbench.store import eps_metrics

    metrics = record.get("metrics") or {}
    curve = metrics.get("curve") if isinstance(metrics, Mapping) else None
    keys = set(HISTORY_METRICS)
    if isinstance(curve, list):  # what every curve point has (a min-max run's asr_all, weights, ...)
        keys = {k for point in curve if isinstance(point, Mapping) for k in point if k != "eps"}
    steps = []
    for eps, values in eps_metrics(record):
        if eps is None:
            continue
        row: dict[str, Any] = {"eps": eps}
        for key in sorted(keys & set(values)):
            row.update({HISTORY_PREFIX + k: v for k, v in _flatten_scalars(values[key], key).items()})
        if len(row) > 1:
            steps.append(row)
    return sorted(steps, key=lambda r: r["eps"])


def sweep_line_name(config: Mapping[str, Any]) -> str:
    """The name of a run's line in a sweep plot: :func:`~advbench.records.run_name` without the eps list."""
    from advbench.records import run_name

    return "|".join(part for part in run_name(config).split("|") if not part.startswith("eps="))


def _upscale_factor(height: int, width: int, columns: int, min_tile: int, min_width: int) -> int:
    """The smallest integer zoom that makes each tile ``min_tile`` px and the grid ``min_width`` px wide."""
    tile = max(1, -(-min_tile // max(height, width, 1)))
    wide = max(1, -(-(min_width - GRID_PADDING_PX * (columns + 1)) // max(columns * width, 1)))
    return max(tile, wide)


def perturbation_grid(clean: Any, adversarial: Any, max_images: int = MAX_IMAGES, *, min_tile: int = MIN_TILE_PX,
                      min_width: int = MIN_GRID_WIDTH_PX) -> Any:
    """A ``HxWx3`` uint8 numpy grid: clean row, adversarial row, amplified-perturbation row.

    Column ``i`` shows sample ``i`` in all three rows.  Small images are upscaled by an integer
    factor, nearest neighbour (pixels stay sharp squares), until every tile is at least
    ``min_tile`` px and the grid at least ``min_width`` px wide: 8x8 digits become 64x64 tiles.
    The perturbation of each image is scaled by its own largest absolute value and centred on mid
    grey, so even an 8/255 perturbation is visible.  Tiles are separated by white padding.

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
    tiles = torch.cat([clean, adversarial, amplified])
    zoom = _upscale_factor(int(tiles.shape[2]), int(tiles.shape[3]), max(n, 1), min_tile, min_width)
    if zoom > 1:
        tiles = tiles.repeat_interleave(zoom, dim=2).repeat_interleave(zoom, dim=3)
    grid = make_grid(tiles, nrow=max(n, 1), padding=GRID_PADDING_PX, pad_value=1.0)
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

        Summary keys of per-eps metrics carry their eps (:func:`summary_values`); every eps is one
        history step with ``eps`` as the step metric (:func:`history_steps`), so W&B's native line
        charts plot ``by_eps/robust_accuracy`` against eps.

        Args:
            record: a run record (see :mod:`advbench.store`).
            images: optional ``{"clean": NCHW tensor, "adversarial": NCHW tensor}`` in [0, 1]; the
                first :data:`MAX_IMAGES` become a clean / adversarial / perturbation grid.

        Returns:
            the summary values set, the history steps logged and the names of the logged media
            (for inspection and tests).
        """
        from advbench.records import format_eps
        from advbench.store import eps_metrics

        wandb = self._wandb
        run = self._run
        config = dict(record.get("config") or {})
        for key in ("config_hash", "code_version", "device", "versions"):
            if record.get(key) is not None:
                config[key] = record[key]
        if config:
            run.config.update(config, allow_val_change=True)

        metrics = record.get("metrics") or {}
        steps = history_steps(record)
        if steps:
            # eps is the x axis of every per-eps series; summaries are set below, keyed by eps
            run.define_metric("eps", summary="none")
            run.define_metric(f"{HISTORY_PREFIX}*", step_metric="eps", summary="none")
            for step in steps:
                run.log(step)
        summary = summary_values(record)
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
            eps_text = ""
            eps = [e for e, _ in eps_metrics(record) if e is not None]
            if eps:
                eps_text = f" at eps={format_eps(max(eps))}"
            media["examples"] = wandb.Image(
                grid, caption=f"columns: samples; rows: clean / adversarial{eps_text} / perturbation "
                              "(amplified per image, grey = 0)"
            )
        if media:
            run.log(media)
        return {"summary": summary, "history": steps, "media": sorted(media)}

    def log_sweep_summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """A sweep's results: one table row per (run, eps) and robust-accuracy-vs-eps plots.

        There is one plot per (data set, norm): an L2 eps and an L∞ eps are different units and are
        never drawn on one axis.  Each finished run is its own line, named by
        :func:`advbench.records.run_name` without the eps list (model, data set, attack suite, norm,
        defense), so a PGD run and an APGD-CE + Square run of one model are two lines.  Failed runs
        are left out.

        Returns:
            ``{"rows": number of table rows, "plots": {plot key: [line names]}}``.
        """
        from advbench.records import attack_suite, defense_label, run_name
        from advbench.store import eps_metrics

        wandb = self._wandb
        finished = [r for r in records if (r.get("status") or "finished") == "finished"]
        columns = ["run", "model", "dataset", "norm", "eps", "attacks", "defense", "clean_accuracy",
                   "robust_accuracy", "attack_success_rate", "n", "config_hash"]
        rows: list[list[Any]] = []
        lines: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
        owners: dict[tuple[str, str, str], str] = {}
        for record in finished:
            config = record.get("config") or {}
            label = sweep_line_name(config)
            model = config.get("model")
            for eps, values in eps_metrics(record):
                rows.append([run_name(config), model.get("name") if isinstance(model, Mapping) else model,
                             config.get("dataset"), config.get("norm"), eps, "+".join(attack_suite(config)),
                             defense_label(config.get("defense")), values.get("clean_accuracy"),
                             values.get("robust_accuracy"), values.get("attack_success_rate"), values.get("n"),
                             record.get("config_hash")])
                accuracy = values.get("robust_accuracy")
                if eps is None or isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)):
                    continue
                where = (str(config.get("dataset")), str(config.get("norm")))
                digest = str(record.get("config_hash"))
                name = label
                if owners.setdefault((*where, label), digest) != digest:  # two runs, one name: tell them apart
                    name = f"{label} [{digest[:8]}]"
                lines.setdefault(where, {}).setdefault(name, []).append((float(eps), float(accuracy)))
        media: dict[str, Any] = {"sweep_table": wandb.Table(columns=columns, data=[[_cell(v) for v in row]
                                                                                   for row in rows])}
        plots: dict[str, list[str]] = {}
        for (dataset, norm), board in sorted(lines.items()):
            names = sorted(board)
            series = [sorted(board[k]) for k in names]
            key = f"robust_accuracy_vs_eps/{dataset}/{norm}"
            media[key] = wandb.plot.line_series(
                xs=[[e for e, _ in points] for points in series], ys=[[a for _, a in points] for points in series],
                keys=names, title=f"Robust accuracy vs eps ({norm}, {dataset})", xname=f"eps ({norm})")
            plots[key] = names
        self._run.log(media)
        return {"rows": len(rows), "plots": plots}

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


__all__ = [
    "WANDB_MODES",
    "WandbSink",
    "has_wandb_api_key",
    "history_steps",
    "perturbation_grid",
    "resolve_wandb_mode",
    "summary_values",
    "sweep_line_name",
]
