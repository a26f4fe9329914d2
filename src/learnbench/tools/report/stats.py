"""Numbers per group: each metric's mean, sample std (ddof=1) and n over the finished runs, and which
mean is best in each (data, model) block."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from learnbench.metric_direction import direction
from learnbench.results import DIVERGED, FAILED
from learnbench.tools.report.common import as_number
from learnbench.tools.report.grouping import group_records, grouping_keys

DEFAULT_METRIC_CHOICES = ("test/acc", "test/loss", "test/mse")
FALLBACK_METRICS = ("val/acc", "val/loss", "val/mse")


def metric_value(record: dict, name: str):
    """'best:val/acc' from metrics.best, 'test/acc' from metrics.final, 'wall_time_s' from the record."""
    metrics = record.get("metrics") or {}
    if name.startswith("best:"):
        value = (metrics.get("best") or {}).get(name[5:])
    elif "/" in name:
        value = (metrics.get("final") or {}).get(name)
    else:
        value = record.get(name)
    value = as_number(value)
    return value if value is not None and math.isfinite(value) else None


def default_metrics(records: list[dict]) -> list[str]:
    """test/acc + test/loss for classification, test/mse for reconstruction: whichever runs have."""
    present = {k for r in records for k in ((r.get("metrics") or {}).get("final") or {})}
    for candidates in (DEFAULT_METRIC_CHOICES, FALLBACK_METRICS):
        chosen = [m for m in candidates if m in present]
        if "test/acc" not in present and "test/mse" in present and "test/loss" in chosen:
            chosen.remove("test/loss")  # an autoencoder's loss is its MSE
        if "val/acc" not in present and "val/mse" in present and "val/loss" in chosen:
            chosen.remove("val/loss")
        if chosen:
            return chosen
    return ["test/acc", "test/loss"]


@dataclass
class Stat:
    mean: float | None
    std: float | None  # sample std (ddof=1); None for n < 2
    n: int
    note: str | None = None  # 'diverged' / 'failed' when no run finished
    best: bool = False


def summarise(values: list[float]) -> Stat:
    if not values:
        return Stat(None, None, 0)
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


@dataclass
class Table:
    group_columns: list[str]
    metric_columns: list[str]
    rows: list[dict]  # {"group": tuple, "n": int, "diverged": int, "failed": int, "stats": [Stat]}
    digits: list[int]


def build_table(records: list[dict], metrics: list[str], error: bool = False, digits: int | None = None) -> Table:
    keys = grouping_keys(records)
    groups = group_records(records, keys)
    columns, scale = [], []
    for metric in metrics:
        as_error = error and metric.rsplit("/", 1)[-1] == "acc"
        columns.append(metric[: -len("acc")] + "err %" if as_error else metric)
        scale.append(as_error)
    rows = []
    for group in groups:
        stats = []
        for metric, as_error in zip(metrics, scale):
            values = [metric_value(r, metric) for r in group.ok]
            values = [100.0 * (1.0 - v) if as_error else v for v in values if v is not None]
            stat = summarise(values)
            if not group.ok:
                stat.note = "/".join(s for s in (DIVERGED, FAILED) if group.count(s)) or "no runs"
            stats.append(stat)
        rows.append({"group": group.key, "n": len(group.ok), "diverged": group.count(DIVERGED),
                     "failed": group.count(FAILED), "stats": stats})
    places = [digits if digits is not None else (2 if s else 4) for s in scale]
    table = Table(keys, columns, rows, places)
    mark_best(table)
    return table


def mark_best(table: Table) -> None:
    """Per metric column and per (data, model) block, the best mean as displayed (ties all count)."""
    block_of = [i for i, k in enumerate(table.group_columns) if k in ("data", "model")]
    for j, column in enumerate(table.metric_columns):
        sign = direction(column)
        if not sign:
            continue
        blocks: dict[tuple, list] = {}
        for row in table.rows:
            stat = row["stats"][j]
            if stat.mean is not None:
                blocks.setdefault(tuple(row["group"][i] for i in block_of), []).append(stat)
        for stats in blocks.values():
            if len(stats) < 2:
                continue
            rounded = [round(s.mean, table.digits[j]) for s in stats]
            target = max(rounded) if sign > 0 else min(rounded)
            for stat, value in zip(stats, rounded):
                stat.best = value == target
