"""Running the same sweep command again skips the jobs that finished ("ok") and re-runs the others."""

from __future__ import annotations

import json

import pytest

from conftest import CSV_ONLY, describe, run_cli, tiny
from learnbench.resume import finished_record


def test_rerunning_a_sweep_skips_finished_jobs_and_reruns_diverged_ones(tmp_path):
    log_dir = tmp_path / "logs"
    command = ["-m", "sweep=spiral_rules", "method=bp", "seed=0", "optimizer.lr=0.1,1e6", *tiny(), *CSV_ONLY, f"paths.log_dir={log_dir}"]
    first = run_cli(*command, cwd=tmp_path)
    assert first.returncode == 0, describe(first)
    sweep_dir = log_dir / "sweeps" / "spiral_rules"
    ok_file, diverged_file = sweep_dir / "0" / "results.json", sweep_dir / "1" / "results.json"
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in (ok_file, diverged_file)}
    assert json.loads(before[ok_file][0])["status"] == "ok"
    assert json.loads(before[diverged_file][0])["status"] == "diverged"
    assert "skipping: already finished" not in first.stdout + first.stderr

    second = run_cli(*command, cwd=tmp_path)
    assert second.returncode == 0, describe(second)
    output = second.stdout + second.stderr
    # The finished job was not trained again: its results file is byte for byte the same, not rewritten.
    assert (ok_file.read_bytes(), ok_file.stat().st_mtime_ns) == before[ok_file]
    assert output.count("skipping: already finished") == 1 and f"{sweep_dir / '0'}" in output
    # The diverged job ran again: a new results file, with the same outcome.
    assert diverged_file.stat().st_mtime_ns != before[diverged_file][1]
    rerun = json.loads(diverged_file.read_text())
    assert rerun["status"] == "diverged" and rerun["wall_time_s"] != json.loads(before[diverged_file][0])["wall_time_s"]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1"]


def write_record(path, **fields) -> dict:
    record = {"status": "ok", "overrides": ["method=bp", "seed=0"], "metrics": {"best": {"val/acc": 0.75}}, **fields}
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(record))
    return record


@pytest.mark.parametrize(
    ("fields", "overrides", "finished"),
    [
        ({}, ["method=bp", "seed=0"], True),
        ({}, None, True),  # no overrides to compare with
        ({"status": "diverged"}, ["method=bp", "seed=0"], False),
        ({"status": "failed"}, ["method=bp", "seed=0"], False),
        ({"status": None}, ["method=bp", "seed=0"], False),  # a run that was killed before writing its status
        ({}, ["method=bp", "seed=1"], False),  # another job's record (the sweep changed)
        ({}, ["seed=0", "method=bp"], False),  # overrides are compared in order, as given
    ],
)
def test_finished_record(tmp_path, fields, overrides, finished):
    written = write_record(tmp_path / "job", **fields)
    found = finished_record(tmp_path / "job", overrides)
    assert found == (written if finished else None)


def test_no_or_unreadable_results_is_not_finished(tmp_path):
    assert finished_record(tmp_path / "missing", ["seed=0"]) is None
    (tmp_path / "results.json").write_text('{"status": "ok", "overr')  # truncated
    assert finished_record(tmp_path, None) is None
