"""The tables a run prints: read from records only (the store, ``--json`` and the CLI show the same numbers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table


def fmt(value: Any) -> str:
    """A table cell: floats to 4 digits, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _as_dict(record: Any) -> Mapping[str, Any]:
    return record.as_dict(samples=False) if hasattr(record, "as_dict") else record


def multidomain_table(record: Any) -> Table:
    """One row per eps: ASR over all domains, mean ASR, and per-domain ASR / mean learned weight."""
    record = _as_dict(record)
    metrics = record["metrics"]
    names = list(metrics["weights"])
    table = Table(title=f"{metrics['attack']} on {record['config']['model'].get('name')} (n={metrics['n']})")
    for col in ("eps", "ASR_all", "ASR_avg", *(f"{n} ASR / w" for n in names)):
        table.add_column(col, justify="right")
    for point in metrics.get("curve") or [metrics]:
        table.add_row(fmt(point["eps"]), fmt(point["asr_all"]), fmt(point["asr_avg"]),
                      *(f"{point['per_domain'][n]:.3f} / {point['weights'][n]:.3f}" for n in names))
    return table


def run_table(records: Sequence[Any], title: str = "robustness") -> Table:
    """One row per (model, eps) with clean and robust accuracy, ASR and cost."""
    table = Table(title=title)
    for col in ("model", "norm", "eps", "clean acc", "robust acc", "ASR", "broken by", "gradients", "queries",
                "time s"):
        table.add_column(col, justify="right" if col not in ("model", "broken by") else "left")
    for rec in map(_as_dict, records):
        metrics, cost = rec["metrics"], rec.get("cost", {})
        curve = metrics.get("curve") or [{"eps": metrics.get("eps"), "robust_accuracy": metrics["robust_accuracy"],
                                          "attack_success_rate": metrics["attack_success_rate"],
                                          "per_attack": metrics.get("per_attack", {})}]
        for i, point in enumerate(curve):
            broken = ", ".join(f"{k}:{v['broken']}" for k, v in point.get("per_attack", {}).items())
            table.add_row(rec["config"]["model"].get("name", "?"), rec["config"]["norm"], fmt(point["eps"]),
                          fmt(metrics["clean_accuracy"]), fmt(point["robust_accuracy"]),
                          fmt(point["attack_success_rate"]), broken,
                          fmt(cost.get("gradients")) if i == 0 else "", fmt(cost.get("queries")) if i == 0 else "",
                          fmt(cost.get("wall_time_s")) if i == 0 else "")
    return table


def run_tables(records: Sequence[Any], title: str = "robustness") -> list[Table]:
    """The min-max tables of min-max records, then one cascade table of the rest."""
    records = [_as_dict(r) for r in records]
    tables = [multidomain_table(r) for r in records if "asr_all" in r["metrics"]]
    rest = [r for r in records if "asr_all" not in r["metrics"]]
    if rest:
        tables.append(run_table(rest, title))
    return tables
