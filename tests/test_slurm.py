"""A sweep through a real SLURM (sbatch job arrays, via hydra-submitit-launcher and
conf/hydra/launcher/slurm_cpu.yaml) runs every job and the report tables it.

Needs a single-node SLURM on this machine: the test uses one that is up (CI starts it with
.ci/start_slurm.sh), else starts one with that script when the packages are installed and it may
(root or passwordless sudo), else skips and says why.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
import time

import pytest
import yaml

from conftest import CSV_ONLY, cli_env, describe, results_under, run_cli, tiny
from learnbench.paths import CONFIG_DIR

CI_DIR = CONFIG_DIR.parent / ".ci"

pytestmark = pytest.mark.slow  # real SLURM jobs (about a minute each): `make test-slow`


def node_idle() -> bool:
    """sinfo retries for ~9 s when the controller is down: probe with a short timeout."""
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=3)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and "idle" in out.stdout.split()


@pytest.fixture(scope="module")
def slurm():
    if node_idle():
        yield
        return
    if shutil.which("slurmctld") is None and shutil.which("slurmctld", path="/usr/sbin") is None:
        pytest.skip("SLURM is not installed: run .ci/start_slurm.sh (apt-get install slurm-wlm munge slurmdbd mariadb-server, as root)")
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        pytest.skip("SLURM is installed but not running, and starting it needs root: run .ci/start_slurm.sh as root")
    # Without slurmdbd installed: no accounting (submitit then relies on the result files alone).
    with_dbd = "1" if shutil.which("slurmdbd", path=f"{os.environ.get('PATH', '')}:/usr/sbin") else "0"
    start = subprocess.run(
        ["bash", str(CI_DIR / "start_slurm.sh")], env={**os.environ, "INSTALL": "0", "WITH_DBD": with_dbd},
        capture_output=True, text=True, timeout=180,
    )
    if start.returncode != 0 or not node_idle():
        pytest.skip(f"could not start SLURM with .ci/start_slurm.sh (exit {start.returncode}): {start.stderr[-500:]}")
    yield
    subprocess.run(["bash", str(CI_DIR / "stop_slurm.sh")], capture_output=True, timeout=60)


def sacct(job_ids: set[str], fields: str = "JobID,State", steps: bool = False, wait_s: float = 30) -> dict[str, list[str]]:
    """Job (or step) id -> fields as SLURM's accounting recorded them, once none is still running
    (submitit returns as soon as the results are written; the job ends a moment later). Empty
    without accounting."""
    arrays = ",".join(sorted({j.split("_")[0] for j in job_ids}))
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(["sacct", "-n", "-P", *([] if steps else ["-X"]), "-o", fields, "-j", arrays],
                             capture_output=True, text=True, timeout=30)
        rows = {row[0]: row[1:] for row in (line.split("|") for line in out.stdout.splitlines() if "|" in line)}
        if not any(v[-1] in ("PENDING", "RUNNING", "COMPLETING") for v in rows.values()) or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def test_spiral_sweep_through_slurm(slurm, tmp_path):
    log_dir = tmp_path / "logs"
    proc = run_cli(
        "-m", "sweep=spiral_rules", "method=bp,wp", "seed=0,1",
        "hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
        *tiny(), *CSV_ONLY, f"paths.log_dir={log_dir}",
        cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, describe(proc)
    sweep_dir = log_dir / "sweeps" / "spiral_rules"
    records = results_under(sweep_dir)
    jobs = sorted(p for p in sweep_dir.iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"] and set(records) == set(jobs)
    assert all(r["status"] == "ok" and r["steps"] == 5 for r in records.values())
    assert sorted((r["method"], r["seed"]) for r in records.values()) == [("bp", 0), ("bp", 1), ("wp", 0), ("wp", 1)]

    # Every job ran as a task of a SLURM job array (submitit writes the SLURM job id into Hydra's job config).
    job_ids = {yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"] for job in jobs}
    assert len(job_ids) == 4 and all(j.split("_")[0].isdigit() and "_" in j for j in job_ids), job_ids
    assert len({j.split("_")[0] for j in job_ids}) == 1, "one sbatch job array"
    states = sacct(job_ids)
    if states:  # with accounting (slurmdbd): SLURM itself says they completed
        assert {j: states[j] for j in job_ids} == {j: ["COMPLETED"] for j in job_ids}

    report = subprocess.run([sys.executable, "-m", "learnbench.tools.report", str(sweep_dir), "--format", "csv"],
                            capture_output=True, text=True, env=cli_env(), timeout=120)
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader(io.StringIO(report.stdout)))
    assert [(r["method"], r["data"], r["n"]) for r in rows] == [("bp", "spiral", "2"), ("wp", "spiral", "2")]
    for row in rows:
        accs = [r["metrics"]["final"]["test/acc"] for r in records.values() if r["method"] == row["method"]]
        assert float(row["test/acc mean"]) == pytest.approx(statistics.mean(accs), rel=1e-9)


def test_ddp_job_through_slurm_runs_one_rank_per_task(slurm, tmp_path):
    """slurm_ddp: one job, tasks_per_node = trainer.devices; SLURM starts the ranks and Lightning
    takes them from SLURM's environment (here 2 CPU ranks with trainer=ddp_sim, ~25 s)."""
    log_dir = tmp_path / "logs"
    proc = run_cli(
        "-m", "sweep=spiral_rules", "method=wp", "seed=0", "trainer=ddp_sim",
        "hydra/launcher=slurm_ddp", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
        *tiny(), *CSV_ONLY, f"paths.log_dir={log_dir}",
        cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, describe(proc)
    sweep_dir = log_dir / "sweeps" / "spiral_rules"
    (record,) = results_under(sweep_dir).values()
    assert record["status"] == "ok" and record["config"]["trainer"]["devices"] == 2
    job_id = yaml.safe_load((sweep_dir / "0" / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]
    steps = sacct({job_id}, "JobID,NTasks,State", steps=True)
    if steps:  # with accounting: SLURM ran the job's step as 2 tasks
        assert steps[f"{job_id.split('_')[0]}.0"] == ["2", "COMPLETED"], steps
    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").rglob("*_log.*"))
    assert "global_rank=0(2)" in logs and "global_rank=1(2)" in logs
    assert "Starting with 2 processes" in logs
