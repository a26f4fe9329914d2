"""The Optuna sweep (conf/sweep/optuna_lr_sigma.yaml) records each trial in its sqlite study with the
value the app returned, and a second invocation adds trials to the same study.

Oracle: the runs' own results.json files (best val/acc, and the lr and sigma they trained with).
"""

from __future__ import annotations

import math

import pytest

from conftest import CSV_ONLY, describe, results_under, run_cli, tiny

optuna = pytest.importorskip("optuna")

pytestmark = pytest.mark.slow  # two Optuna sweeps through the CLI (about 30 s): `make test-slow`


def storage_or_skip(url: str):
    """optuna 2.x cannot use SQLAlchemy 2 (its RDB storage fails on an internal assertion)."""
    import sqlalchemy

    if int(optuna.__version__.split(".")[0]) < 3 and int(sqlalchemy.__version__.split(".")[0]) >= 2:
        pytest.skip(f"optuna {optuna.__version__} needs sqlalchemy<2 (installed: {sqlalchemy.__version__}); pin it with the cluster extra")
    return url


def test_two_trials_resume_one_study_and_record_the_runs_values(tmp_path):
    log_dir = tmp_path / "logs"
    (log_dir / "sweeps").mkdir(parents=True)  # `make sweep` does this: sqlite needs the directory
    storage = storage_or_skip(f"sqlite:///{log_dir}/sweeps/optuna.db")
    command = ["-m", "sweep=optuna_lr_sigma", "method=np", "data=spiral", "hydra.sweeper.n_trials=1", *tiny(), *CSV_ONLY, f"paths.log_dir={log_dir}"]
    for _ in range(2):  # the second invocation resumes the study: trial 1, not a new trial 0
        proc = run_cli(*command, cwd=tmp_path)
        assert proc.returncode == 0, describe(proc)

    study = optuna.load_study(study_name="lr_sigma_np_spiral", storage=storage)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [t.number for t in trials] == [0, 1] and len(study.trials) == 2

    records = list(results_under(log_dir / "sweeps" / "optuna_lr_sigma" / "lr_sigma_np_spiral").values())
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    assert len({r["output_dir"] for r in records}) == 2, "each invocation writes its trials to a new directory"
    for trial in trials:
        lr, sigma = trial.params["optimizer.lr"], trial.params["method.sigma"]
        assert 1e-3 <= lr <= 1.0 and 1e-5 <= sigma <= 1e-1
        (record,) = [r for r in records if math.isclose(r["config"]["optimizer"]["lr"], lr, rel_tol=1e-12)]
        assert math.isclose(record["config"]["method"]["sigma"], sigma, rel_tol=1e-12)
        assert record["method"] == "np" and record["data"] == "spiral"
        assert trial.value == pytest.approx(record["metrics"]["best"]["val/acc"], rel=1e-12)
