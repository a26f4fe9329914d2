"""Paper tables from finished runs: `python -m learnbench.report <run or multirun dirs...>`.

Reads every results.json under the given directories (or, with --wandb, the same records from the
W&B API), groups runs that differ only in their seed, and prints mean ± sample std (ddof=1) and n
per group as Markdown, LaTeX (booktabs) or CSV. Diverged and failed runs are counted per row and
left out of the means; a row with no finished run says so instead of showing numbers.

    python -m learnbench.report logs/multiruns/2025-01-01 --metrics test/acc,test/loss
    python -m learnbench.report logs/multiruns --format latex --error --out table.tex
    python -m learnbench.report logs/multiruns --plots figures/
    python -m learnbench.report --wandb my-entity/learnbench

A group is one value of (method, data, model) plus every config key that varies across the runs
and is not already fixed by those choices (say optimizer.lr in an lr sweep). Seeds, paths, loggers,
callbacks and anything pointing into a run's own directory never split groups.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from learnbench.results import DIVERGED, FAILED, OK, RESULTS_FILE

# Record fields that name the chosen config-group options; always shown: method, data, model.
CHOICE_KEYS = ("method", "data", "model", "optimizer", "experiment")
ALWAYS_SHOWN = ("method", "data", "model")
# Config keys (dotted, flattened) that never split groups: where things were written, how they
# were logged, and the seed itself (also as data.seed, which interpolates it).
# Keys that never make two runs different experiments (where they ran, how they logged).
IGNORED_PREFIXES = ("paths.", "hydra.", "logger.", "callbacks.", "trainer.default_root_dir", "choices.", "slurm.")
IGNORED_KEYS = {"ckpt_path", "tags", "output_dir", "optimized_metric"}
# Config groups chosen on the command line that never split groups (how a run was logged or stored).
IGNORED_GROUPS = {"logger", "callbacks", "paths", "hydra", "local"}
HIGHER_IS_BETTER = {"acc", "cos"}
LOWER_IS_BETTER = {"loss", "mse", "err", "error", "nll"}
DEFAULT_METRIC_CHOICES = ("test/acc", "test/loss", "test/mse")
FALLBACK_METRICS = ("val/acc", "val/loss", "val/mse")
DASH = "—"


def warn(message: str) -> None:
    print(f"learnbench.report: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------- loading
def find_results(paths: list[str | Path]) -> list[Path]:
    """Every results.json at or below the given paths (a path may also be a results.json itself)."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_file() and path.name == RESULTS_FILE:
            found[path.resolve()] = None
        elif path.is_dir():
            for hit in sorted(path.rglob(RESULTS_FILE)):
                found[hit.resolve()] = None
        else:
            warn(f"{path}: no such run directory or results.json")
    return list(found)


def load_records(paths: list[str | Path]) -> list[dict]:
    records = []
    for path in find_results(paths):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            warn(f"{path}: unreadable ({error}); skipped")
            continue
        record.setdefault("output_dir", str(path.parent))
        record["_source"] = str(path)
        records.append(record)
    return records


# ------------------------------------------------------------------------------------------ W&B
def _number(value):
    """A summary value as a float (W&B may hand back NaN as the string 'NaN'); None if not numeric."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "infinity", "-inf", "-infinity"):
        return float(value.strip().lower().replace("infinity", "inf"))
    return None


def _choices_from_name(group: str | None, name: str | None) -> dict:
    """The logger names runs '<method>-<data>-seed<k>' in group '<method>-<data>' (conf/logger/wandb.yaml)."""
    guess = {}
    match = re.fullmatch(r"(?P<method>[^-]+)-(?P<data>.+)-seed(?P<seed>\d+)", name or "")
    if match:
        guess = {"method": match["method"], "data": match["data"], "seed": int(match["seed"])}
    elif group and "-" in group:
        guess = dict(zip(("method", "data"), group.split("-", 1)))
    return guess


def _class_name(config: dict, key: str) -> str | None:
    target = (config.get(key) or {}).get("_target_") if isinstance(config.get(key), dict) else None
    return target.rsplit(".", 1)[-1] if target else None


def _history_from_wandb(rows) -> list[dict]:
    """Per-epoch entries like RunRecorder's from W&B history rows (Lightning logs a 0-based 'epoch')."""
    epochs: dict[int, dict] = {}
    for row in rows:
        if "epoch" not in row or not any(k.startswith(("val/", "train/", "align/")) for k in row):
            continue
        epoch = int(row["epoch"]) + 1
        entry = epochs.setdefault(epoch, {"epoch": epoch})
        for key, value in row.items():
            if key.startswith(("val/", "train/loss", "train/acc", "align/")) and _number(value) is not None:
                entry[key] = _number(value)
        if _number(row.get("trainer/global_step")) is not None:
            entry["step"] = int(row["trainer/global_step"])
        if _number(row.get("_runtime")) is not None:  # since the W&B run started, not since fit start
            entry["time"] = max(entry.get("time", 0.0), float(row["_runtime"]))
    return [epochs[k] for k in sorted(epochs)]


def record_from_wandb(run) -> dict | None:
    """One W&B public-API run (or anything with its attributes) as a results.json-like record.

    Uses run.config (the resolved Hydra config when the app logged it, optionally with a 'choices'
    dict), run.summary_metrics (last logged values) and run.state. Returns None for runs that are
    still running. Without a logged 'status', a finished run with no test metrics or a non-finite
    metric is taken as diverged: the app skips testing after divergence.
    """
    state = getattr(run, "state", None)
    if state in ("running", "pending", "preempting"):
        return None
    config = dict(getattr(run, "config", None) or {})
    summary = getattr(run, "summary_metrics", None)
    if summary is None:
        summary = dict(getattr(run, "summary", {}) or {})
    final = {k: _number(v) for k, v in summary.items() if "/" in k and not k.startswith("_") and _number(v) is not None}
    guess = _choices_from_name(getattr(run, "group", None), getattr(run, "name", None))
    choices = {**guess, **(config.get("choices") or {})}
    for key in CHOICE_KEYS:
        choices.setdefault(key, _class_name(config, key) if key in ("method", "model") else None)
    status, message = summary.get("status"), summary.get("message")
    if status is None:
        if state in ("failed", "crashed", "killed", "preempted"):
            status, message = FAILED, f"W&B state: {state}"
        elif any(not math.isfinite(v) for v in final.values()):
            status, message = DIVERGED, "a non-finite metric in the W&B summary"
        elif not any(k.startswith("test/") for k in final):
            status, message = DIVERGED, "no test metrics in the W&B summary (the app skips testing after divergence)"
        else:
            status = OK
    history = getattr(run, "_learnbench_history", None)
    return {
        **{key: choices.get(key) for key in CHOICE_KEYS},
        "seed": config.get("seed", guess.get("seed")),
        "status": status,
        "message": message,
        "metrics": {"final": {k: (v if math.isfinite(v) else None) for k, v in final.items()}, "best": {}},
        "history": history or [],
        "config": config,
        "started": getattr(run, "created_at", None),
        "output_dir": None,
        "wall_time_s": _number(summary.get("_runtime")),
        "_source": f"wandb:{'/'.join(getattr(run, 'path', []) or [])}" if getattr(run, "path", None) else f"wandb:{getattr(run, 'id', '?')}",
    }


def fetch_wandb_records(project: str, filters: dict | None = None, with_history: bool = False) -> list[dict]:
    """All runs of `entity/project` through wandb.Api (needs network and a login)."""
    import wandb

    records = []
    for run in wandb.Api(timeout=60).runs(project, filters=filters or {}):
        if with_history:
            run._learnbench_history = _history_from_wandb(run.scan_history())
        record = record_from_wandb(run)
        if record is None:
            warn(f"W&B run {run.id} is {run.state}; skipped")
        else:
            records.append(record)
    return records


# ---------------------------------------------------------------------------------------- grouping
def flatten(tree, prefix: str = "") -> dict:
    """Nested dicts as {'a.b.c': value}; lists become tuples so values can be compared and hashed."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out  # an empty section (scheduler: {}) adds no key
    if isinstance(tree, list):
        tree = tuple(json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for v in tree)
    return {prefix[:-1]: tree}


def _ignored(key: str) -> bool:
    return (
        key in IGNORED_KEYS
        or key.split(".", 1)[0] in IGNORED_GROUPS
        or key.startswith(IGNORED_PREFIXES)
        or key.rsplit(".", 1)[-1] in ("seed", "output_dir")
        or key.split(".", 1)[0].startswith("_")
    )


def _points_into_run_dir(value, record: dict) -> bool:
    out = record.get("output_dir")
    return bool(out) and isinstance(value, str) and str(out) in value


def record_choices(record: dict) -> dict:
    """The chosen option of each config group: the record's own fields, plus groups picked by an
    override such as `scheduler=cosine` or `debug=fast` (a name without dots whose config is a dict
    or is not in the config at all, unlike `seed=1`)."""
    choices = {}
    config = record.get("config") or {}
    for override in record.get("overrides") or []:
        name, sep, value = override.lstrip("+~").partition("=")
        if sep and "." not in name and "/" not in name and name not in IGNORED_GROUPS and (
            isinstance(config.get(name), dict) or name not in config
        ):
            choices[name] = value
    choices.update({k: record.get(k) for k in CHOICE_KEYS})
    return choices


def grouping_keys(records: list[dict]) -> list[str]:
    """Chosen config-group options shown as columns (method, data, model always; the others when
    they vary), then the varying config keys the choices do not explain."""
    chosen = [record_choices(r) for r in records]
    names = list(CHOICE_KEYS) + sorted({k for c in chosen for k in c} - set(CHOICE_KEYS))
    shown = [k for k in names if k in ALWAYS_SHOWN or len({c.get(k) for c in chosen}) > 1]
    flat = [flatten(r.get("config") or {}) for r in records]
    candidates = sorted({k for f in flat for k in f if not _ignored(k)})
    extra = []
    for key in candidates:
        values = [f.get(key, DASH) for f in flat]
        if len(set(values)) < 2:
            continue
        if any(_points_into_run_dir(v, r) for v, r in zip(values, records)):
            continue
        if all(v == r.get("seed") for v, r in zip(values, records) if v != DASH):
            continue  # an interpolated seed under another name
        by_choice: dict[tuple, set] = {}
        for value, choice in zip(values, chosen):
            by_choice.setdefault(tuple(choice.get(k) for k in names), set()).add(value)
        if any(len(v) > 1 for v in by_choice.values()):
            extra.append(key)
    return shown + extra


def group_value(record: dict, key: str):
    """A choice (method, scheduler, ...) or a dotted config key (a dotless one is a top-level scalar)."""
    choices = record_choices(record)
    if key in choices:
        return choices[key]
    return flatten(record.get("config") or {}).get(key)


def _sort_key(value):
    """None last, numbers numerically, text alphabetically; 'bp' (the reference) first."""
    if value is None:
        return (3, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (0 if value == "bp" else 2, 0, str(value))


@dataclass
class Group:
    key: tuple
    runs: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> list[dict]:
        return [r for r in self.runs if r.get("status") == OK]

    def count(self, status: str) -> int:
        if status == FAILED:  # anything not ok or diverged (an interrupted run has status null)
            return sum(r.get("status") not in (OK, DIVERGED) for r in self.runs)
        return sum(r.get("status") == status for r in self.runs)


def group_records(records: list[dict], keys: list[str]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for record in records:
        key = tuple(group_value(record, k) for k in keys)
        groups.setdefault(key, Group(key)).runs.append(record)
    for group in groups.values():
        group.runs = _one_run_per_seed(group)
    order = [keys.index(k) for k in ("data", "model", "method") if k in keys]
    order += [i for i in range(len(keys)) if i not in order]
    return sorted(groups.values(), key=lambda g: [_sort_key(g.key[i]) for i in order])


def _one_run_per_seed(group: Group) -> list[dict]:
    """A seed run twice with the same settings (a rerun) counts once: the latest run is kept."""
    by_seed: dict = {}
    for record in sorted(group.runs, key=lambda r: str(r.get("started") or "")):
        seed = record.get("seed")
        if seed is not None and seed in by_seed:
            warn(f"seed {seed} appears twice in group {group.key}: keeping {record.get('_source')}, "
                 f"dropping {by_seed[seed].get('_source')}")
        by_seed[seed if seed is not None else id(record)] = record
    return list(by_seed.values())


# ----------------------------------------------------------------------------------------- metrics
def metric_value(record: dict, name: str):
    """'best:val/acc' from metrics.best, 'test/acc' from metrics.final, 'wall_time_s' from the record."""
    metrics = record.get("metrics") or {}
    if name.startswith("best:"):
        value = (metrics.get("best") or {}).get(name[5:])
    elif "/" in name:
        value = (metrics.get("final") or {}).get(name)
    else:
        value = record.get(name)
    value = _number(value)
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


def direction(metric: str) -> int:
    """+1 where higher is better, -1 where lower is, 0 where neither is known."""
    last = metric.rsplit("/", 1)[-1].split(" ")[0]
    return 1 if last in HIGHER_IS_BETTER else -1 if last in LOWER_IS_BETTER else 0


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


# -------------------------------------------------------------------------------------- rendering
def _show(value) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(_show, value)) + "]"
    return str(value)


def _cell(stat: Stat, places: int, pm: str, runs: int) -> str:
    """'mean ± std'; '(n=k)' where fewer ok runs than the row's n reported this metric."""
    if stat.mean is None:
        return stat.note or DASH
    std = DASH if stat.std is None else f"{stat.std:.{places}f}"
    return f"{stat.mean:.{places}f}{pm}{std}" + (f" (n={stat.n})" if stat.n < runs else "")


def _status_cell(row: dict) -> str:
    return f"{row['diverged']}/{row['failed']}"


def to_markdown(table: Table) -> str:
    header = [*table.group_columns, "n", "diverged/failed", *table.metric_columns]
    align = ["---"] * len(table.group_columns) + ["---:"] * (2 + len(table.metric_columns))
    lines = [header, align]
    for row in table.rows:
        cells = [_show(v) for v in row["group"]] + [str(row["n"]), _status_cell(row)]
        for stat, places in zip(row["stats"], table.digits):
            text = _cell(stat, places, " ± ", row["n"])
            cells.append(f"**{text}**" if stat.best else text)
        lines.append(cells)
    return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", DASH: "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    header = [*table.group_columns, "$n$", "div./failed", *table.metric_columns]
    spec = "l" * len(table.group_columns) + "r" * (2 + len(table.metric_columns))
    lines = [
        "% mean $\\pm$ sample std over seeds; diverged/failed runs are counted, not averaged. Needs \\usepackage{booktabs}.",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(h if h.startswith("$") else latex_escape(h) for h in header) + " \\\\",
        "\\midrule",
    ]
    for row in table.rows:
        cells = [latex_escape(_show(v)) for v in row["group"]] + [str(row["n"]), _status_cell(row)]
        for stat, places in zip(row["stats"], table.digits):
            if stat.mean is None:
                cells.append(latex_escape(stat.note or DASH))
                continue
            body = _cell(stat, places, r" \pm ", row["n"]).replace(DASH, r"\mbox{--}")
            cells.append(f"$\\mathbf{{{body}}}$" if stat.best else f"${body}$")
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Machine-readable: full-precision mean, std and n per metric; empty where there is none."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = [*table.group_columns, "n", "diverged", "failed"]
    for column in table.metric_columns:
        header += [f"{column} mean", f"{column} std", f"{column} n"]
    writer.writerow(header)
    for row in table.rows:
        cells = ["" if v is None else _show(v) for v in row["group"]] + [row["n"], row["diverged"], row["failed"]]
        for stat in row["stats"]:
            cells += [
                (stat.note or "") if stat.mean is None else repr(stat.mean),
                "" if stat.std is None else repr(stat.std),
                stat.n,
            ]
        writer.writerow(cells)
    return buffer.getvalue()


RENDERERS = {"markdown": to_markdown, "latex": to_latex, "csv": to_csv}
SUFFIX_FORMATS = {".md": "markdown", ".tex": "latex", ".csv": "csv"}


# -------------------------------------------------------------------------------------------- CLI
def _list_unfinished(records: list[dict], limit: int = 10) -> None:
    """Name the diverged and failed runs (and why) on stderr, so they can be looked at or rerun."""
    unfinished = [r for r in records if r.get("status") != OK]
    for record in unfinished[:limit]:
        warn(f"{record.get('status') or 'unfinished'}: {record.get('_source')}: {record.get('message') or ''}")
    if len(unfinished) > limit:
        warn(f"... and {len(unfinished) - limit} more diverged/failed runs")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m learnbench.report",
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
    metrics = args.metrics.split(",") if args.metrics else default_metrics(records)
    table = build_table(records, metrics, error=args.error, digits=args.digits)
    fmt = args.format or SUFFIX_FORMATS.get(args.out.suffix if args.out else "", "markdown")
    text = RENDERERS[fmt](table)
    not_ok = sum(r["diverged"] + r["failed"] for r in table.rows)
    _list_unfinished(records)
    warn(f"{len(records)} runs in {len(table.rows)} groups, grouped by {', '.join(table.group_columns)}; "
         f"{not_ok} diverged/failed (counted, not averaged)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        warn(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    if args.plots:
        from learnbench.plots import plot_learning_curves

        for path in plot_learning_curves(records, args.plots, band=args.band):
            warn(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
