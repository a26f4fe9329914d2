"""The budget a run trains, and the warning when the rules of a comparison would train different ones.

Oracles: budgets written here by hand (which comparison differs, in what), and a real multirun whose preset
(in a config folder of the test's own, on Hydra's search path) gives one rule more epochs than the other.
"""

from __future__ import annotations

import pytest

from conftest import describe, results_under, run_cli
from learnbench.budget import describe as describe_budget
from learnbench.budget import unequal_budgets

CONSTANT = {"max_epochs": 3, "max_steps": -1, "limit_train_batches": None, "batch_size": 100, "schedule": None}
LONGER = {**CONSTANT, "max_epochs": 10}
COSINE = {**CONSTANT, "schedule": {"_target_": "learnbench.schedules.warmup_cosine", "warmup_epochs": 0}}


def test_a_budget_reads_as_one_line():
    assert describe_budget(CONSTANT) == "3 epochs, batch 100, lr schedule constant"
    assert describe_budget({**COSINE, "max_epochs": 1, "max_steps": 50, "limit_train_batches": 5}) == (
        "1 epoch, at most 50 steps, 5 batches an epoch, batch 100, lr schedule warmup_cosine(warmup_epochs=0)")


def test_rules_of_one_comparison_with_different_budgets_are_named():
    """bp and fa differ in epochs, bp and kp in the schedule: one message, each budget with its rules."""
    jobs = [(["method=bp", "seed=0"], CONSTANT), (["method=bp", "seed=1"], CONSTANT),
            (["method=fa", "seed=0"], LONGER), (["method=kp", "seed=0"], COSINE)]
    (message,) = unequal_budgets(jobs)
    assert message == ("unequal budgets between rules: bp: 3 epochs, batch 100, lr schedule constant; "
                       "fa: 10 epochs, batch 100, lr schedule constant; "
                       "kp: 3 epochs, batch 100, lr schedule warmup_cosine(warmup_epochs=0)")


def test_a_budget_swept_on_its_own_makes_comparisons_that_each_hold_one():
    """`method=bp,fa trainer.max_epochs=3,10`: each epoch count compares the rules alike (no message); a rule whose
    budget differs inside one of them is named with the swept value."""
    grid = [([f"method={m}", f"trainer.max_epochs={b['max_epochs']}"], b) for m in ("bp", "fa") for b in (CONSTANT, LONGER)]
    assert unequal_budgets(grid) == []
    grid[3] = (["method=fa", "trainer.max_epochs=10"], {**LONGER, "batch_size": 50})
    (message,) = unequal_budgets(grid)
    assert message.startswith("unequal budgets between rules at trainer.max_epochs=10: bp: 10 epochs, batch 100")
    assert "fa: 10 epochs, batch 50" in message


@pytest.mark.slow
def test_a_multirun_whose_rules_get_different_budgets_warns_at_its_start(tmp_path):
    """A preset of the user's own gives every rule 1 epoch, and its per-rule file gives fa 2: the multirun logs the
    warning before its first job, naming both budgets, and the jobs train what they were given."""
    conf = tmp_path / "my_conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "tuned" / "my_preset").mkdir(parents=True)
    (conf / "experiment" / "my_preset.yaml").write_text("# @package _global_\ntrainer:\n  max_epochs: 1\n")
    (conf / "tuned" / "my_preset" / "fa.yaml").write_text("# @package _global_\ntrainer:\n  max_epochs: 2\n")
    proc = run_cli("-m", "method=bp,fa", "experiment=my_preset", f"hydra.searchpath=[file://{conf}]", "seed=0",
                   "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
                   "+trainer.enable_progress_bar=false", "callbacks=none", "logger=csv", f"paths.log_dir={tmp_path / 'logs'}",
                   cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    output = proc.stdout + proc.stderr
    warning = next((line for line in output.splitlines() if "unequal budgets between rules" in line), None)
    assert warning is not None, describe(proc)
    assert "bp: 1 epoch, 2 batches an epoch" in warning and "fa: 2 epochs, 2 batches an epoch" in warning
    assert output.index("unequal budgets") < output.index("Launching 2 jobs")
    trained = {r["method"]: (r["epochs"], r["budget"]["max_epochs"]) for r in results_under(tmp_path / "logs").values()}
    assert trained == {"bp": (1, 1), "fa": (2, 2)}
