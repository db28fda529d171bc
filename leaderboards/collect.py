"""Turn stored run records into leaderboard entries: pick the eligible runs, group them, merge them.

A run is *eligible* when it finished and is a single-model cascade evaluation (``config.model``,
``config.dataset``, ``config.norm`` and a numeric ``metrics.robust_accuracy``).  Failed runs and
multi-domain min-max runs (their metrics hold ``asr_all``, not ``robust_accuracy``) are skipped.

Runs of the same (model, dataset, norm) are merged into one entry: at each eps the lowest robust
accuracy over the runs is kept (the strongest attack wins), and the provenance lists every run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from advbench.errors import ConfigError, StoreError
from advbench.leaderboards.schema import LeaderboardEntry, describe_validation_error, sort_key

logger = logging.getLogger(__name__)

ACCURACY_DIGITS = 6
"""Accuracies are rounded to this many decimals (float32 noise beyond it is not information)."""

_EPS_DIGITS = 10


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a real number (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def skip_reason(record: Mapping[str, Any]) -> str | None:
    """Why ``record`` cannot go on a leaderboard, or None when it can."""
    if (record.get("status") or "finished") != "finished":
        return f"status is {record.get('status')!r}"
    config, metrics = record.get("config"), record.get("metrics")
    if not isinstance(config, Mapping) or not isinstance(metrics, Mapping):
        return "the record has no config or metrics dict"
    if "asr_all" in metrics or "models" in config:
        return "multi-domain min-max run (its metrics are attack success rates over domains)"
    model = config.get("model")
    if not isinstance(model, Mapping) or not isinstance(model.get("name"), str) or not model.get("name"):
        return "config.model.name is missing: not a single-model evaluation run"
    for key in ("dataset", "norm"):
        if not isinstance(config.get(key), str):
            return f"config.{key} is missing"
    if _number(metrics.get("clean_accuracy")) is None:
        return "metrics.clean_accuracy is missing or not a number"
    if _number(metrics.get("robust_accuracy")) is None:
        return "metrics.robust_accuracy is missing or not a number"
    if not _attack_names(config):
        return "config.attacks names no attack"
    if _n_samples(record) is None:
        return "neither config.n_samples nor metrics.n is a positive integer"
    try:
        run_points(record)
    except ValueError as exc:
        return str(exc)
    return None


def _n_samples(record: Mapping[str, Any]) -> int | None:
    for value in (record["config"].get("n_samples"), record["metrics"].get("n")):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return None


def run_points(record: Mapping[str, Any]) -> dict[float, float]:
    """The run's robust accuracy per eps: the ``curve`` of a multi-eps run, the single point otherwise.

    Raises:
        ValueError: a curve point or the single eps is not a number.
    """
    metrics, config = record["metrics"], record["config"]
    curve = metrics.get("curve")
    points: dict[float, float] = {}
    if curve:
        for index, point in enumerate(curve):
            eps = _number(point.get("eps")) if isinstance(point, Mapping) else None
            acc = _number(point.get("robust_accuracy")) if isinstance(point, Mapping) else None
            if eps is None or acc is None:
                raise ValueError(f"metrics.curve[{index}] has no numeric eps and robust_accuracy")
            points[round(eps, _EPS_DIGITS)] = acc
        return points
    eps = _number(metrics.get("eps"))
    if eps is None:
        eps_list = config.get("eps")
        eps = _number(eps_list[-1]) if isinstance(eps_list, list) and eps_list else _number(eps_list)
    if eps is None:
        raise ValueError("neither metrics.eps, metrics.curve nor config.eps gives the eps evaluated")
    points[round(eps, _EPS_DIGITS)] = float(metrics["robust_accuracy"])
    return points


def _attack_names(config: Mapping[str, Any]) -> list[str]:
    names = []
    for attack in config.get("attacks") or []:
        name = attack.get("name") if isinstance(attack, Mapping) else attack
        if isinstance(name, str) and name:
            names.append(name)
    return names


def group_key(record: Mapping[str, Any]) -> tuple[str, str, str]:
    """(dataset, norm, model identity) of an eligible record; the identity is the sha256 or the name."""
    config = record["config"]
    model = config["model"]
    return (config["dataset"], config["norm"], model.get("sha256") or model["name"])


def merge_runs(records: list[Mapping[str, Any]]) -> LeaderboardEntry:
    """One entry from the eligible runs of one (model, dataset, norm).

    * curve: for every eps evaluated by any run, the minimum robust accuracy over the runs at that eps;
    * clean accuracy: from the run with the most samples (the newest on a tie);
    * n_samples: the smallest sample count of the runs (every number rests on at least that many);
    * identity, code version and date: from the newest run; attacks: all, in order of first use.

    Raises:
        ConfigError: ``records`` is empty or mixes models, datasets or norms.
        pydantic.ValidationError: the merged numbers break the schema (e.g. an accuracy above 1).
    """
    if not records:
        raise ConfigError("merge_runs needs at least one run record")
    keys = {group_key(r) for r in records}
    if len(keys) != 1:
        raise ConfigError(f"merge_runs got runs of several (dataset, norm, model) groups: {sorted(keys)}")
    ordered = sorted(records, key=lambda r: (str(r.get("created_at") or ""), str(r["config_hash"])))
    newest = ordered[-1]
    best: dict[float, float] = {}
    for record in ordered:
        for eps, acc in run_points(record).items():
            best[eps] = min(acc, best.get(eps, math.inf))
    curve = [{"eps": eps, "robust_accuracy": round(best[eps], ACCURACY_DIGITS)} for eps in sorted(best)]
    sizes = [_n_samples(r) or 0 for r in ordered]
    if len(set(sizes)) > 1:
        logger.warning("merging runs of %s with different sample counts %s", group_key(newest), sorted(set(sizes)))
    clean_run = max(enumerate(ordered), key=lambda item: (sizes[item[0]], item[0]))[1]
    attacks: list[str] = []
    for record in ordered:
        attacks += [a for a in _attack_names(record["config"]) if a not in attacks]
    model = newest["config"]["model"]
    parent = next((r["config"]["model"] for r in reversed(ordered) if r["config"]["model"].get("parent_sha256")), {})
    ratio = _number(parent.get("compression_ratio"))
    return LeaderboardEntry(
        model=model["name"],
        model_sha256=model.get("sha256"),
        parent_sha256=parent.get("parent_sha256"),
        compression_ratio=None if ratio is None else round(ratio, ACCURACY_DIGITS),
        dataset=newest["config"]["dataset"],
        norm=newest["config"]["norm"],
        clean_accuracy=round(float(clean_run["metrics"]["clean_accuracy"]), ACCURACY_DIGITS),
        robust_accuracy=curve[-1]["robust_accuracy"],
        eps=curve[-1]["eps"],
        curve=curve,
        n_samples=min(sizes),
        config_hashes=sorted({str(r["config_hash"]) for r in ordered}),
        code_version=newest.get("code_version"),
        date=str(newest.get("created_at") or ""),
        attacks=attacks,
    )


def entries_from_runs(records: Iterable[Mapping[str, Any]]) -> list[LeaderboardEntry]:
    """Leaderboard entries from run records (ineligible ones are skipped and logged), in a stable order."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        reason = skip_reason(record)
        if reason is not None:
            logger.info("run %s skipped: %s", str(record.get("config_hash", "?"))[:12], reason)
            continue
        groups.setdefault(group_key(record), []).append(record)
    entries = []
    for key, runs in groups.items():
        try:
            entries.append(merge_runs(runs))
        except ValidationError as exc:
            hashes = ", ".join(sorted(str(r["config_hash"])[:12] for r in runs))
            raise StoreError(
                f"the stored runs {hashes} of model {key[2][:16]} on {key[0]} ({key[1]}) do not make a valid "
                f"leaderboard entry: {describe_validation_error(exc)}; "
                "fix or delete these runs (see `advbench results show HASH`)"
            ) from exc
    return sorted(entries, key=sort_key)


__all__ = ["entries_from_runs", "merge_runs", "run_points", "skip_reason"]
