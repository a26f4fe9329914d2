"""Paper tables from finished runs: `python -m learnbench.tools.report <run or multirun dirs...>`.

Reads every results.json under the given directories (or, with --wandb, the same records from the
W&B API), groups runs that differ only in their seed, and prints mean ± sample std (ddof=1) and n
per group as Markdown, LaTeX (booktabs) or CSV. Diverged and failed runs are counted per row and
left out of the means; a row with no finished run says so instead of showing numbers.

    python -m learnbench.tools.report logs/multiruns/2025-01-01 --metrics test/acc,test/loss
    python -m learnbench.tools.report logs/multiruns --format latex --error --out table.tex
    python -m learnbench.tools.report logs/multiruns --plots figures/
    python -m learnbench.tools.report logs/multiruns --at-compute 1e5 --at-seconds 30   # also at equal work
    python -m learnbench.tools.report --wandb my-entity/learnbench

A group is one value of (method, data, model) plus every config key that varies across the runs
and is not already fixed by those choices (say optimizer.lr in an lr sweep). Seeds, paths, loggers,
callbacks and anything pointing into a run's own directory never split groups.

So that an unequal comparison shows at a glance, every row also says
- `settings`: key=value for every config key that differs between the table's rows and is not a column,
  including those the method choice explains (a rule's tuned lr, momentum, epochs; the schedule as one
  `schedule=` entry), in reading order (optimiser, budget, clipping, model, the rule's options). A rule's
  own options (fa's `init`) are left out unless they differ between the runs that have them (np's and
  fg_a's `directions`). The column is left out when nothing differs.
- `epochs`, `steps`: the budget the row's finished runs trained (results.json's `epochs` and `steps`,
  optimiser steps: iPC's per-step updates count each); a range where its runs differ.
and where the rows of a (data, model) block trained different budgets (epochs trained, step and batch
limits, batch size, schedule: learnbench.budget), a note under the table (and on stderr) names each
row's budget.

Beside the table at equal epochs, `--at-compute FE` (training forward-pass equivalents, results.json's
`compute`), `--at-seconds S` (wall clock) and `--at-cpu-seconds S` each add a table of the curve metrics
(val/acc, val/loss, ...) read off every run's history at its last epoch within that budget (at_budget).

The parts, each importable alone: load (results.json files), wandb_source (the W&B API), grouping,
stats (means, stds, best cells), at_budget (tables at equal compute or seconds), render (Markdown, LaTeX,
CSV), cli (the command line; nothing imports it but __main__). learnbench.tools.plots draws from the same grouping.
"""

from learnbench.tools.report.at_budget import build_table_at
from learnbench.tools.report.grouping import Group, group_records, grouping_keys
from learnbench.tools.report.load import find_results, load_records
from learnbench.tools.report.render import RENDERERS, to_csv, to_latex, to_markdown
from learnbench.tools.report.stats import Stat, Table, build_table, default_metrics, metric_value
from learnbench.tools.report.wandb_source import fetch_wandb_records, history_from_wandb, record_from_wandb

__all__ = [
    "Group", "group_records", "grouping_keys", "find_results", "load_records", "RENDERERS", "to_csv", "to_latex",
    "to_markdown", "Stat", "Table", "build_table", "default_metrics", "metric_value", "fetch_wandb_records",
    "history_from_wandb", "record_from_wandb", "build_table_at",
]
