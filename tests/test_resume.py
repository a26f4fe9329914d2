"""Running the same sweep command again skips the jobs that finished ("ok") and re-runs the others;
a job stopped part-way continues from its checkpoint."""

from __future__ import annotations

import json
import signal
import time

import pytest
import torch

from conftest import CSV_ONLY, describe, run_cli, start_cli, tiny
from learnbench.resume import checkpoint_to_resume, finished_record


@pytest.mark.slow
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


# ============================================================================= a run stopped part-way
def stopped_part_way(args: list[str], run_dir, cwd) -> None:
    """Start the run and kill it (SIGKILL: no clean-up of any kind) once it has saved its second
    epoch-end checkpoint."""
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    proc = start_cli(*args, f"hydra.run.dir={run_dir}", cwd=cwd)
    saves, last_mtime = 0, None
    deadline = time.monotonic() + 240
    while saves < 2 and proc.poll() is None and time.monotonic() < deadline:
        if checkpoint.is_file() and checkpoint.stat().st_mtime_ns != last_mtime:
            last_mtime = checkpoint.stat().st_mtime_ns
            saves += 1
        time.sleep(0.01)
    # Kill once the epoch's training row has reached csv/metrics.csv too: Lightning logs it just after the end-of-epoch
    # checkpoint, and a kill in between (milliseconds, but a loaded machine can stall a process there) loses that one
    # row from the csv (results.json's history keeps it; README.md says so).
    metrics = run_dir / "csv" / "metrics.csv"
    while proc.poll() is None and time.monotonic() < deadline and not (
            metrics.is_file() and metrics.stat().st_mtime_ns > checkpoint.stat().st_mtime_ns):
        time.sleep(0.01)
    time.sleep(0.2)  # let the second save finish writing
    proc.kill()
    output = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself before it could be stopped:\n{output[-3000:]}"
    assert not (run_dir / "results.json").exists()


def comparable(record: dict) -> dict:
    """results.json without what depends on the clock or the process: times, the resumed run's ckpt_path."""
    history = [{k: v for k, v in epoch.items() if k not in ("time", "cpu_time")} for epoch in record["history"]]
    return {"status": record["status"], "metrics": record["metrics"], "history": history, "steps": record["steps"], "epochs": record["epochs"]}


@pytest.mark.slow
def test_a_run_stopped_part_way_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(tmp_path):
    """Oracle: the same command run without interruption. Noise re-seeded per step, the data order tied
    to the epoch, momentum, a cosine schedule and diagnostics sums all have to come back exactly."""
    args = ["method=np", "scheduler=cosine", "trainer.max_epochs=6", "diagnostics.every_n_steps=7",
            "data.train_per_arm=500", "+trainer.enable_progress_bar=false", *CSV_ONLY]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    uninterrupted = run_cli(*args, f"hydra.run.dir={whole}", cwd=tmp_path)
    assert uninterrupted.returncode == 0, describe(uninterrupted)

    stopped_part_way(args, stopped, tmp_path)
    resumed = run_cli(*args, f"hydra.run.dir={stopped}", cwd=tmp_path)
    assert resumed.returncode == 0, describe(resumed)
    assert "resuming from" in resumed.stdout + resumed.stderr

    expected, got = (json.loads((d / "results.json").read_text()) for d in (whole, stopped))
    assert 2 <= json.loads(json.dumps(got["history"]))[-1]["epoch"] == 6
    assert comparable(got) == comparable(expected)
    # It says it was resumed, and from where; the uninterrupted run was not.
    assert got["resumed_from"]["checkpoint"] == str((stopped / "checkpoints" / "last.ckpt").resolve())
    assert 2 <= got["resumed_from"]["epoch"] + 1 < 6 and expected["resumed_from"] is None
    # Every logged row, those of the epochs before the kill included, as the uninterrupted run logged them.
    assert (stopped / "csv" / "metrics.csv").read_text() == (whole / "csv" / "metrics.csv").read_text()
    # Lightning's warnings about the run's own non-empty folders (printed with its file paths) are gone.
    output = resumed.stdout + resumed.stderr
    assert "exists and is not empty" not in output and "site-packages" not in output, describe(resumed)
    final = [torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"] for d in (whole, stopped)]
    assert final[0].keys() == final[1].keys()
    for key in final[0]:
        torch.testing.assert_close(final[1][key], final[0][key], rtol=0, atol=0, equal_nan=True, msg=key)
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize(
    ("saved", "overrides", "resumed"),
    [
        (["method=np", "seed=0"], ["method=np", "seed=0"], True),
        (["method=np", "seed=0"], None, True),  # nothing to compare with
        (["method=np", "seed=0"], ["method=np", "seed=1"], False),  # another job's checkpoint (the sweep changed)
        (None, ["method=np", "seed=0"], False),  # written before checkpoints named their job
    ],
)
def test_only_this_jobs_checkpoint_is_resumed(tmp_path, saved, overrides, resumed):
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    torch.save({"hyper_parameters": {} if saved is None else {"overrides": saved}}, path)
    assert checkpoint_to_resume(tmp_path, overrides) == (path if resumed else None)


def test_an_unreadable_checkpoint_starts_the_job_from_scratch(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 cut short by the kill")
    assert checkpoint_to_resume(tmp_path, ["seed=0"]) is None


def test_a_resumed_run_keeps_the_logged_rows_before_its_checkpoint(tmp_path):
    """Lightning's CSV logger deleted metrics.csv when the resumed run started: the epochs before the stop were
    lost. Oracle: the uninterrupted run's file. Two epochs straight; one epoch, then a run resumed from its
    checkpoint, in the same folder, for the second (no schedule: the epoch budget changes nothing else)."""
    from conftest import compose_config, tiny

    from learnbench.train import train

    keep = [o for o in tiny(train_batches=4) if o not in ("callbacks=none", "+trainer.enable_checkpointing=false")]
    common = ["data=spiral", *keep, "trainer.log_every_n_steps=1", *CSV_ONLY]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert train(compose_config([*common, "trainer.max_epochs=2"], whole))["resumed_from"] is None
    train(compose_config([*common, "trainer.max_epochs=1"], stopped))
    checkpoint = stopped / "checkpoints" / "last.ckpt"
    record = train(compose_config([*common, "trainer.max_epochs=2", f"ckpt_path={checkpoint}"], stopped))
    assert record["resumed_from"] == {"checkpoint": str(checkpoint.resolve()), "epoch": 0, "step": 4}
    assert (stopped / "csv" / "metrics.csv").read_text() == (whole / "csv" / "metrics.csv").read_text()
    assert [row["epoch"] for row in record["history"]] == [1, 2]


def test_the_csv_logger_replaces_an_earlier_attempt_or_keeps_the_rows_before_a_resume(tmp_path):
    """A sweep job run again from scratch (it failed, no checkpoint) starts its metrics.csv afresh; a resumed one
    keeps the rows logged before its checkpoint's step and logs the rest again."""
    import csv as csv_module

    from learnbench.resume import CSVLogger

    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "metrics.csv").write_text("epoch,step,train/loss\n0,0,9.0\n0,1,8.0\n")
    (folder / "hparams.yaml").write_text("lr: 1\n")
    logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.save()
    rows = list(csv_module.DictReader((folder / "metrics.csv").open()))
    assert rows == [{"step": "0", "train/loss": "1.0"}]

    (folder / "metrics.csv").write_text("epoch,step,train/loss\n0,0,9.0\n0,1,8.0\n1,2,7.0\n")
    resumed = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    resumed.resume_before(2)
    resumed.log_metrics({"train/loss": 6.5, "epoch": 1}, step=2)
    resumed.save()
    rows = list(csv_module.DictReader((folder / "metrics.csv").open()))
    assert [(r["step"], r["train/loss"]) for r in rows] == [("0", "9.0"), ("1", "8.0"), ("2", "6.5")]
