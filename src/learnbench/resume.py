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
this job's (the same overrides, saved in its hyper-parameters).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

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
