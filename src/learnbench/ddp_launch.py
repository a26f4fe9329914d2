"""Make Lightning's DDP re-launch work inside a Hydra multirun.

`strategy=ddp` starts ranks 1..N-1 by re-running the command line. Lightning rebuilds it from
`sys.argv` plus `hydra.run.dir`; inside a multirun job that is wrong twice over: argv holds `-m`
and the whole sweep (every rank would start its own multirun), and `hydra.run.dir` is not the
job's directory. Here the command is rebuilt from this job's own overrides and output directory,
so every rank runs exactly this job. (Ranks started externally, e.g. by SLURM's srun, are not
affected: Lightning does not re-launch them.)

A multirun runs its jobs one after another in one process, and a DDP job leaves behind its
process group and the variables the launcher exported (LOCAL_RANK, MASTER_PORT, ...): the next
job would then take itself for an externally launched rank and talk to the previous job's dead
ranks. `job_scope()` undoes both when a job ends.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd


def _job_subprocess_cmd(local_rank: int) -> tuple[list[str], str]:
    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "learnbench.train", *hydra_cfg.overrides.task]
    command += [
        f"hydra.run.dir={hydra_cfg.runtime.output_dir}",
        f"hydra.job.name=ddp_rank_{local_rank}",
        "hydra.output_subdir=null",
        "hydra/hydra_logging=disabled",
        "hydra/job_logging=disabled",
    ]
    return command, get_original_cwd()


def install() -> None:
    """Replace Lightning's private `_hydra_subprocess_cmd` (no public hook exists for the re-launch command).

    tests/test_ddp.py::test_lightning_still_builds_the_relaunch_command_where_we_replace_it fails loudly
    if a Lightning release moves or renames it; here a clear error says so at start."""
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher

    for launcher in (fabric_launcher, trainer_launcher):
        if not hasattr(launcher, "_hydra_subprocess_cmd"):
            raise RuntimeError(
                f"{launcher.__name__} no longer has _hydra_subprocess_cmd: this Lightning version re-launches DDP "
                f"ranks differently; learnbench.ddp_launch needs updating (or pin lightning to a 2.x release <= 2.6)"
            )
    fabric_launcher._hydra_subprocess_cmd = _job_subprocess_cmd
    trainer_launcher._hydra_subprocess_cmd = _job_subprocess_cmd


# Set by Lightning's launcher (and OMP_NUM_THREADS by its thread-count helper) in the launching process.
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")


@contextmanager
def job_scope() -> Iterator[None]:
    """One job: install the re-launch command; afterwards, leave the process as the job found it."""
    install()
    saved_env = {k: os.environ.get(k) for k in _LAUNCH_ENV}
    saved_threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(saved_threads)
