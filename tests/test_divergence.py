"""A diverging run ends cleanly: status "diverged", a readable message, exit 0, no traceback,
and the rest of its multirun still runs."""

from __future__ import annotations

import pytest

from conftest import CSV_ONLY, describe, multirun_jobs, results_under, run_cli, tiny

pytestmark = pytest.mark.slow  # CLI runs in subprocesses (about 45 s): `make test-slow`


def assert_diverged(record: dict) -> None:
    assert record["status"] == "diverged", record
    message = record["message"]
    assert "diverged" in message and "optimizer.lr" in message and "grad_clip_norm" in message
    assert record["steps"] < 5, "the run must stop at the first non-finite loss"


def test_huge_learning_rate_diverges_cleanly(concurrent_single_runs):
    code, output = concurrent_single_runs["outputs"]["diverged"]
    assert code == 0, output[-5000:]
    assert "Traceback" not in output and "Error executing job" not in output
    assert "diverged" in output  # the log line says so
    records = [r for r in results_under(concurrent_single_runs["log_dir"]).values() if r["config"]["tags"] == ["diverged"]]
    assert len(records) == 1
    assert_diverged(records[0])
    assert records[0]["config"]["optimizer"]["lr"] == 1e6


def test_multirun_goes_on_after_a_diverged_job(tmp_path, concurrent_single_runs):
    """Oracle for the job after the diverged one: the single run `ok` of concurrent_single_runs, the same
    settings (spiral, tiny(), lr 0.1, seed 0) in a process of its own. The second job must end exactly where
    it does: nothing of the diverged job (weights, optimiser state, RNG, stopped flag) leaks into it."""
    log_dir = tmp_path / "logs"
    proc = run_cli("-m", "optimizer.lr=1e6,0.1", "data=spiral", *tiny(), *CSV_ONLY, f"paths.log_dir={log_dir}", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "Traceback" not in proc.stdout + proc.stderr
    jobs = multirun_jobs(log_dir)
    records = results_under(log_dir)
    assert set(records) == set(jobs) and len(jobs) == 2
    first, second = (records[j] for j in jobs)
    assert first["config"]["optimizer"]["lr"] == 1e6 and second["config"]["optimizer"]["lr"] == 0.1
    assert_diverged(first)
    assert second["status"] == "ok" and second["steps"] == 5
    (alone,) = [r for r in results_under(concurrent_single_runs["log_dir"]).values() if r["config"]["tags"] == ["ok"]]
    assert alone["config"]["optimizer"] == second["config"]["optimizer"] and alone["seed"] == second["seed"] == 0
    assert alone["status"] == "ok" and alone["steps"] == 5
    for key in ("test/acc", "test/loss", "train/loss"):
        assert second["metrics"]["final"][key] == pytest.approx(alone["metrics"]["final"][key], rel=1e-6, abs=1e-9), key
