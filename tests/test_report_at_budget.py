"""Tables at equal compute / seconds and curves against compute (learnbench.tools.report.at_budget, tools/plots.py).

Oracles: histories written here by hand, so the epoch each run stands at for a budget, the means and sample stds
(the statistics module) and the notes are known before the report reads them; the Markdown grammar (cells per row)."""

from __future__ import annotations

import statistics

import matplotlib.pyplot as plt
import pytest

from learnbench.tools.report.at_budget import build_table_at, entry_at
from learnbench.tools.report.cli import main as report_main
from learnbench.tools.report.stats import build_table
from learnbench.tools.report import load_records
from test_report import markdown_cells, write_run


def history(per_epoch_fe: float, accs: list[float], seconds: float = 1.0) -> list[dict]:
    """Epochs 1..n, each costing per_epoch_fe forward-pass equivalents and `seconds` wall-clock seconds."""
    return [{"epoch": e, "step": 10 * e, "time": seconds * e, "cpu_time": seconds * e / 2,
             "train_forward_equivalents": per_epoch_fe * e, "val/acc": acc, "val/loss": 1 - acc}
            for e, acc in enumerate(accs, start=1)]


@pytest.fixture
def runs(tmp_path):
    """bp: 300 FE an epoch, 2 seeds; fg_a: 3300 FE an epoch (K = 32 directions cost ~11x bp's step)."""
    write_run(tmp_path, "0", "bp", 0, acc=0.9, history=history(300, [0.5, 0.7, 0.9]))
    write_run(tmp_path, "1", "bp", 1, acc=0.9, history=history(300, [0.6, 0.8, 0.95]))
    write_run(tmp_path, "2", "fg_a", 0, acc=0.8, history=history(3300, [0.6, 0.8, 0.85], seconds=4.0))
    return tmp_path


def rows(table) -> dict:
    return {row["group"][0]: row for row in table.rows}


def test_each_run_stands_at_its_last_epoch_within_the_budget():
    curve = {"history": history(300, [0.5, 0.7, 0.9])}
    assert entry_at(curve, "train_forward_equivalents", 650)[0]["epoch"] == 2
    assert entry_at(curve, "train_forward_equivalents", 600)[0]["epoch"] == 2  # within: at most the budget
    assert entry_at(curve, "train_forward_equivalents", 299) == (None, False)  # its first epoch is over budget
    assert entry_at(curve, "train_forward_equivalents", 1000) == (curve["history"][-1], True)  # ended before it
    assert entry_at({"history": [{"epoch": 1, "val/acc": 0.5}]}, "train_forward_equivalents", 1e9) == (None, False)


def test_the_table_at_equal_compute_reads_each_curve_at_the_budget(runs):
    table = build_table_at(load_records([str(runs)]), "compute", 650)
    assert table.metric_columns == ["val/acc", "val/loss", "train_forward_equivalents used"]
    bp, fg_a = rows(table)["bp"], rows(table)["fg_a"]
    acc, loss, used = bp["stats"]
    assert acc.mean == pytest.approx(statistics.fmean([0.7, 0.8])) and acc.std == pytest.approx(statistics.stdev([0.7, 0.8]))
    assert loss.mean == pytest.approx(statistics.fmean([0.3, 0.2])) and used.mean == 600 and used.n == 2
    assert bp["epochs"] == "2" and bp["steps"] == "20" and bp["n"] == 2
    assert [s.note for s in fg_a["stats"]] == ["over budget"] * 3 and fg_a["epochs"] == "—"
    assert not acc.best  # the only row with a value: nothing to be best against
    assert not table.notes


def test_a_row_that_ended_before_the_budget_is_named_under_the_table(runs):
    table = build_table_at(load_records([str(runs)]), "compute", 5000)
    assert rows(table)["bp"]["epochs"] == "3" and rows(table)["fg_a"]["epochs"] == "1"
    assert len(table.notes) == 1 and "Ended before the budget: bp" in table.notes[0]
    assert rows(table)["fg_a"]["stats"][0].mean == 0.6


def test_seconds_read_the_wall_clock_and_cpu_seconds_the_cpu_clock(runs):
    by_wall = rows(build_table_at(load_records([str(runs)]), "seconds", 4.5))
    assert by_wall["bp"]["epochs"] == "3" and by_wall["fg_a"]["epochs"] == "1"
    by_cpu = rows(build_table_at(load_records([str(runs)]), "cpu seconds", 4.5))
    assert by_cpu["fg_a"]["epochs"] == "2" and by_cpu["fg_a"]["stats"][0].mean == 0.8


def test_the_command_line_prints_the_tables_at_equal_epochs_and_at_equal_compute(runs, capsys):
    assert report_main([str(runs), "--at-compute", "650", "--at-seconds", "2"]) == 0
    out = capsys.readouterr().out
    first, compute, seconds = out.split("\n**At equal ")
    assert compute.startswith("compute: val/acc, val/loss at 650 training forward-pass equivalents")
    assert seconds.startswith("seconds: val/acc, val/loss at 2 seconds")
    header, _, *body = markdown_cells(compute.split("\n\n", 1)[1])
    assert header[-3:] == ["val/acc", "val/loss", "train_forward_equivalents used"]
    assert all(len(line) == len(header) for line in body)
    bp = next(line for line in body if line[0] == "bp")
    assert bp[-3] == f"{statistics.fmean([0.7, 0.8]):.4f} ± {statistics.stdev([0.7, 0.8]):.4f}" and bp[-1] == "600 ± 0"
    assert "test/acc" in markdown_cells(first)[0]  # the table at equal epochs comes first, unchanged


def test_a_record_field_inside_a_section_is_a_column(runs):
    records = load_records([str(runs)])
    for r, fe in zip(records, (900.0, 900.0, 9900.0)):
        r["compute"] = {"train_forward_equivalents": fe}
    table = build_table(records, ["test/acc", "compute.train_forward_equivalents"])
    assert [row["stats"][1].mean for row in table.rows] == [900.0, 9900.0]
    assert table.digits == [4, 0]  # counts in thousands: whole numbers


def test_plots_draw_the_metric_against_compute_on_a_log_axis_when_it_spans_decades(runs, tmp_path, monkeypatch):
    from learnbench.tools import plots

    scales = {}
    save = plots.save_figure

    def keep_scale(fig, path):
        scales[path.name] = fig.axes[0].get_xscale()
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep_scale)
    out = tmp_path / "figures"
    plots.plot_learning_curves(load_records([str(runs)]), out)
    assert scales["spiral_mlp_val-acc_vs_train_forward_equivalents"] == "linear"  # 300 .. 9900: 1.5 decades
    write_run(runs, "3", "wp", 0, acc=0.7, history=history(3e5, [0.5, 0.6, 0.7]))
    plots.plot_learning_curves(load_records([str(runs)]), out)
    assert scales["spiral_mlp_val-acc_vs_train_forward_equivalents"] == "log"  # 300 .. 9e5
    assert (out / "spiral_mlp_val-acc_vs_train_forward_equivalents.png").is_file()
    plt.close("all")
