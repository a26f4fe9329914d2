"""A Table as text: Markdown, LaTeX (booktabs) or CSV."""

from __future__ import annotations

import csv
import io

from learnbench.tools.report.common import DASH
from learnbench.tools.report.stats import Stat, Table


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
