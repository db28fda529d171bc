"""Turn stored run records into leaderboard entries: pick the eligible runs, split them by eps, choose.

A run is *eligible* when it finished and is a single-model cascade evaluation (``config.model``,
``config.dataset``, ``config.norm``, the attack suite and a numeric ``metrics.clean_accuracy`` and
``metrics.robust_accuracy``).  Failed runs and multi-domain min-max runs (their metrics hold
``asr_all``) are skipped.

An eligible run gives one *candidate* per eps it evaluated (each point of a curve run).  Candidates
with the same identity, :attr:`LeaderboardEntry.key` = (dataset, norm, eps, model, defense, attack
suite), compete for one entry:

1. the sample set with the most samples wins (the newest run breaks a tie), so every entry rests on
   one sample set and as many samples as were ever evaluated;
2. among that sample set's runs, the lowest robust accuracy wins (the strongest attack
   hyperparameters); the newest run breaks a tie.

The entry's clean and robust accuracy both come from the winning run.  Runs behind different
defenses, with different attack suites or at different eps are never merged.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from advbench.errors import StoreError
from advbench.leaderboards.schema import EPS_DIGITS, LeaderboardEntry, describe_validation_error, sort_key
from advbench.records import attack_suite, canonical_json, format_eps

logger = logging.getLogger(__name__)

ACCURACY_DIGITS = 6
"""Accuracies are rounded to this many decimals (float32 noise beyond it is not information)."""

SAMPLE_SET_DIGITS = 16
"""Hex digits of the sample-set digest."""


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
    if model.get("weights") == "random":
        return "the model has random weights (?random=true): not a result to rank"
    for key in ("dataset", "norm"):
        if not isinstance(config.get(key), str):
            return f"config.{key} is missing"
    if _number(metrics.get("clean_accuracy")) is None:
        return "metrics.clean_accuracy is missing or not a number"
    if _number(metrics.get("robust_accuracy")) is None:
        return "metrics.robust_accuracy is missing or not a number"
    if not attack_suite(config):
        return "config.attacks names no attack"
    defense = config.get("defense")
    if defense is not None and (not isinstance(defense, Mapping) or not defense.get("name")):
        return "config.defense is not a dict with a name"
    if n_samples(record) is None:
        return "neither config.n_samples nor metrics.n is a positive integer"
    try:
        run_points(record)
    except ValueError as exc:
        return str(exc)
    return None


def n_samples(record: Mapping[str, Any]) -> int | None:
    """The number of evaluated samples: ``config.n_samples`` (else ``metrics.n``)."""
    for value in (record["config"].get("n_samples"), record["metrics"].get("n")):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return None


def sample_set_id(record: Mapping[str, Any]) -> str:
    """A digest of the samples a run evaluated: data set, its content and split, the selection, n.

    Two runs with the same digest measured the same images; the attack seed and hyperparameters do
    not enter it.  The path of the data (``config.data.spec``) does not either when the data's
    content fingerprint is known.
    """
    config = record["config"]
    data = config.get("data")
    data = dict(data) if isinstance(data, Mapping) else {}
    if data.get("fingerprint"):
        data.pop("spec", None)
    basis = {
        "dataset": None if data.get("fingerprint") else config.get("dataset"),
        "data": data,
        "split": config.get("split"),
        "split_seed": config.get("split_seed"),
        "n": n_samples(record),
    }
    return hashlib.sha256(canonical_json(basis).encode()).hexdigest()[:SAMPLE_SET_DIGITS]


def run_points(record: Mapping[str, Any]) -> list[dict[str, float | None]]:
    """The run's numbers per eps: ``[{"eps", "robust_accuracy", "attack_success_rate"}, ...]``.

    The ``curve`` of a multi-eps run, the single point otherwise (at ``metrics.eps``, else the
    config's only eps).

    Raises:
        ValueError: a curve point or the single eps is not a number, or the eps is ambiguous.
    """
    metrics, config = record["metrics"], record["config"]
    curve = metrics.get("curve")
    points = []
    if curve:
        for index, point in enumerate(curve):
            eps = _number(point.get("eps")) if isinstance(point, Mapping) else None
            acc = _number(point.get("robust_accuracy")) if isinstance(point, Mapping) else None
            if eps is None or acc is None:
                raise ValueError(f"metrics.curve[{index}] has no numeric eps and robust_accuracy")
            points.append({"eps": eps, "robust_accuracy": acc,
                           "attack_success_rate": _number(point.get("attack_success_rate"))})
        return points
    eps = _number(metrics.get("eps"))
    if eps is None:
        listed = config.get("eps")
        if isinstance(listed, list) and len(listed) > 1:
            raise ValueError(f"config.eps lists {len(listed)} eps but metrics has no curve: the eps is ambiguous")
        eps = _number(listed[0]) if isinstance(listed, list) and listed else _number(listed)
    if eps is None:
        raise ValueError("neither metrics.eps, metrics.curve nor config.eps gives the eps evaluated")
    return [{"eps": eps, "robust_accuracy": float(metrics["robust_accuracy"]),
             "attack_success_rate": _number(metrics.get("attack_success_rate"))}]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, ACCURACY_DIGITS)


def model_key(model: Mapping[str, Any]) -> str | None:
    """The model's identity hash: an advbench checkpoint's file SHA-256; for a model spec (``timm:...``,
    ``ARCH?weights=``, int8, ...), a SHA-256 over everything that defines the victim (weights hash, arch,
    normalization, dtype, quantization, gradient source), so two files named ``best.pt`` or an int8 model and
    its float parent are never one entry."""
    if isinstance(model.get("sha256"), str):
        return model["sha256"]
    defining = {k: v for k, v in model.items() if k not in ("path", "spec", "name")}
    if not isinstance(defining.get("weights"), Mapping):
        return None
    return hashlib.sha256(canonical_json(defining).encode()).hexdigest()


def candidates(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The entry data of an eligible run, one per eps it evaluated (not yet validated)."""
    config, metrics = record["config"], record["metrics"]
    model = config["model"]
    ratio = _number(model.get("compression_ratio"))
    defense = config.get("defense")
    base = {
        "model": model["name"],
        "model_sha256": model_key(model),
        "parent_sha256": model.get("parent_sha256"),
        "compression_ratio": None if ratio is None or not model.get("parent_sha256") else _rounded(ratio),
        "compression_family": model.get("family") if model.get("parent_sha256") else None,
        "defense": None if defense is None else {
            "name": defense["name"],
            "params": dict(defense.get("params") or {}),
            "differentiable": defense.get("differentiable"),
            "bpda": defense.get("bpda"),
        },
        "dataset": config["dataset"],
        "norm": config["norm"],
        "attacks": attack_suite(config),
        "clean_accuracy": _rounded(float(metrics["clean_accuracy"])),
        "n_samples": n_samples(record),
        "sample_set": sample_set_id(record),
        "config_hash": str(record["config_hash"]),
        "code_version": record.get("code_version"),
        "date": str(record.get("created_at") or ""),
    }
    out = []
    for point in run_points(record):
        asr = point["attack_success_rate"]
        out.append({
            **base,
            "eps": round(point["eps"], EPS_DIGITS),
            "robust_accuracy": _rounded(point["robust_accuracy"]),
            "attack_success_rate": _rounded(asr) if asr is not None and 0.0 <= asr <= 1.0 else None,
        })
    return out


def _identity(data: Mapping[str, Any]) -> tuple[Any, ...]:
    """:attr:`LeaderboardEntry.key` of unvalidated entry data."""
    defense = "none" if data["defense"] is None else canonical_json(data["defense"])
    return (data["dataset"], data["norm"], data["eps"], data["model_sha256"] or data["model"], defense,
            "+".join(data["attacks"]))


def choose(competing: list[dict[str, Any]]) -> dict[str, Any]:
    """The winning candidate of one identity: the largest sample set, then the lowest robust accuracy."""
    by_set: dict[str, list[dict[str, Any]]] = {}
    for data in competing:
        by_set.setdefault(data["sample_set"], []).append(data)

    def set_rank(item: tuple[str, list[dict[str, Any]]]) -> tuple[int, str, str]:
        members = item[1]
        return (members[0]["n_samples"], max(m["date"] for m in members), item[0])

    _, members = max(by_set.items(), key=set_rank)
    if len(by_set) > 1:
        logger.info("%s at eps %s: %d sample sets; using the one with %d samples", competing[0]["model"],
                    format_eps(competing[0]["eps"]), len(by_set), members[0]["n_samples"])
    newest_first = sorted(members, key=lambda d: (d["date"], d["config_hash"]), reverse=True)
    return min(newest_first, key=lambda d: d["robust_accuracy"])  # min keeps the first (newest) of a tie


def entries_from_runs(records: Iterable[Mapping[str, Any]]) -> list[LeaderboardEntry]:
    """Leaderboard entries from run records (ineligible ones are skipped and logged), in a stable order.

    Raises:
        StoreError: a chosen run does not make a valid entry (e.g. an accuracy above 1); the
            message names the run.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for record in records:
        reason = skip_reason(record)
        if reason is not None:
            logger.info("run %s skipped: %s", str(record.get("config_hash", "?"))[:12], reason)
            continue
        for data in candidates(record):
            groups.setdefault(_identity(data), []).append(data)
    entries = []
    for competing in groups.values():
        data = choose(competing)
        try:
            entries.append(LeaderboardEntry.model_validate(data))
        except ValidationError as exc:
            raise StoreError(
                f"the stored run {data['config_hash'][:12]} of model {data['model']} on {data['dataset']} "
                f"({data['norm']}, eps {format_eps(data['eps'])}) does not make a valid leaderboard entry: "
                f"{describe_validation_error(exc)}; fix or delete this run "
                f"(see `advbench results show {data['config_hash'][:12]}`)"
            ) from exc
    return sorted(entries, key=sort_key)


__all__ = ["candidates", "choose", "entries_from_runs", "n_samples", "run_points", "sample_set_id", "skip_reason"]
