"""Tables and plots from results.json files, each checked against an independent oracle:
hand-computed means and sample stds (and the statistics module), the csv module, the table
grammar (LaTeX column counts, Markdown cell counts), and one real (tiny) Hydra multirun."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from learnbench.tools import report
from learnbench.tools.report import (
    build_table,
    history_from_wandb,
    load_records,
    record_from_wandb,
    to_latex,
    to_markdown,
)
from learnbench.tools.report.cli import main as report_main

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "wandb_runs.json"


def write_run(root: Path, job: str, method: str, seed: int, *, acc=None, loss=None, status="ok", lr=0.1,
              data="spiral", history=None, mse=None, started="2025-01-01T00:00:00+0000", config=None,
              epochs=3, steps=30) -> Path:
    """A results.json shaped like train.py's, with the given final test metrics; `config`: sections merged
    into the config ({"optimizer": {"momentum": 0.9}}), `epochs` and `steps`: what the run trained."""
    out = root / job
    final = {k: v for k, v in {"test/acc": acc, "test/loss": loss, "test/mse": mse}.items() if v is not None}
    record = {
        "method": method, "data": data, "model": "mlp", "optimizer": "sgd", "experiment": None,
        "seed": seed, "status": status, "message": None if status == "ok" else f"{status} on purpose",
        "metrics": {"final": {"val/acc": 0.5, **final}, "best": {"val/acc": 0.6}},
        "started": started, "output_dir": str(out),
        "overrides": [f"method={method}", f"seed={seed}", f"optimizer.lr={lr}", "logger=csv"],
        "config": {
            "data": {"_target_": "learnbench.data.SpiralDataModule", "batch_size": 100, "seed": seed},
            "model": {"_target_": "learnbench.models.MLP", "hidden_sizes": [64, 64]},
            "method": {"_target_": f"learnbench.rules.{method.upper()}"},
            "optimizer": {"_target_": "torch.optim.SGD", "lr": lr},
            "scheduler": {},
            "trainer": {"max_epochs": 3, "default_root_dir": str(out)},
            "callbacks": {"checkpoint": {"dirpath": f"{out}/checkpoints"}},
            "logger": {"csv": {"save_dir": str(out)}},
            "paths": {"output_dir": str(out), "log_dir": str(root)},
            "seed": seed,
        },
        "history": history or [],
        "steps": steps, "epochs": epochs, "wall_time_s": 1.0 + seed,
    }
    for section, values in (config or {}).items():
        if isinstance(values, dict):
            record["config"].setdefault(section, {}).update(values)
        else:
            record["config"][section] = values
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(record))
    return out


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """bp at two learning rates (3 and 1 seeds), wp with one ok, one diverged and one failed seed,
    np with every seed diverged."""
    write_run(tmp_path, "0", "bp", 0, acc=0.90, loss=0.30)
    write_run(tmp_path, "1", "bp", 1, acc=0.92, loss=0.20)
    write_run(tmp_path, "2", "bp", 2, acc=0.94, loss=0.10)
    write_run(tmp_path, "3", "bp", 0, acc=0.80, loss=0.50, lr=0.2)
    write_run(tmp_path, "4", "wp", 0, acc=0.70, loss=0.60)
    write_run(tmp_path, "5", "wp", 1, status="diverged")
    write_run(tmp_path, "6", "wp", 2, acc=0.10, loss=9.0, status="failed")  # numbers that must not count
    write_run(tmp_path, "7", "np", 0, status="diverged")
    write_run(tmp_path, "8", "np", 1, status="diverged")
    return tmp_path


def markdown_cells(text: str) -> list[list[str]]:
    """A Markdown table's cells, row by row, split on unescaped pipes and stripped (the notes under it left out)."""
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def assert_markdown_shows(table) -> None:
    """Every Markdown cell says what the table holds, formatted here by hand (for tables whose numbers
    are not known in advance, as from a live W&B project)."""
    cells = markdown_cells(to_markdown(table))
    settings = ["settings"] if table.has_settings else []
    assert cells[0] == [*table.group_columns, *settings, "epochs", "steps", "n", "diverged/failed", *table.metric_columns]
    assert len(cells) == 2 + len(table.rows)
    k = len(table.group_columns) + len(settings)
    for line, row in zip(cells[2:], table.rows):
        assert line[k - len(settings) : k + 4] == [row["settings"]] * len(settings) + [
            row["epochs"], row["steps"], str(row["n"]), f"{row['diverged']}/{row['failed']}"]
        for cell, stat in zip(line[k + 4 :], row["stats"]):
            if stat.mean is None:
                text = stat.note or "—"
            else:
                std = "—" if stat.std is None else f"{stat.std:.4f}"
                text = f"{stat.mean:.4f} ± {std}" + (f" (n={stat.n})" if stat.n < row["n"] else "")
            assert cell == (f"**{text}**" if stat.best else text)


def rows_by_method_and_lr(table) -> dict:
    index = [table.group_columns.index(k) for k in ("method", "optimizer.lr")]
    return {tuple(row["group"][i] for i in index): row for row in table.rows}


def test_means_and_sample_stds_match_hand_computed_values(sweep):
    table = build_table(load_records([sweep]), ["test/acc", "test/loss"])
    assert table.group_columns == ["method", "data", "model", "optimizer.lr"]  # lr splits; seed, paths do not
    rows = rows_by_method_and_lr(table)
    acc, loss = rows[("bp", 0.1)]["stats"]
    # By hand: mean(0.90, 0.92, 0.94) = 0.92; deviations ±0.02, 0 -> var = 0.0008/2, std = 0.02.
    assert acc.mean == pytest.approx(0.92) and acc.std == pytest.approx(0.02) and acc.n == 3
    assert loss.mean == pytest.approx(0.2) and loss.std == pytest.approx(0.1)
    assert acc.std == pytest.approx(statistics.stdev([0.90, 0.92, 0.94]))
    single = rows[("bp", 0.2)]["stats"][0]
    assert single.mean == pytest.approx(0.80) and single.std is None and single.n == 1


def test_diverged_and_failed_runs_are_counted_not_averaged(sweep):
    table = build_table(load_records([sweep]), ["test/acc", "test/loss"])
    rows = rows_by_method_and_lr(table)
    wp = rows[("wp", 0.1)]
    assert (wp["n"], wp["diverged"], wp["failed"]) == (1, 1, 1)
    assert wp["stats"][0].mean == pytest.approx(0.70)  # the failed run's 0.10 is left out
    np_row = rows[("np", 0.1)]
    assert (np_row["n"], np_row["diverged"]) == (0, 2)
    text = to_markdown(table)
    np_line = next(line for line in text.splitlines() if line.startswith("| np "))
    assert np_line.count("diverged") == 2 and "| 2/0 |" in np_line  # both metric cells say so
    wp_line = next(line for line in text.splitlines() if line.startswith("| wp "))
    assert "| 1/1 |" in wp_line and "0.7000 ± —" in wp_line  # n = 1: no std


def test_markdown_table_parses_and_marks_the_best_cells(sweep):
    table = build_table(load_records([sweep]), ["test/acc", "test/loss"])
    text = to_markdown(table)
    lines = text.strip().splitlines()
    cells = [re.split(r"(?<!\\)\|", line)[1:-1] for line in lines]
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert len({len(c) for c in cells}) == 1 and len(cells) == 2 + 4  # header, rule, 4 groups (no note: one budget)
    assert all(re.fullmatch(r"-+:?", c.strip()) for c in cells[1])
    header = [c.strip() for c in cells[0]]
    bold = {header[j]: c.strip() for row in cells[2:] for j, c in enumerate(row) if c.strip().startswith("**")}
    assert bold == {"test/acc": "**0.9200 ± 0.0200**", "test/loss": "**0.2000 ± 0.1000**"}  # max acc, min loss
    # Every cell, by hand from the fixture: means and sample stds of the ok runs, n = 1 has no std.
    assert markdown_cells(text) == [
        ["method", "data", "model", "optimizer.lr", "epochs", "steps", "n", "diverged/failed", "test/acc", "test/loss"],
        ["---"] * 4 + ["---:"] * 6,
        ["bp", "spiral", "mlp", "0.1", "3", "30", "3", "0/0", "**0.9200 ± 0.0200**", "**0.2000 ± 0.1000**"],
        ["bp", "spiral", "mlp", "0.2", "3", "30", "1", "0/0", "0.8000 ± —", "0.5000 ± —"],
        ["np", "spiral", "mlp", "0.1", "3", "30", "0", "2/0", "diverged", "diverged"],
        ["wp", "spiral", "mlp", "0.1", "3", "30", "1", "1/1", "0.7000 ± —", "0.6000 ± —"],
    ]
    assert_markdown_shows(table)


def test_run_recorder_and_tables_agree_on_which_way_is_better():
    """One list of directions (learnbench.metric_direction) for the recorder's best values and the
    tables' best cells: accuracy and cosine up, losses and errors down."""
    from learnbench.callbacks import _is_better
    from learnbench.metric_direction import direction

    assert [direction(m) for m in ("val/acc", "best:val/acc", "x/cos", "test/loss", "test/mse", "test/err %",
                                   "wall_time_s")] == [1, 1, 1, -1, -1, -1, 0]
    assert _is_better("val/acc", 0.9, 0.8) and not _is_better("val/acc", 0.7, 0.8)
    assert _is_better("val/cos", 0.9, 0.8) and not _is_better("val/cos", 0.7, 0.8)
    assert _is_better("val/loss", 0.1, 0.2) and not _is_better("val/loss", 0.3, 0.2)
    assert _is_better("val/acc", 0.1, None) and not _is_better("val/loss", math.nan, None)


def test_latex_has_booktabs_rules_and_a_cell_for_every_column(sweep):
    text = to_latex(build_table(load_records([sweep]), ["test/acc", "test/loss"], error=True))
    lines = text.strip().splitlines()
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", text).group(1)
    top, mid, bottom = lines.index("\\toprule"), lines.index("\\midrule"), lines.index("\\bottomrule")
    assert top < mid < bottom and lines[-1] == "\\end{tabular}"
    rows = lines[top + 1 : mid] + lines[mid + 1 : bottom]
    assert len(rows) == 1 + 4
    for row in rows:
        assert row.endswith("\\\\")
        assert len(re.findall(r"(?<!\\)&", row)) + 1 == len(spec)
    assert "test/err \\%" in rows[0]
    # Error in percent: 100 (1 - 0.92) = 8.00, std 100 * 0.02 = 2.00; lowest error is best.
    assert "$\\mathbf{8.00 \\pm 2.00}$" in text


def test_csv_reads_back_with_the_csv_module(sweep, tmp_path, capsys):
    out = tmp_path / "table.csv"
    assert report_main([str(sweep), "--metrics", "test/acc,wall_time_s", "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    bp = next(r for r in rows if r["method"] == "bp" and r["optimizer.lr"] == "0.1")
    assert float(bp["test/acc mean"]) == pytest.approx(statistics.fmean([0.90, 0.92, 0.94]))
    assert float(bp["test/acc std"]) == pytest.approx(0.02)
    assert float(bp["wall_time_s mean"]) == pytest.approx(2.0)  # 1 + seed over seeds 0, 1, 2
    np_row = next(r for r in rows if r["method"] == "np")
    assert (np_row["n"], np_row["diverged"], np_row["test/acc mean"], np_row["test/acc std"]) == ("0", "2", "diverged", "")


def test_default_metrics_follow_the_task(tmp_path):
    write_run(tmp_path / "cls", "0", "bp", 0, acc=0.9, loss=0.3)
    write_run(tmp_path / "ae", "0", "bp", 0, mse=0.01, data="mnist_autoencoder")
    assert report.default_metrics(load_records([tmp_path / "cls"])) == ["test/acc", "test/loss"]
    assert report.default_metrics(load_records([tmp_path / "ae"])) == ["test/mse"]


def test_a_rerun_seed_counts_once(tmp_path, capsys):
    write_run(tmp_path, "old", "bp", 0, acc=0.1, loss=1.0, started="2025-01-01T00:00:00+0000")
    write_run(tmp_path, "new", "bp", 0, acc=0.9, loss=0.3, started="2025-01-02T00:00:00+0000")
    (row,) = build_table(load_records([tmp_path]), ["test/acc"]).rows
    assert row["n"] == 1 and row["stats"][0].mean == pytest.approx(0.9)
    assert "appears twice" in capsys.readouterr().err


def test_display_settings_do_not_split_a_group(tmp_path):
    """Seeds run with and without `+trainer.enable_progress_bar=false` are one row; a trainer setting
    that changes training (max_epochs) still splits it."""
    for seed, trainer in enumerate([{}, {"enable_progress_bar": False, "log_every_n_steps": 5},
                                    {"enable_model_summary": False}]):
        out = write_run(tmp_path, str(seed), "bp", seed, acc=0.9 + seed / 100, loss=0.1)
        record = json.loads((out / "results.json").read_text())
        record["config"]["trainer"].update(trainer)
        (out / "results.json").write_text(json.dumps(record))
    (row,) = build_table(load_records([tmp_path]), ["test/acc"]).rows
    assert row["n"] == 3 and row["stats"][0].mean == pytest.approx(statistics.mean([0.90, 0.91, 0.92]))
    out = write_run(tmp_path, "3", "bp", 3, acc=0.5, loss=0.1)
    record = json.loads((out / "results.json").read_text())
    record["config"]["trainer"]["max_epochs"] = 7
    (out / "results.json").write_text(json.dumps(record))
    table = build_table(load_records([tmp_path]), ["test/acc"])
    assert "trainer.max_epochs" in table.group_columns and sorted(r["n"] for r in table.rows) == [1, 3]


COSINE = {"_target_": "learnbench.schedules.warmup_cosine", "_partial_": True, "warmup_epochs": 0, "min_lr_ratio": 0.0}


@pytest.fixture
def unequal(tmp_path: Path) -> Path:
    """The issue's `-m data=mnist method=bp,fa` before budgets were made equal, 2 seeds each: bp with its tuned
    lr 0.15, momentum 0.7, a cosine and 3 epochs; fa with lr 0.1, no momentum, no schedule and 10 epochs.
    Each rule also has an option of its own (fa's init), and np and fg_a share one with different values."""
    bp = {"optimizer": {"momentum": 0.7}, "scheduler": COSINE, "trainer": {"max_epochs": 3}}
    fa = {"optimizer": {"momentum": 0.0}, "trainer": {"max_epochs": 10}, "method": {"init": "kaiming_uniform"}}
    for seed in (0, 1):
        write_run(tmp_path, f"bp{seed}", "bp", seed, acc=0.97, loss=0.1, lr=0.15, config=bp, epochs=3, steps=1650)
        write_run(tmp_path, f"fa{seed}", "fa", seed, acc=0.95, loss=0.2, lr=0.1, config=fa, epochs=10, steps=5500)
    return tmp_path


def test_settings_that_a_rule_explains_are_shown_with_the_budget_each_row_trained(unequal, capsys):
    """lr, momentum, epochs and the schedule follow the method (its tuned file), so they split no group and make no
    column; each row's settings cell still names them, the epochs and steps columns say what was trained, and a
    note under the table (and on stderr) says the budgets differ. fa's own option (init) is not shown."""
    table = build_table(load_records([unequal]), ["test/acc"])
    assert table.group_columns == ["method", "data", "model"] and table.has_settings
    rows = {row["group"][0]: row for row in table.rows}
    assert rows["bp"]["settings"] == ("lr=0.15, momentum=0.7, max_epochs=3, "
                                      "schedule=warmup_cosine(warmup_epochs=0, min_lr_ratio=0.0)")
    assert rows["fa"]["settings"] == "lr=0.1, momentum=0, max_epochs=10, schedule=constant"
    assert (rows["bp"]["epochs"], rows["bp"]["steps"], rows["fa"]["epochs"], rows["fa"]["steps"]) == ("3", "1650", "10", "5500")
    note = ("Unequal budgets between rows (spiral, mlp): bp: 3 epochs, batch 100, lr schedule warmup_cosine(warmup_epochs=0, "
            "min_lr_ratio=0.0); fa: 10 epochs, batch 100, lr schedule constant")
    assert table.notes == [note]

    text = to_markdown(table)
    assert markdown_cells(text)[0] == ["method", "data", "model", "settings", "epochs", "steps", "n", "diverged/failed", "test/acc"]
    assert markdown_cells(text)[2][3:7] == [rows["bp"]["settings"], "3", "1650", "2"]
    assert text.strip().splitlines()[-1] == "**Unequal budgets between rows (spiral, mlp)**: " + note.split(": ", 1)[1]
    latex = to_latex(table)
    assert "Unequal budgets between rows (spiral, mlp)" in latex and latex.strip().endswith("\\end{tabular}")
    assert report_main([str(unequal)]) == 0
    assert note in capsys.readouterr().err


def test_settings_show_a_shared_rule_option_only_where_it_differs(tmp_path):
    """np and fg_a both have `directions` (64 and 32): shown; both have `noise: rademacher`: the same, not shown.
    One budget for both: no note, and no settings column once nothing differs but the method."""
    for method, directions in (("np", 64), ("fg_a", 32)):
        write_run(tmp_path / "two", method, method, 0, acc=0.9, loss=0.2,
                  config={"method": {"directions": directions, "noise": "rademacher"}})
    table = build_table(load_records([tmp_path / "two"]), ["test/acc"])
    assert {row["group"][0]: row["settings"] for row in table.rows} == {"np": "directions=64", "fg_a": "directions=32"}
    assert table.notes == []
    for seed in (0, 1):
        write_run(tmp_path / "one", f"bp{seed}", "bp", seed, acc=0.9, loss=0.2)
    same = build_table(load_records([tmp_path / "one"]), ["test/acc"])
    assert not same.has_settings and same.notes == [] and "settings" not in markdown_cells(to_markdown(same))[0]


def test_plots_write_png_and_pdf_curves_and_alignment(tmp_path):
    from learnbench.tools.plots import plot_learning_curves

    def history(offset):
        return [{"epoch": e, "step": 10 * e, "time": 0.5 * e + offset, "val/acc": 0.5 + 0.1 * e + offset,
                 "val/loss": 1.0 / e, "train/loss": 1.0 / e, "align/cos/all": 0.1 * e,
                 "align/cos/recurrent": 0.05 * e} for e in range(1, 5)]

    for seed in (0, 1):
        write_run(tmp_path / "runs", f"bp{seed}", "bp", seed, acc=0.9, loss=0.2, history=history(0.01 * seed))
        write_run(tmp_path / "runs", f"wp{seed}", "wp", seed, acc=0.7, loss=0.5, history=history(-0.1))
    written = plot_learning_curves(load_records([tmp_path / "runs"]), tmp_path / "figures")
    names = {p.name for p in written}
    for stem in ("spiral_mlp_val-acc_vs_epoch", "spiral_mlp_val-acc_vs_time", "spiral_mlp_align-cos-all_vs_epoch",
                 "spiral_mlp_align-cos-recurrent_vs_epoch"):  # a parameter group's alignment: a figure of its own
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    for path in written:
        head = path.read_bytes()[:8]
        assert path.stat().st_size > 1000 and head.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF")


def test_two_experiments_on_one_model_get_a_figure_each(tmp_path, monkeypatch):
    """Ren's S/1/1 and M/1/16 are both model=mlp: each experiment's runs go into a figure of its own,
    named after it, holding its own runs only; 11 methods get 11 colours."""
    from learnbench.tools import plots

    drawn = {}
    monkeypatch.setattr(plots, "_figure", lambda lines, *a: drawn.setdefault(a[-1].name, lines) and [a[-1]])
    methods = [f"m{i}" for i in range(11)]
    for experiment in ("small", "medium"):
        for i, method in enumerate(methods):
            out = write_run(tmp_path, f"{experiment}{i}", method, 0, acc=0.9, loss=0.2,
                            history=[{"epoch": 1, "step": 10, "time": 1.0, "val/acc": 0.5}])
            record = json.loads((out / "results.json").read_text())
            record["experiment"] = experiment
            (out / "results.json").write_text(json.dumps(record))
    plots.plot_learning_curves(load_records([tmp_path]), tmp_path / "figures")
    assert set(drawn) == {"spiral_mlp_small_val-acc_vs_epoch", "spiral_mlp_small_val-acc_vs_time",
                          "spiral_mlp_medium_val-acc_vs_epoch", "spiral_mlp_medium_val-acc_vs_time"}
    for lines in drawn.values():
        assert sorted(line[0].split(" ")[0] for line in lines) == sorted(f"{m}" for m in methods)
        assert len({line[1] for line in lines}) == 11 and not any("experiment" in line[0] for line in lines)


def alignment_history(cos: float, epochs: int = 6) -> list[dict]:
    return [{"epoch": e, "step": 10 * e, "time": 0.5 * e, "val/acc": 0.5 + 0.05 * e, "val/loss": 1.0 / e,
             "align/cos/all": cos * (1 + 0.05 * e)} for e in range(1, epochs + 1)]


def test_alignment_curves_spanning_decades_get_a_log_axis_the_others_a_linear_one(tmp_path, monkeypatch):
    """Cosines of about 1 (bp), 0.1 (fg_a), 0.002 (fg_w, wp): on a linear axis fg_w and wp lie on 0."""
    from learnbench.tools import plots

    for seed in (0, 1):
        for method, cos in (("bp", 0.99), ("fg_a", 0.1), ("fg_w", 0.002), ("wp", 0.0021)):
            write_run(tmp_path / "runs", f"{method}{seed}", method, seed, acc=0.8, loss=0.4,
                      history=alignment_history(cos * (1 + 0.01 * seed)))
    scales, save = {}, plots.save_figure

    def save_and_record(fig, path):
        scales[path.name] = [ax.get_yscale() for ax in fig.axes]
        lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
        scales[path.name + ":lines"] = lines
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", save_and_record)
    plots.plot_learning_curves(load_records([tmp_path / "runs"]), tmp_path / "figures")
    assert scales["spiral_mlp_align-cos-all_vs_epoch"] == ["log"]
    assert scales["spiral_mlp_val-acc_vs_epoch"] == ["linear"]
    assert scales["spiral_mlp_val-acc_vs_time"] == ["linear"]
    # fg_w and wp overlap: each has its own marker, and the later one is drawn narrower and on top.
    lines = scales["spiral_mlp_align-cos-all_vs_epoch:lines"]
    fg_w, wp = (next(line for label, line in lines.items() if label.startswith(f"{m} ")) for m in ("fg_w", "wp"))
    assert fg_w.get_marker() != wp.get_marker()
    assert fg_w.get_zorder() < wp.get_zorder() and fg_w.get_linewidth() > wp.get_linewidth()
    assert len({line.get_marker() for line in lines.values()}) == len(lines) == 4


@pytest.mark.parametrize("low, log", [(1e-3, True), (2e-3, True), (0.011, False), (0.5, False)])
def test_a_log_y_axis_only_beyond_two_decades(low, log):
    """Curves from `low` to 1: 3 decades and 2.7 decades get a log axis; 1.96 decades and 0.3 do not."""
    from learnbench.tools.plots import draw_curves, log_scale_needed

    xs = [1, 2, 3, 4]
    lines = [("high", "C0", "-", "o", xs, [[1.0], [0.9], [0.95], [1.0]]),
             ("low", "C1", "-", "s", xs, [[low], [low * 1.1], [low * 1.2], [low * 1.3]])]
    fig, ax = draw_curves(lines, "cosine", "epoch", "synthetic", "minmax")
    try:
        assert ax.get_yscale() == ("log" if log else "linear")
        assert log_scale_needed([[1.0, 0.9], [low]]) is log
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_values_at_or_below_zero_do_not_count_for_the_log_axis():
    from learnbench.tools.plots import log_scale_needed

    assert not log_scale_needed([[0.5, 0.0, -0.2], [0.3]])  # positive values span 0.2 decades
    assert log_scale_needed([[1.0, -0.5], [0.001]])
    assert not log_scale_needed([[0.0, -1.0], [float("nan")]])


# ------------------------------------------------------------------------------------------- W&B
def fixture_runs() -> list[SimpleNamespace]:
    """The recorded API items as objects with the attributes record_from_wandb reads."""
    runs = json.loads(FIXTURE.read_text())["runs"]
    return [
        SimpleNamespace(id=r["id"], name=r["name"], group=r["group"], state=r["state"], created_at=r["created_at"],
                        path=r["path"], config=r["config"], summary_metrics=r["summaryMetrics"],
                        _learnbench_history=history_from_wandb(r["history"]))
        for r in runs
    ]


def test_wandb_runs_become_the_same_records_and_table():
    records = [r for r in map(record_from_wandb, fixture_runs()) if r is not None]
    assert len(records) == 5  # the running one is left out
    by_name = {(r["method"], r["seed"]): r for r in records}
    assert by_name[("wp", 1)]["status"] == "diverged" and by_name[("wp", 2)]["status"] == "failed"
    assert by_name[("bp", 0)]["history"] == [
        {"epoch": 1, "step": 19, "time": 3.1, "val/acc": 0.8, "val/loss": 0.45, "train/loss": 0.55, "train/acc": 0.7},
        {"epoch": 2, "step": 39, "time": 6.1, "val/acc": 0.91, "val/loss": 0.24, "train/loss": 0.25, "train/acc": 0.9},
    ]
    table = build_table(records, report.default_metrics(records))
    rows = {row["group"][0]: row for row in table.rows}
    bp_acc, bp_loss = rows["bp"]["stats"]
    assert bp_acc.mean == pytest.approx(0.85) and bp_acc.std == pytest.approx(statistics.stdev([0.9, 0.8]))
    assert bp_loss.mean == pytest.approx(0.35) and bp_loss.std == pytest.approx(math.sqrt(0.005))
    assert (rows["wp"]["n"], rows["wp"]["diverged"], rows["wp"]["failed"]) == (1, 1, 1)
    assert rows["wp"]["stats"][0].mean == pytest.approx(0.6)
    # bp: test/acc 0.9, 0.8 and test/loss 0.3, 0.4 -> means 0.85, 0.35, sample stds sqrt(0.005) = 0.0707.
    # wp's run names say no model and no optimizer: a dash. Different blocks: no best cell.
    # Budget: 2 epochs (the summary's last 0-based epoch, 1) and 40 steps (trainer/global_step).
    assert markdown_cells(to_markdown(table))[2:] == [
        ["bp", "spiral", "mlp", "sgd", "2", "40", "2", "0/0", "0.8500 ± 0.0707", "0.3500 ± 0.0707"],
        ["wp", "spiral", "—", "—", "2", "40", "1", "1/1", "0.6000 ± —", "0.6500 ± —"],
    ]
    assert_markdown_shows(table)  # the check the online test makes, here where the numbers are known


@pytest.mark.skipif(
    not os.environ.get("LEARNBENCH_TEST_WANDB_PROJECT") or os.environ.get("WANDB_MODE") in ("offline", "disabled"),
    reason="set LEARNBENCH_TEST_WANDB_PROJECT=entity/project (and log in) to read real runs from the W&B API",
)
def test_wandb_api_online():
    records = report.fetch_wandb_records(os.environ["LEARNBENCH_TEST_WANDB_PROJECT"])
    assert records and all(r["status"] in ("ok", "diverged", "failed") and r["method"] for r in records)
    assert_markdown_shows(build_table(records, report.default_metrics(records)))


# --------------------------------------------------------------------------------- a real multirun
@pytest.mark.slow
def test_report_over_a_real_multirun(tmp_path):
    """Four tiny jobs through Hydra (bp and wp x seeds 0, 1), then `make table` over them: one row
    per method, two seeds each, both finished."""
    sweep = ["method=bp,wp"]
    command = [sys.executable, "-m", "learnbench.train", "-m", *sweep, "data=spiral", "seed=0,1", "logger=csv",
               "callbacks=none", "trainer.max_epochs=1", "+trainer.limit_train_batches=3", f"paths.log_dir={tmp_path}"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(tmp_path.rglob("results.json"))) == 4

    made = subprocess.run(["make", "-s", "-C", str(ROOT), "table", f"RUNS={tmp_path / 'multiruns'}",
                           "ARGS=--format csv"], env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    rows = list(csv.DictReader(io.StringIO(made.stdout)))
    assert sorted(r["method"] for r in rows) == ["bp", "wp"]
    assert [(r["n"], r["diverged"], r["failed"]) for r in rows] == [("2", "0", "0")] * 2
    # The oracle: each method's two test accuracies read straight from its runs' results.json files.
    accs: dict[str, list[float]] = {}
    for path in tmp_path.rglob("results.json"):
        record = json.loads(path.read_text())
        accs.setdefault(record["method"], []).append(record["metrics"]["final"]["test/acc"])
    for row in rows:
        assert float(row["test/acc mean"]) == pytest.approx(statistics.fmean(accs[row["method"]]))
        assert float(row["test/acc std"]) == pytest.approx(statistics.stdev(accs[row["method"]]))


def test_one_methods_settings_get_a_colour_each(tmp_path, monkeypatch):
    """A figure of one method's settings (here four learning rates) gives each its own colour and marker;
    with several methods, the colour stays the method's and its settings differ by line style."""
    from learnbench.tools import plots

    drawn = {}
    monkeypatch.setattr(plots, "_figure", lambda lines, *a: drawn.setdefault(a[-1].name, lines) and [a[-1]])
    history = [{"epoch": 1, "step": 10, "time": 1.0, "val/acc": 0.5}]
    for i, lr in enumerate((0.01, 0.03, 0.1, 0.3)):
        write_run(tmp_path / "one", f"j{i}", "fg_a", 0, acc=0.9, loss=0.2, lr=lr, history=history)
    plots.plot_learning_curves(load_records([tmp_path / "one"]), tmp_path / "f1")
    lines = drawn.pop("spiral_mlp_val-acc_vs_epoch")
    assert len(lines) == 4 and len({line[1] for line in lines}) == 4 and len({line[3] for line in lines}) == 4
    drawn.clear()
    for i, (method, lr) in enumerate([("fg_a", 0.01), ("fg_a", 0.03), ("bp", 0.1)]):
        write_run(tmp_path / "two", f"j{i}", method, 0, acc=0.9, loss=0.2, lr=lr, history=history)
    plots.plot_learning_curves(load_records([tmp_path / "two"]), tmp_path / "f2")
    lines = drawn["spiral_mlp_val-acc_vs_epoch"]
    colour = {line[0]: line[1] for line in lines}
    fg_a = [c for label, c in colour.items() if label.startswith("fg_a")]
    assert len(fg_a) == 2 and fg_a[0] == fg_a[1] and colour[next(l for l in colour if l.startswith("bp"))] != fg_a[0]
    assert len({line[2] for line in lines if line[0].startswith("fg_a")}) == 2


# --------------------------------------------------------------------------------- refused runs, empty plots
def refused_run(root: Path, job: str) -> Path:
    """What train.py writes for a run refused before any work: status failed, refused, its own odd setting."""
    out = write_run(root, job, "bp", 0, status="failed", lr="abc")
    record = json.loads((out / "results.json").read_text())
    record.update(refused=True, message="ConfigError: optimizer.lr='abc': expected a number > 0 (set on the command line)",
                  steps=0, epochs=0, metrics={"final": {}, "best": {}})
    (out / "results.json").write_text(json.dumps(record))
    return out


def test_runs_refused_before_any_work_are_left_out_and_counted(sweep, capsys):
    """A refused run trained nothing; counted in, its odd lr made an extra column and a row of its own."""
    expected = build_table(load_records([sweep]), ["test/acc"])
    refused_run(sweep, "9")
    refused_run(sweep, "10")
    assert report_main([str(sweep), "--metrics", "test/acc", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(expected.rows) and "abc" not in out
    assert list(rows[0])[:len(expected.group_columns)] == expected.group_columns
    assert "left out 2 run(s) refused before any work (each results.json says why):" in err
    assert err.count("refused: ") == 2 and "optimizer.lr='abc': expected a number > 0" in err
    assert "9 runs in" in err  # the table's count: the 9 runs of the sweep


def test_only_refused_runs_make_no_table(tmp_path, capsys):
    refused_run(tmp_path, "0")
    assert report_main([str(tmp_path)]) == 1
    assert "no run to report: every run was refused before any work" in capsys.readouterr().err


def test_plots_without_a_validation_epoch_say_so_and_write_nothing(tmp_path, capsys):
    """It wrote an empty folder, silently."""
    write_run(tmp_path / "runs", "0", "bp", 0, acc=0.9, loss=0.3)  # no history: no epoch finished
    figures = tmp_path / "figures"
    assert report_main([str(tmp_path / "runs"), "--plots", str(figures)]) == 0
    assert not figures.exists()
    assert ("no learning curves to draw: no finished run completed a validation epoch (their history is empty); "
            f"nothing written to {figures}") in capsys.readouterr().err
