"""A Table as text: Markdown, LaTeX (booktabs) or CSV."""

from __future__ import annotations

import csv
import io

from learnbench.tools.report.common import DASH, show_value as _show
from learnbench.tools.report.stats import Stat, Table


def _cell(stat: Stat, places: int, pm: str, runs: int) -> str:
    """'mean ± std'; '(n=k)' where fewer ok runs than the row's n reported this metric."""
    if stat.mean is None:
        return stat.note or DASH
    std = DASH if stat.std is None else f"{stat.std:.{places}f}"
    return f"{stat.mean:.{places}f}{pm}{std}" + (f" (n={stat.n})" if stat.n < runs else "")


def _status_cell(row: dict) -> str:
    return f"{row['diverged']}/{row['failed']}"


def row_columns(table: Table) -> list[str]:
    """The columns between the groups and the metrics: the settings that differ between rows (when some do),
    the budget each row trained (epochs, optimiser steps), the finished runs and the unfinished ones."""
    return (["settings"] if table.has_settings else []) + ["epochs", "steps", "n", "diverged/failed"]


def row_cells(table: Table, row: dict) -> list[str]:
    return ([row["settings"]] if table.has_settings else []) + [row["epochs"], row["steps"], str(row["n"]), _status_cell(row)]


def to_markdown(table: Table) -> str:
    header = [*table.group_columns, *row_columns(table), *table.metric_columns]
    settings = ["---"] if table.has_settings else []
    align = ["---"] * len(table.group_columns) + settings + ["---:"] * (4 + len(table.metric_columns))
    lines = [header, align]
    for row in table.rows:
        cells = [_show(v) for v in row["group"]] + row_cells(table, row)
        for stat, places in zip(row["stats"], table.digits):
            text = _cell(stat, places, " ± ", row["n"])
            cells.append(f"**{text}**" if stat.best else text)
        lines.append(cells)
    text = "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines) + "\n"
    return text + "".join(f"\n{_markdown_note(note)}\n" for note in table.notes)


def _markdown_note(note: str) -> str:
    """'**Unequal budgets between rows (spiral, mlp)**: bp: ...': the note's subject in bold, under the table."""
    subject, _, rest = note.partition(": ")
    return f"**{subject}**: {rest}"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", DASH: "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    header = [*table.group_columns, *row_columns(table)[:-2], "$n$", "div./failed", *table.metric_columns]
    spec = "l" * (len(table.group_columns) + table.has_settings) + "r" * (4 + len(table.metric_columns))
    lines = [
        "% mean $\\pm$ sample std over seeds; diverged/failed runs are counted, not averaged. Needs \\usepackage{booktabs}.",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(h if h.startswith("$") else latex_escape(h) for h in header) + " \\\\",
        "\\midrule",
    ]
    for row in table.rows:
        cells = [latex_escape(_show(v)) for v in row["group"]] + [latex_escape(c) for c in row_cells(table, row)]
        for stat, places in zip(row["stats"], table.digits):
            if stat.mean is None:
                cells.append(latex_escape(stat.note or DASH))
                continue
            body = _cell(stat, places, r" \pm ", row["n"]).replace(DASH, r"\mbox{--}")
            cells.append(f"$\\mathbf{{{body}}}$" if stat.best else f"${body}$")
        lines.append(" & ".join(cells) + " \\\\")
    lines.append("\\bottomrule")
    # Under the rule, across the table: a comparison at unequal budgets is read as such, not found in a footnote.
    lines += [f"\\multicolumn{{{len(spec)}}}{{p{{\\linewidth}}}}{{\\footnotesize {latex_escape(note)}}} \\\\" for note in table.notes]
    lines.append("\\end{tabular}")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Machine-readable: full-precision mean, std and n per metric; empty where there is none."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = [*table.group_columns, *row_columns(table)[:-2], "n", "diverged", "failed"]
    for column in table.metric_columns:
        header += [f"{column} mean", f"{column} std", f"{column} n"]
    writer.writerow(header)
    for row in table.rows:
        cells = ["" if v is None else _show(v) for v in row["group"]] + ["" if c == DASH else c for c in row_cells(table, row)[:-2]]
        cells += [row["n"], row["diverged"], row["failed"]]
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
