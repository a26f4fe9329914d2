"""What `python -m learnbench.train` prints (learnbench/console.py): the known harmless library
messages are gone, a genuine warning still shows, and an error the user can fix is one message
(no traceback) with exit status 2, its results.json saying status failed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from conftest import (
    CSV_ONLY,
    TINY,
    cli_command,
    cli_env,
    describe,
    multirun_jobs,
    results_under,
    run_cli,
    tiny,
    truncated_mnist,
)
from learnbench.console import EXIT_USER_ERROR, quiet_known_noise

# The messages of conftest's issue "A console a person can read", as the libraries print them.
KNOWN_NOISE = [
    "The `srun` command is available on your system but is not used",  # lightning.fabric...slurm
    "litlogger",  # Lightning's "💡 Tip: ... try installing [litlogger]" advertisement
    "The anonymous setting has no effect",  # wandb, for the anonymous=None Lightning passes
    "`isinstance(treespec, LeafSpec)` is deprecated",  # torch's FutureWarning in Lightning's _pytree
    "is deprecated. Please switch to `torch.compile`",  # torch.jit deprecations, if any library calls it
]
USER_WARNING = "noisy_callback: a genuine new warning from user code"
USER_LOOKALIKE = "`isinstance(treespec, LeafSpec)` is deprecated (said by user code, not by Lightning)"

NOISY_CALLBACK = f'''
import warnings

from lightning.pytorch.callbacks import Callback


class Noisy(Callback):
    def on_train_start(self, trainer, pl_module):
        warnings.warn({USER_WARNING!r}, UserWarning)
        # The words of a silenced warning, from another module: they must still show.
        warnings.warn({USER_LOOKALIKE!r}, FutureWarning)
'''


def fake_srun(folder: Path) -> Path:
    """An `srun` executable (as on any machine with SLURM's client tools); it is never run."""
    folder.mkdir(parents=True, exist_ok=True)
    srun = folder / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    return folder


def env_with_srun(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = cli_env()
    for key in [k for k in env if k.startswith("SLURM_")]:  # not a SLURM job
        env.pop(key)
    env["PATH"] = f"{fake_srun(tmp_path / 'bin')}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default run (BP on the spiral, W&B offline + CSV) with `srun` on PATH and a user callback
    that warns, a few steps long."""
    root = tmp_path_factory.mktemp("console")
    (root / "noisy_callback.py").write_text(textwrap.dedent(NOISY_CALLBACK))
    env = env_with_srun(root, PYTHONPATH=os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
    args = [*TINY, "+callbacks.noisy._target_=noisy_callback.Noisy", f"paths.log_dir={root / 'logs'}"]
    proc = subprocess.run(cli_command(*args), cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, describe(proc)
    return root, proc


@pytest.mark.slow
def test_the_default_run_prints_none_of_the_known_noise(default_run):
    root, proc = default_run
    text = output(proc)
    lines = [line for line in text.splitlines() if "said by user code" not in line]  # the lookalike shows
    for message in KNOWN_NOISE:
        assert not [line for line in lines if message in line], f"{message!r} still printed\n{describe(proc)}"
    (record,) = results_under(root / "logs").values()
    assert record["status"] == "ok"
    assert list((Path(record["output_dir"]) / "wandb").glob("offline-run-*")), "W&B still logged the run"


@pytest.mark.slow
def test_a_genuine_warning_still_shows(default_run):
    _, proc = default_run
    text = output(proc)
    assert USER_WARNING in text, describe(proc)
    # Same words as a silenced warning, but from user code: the filter is by module too.
    assert USER_LOOKALIKE in text, describe(proc)
    # Lightning's own warning about a real misconfiguration (5 batches, log_every_n_steps=10), of
    # the same category (PossibleUserWarning) as the silenced srun hint.
    assert "is smaller than the logging interval Trainer(log_every_n_steps=10)" in text, describe(proc)
    assert "GPU available: False" in text  # Lightning's information lines stay


def test_lightnings_notice_on_step_checkpoints_under_manual_optimisation_is_silenced(tmp_path):
    """A checkpoint every N training steps (D&C's preset: every 50) made Lightning print a 15-line notice at every
    save; the suite's checkpoints hold the state after the batch by design. Negative control: without the filters
    the same run raises it, so the test sees the real warning."""
    from conftest import compose_config
    from learnbench.train import train

    def run(quiet: bool, folder: Path) -> list[str]:
        overrides = ["trainer.max_epochs=1", "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=1",
                     "+trainer.limit_test_batches=1", "+trainer.enable_progress_bar=false", "logger=csv",
                     "callbacks.checkpoint.every_n_epochs=null", "+callbacks.checkpoint.every_n_train_steps=2"]
        cfg = compose_config(overrides, folder)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if quiet:
                quiet_known_noise()
            assert train(cfg)["status"] == "ok"
        return [str(w.message) for w in caught if "pre-optimization state" in str(w.message)]

    assert run(False, tmp_path / "loud"), "the notice this filter is for no longer comes: drop the filter"
    assert run(True, tmp_path / "quiet") == []


@pytest.mark.parametrize("job_id, shown", [(None, False), ("4242", True)])
def test_the_srun_hint_shows_only_inside_a_slurm_allocation(job_id, shown, tmp_path, monkeypatch):
    from lightning.fabric.plugins.environments import SLURMEnvironment

    monkeypatch.setenv("PATH", f"{fake_srun(tmp_path)}{os.pathsep}{os.environ.get('PATH', '')}")
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    if job_id is not None:  # salloc / an interactive job: there the hint may be the right one
        monkeypatch.setenv("SLURM_JOB_ID", job_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_noise()
        quiet_known_noise()  # idempotent (a multirun's next job, a DDP rank)
        assert not SLURMEnvironment.detect()
    hints = [w for w in caught if "`srun` command is available" in str(w.message)]
    assert len(hints) == (1 if shown else 0), [str(w.message) for w in caught]


USER_SCRIPT = """
import sys
import warnings

warnings.simplefilter("default")
from learnbench.console import quiet_known_noise

quiet_known_noise()
import torch

# A forward-gradient step's first dual tensor: torch loads its jvp decompositions (already loaded).
torch.func.jvp(torch.sin, (torch.ones(3),), (torch.ones(3),))
print("jvp done", file=sys.stderr, flush=True)  # on stderr, in order with the warnings


def double(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


torch.jit.script(double)  # the user's own call: its deprecation warning must show
"""


@pytest.mark.slow
def test_torch_jit_deprecations_from_torch_itself_are_quiet_the_users_are_not(tmp_path):
    """fg_w / fg_a make dual tensors; torch then scripts its jvp decompositions (18 FutureWarnings)."""
    script = tmp_path / "user_script.py"
    script.write_text(USER_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, describe(proc)
    before, done, after = proc.stderr.partition("jvp done")
    assert done and "`torch.jit.script` is deprecated" not in before, describe(proc)
    assert after.count("`torch.jit.script` is deprecated") == 1, describe(proc)


# ----------------------------------------------------------------------------- errors the user fixes
@pytest.mark.slow
def test_a_config_error_is_one_message_and_exit_2(tmp_path):
    log_dir = tmp_path / "logs"
    proc = run_cli("optimizer.lr=abc", *TINY, *CSV_ONLY, f"paths.log_dir={log_dir}", cwd=tmp_path)
    text = output(proc)
    expected = "optimizer.lr='abc': expected a number > 0 (set on the command line)"
    assert proc.returncode == EXIT_USER_ERROR == 2, describe(proc)
    assert expected in text, describe(proc)
    assert "Traceback" not in text and "Error executing job" not in text, describe(proc)
    assert len(text.strip().splitlines()) == 1, describe(proc)  # no status=failed / outputs: lines around it
    (record,) = results_under(log_dir).values()
    assert record["status"] == "failed" and record["message"] == f"ConfigError: {expected}" and record["refused"]


@pytest.mark.slow
def test_a_damaged_data_file_is_one_message_and_exit_2(tmp_path):
    root = tmp_path / "datasets"
    path = truncated_mnist(root, seed=9)
    log_dir = tmp_path / "logs"
    overrides = ["data=mnist", f"paths.data_dir={root}", "data.download=false", "data.val_size=40"]
    proc = run_cli(*overrides, *TINY, *CSV_ONLY, f"paths.log_dir={log_dir}", cwd=tmp_path)
    text = output(proc)
    assert proc.returncode == 2, describe(proc)
    assert f"{path} is damaged: its header announces" in text, describe(proc)
    assert "Traceback" not in text, describe(proc)
    (record,) = results_under(log_dir).values()
    assert record["status"] == "failed" and record["message"].startswith("DamagedDataFileError: ")


@pytest.mark.slow
def test_a_multirun_goes_on_after_a_config_error(tmp_path):
    """Only the bad job fails: the next one runs; Hydra ends the sweep with the failure's message
    (no traceback) and a non-zero status."""
    log_dir = tmp_path / "logs"
    env = {k: v for k, v in cli_env().items() if k != "HYDRA_FULL_ERROR"}  # as a user runs it
    args = ["-m", "optimizer.lr=abc,0.1", *tiny(train_batches=3), *CSV_ONLY, f"paths.log_dir={log_dir}"]
    proc = subprocess.run(cli_command(*args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    text = output(proc)
    assert proc.returncode != 0, describe(proc)
    assert "Traceback" not in text, describe(proc)
    assert text.count("optimizer.lr='abc': expected a number > 0") == 2, describe(proc)  # the job's log line, Hydra's summary
    jobs = multirun_jobs(log_dir)
    records = results_under(log_dir)
    assert set(records) == set(jobs) and len(jobs) == 2
    assert [records[j]["status"] for j in jobs] == ["failed", "ok"]
    assert records[jobs[1]]["steps"] == 3


# ----------------------------------------------------------------------------- W&B
@pytest.mark.slow
def test_wandb_is_quiet_unless_asked_and_the_log_says_why_it_is_offline(tmp_path):
    """W&B printed a banner and a ~20-line summary per run unless WANDB_SILENT was set (only `make` set it); the
    log said "not logged in" also when WANDB_MODE=offline chose offline."""
    env = {k: v for k, v in cli_env().items() if k != "WANDB_SILENT"}
    args = cli_command("logger=wandb", *TINY, f"paths.log_dir={tmp_path / 'logs'}")
    quiet = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, describe(quiet)
    assert not [line for line in output(quiet).splitlines() if line.startswith("wandb:")], describe(quiet)
    assert "W&B is offline (WANDB_MODE=offline); sync later with: wandb sync " in output(quiet), describe(quiet)
    (record,) = results_under(tmp_path / "logs").values()
    assert list((Path(record["output_dir"]) / "wandb").glob("offline-run-*")), "W&B no longer logged the run"

    loud = subprocess.run(args, cwd=tmp_path, env={**env, "WANDB_SILENT": "false"}, capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and "wandb: " in output(loud), describe(loud)  # the user's own setting wins


def test_the_offline_reason_names_what_chose_it(monkeypatch, tmp_path):
    from conftest import compose_config
    from learnbench.train import wandb_mode_note

    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose_config(["logger=wandb"], tmp_path)
    for mode, reason in [("offline", "WANDB_MODE=offline"), ("", "not logged in")]:
        monkeypatch.setenv("WANDB_MODE", mode)
        assert wandb_mode_note(cfg) == f"W&B is offline ({reason}); sync later with: wandb sync {tmp_path}/wandb/offline-run-*"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode_note(cfg) == "W&B is disabled (WANDB_MODE=disabled): nothing is logged to W&B"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode_note(cfg) is None  # online: the run's URL is logged once it exists
    assert wandb_mode_note(compose_config(["logger=wandb", "logger.wandb.offline=true"], tmp_path)).startswith(
        "W&B is offline (logger.wandb.offline=true)")
    assert wandb_mode_note(compose_config(["logger=csv"], tmp_path)) is None


@pytest.mark.parametrize("user_value", [None, "1"])
def test_hydra_reports_errors_inside_the_app_as_the_user_asked(user_value, monkeypatch):
    """run_app asks Hydra to raise what it meets before the app starts (to show it as one line); inside the app,
    and in processes started from it, HYDRA_FULL_ERROR is the user's own again."""
    import subprocess as sp

    from learnbench.console import app_started, run_app

    if user_value is None:
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    else:
        monkeypatch.setenv("HYDRA_FULL_ERROR", user_value)
    seen = {}

    def app():
        seen["before"] = os.environ.get("HYDRA_FULL_ERROR")
        app_started()
        seen["inside"] = os.environ.get("HYDRA_FULL_ERROR")
        child = sp.run([sys.executable, "-c", "import os; print(os.environ.get('HYDRA_FULL_ERROR'))"], capture_output=True, text=True)
        seen["child"] = child.stdout.strip()

    run_app(app)
    assert seen == {"before": "1", "inside": user_value, "child": str(user_value)}
    assert os.environ.get("HYDRA_FULL_ERROR") == user_value
