"""Real (tiny) training runs on the CPU, in-process through `train(cfg)` and through the CLI.

Every check reads results.json back from disk; the run directories are the ones Hydra made.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra.utils import instantiate

from conftest import CSV_ONLY, compose_config, multirun_jobs, results_under, tiny
from learnbench.checkpoints import load_module
from learnbench.data import DatasetNotFoundError
from learnbench.train import train

DATASETS = {
    "spiral": ("mlp", "test/acc"),
    "mnist": ("mlp", "test/acc"),
    "fashion_mnist": ("mlp", "test/acc"),
    "mnist_autoencoder": ("autoencoder", "test/mse"),
    "fashion_mnist_autoencoder": ("autoencoder", "test/mse"),
}


def read_record(run_dir):
    path = run_dir / "results.json"
    assert path.is_file(), f"no results.json in {run_dir}"
    return json.loads(path.read_text())


@pytest.mark.parametrize("data", list(DATASETS))
def test_short_run_writes_results(data, vision_data, tmp_path):
    model, metric = DATASETS[data]
    root, _ = vision_data
    # tiny(), but with the default callbacks' checkpoint (checkpoints/last.ckpt after the epoch): the oracle's model
    keep = [o for o in tiny(train_batches=3) if o not in ("callbacks=none", "+trainer.enable_checkpointing=false")]
    overrides = [f"data={data}", f"model={model}", "method=bp", "seed=3", *keep, *CSV_ONLY]
    if data != "spiral":  # the synthetic IDX files: 240 training images, 60 test images
        overrides += [f"paths.data_dir={root}", "data.download=false", "data.val_size=40", "data.batch_size=50"]
    run_dir = tmp_path / "run"
    cfg = compose_config(overrides, run_dir)
    returned = train(cfg)
    record = read_record(run_dir)

    assert record["status"] == "ok", record["message"]
    assert (record["method"], record["data"], record["model"], record["seed"]) == ("bp", data, model, 3)
    assert record["steps"] == 3 and record["epochs"] == 1
    final = record["metrics"]["final"]
    other = "test/mse" if metric == "test/acc" else "test/acc"
    assert metric in final and "test/loss" in final and other not in final
    assert metric.replace("test/", "val/") in final and "train/loss" in final
    assert all(isinstance(v, float) and math.isfinite(v) for v in final.values())
    # Oracle: the metric recomputed by hand from the saved weights on the whole test split (one test
    # batch holds all of it), independently of the evaluation loop, torchmetrics and results.json.
    datamodule = instantiate(cfg.data)
    datamodule.setup("test")
    x, y = datamodule.splits.test
    assert len(x) <= cfg.data.eval_batch_size, "limit_test_batches=1 must cover the whole test split"
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 3, "the weights after the last step"
    trained = load_module(checkpoint).eval()
    with torch.no_grad():
        output = trained(x)
    if metric == "test/acc":
        correct = int((output.argmax(dim=1) == y).sum())
        assert final["test/acc"] == pytest.approx(correct / len(y), abs=1e-6), (correct, len(y))
    else:  # the mean squared error over every pixel of every test image
        assert final["test/mse"] == pytest.approx(float((output - y.flatten(1)).pow(2).mean()), rel=1e-5)
        # two code paths, one number: the mean per-example MSE loss and torchmetrics' MSE
        assert final["test/mse"] == pytest.approx(final["test/loss"], rel=1e-5)
    assert record["output_dir"] == str(run_dir.resolve())
    assert record["config"]["data"]["_target_"].startswith("learnbench.data.")
    assert record["parameters"] > 0 and record["wall_time_s"] > 0
    assert len(record["history"]) == 1 and record["history"][0]["step"] == 3
    assert returned["metrics"]["final"][metric] == final[metric]
    assert (run_dir / "csv" / "metrics.csv").is_file()


def test_a_run_told_to_test_nothing_ends_with_its_validation_metrics(tmp_path):
    """trainer.limit_test_batches=0 (skip the test): status ok and no test/ metric, not Lightning's empty list turned
    into an IndexError traceback."""
    args = [a for a in tiny() if not a.startswith("+trainer.limit_test_batches")]
    record = train(compose_config([*args, "+trainer.limit_test_batches=0", *CSV_ONLY], tmp_path))
    assert record["status"] == "ok", record["message"]
    assert "val/acc" in record["metrics"]["final"] and not any(k.startswith("test/") for k in record["metrics"]["final"])


def test_missing_dataset_fails_with_a_record(tmp_path):
    overrides = ["data=mnist", f"paths.data_dir={tmp_path / 'empty'}", "data.download=false", *tiny(), *CSV_ONLY]
    run_dir = tmp_path / "run"
    with pytest.raises(DatasetNotFoundError, match="paths.data_dir"):
        train(compose_config(overrides, run_dir))
    record = read_record(run_dir)
    assert record["status"] == "failed" and "DatasetNotFoundError" in record["message"]


def test_backprop_on_the_default_spiral_reaches_95_percent(tmp_path):
    """The defaults (plus conf/tuned/spiral/bp.yaml) in 30 epochs of 20 steps, under the 100 the spiral's budget
    gives every rule (conf/budget/spiral.yaml): 5-25 s on 2 CPU cores."""
    overrides = ["callbacks=none", "+trainer.enable_progress_bar=false", "+trainer.enable_checkpointing=false", *CSV_ONLY,
                 "trainer.max_epochs=30"]
    train(compose_config(overrides, tmp_path))
    record = read_record(tmp_path)
    assert record["status"] == "ok"
    assert record["steps"] == 600
    assert record["metrics"]["final"]["test/acc"] >= 0.95, record["metrics"]["final"]


# ----------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_multirun_makes_one_job_dir_per_job(wandb_multirun):
    log_dir, proc = wandb_multirun
    assert proc.returncode == 0, proc.stderr[-5000:]
    jobs = multirun_jobs(log_dir)
    assert [p.name for p in jobs] == ["0", "1"]
    records = results_under(log_dir)
    assert set(records) == set(jobs), "each job writes its own results.json, and only there"
    for job, seed in zip(jobs, (0, 1)):
        record = records[job]
        assert record["status"] == "ok" and record["seed"] == seed
        assert record["output_dir"] == str(job.resolve())
        assert f"seed={seed}" in record["overrides"]
        assert "test/acc" in record["metrics"]["final"]
    assert (jobs[0].parent / "multirun.yaml").is_file()


@pytest.mark.slow
def test_simultaneous_single_runs_get_their_own_dirs(concurrent_single_runs):
    outputs = concurrent_single_runs["outputs"]
    for name, (code, out) in outputs.items():
        assert code == 0, f"{name}: {out[-5000:]}"
    records = results_under(concurrent_single_runs["log_dir"])
    assert len(records) == 2, list(records)
    dirs = list(records)
    assert dirs[0] != dirs[1]
    assert all("/runs/" in str(d) for d in dirs)
    assert {r["config"]["tags"][0] for r in records.values()} == {"ok", "diverged"}
    for run_dir, record in records.items():
        assert record["output_dir"] == str(run_dir.resolve())


def test_step_values_reach_the_logger_at_lightnings_cadence(tmp_path):
    """train/batch_loss and lr are written every trainer.log_every_n_steps steps (Lightning's
    documented cadence: global steps 4, 9, 14, 19 for 5 and 20 steps), epoch means once."""
    import csv

    overrides = ["data=spiral", *tiny(train_batches=20), "trainer.log_every_n_steps=5", *CSV_ONLY]
    train(compose_config(overrides, tmp_path))
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    logged = lambda key: [int(r["step"]) for r in rows if r.get(key) not in (None, "")]
    assert logged("train/batch_loss") == [4, 9, 14, 19]
    assert logged("lr") == [4, 9, 14, 19]
    assert len(logged("train/loss")) == 1 and len(logged("train/acc")) == 1
    record = read_record(tmp_path)
    # the epoch mean the logger got is the one results.json holds
    (epoch_row,) = [r for r in rows if r.get("train/loss") not in (None, "")]
    assert float(epoch_row["train/loss"]) == pytest.approx(record["history"][0]["train/loss"], rel=1e-6)
