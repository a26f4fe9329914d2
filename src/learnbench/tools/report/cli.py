"""The command line: `python -m learnbench.tools.report <run or multirun dirs...> [--format ...]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from learnbench.results import OK
from learnbench.tools.report.at_budget import AXES, build_table_at, title
from learnbench.tools.report.common import warn
from learnbench.tools.report.load import load_records
from learnbench.tools.report.render import RENDERERS, SUFFIX_FORMATS
from learnbench.tools.report.stats import build_table, default_metrics
from learnbench.tools.report.wandb_source import fetch_wandb_records


def _list_unfinished(records: list[dict], limit: int = 10) -> None:
    """Name the diverged and failed runs (and why) on stderr, so they can be looked at or rerun."""
    unfinished = [r for r in records if r.get("status") != OK]
    for record in unfinished[:limit]:
        warn(f"{record.get('status') or 'unfinished'}: {record.get('_source')}: {record.get('message') or ''}")
    if len(unfinished) > limit:
        warn(f"... and {len(unfinished) - limit} more diverged/failed runs")


def _leave_out_refused(records: list[dict], limit: int = 10) -> list[dict]:
    """Runs refused before any work (a bad option, a missing data file: `refused` in results.json) trained
    nothing; in a table their settings would only add columns. Left out, and said so, with why."""
    refused = [r for r in records if r.get("refused")]
    if refused:
        warn(f"left out {len(refused)} run(s) refused before any work (each results.json says why):")
        for record in refused[:limit]:
            warn(f"  refused: {record.get('_source')}: {record.get('message') or ''}")
        if len(refused) > limit:
            warn(f"  ... and {len(refused) - limit} more refused runs")
    return [r for r in records if not r.get("refused")]


def _draw_plots(records: list[dict], out_dir: Path, band: str) -> None:
    """Learning curves into out_dir; without any finished validation epoch there is nothing to draw: say so
    rather than leave an empty folder."""
    from learnbench.tools.plots import plot_learning_curves

    curves = [r for r in records if r.get("status") == OK and any(
        k.startswith("val/") for entry in r.get("history") or [] for k in entry)]
    if not curves:
        warn(f"no learning curves to draw: no finished run completed a validation epoch (their history is empty); "
             f"nothing written to {out_dir}")
        return
    written = plot_learning_curves(records, out_dir, band=band)
    for path in written:
        warn(f"wrote {path}")
    if not written:
        warn(f"no figure drawn from {len(curves)} runs; nothing written to {out_dir}")


TITLE_PREFIX = {"markdown": "", "latex": "% ", "csv": "# "}


def _tables_at_budgets(records: list[dict], args: argparse.Namespace, fmt: str) -> str:
    """The tables at equal compute / seconds (learnbench.tools.report.at_budget), each under a line saying what is
    held equal; empty without --at-compute / --at-seconds."""
    wanted = args.metrics.split(",") if args.metrics else None
    text = ""
    for axis, budgets in (("compute", args.at_compute), ("seconds", args.at_seconds), ("cpu seconds", args.at_cpu_seconds)):
        for budget in budgets or []:
            table = build_table_at(records, axis, budget, wanted, args.digits)
            if not table.metric_columns[:-1]:
                warn(f"no table at {budget:g} {axis}: the runs' histories hold no curve metric (val/*, train/loss)")
                continue
            if not any(s.mean is not None for row in table.rows for s in row["stats"][-1:]):
                warn(f"at {budget:g} {axis}: no run has a logged {AXES[axis][0]} within the budget")
            for note in table.notes:
                warn(note)
            line = title(axis, budget, table.metric_columns[:-1])
            text += f"\n{TITLE_PREFIX[fmt]}{f'**{line}**' if fmt == 'markdown' else line}\n\n" + RENDERERS[fmt](table)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m learnbench.tools.report",
        description="Mean ± sample std over seeds of finished learnbench runs, as a paper table.",
    )
    parser.add_argument("dirs", nargs="*", help="run or multirun directories (searched for results.json)")
    parser.add_argument("--metrics", help="comma-separated, e.g. test/acc,test/loss; 'best:val/acc' reads the best "
                        "value, a plain name (wall_time_s) a record field. Default: test/acc,test/loss or test/mse")
    parser.add_argument("--format", choices=sorted(RENDERERS), help="default: from --out's suffix, else markdown")
    parser.add_argument("--out", type=Path, help="write the table here instead of stdout")
    parser.add_argument("--error", action="store_true", help="show */acc as error in percent: 100 (1 - acc)")
    parser.add_argument("--digits", type=int, help="decimal places (default 4, 2 for error %%)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from the W&B API instead (online)")
    parser.add_argument("--wandb-filters", type=json.loads, help='a W&B (MongoDB-style) filter as JSON, e.g. '
                        '\'{"tags": "paper"}\'')
    parser.add_argument("--at-compute", type=float, action="append", metavar="FE", help="also a table at this many "
                        "training forward-pass equivalents (one forward pass of the model on one example), each run's "
                        "curve read at its last epoch within it; repeat for several budgets")
    parser.add_argument("--at-seconds", type=float, action="append", metavar="S", help="also a table at this many "
                        "seconds of training (wall clock since fit start), likewise")
    parser.add_argument("--at-cpu-seconds", type=float, action="append", metavar="S", help="also a table at this many "
                        "CPU seconds of training (this process, since fit start: not inflated by other load), likewise")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="also draw learning curves into DIR (PNG and PDF)")
    parser.add_argument("--band", choices=("minmax", "std"), default="minmax", help="spread drawn around the mean curve")
    args = parser.parse_args(argv)
    if not args.dirs and not args.wandb:
        parser.error("give run/multirun directories or --wandb ENTITY/PROJECT")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    records = load_records(args.dirs) if args.dirs else []
    if args.wandb:
        try:
            records += fetch_wandb_records(args.wandb, args.wandb_filters, with_history=args.plots is not None)
        except Exception as error:  # no network, no login, no such project: say which, without a traceback
            warn(f"cannot read W&B runs of {args.wandb}: {type(error).__name__}: {error}")
            return 2
    if not records:
        warn("no results.json found" + (f" under {', '.join(args.dirs)}" if args.dirs else ""))
        return 1
    records = _leave_out_refused(records)
    if not records:
        warn("no run to report: every run was refused before any work")
        return 1
    metrics = args.metrics.split(",") if args.metrics else default_metrics(records)
    table = build_table(records, metrics, error=args.error, digits=args.digits)
    fmt = args.format or SUFFIX_FORMATS.get(args.out.suffix if args.out else "", "markdown")
    text = RENDERERS[fmt](table)
    text += _tables_at_budgets(records, args, fmt)
    not_ok = sum(r["diverged"] + r["failed"] for r in table.rows)
    _list_unfinished(records)
    for note in table.notes:
        warn(note)
    warn(f"{len(records)} runs in {len(table.rows)} groups, grouped by {', '.join(table.group_columns)}; "
         f"{not_ok} diverged/failed (counted, not averaged)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        warn(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    if args.plots:
        _draw_plots(records, args.plots, args.band)
    return 0
