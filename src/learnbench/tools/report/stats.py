"""Numbers per group: each metric's mean, sample std (ddof=1) and n over the finished runs, and which
mean is best in each (data, model) block."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from learnbench.budget import budget_of, describe
from learnbench.metric_direction import direction
from learnbench.results import DIVERGED, FAILED
from learnbench.tools.report.common import DASH, as_number, show_value
from learnbench.tools.report.grouping import Group, group_records, grouping_keys, settings_keys, settings_of

DEFAULT_METRIC_CHOICES = ("test/acc", "test/loss", "test/mse")
FALLBACK_METRICS = ("val/acc", "val/loss", "val/mse")


def metric_value(record: dict, name: str):
    """'best:val/acc' from metrics.best, 'test/acc' from metrics.final, 'wall_time_s' from the record, a dotted
    name from inside it ('compute.train_forward_equivalents', 'resources.peak_rss_mb')."""
    metrics = record.get("metrics") or {}
    if name.startswith("best:"):
        value = (metrics.get("best") or {}).get(name[5:])
    elif "/" in name:
        value = (metrics.get("final") or {}).get(name)
    else:
        value = record
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
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
    # {"group": tuple, "settings": str, "epochs": str, "steps": str, "n": int, "diverged": int, "failed": int,
    #  "stats": [Stat]}
    rows: list[dict]
    digits: list[int]
    has_settings: bool = False  # some setting differs between rows besides the group columns: show the cell
    notes: list[str] = field(default_factory=list)  # unequal budgets between rows of a block, said under the table


def build_table(records: list[dict], metrics: list[str], error: bool = False, digits: int | None = None) -> Table:
    keys = grouping_keys(records)
    groups = group_records(records, keys)
    columns, scale = [], []
    for metric in metrics:
        as_error = error and metric.rsplit("/", 1)[-1] == "acc"
        columns.append(metric[: -len("acc")] + "err %" if as_error else metric)
        scale.append(as_error)
    settings = settings_keys(records, keys)
    labels = setting_labels(settings)
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
        runs = group.ok or group.runs  # what finished runs trained; a row with none says what its runs got to
        rows.append({"group": group.key, "settings": settings_cell(runs[0], settings, labels),
                     "epochs": span(r.get("epochs") for r in runs), "steps": span(r.get("steps") for r in runs),
                     "n": len(group.ok), "diverged": group.count(DIVERGED), "failed": group.count(FAILED), "stats": stats})
    places = [digits if digits is not None else 2 if as_error else whole_numbers(metric, rows, j)
              for j, (metric, as_error) in enumerate(zip(metrics, scale))]
    table = Table(keys, columns, rows, places, has_settings=bool(settings), notes=unequal_budget_notes(keys, groups))
    mark_best(table)
    return table


def whole_numbers(metric: str, rows: list[dict], column: int) -> int:
    """Decimals of a column by default: 4, or none for a record field counted in thousands or more (FLOPs,
    forward-pass equivalents, MiB), where four decimals would be noise."""
    means = [abs(row["stats"][column].mean) for row in rows if row["stats"][column].mean is not None]
    return 0 if "/" not in metric and means and max(means) >= 1000 else 4


# ----------------------------------------------------------------------------- settings and budgets per row
def setting_labels(keys: list[str]) -> dict[str, str]:
    """A short label per settings key: its last part (lr, momentum, max_epochs) unless two keys share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: short if last.count(short) == 1 else k for k, short in zip(keys, last)}


def settings_cell(record: dict, keys: list[str], labels: dict[str, str]) -> str:
    """'lr=0.1, momentum=0.9, schedule=constant': the row's value of every setting that differs between rows."""
    values = settings_of(record, keys)
    return ", ".join(f"{labels[k]}={'none' if v is None else show_value(v)}" for k, v in values.items())


def span(values) -> str:
    """'100', or '60-100' where the runs of a row differ; a dash where none says."""
    known = sorted({int(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if not known:
        return DASH
    return str(known[0]) if len(known) == 1 else f"{known[0]}-{known[-1]}"


def trained_budget(record: dict) -> dict:
    """The run's budget (learnbench.budget) with the epochs it trained in place of the epochs it was given."""
    budget = budget_of(record.get("config") or {})
    if isinstance(record.get("epochs"), int) and record["epochs"] > 0:
        budget["max_epochs"] = record["epochs"]
    return budget


def unequal_budget_notes(keys: list[str], groups: list[Group]) -> list[str]:
    """One note per (data, model) block whose rows trained different budgets (epochs trained, step and batch limits,
    batch size, schedule). Rows with no finished run are left out: a diverged run stops early by design."""
    block_of = [i for i, k in enumerate(keys) if k in ("data", "model")]
    label_of = [i for i in range(len(keys)) if i not in block_of]
    blocks: dict[tuple, dict[str, list[str]]] = {}
    for group in groups:
        if not group.ok or not group.ok[0].get("config"):
            continue
        budgets = blocks.setdefault(tuple(group.key[i] for i in block_of), {})
        label = " ".join(show_value(group.key[i]) for i in label_of) or "all"
        budgets.setdefault(describe(trained_budget(group.ok[0])), []).append(label)
    notes = []
    for block, budgets in blocks.items():
        if len(budgets) > 1:
            where = ", ".join(map(show_value, block))
            rows = "; ".join(f"{', '.join(labels)}: {budget}" for budget, labels in budgets.items())
            notes.append(f"Unequal budgets between rows ({where}): {rows}")
    return notes


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
