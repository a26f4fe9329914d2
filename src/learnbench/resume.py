"""Resuming a sweep: a job whose output directory already holds a finished run is not trained again,
and one that was stopped part-way (a SLURM time limit, a preemption, a closed laptop) continues from
the checkpoint it left there.

Sweeps write to a fixed directory (`hydra.sweep.dir`, e.g. logs/sweeps/<name>/<job number>), so
re-running the same sweep command visits the same job directories. A job is taken as done when its
results.json says "ok" *and* was written by the same job (the same overrides: a changed sweep
renumbers its jobs, and job 3 may now be a different experiment). Diverged and failed runs, and
directories without results, are run again.

A stopped job left `checkpoints/last.ckpt` (written at every epoch's end) and no finished results:
the same command continues from it (model, rule state, optimiser and scheduler, epoch and step,
the history and the diagnostics' sums), and ends with the results of an uninterrupted run, since the
data order depends on the epoch and the rule's noise on the step alone. The checkpoint must also be
this job's (the same overrides, saved in its hyper-parameters). csv/metrics.csv keeps the rows logged
before the checkpoint (CSVLogger below); the rows of the part after it are logged again by the resumed run.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.utilities import rank_zero_only

from learnbench.results import OK, RESULTS_FILE

log = logging.getLogger("learnbench")


def finished_record(output_dir: str | Path, overrides: Sequence[str] | None = None) -> dict | None:
    """The results.json record in `output_dir` if that run finished with status "ok", else None.

    With `overrides` (the job's command-line overrides), the record must have been written by a
    run with exactly these overrides; a record of another job is ignored, with a warning.
    """
    path = Path(output_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("%s is unreadable (%s): running the job again", path, error)
        return None
    if not isinstance(record, dict) or record.get("status") != OK:
        return None
    if overrides is not None and list(record.get("overrides") or []) != list(overrides):
        log.warning(
            "%s holds a finished run of other overrides (%s), not of this job (%s): running the job again",
            path, " ".join(record.get("overrides") or []), " ".join(overrides),
        )
        return None
    return record


LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def checkpoint_to_resume(output_dir: str | Path, overrides: Sequence[str] | None = None) -> Path | None:
    """The checkpoint a stopped run of this job left in `output_dir`, or None (start from scratch).

    With `overrides`, the checkpoint must have been written by a run with exactly these overrides."""
    path = Path(output_dir) / LAST_CHECKPOINT
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False).get("hyper_parameters", {}).get("overrides")
    except Exception as error:  # a file cut short by the kill, or not a checkpoint
        log.warning("%s is unreadable (%s): starting the job from scratch", path, error)
        return None
    if overrides is not None and list(saved or []) != list(overrides):
        log.warning(
            "%s is a checkpoint of other overrides (%s), not of this job (%s): starting the job from scratch",
            path, " ".join(saved or []), " ".join(overrides),
        )
        return None
    return path


def logged_step_to_resume_from(checkpoint: dict) -> int:
    """The step a run resumed from `checkpoint` logs next (Lightning's `_batches_that_stepped`, the `step` of
    every logged row): the stopped run's rows before it are kept, those from it on are logged again."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    return int(loop.get("_batches_that_stepped", checkpoint.get("global_step", 0)))


class CSVLogger(_LightningCSVLogger):
    """Lightning's CSVLogger (csv/metrics.csv, conf/logger/*.yaml), which deletes the file it finds when it
    starts, with a warning: a resumed run lost the rows of the epochs before the stop. Here a run resumed from
    a checkpoint (`resume_before(step)`) keeps the rows logged before it; a run started afresh in a folder that
    holds an earlier attempt's files (a sweep job run again) replaces them, without the warning."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._keep_rows_before: int | None = None

    def resume_before(self, step: int) -> None:
        """Keep the rows of the file already there whose step is below `step` (call before anything is logged)."""
        self._keep_rows_before = step

    @property
    def experiment(self):
        starting = self._experiment is None and rank_zero_only.rank == 0
        kept = self._take_over_earlier_files() if starting else []
        writer = super().experiment
        if kept:
            writer.metrics = kept
            writer.save()
        return writer

    def _take_over_earlier_files(self) -> list[dict]:
        """The rows to keep from an earlier attempt's metrics.csv; its files removed (Lightning's writer would
        warn about them, then delete the metrics)."""
        folder = Path(self.log_dir)
        metrics = folder / "metrics.csv"
        kept = []
        if self._keep_rows_before is not None and metrics.is_file():
            with metrics.open(newline="") as file:
                kept = [row for row in map(_numbers, csv.DictReader(file)) if row.get("step", 0) < self._keep_rows_before]
        for name in ("metrics.csv", "hparams.yaml"):
            (folder / name).unlink(missing_ok=True)
        return kept


def _numbers(row: dict[str, str]) -> dict:
    """A metrics.csv row as logged: numbers (step and epoch as integers), empty cells left out."""
    out: dict = {}
    for key, text in row.items():
        if text in ("", None):
            continue
        try:
            value = float(text)
        except ValueError:
            out[key] = text
            continue
        out[key] = int(value) if key in ("step", "epoch") else value
    return out
