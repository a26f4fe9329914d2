"""Tables at an equal budget of work, beside the table at equal epochs: each run's metric read off its logged
curve (results.json's `history`) at a budget of training forward-pass equivalents (`--at-compute`), of seconds
(`--at-seconds`) or of CPU seconds (`--at-cpu-seconds`).

Where a run stands at budget b: its last evaluated epoch whose running total (the history's
`train_forward_equivalents`, learnbench.callbacks.ComputeMeter, or `time`, the wall-clock seconds since fit start,
validation included) is at most b: the model as it was when the budget ran out, measured, not interpolated
between epochs. So the budget is met from below, to within one epoch's work: the table shows what each row used
(`<axis> used`). A run whose first epoch already costs more has no value there ("over budget"); a run that ended
before the budget shows its last epoch, and a note under the table names its row (it trained less than the others).
"""

from __future__ import annotations

import math

from learnbench.results import DIVERGED, FAILED
from learnbench.tools.report.grouping import group_records, grouping_keys, settings_keys
from learnbench.tools.report.stats import Table, mark_best, setting_labels, settings_cell, span, summarise

# axis name -> (history key, what the budget counts, the "used" column's decimals)
AXES = {
    "compute": ("train_forward_equivalents", "training forward-pass equivalents (one forward pass of the model on one example)", 0),
    "seconds": ("time", "seconds of training (wall clock since fit start, validation included)", 1),
    "cpu seconds": ("cpu_time", "CPU seconds of training (this process since fit start, validation included)", 1),
}
HISTORY_METRICS = (("val/acc", "val/loss"), ("val/mse",), ("val/loss",), ("train/loss",))
OVER_BUDGET = "over budget"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def history_metrics(records: list[dict], wanted: list[str] | None = None) -> list[str]:
    """The curve metrics to read: those of `wanted` that the histories hold, else val/acc + val/loss, val/mse, ..."""
    present = {k for r in records for entry in r.get("history") or [] for k in entry}
    chosen = [m for m in wanted or [] if m in present]
    if chosen:
        return chosen
    return next(([m for m in option if m in present] for option in HISTORY_METRICS if option[0] in present), [])


def entry_at(record: dict, axis_key: str, budget: float) -> tuple[dict | None, bool]:
    """(the run's last history entry with axis_key <= budget, or None; whether its history stops short of the budget).
    Entries without a finite axis_key (a run that counted nothing) are skipped."""
    history = [e for e in record.get("history") or [] if _finite(e.get(axis_key))]
    within = [e for e in history if e[axis_key] <= budget]
    ended_short = bool(history) and history[-1][axis_key] < budget
    return (within[-1] if within else None), ended_short


def build_table_at(records: list[dict], axis: str, budget: float, metrics: list[str] | None = None, digits: int | None = None) -> Table:
    """The table of `metrics` (curve metrics, history_metrics) at `budget` on `axis` (AXES), grouped as the
    table at equal epochs, plus the axis value each row reached; its `epochs` and `steps` are where each row stood."""
    axis_key, _, used_places = AXES[axis]
    metrics = history_metrics(records, metrics)
    keys = grouping_keys(records)
    settings = settings_keys(records, keys)
    labels = setting_labels(settings)
    rows, short = [], []
    for group in group_records(records, keys):
        at = [(r, *entry_at(r, axis_key, budget)) for r in group.ok]
        entries = [e for _, e, _ in at if e is not None]
        stats = []
        for metric in [*metrics, axis_key]:
            stat = summarise([float(e[metric]) for e in entries if _finite(e.get(metric))])
            if not group.ok:
                stat.note = "/".join(s for s in (DIVERGED, FAILED) if group.count(s)) or "no runs"
            elif not entries:
                stat.note = OVER_BUDGET if any(r.get("history") for r in group.ok) else "no curve"
            stats.append(stat)
        if any(ended for _, _, ended in at):
            short.append(" ".join(str(v) for v in group.key if v is not None))
        runs = group.ok or group.runs
        rows.append({"group": group.key, "settings": settings_cell(runs[0], settings, labels),
                     "epochs": span(e.get("epoch") for e in entries), "steps": span(e.get("step") for e in entries),
                     "n": len(group.ok), "diverged": group.count(DIVERGED), "failed": group.count(FAILED), "stats": stats})
    notes = []
    if short:
        notes.append(f"Ended before the budget: {'; '.join(short)} (the last epoch is shown: these rows trained less than {budget:g})")
    places = [4 if digits is None else digits] * len(metrics) + [used_places]
    table = Table(keys, [*metrics, f"{axis_key} used"], rows, places, has_settings=bool(settings), notes=notes)
    mark_best(table)
    return table


def title(axis: str, budget: float, metrics: list[str]) -> str:
    """One line above the table: what is held equal."""
    return (f"At equal {axis}: {', '.join(metrics)} at {budget:g} {AXES[axis][1]}; each run at its last epoch within "
            f"the budget (mean ± sample std over seeds)")
