"""Make Lightning's DDP re-launch work inside a Hydra multirun.

`strategy=ddp` starts ranks 1..N-1 by re-running the command line. Lightning rebuilds it from
`sys.argv` plus `hydra.run.dir`; inside a multirun job that is wrong twice over: argv holds `-m`
and the whole sweep (every rank would start its own multirun), and `hydra.run.dir` is not the
job's directory. Here the command is rebuilt from this job's own overrides and output directory,
so every rank runs exactly this job. (Ranks started externally, e.g. by SLURM's srun, are not
affected: Lightning does not re-launch them.)
"""

from __future__ import annotations

import sys

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
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher

    fabric_launcher._hydra_subprocess_cmd = _job_subprocess_cmd
    trainer_launcher._hydra_subprocess_cmd = _job_subprocess_cmd
