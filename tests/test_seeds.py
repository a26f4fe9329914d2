"""Many seeds in one process (`seeds=[...]`, learnbench/seeds.py) against the oracle of separate runs.

Oracle: each seed of a stack must end where its own run ends (`seed=<s>`, the same overrides): every final metric,
every epoch of its history, to float32 rounding (a grouped product sums in another order than a dense layer; over a
few dozen steps the difference stays at ~1e-7 relative). The comparison is `learnbench.verify`'s (its `seeds` check),
so a user's rule that claims to stack is held to the same. The rules that cannot stack must be refused before any
work, saying why.
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import CSV_ONLY, compose_config, run_cli, tiny
from learnbench.config_validation import ConfigError
from learnbench.rules.backprop import Backprop
from learnbench.train import train
from learnbench.verify import main as verify_main
from learnbench.verify import seed_records_differ

SEEDS = [0, 1, 2]
#: Every rule that stacks (LearningRule.stacks_seeds is True), each on the spiral; a LayerNorm, Adam with a cosine
#: schedule and the Zipser-Andersen regression besides.
CASES = {
    "bp": ["method=bp"],
    "fa": ["method=fa"],
    "kp": ["method=kp"],
    "dfa": ["method=dfa"],
    "usf": ["method=usf"],
    "frsf": ["method=frsf"],
    "pc": ["method=pc"],
    "ipc": ["method=ipc"],
    "bp-layer_norm": ["method=bp", "model.layer_norm=true"],
    "fa-adam-cosine": ["method=fa", "optimizer=adam", "optimizer.lr=0.003", "scheduler=cosine"],
    "bp-zipser_andersen": ["data=zipser_andersen", "method=bp"],
}


FAST = {"fa", "bp-layer_norm"}  # make test: a feedback path and a packed LayerNorm; make test-slow: the rest


@pytest.mark.parametrize("case", [pytest.param(c, marks=() if c in FAST else pytest.mark.slow) for c in CASES])
def test_each_seed_of_a_stack_ends_as_its_own_run(case, tmp_path):
    args = [*CASES[case], *tiny(train_batches=8, epochs=2), "+trainer.limit_val_batches=2", *CSV_ONLY]
    args = [a for a in args if a != "+trainer.limit_val_batches=1"]
    stack = train(compose_config([*args, f"seeds=[{','.join(map(str, SEEDS))}]"], tmp_path / "stack"))
    assert stack["status"] == "ok", stack["message"]
    assert stack["seed_stack"]["seeds"] == SEEDS
    for s in SEEDS:
        own = json.loads((tmp_path / "stack" / f"seed_{s}" / "results.json").read_text())
        alone = train(compose_config([*args, f"seed={s}"], tmp_path / f"seed{s}"))
        assert own["seed"] == s and own["config"]["seed"] == s and own["status"] == "ok"
        assert len(own["history"]) == 2 and "val/loss" in own["metrics"]["final"]
        assert seed_records_differ(own, alone) == [], f"{case} seed {s}"


REFUSED = {
    "np": (["method=np"], "one loss difference for the whole model"),
    "fg_a": (["method=fg_a"], "one loss difference for the whole model"),
    "brsf": (["method=brsf"], "one generator"),
    "l_bp": (["method=l_bp"], "local heads"),
    "clip": (["grad_clip_norm=1.0"], "would mix the seeds' steps"),
    "one seed": (["seeds=[3]"], "two or more different seeds"),
    "rnn": (["data=sine_trajectory", "model=rnn", "method=bp"], "stacks dense MLPs"),
    "ddp": (["trainer=ddp_sim"], "runs on one process"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_cannot_stack_is_refused_before_any_work(case, tmp_path):
    overrides, says = REFUSED[case]
    seeds = [] if any(o.startswith("seeds=") for o in overrides) else ["seeds=[0,1]"]
    with pytest.raises(ConfigError, match=says):
        train(compose_config([*overrides, *seeds, *tiny(), *CSV_ONLY], tmp_path))


@pytest.mark.slow
def test_a_refused_stack_says_why_in_one_line_on_the_command_line(tmp_path):
    proc = run_cli("method=np", "seeds=[0,1]", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    said = proc.stdout + proc.stderr
    assert "Traceback" not in said and "seeds=[0, 1]: method=np cannot train seeds stacked" in said, said


def test_the_report_reads_a_stack_as_its_seeds_runs(tmp_path):
    """One row with n = the seeds, each seed's own test/acc (the stack's own record, with its summed loss, is left out)."""
    from learnbench.tools.report import build_table, load_records

    train(compose_config(["method=bp", "seeds=[0,1,2]", *tiny(train_batches=4, epochs=1), *CSV_ONLY], tmp_path / "stack"))
    records = load_records([tmp_path])
    assert sorted(r["seed"] for r in records) == SEEDS
    (row,) = build_table(records, ["test/acc"]).rows
    (acc,) = row["stats"]
    assert acc.n == 3 and acc.mean == pytest.approx(sum(r["metrics"]["final"]["test/acc"] for r in records) / 3)


class GlobalNormBackprop(Backprop):
    """bp with every gradient divided by the whole model's gradient norm: in a stack one number for all its seeds, so
    its claim to stack seeds is wrong, and verify's `seeds` check must say so."""

    stacks_seeds = True

    def estimate_grads(self, model, x, y, loss_fn, state=None):
        out = super().estimate_grads(model, x, y, loss_fn)
        norm = sum(float(p.grad.pow(2).sum()) for p in model.parameters()) ** 0.5
        for p in model.parameters():
            p.grad /= norm
        return out


@pytest.mark.slow
def test_verify_passes_a_rule_that_stacks_and_fails_one_that_mixes_its_seeds(capsys):
    assert verify_main(["method=kp", "--checks=seeds"]) == 0
    assert capsys.readouterr().out.startswith("PASS  seeds: a stack of seeds [0, 1], 3 epochs")
    assert verify_main(["method=bp", f"method._target_={__name__}.GlobalNormBackprop", "--checks=seeds"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL  seeds: a stack of seeds [0, 1] against their own runs: seed 0 ") and "stacked" in out, out
    assert verify_main(["method=np", "--checks=seeds"]) == 0
    assert capsys.readouterr().out.startswith("INFO  seeds: not run: the rule does not stack seeds: its step scales its noise")
