"""W&B offline: what a run logged is read back from the offline run's own files.

wandb writes no summary file offline; the run's `.wandb` datastore (a LevelDB-style log of
protobuf records) is decoded in conftest.wandb_records, independently of wandb's writer.
"""

from __future__ import annotations

import pytest

from conftest import multirun_jobs, results_under, wandb_contents, wandb_logged


@pytest.fixture(scope="module")
def offline_runs(wandb_multirun):
    log_dir, proc = wandb_multirun
    assert proc.returncode == 0, proc.stderr[-5000:]
    runs = {}
    for job in multirun_jobs(log_dir):
        offline = sorted((job / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, f"{job}: expected one offline run, found {offline}"
        datastores = list(offline[0].glob("run-*.wandb"))
        assert len(datastores) == 1, offline[0]
        runs[job] = (offline[0], *wandb_logged(datastores[0]))
    return log_dir, runs


def test_offline_run_lives_in_the_job_dir_and_logs_the_test_metrics(offline_runs):
    log_dir, runs = offline_runs
    records = results_under(log_dir)
    for job, (offline_dir, run_id, history) in runs.items():
        record = records[job]
        assert offline_dir.name.endswith(f"-{run_id}")
        for key in ("test/acc", "test/loss"):
            assert len(history[key]) == 1, history.get(key)
            assert history[key][0] == pytest.approx(record["metrics"]["final"][key], rel=1e-6, abs=1e-7), key
        # The per-epoch validation metrics went to W&B too, and agree with results.json's history.
        assert history["val/acc"][-1] == pytest.approx(record["history"][-1]["val/acc"], rel=1e-6)
        assert max(history["trainer/global_step"]) == record["steps"]


def test_each_multirun_job_is_its_own_wandb_run(offline_runs):
    _, runs = offline_runs
    ids = [run_id for _, run_id, _ in runs.values()]
    assert len(ids) == 2 and len(set(ids)) == 2 and all(ids)
    # Different seeds, different runs: their logged test losses are not one run's values repeated.
    losses = [history["test/loss"][0] for _, _, history in runs.values()]
    assert losses[0] != losses[1]


def test_run_config_and_summary_say_what_ran_and_how_it_ended(wandb_multirun):
    """Filterable in the W&B UI: the group choices, the resolved config, and the status."""
    log_dir, _ = wandb_multirun
    records = results_under(log_dir)
    for job in multirun_jobs(log_dir):
        contents = wandb_contents(next((job / "wandb").glob("offline-run-*/run-*.wandb")))
        record = records[job]
        config = contents["config"]
        choices = config["choices"]["value"] if "value" in config["choices"] else config["choices"]
        assert (choices["method"], choices["data"]) == ("bp", "spiral")
        seed = config["seed"]["value"] if isinstance(config["seed"], dict) else config["seed"]
        assert seed == record["seed"]
        assert contents["summary"]["status"] == "ok" == record["status"]
        assert contents["summary"]["steps"] == record["steps"]
        assert contents["exit_code"] == 0
