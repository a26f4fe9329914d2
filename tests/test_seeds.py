"""Many seeds in one process (`seeds=[...]`, learnbench/seeds.py) against the oracle of separate runs.

Oracle: each seed of a stack must end where its own run ends (`seed=<s>`, the same overrides): every final metric,
every epoch of its history, to float32 rounding (a grouped convolution sums in another order than a dense layer;
over a few dozen steps the difference stays at ~1e-7 relative). The rules that cannot stack must be refused before
any work, saying why.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from conftest import CSV_ONLY, compose_config, run_cli, tiny
from learnbench.config_validation import ConfigError
from learnbench.train import train

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


def final_and_history(record: dict) -> tuple[dict, list[dict]]:
    """The metrics (a rule's own rule/* diagnostics are the whole stack's, left out of a seed's record)."""
    def own(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if "/" in k and not k.startswith("rule/")}

    return own(record["metrics"]["final"]), [own(e) for e in record["history"]]


def assert_close(stacked: dict, alone: dict, what: str) -> None:
    assert stacked.keys() == alone.keys(), f"{what}: keys {sorted(stacked)} != {sorted(alone)}"
    for key, value in alone.items():
        assert math.isclose(stacked[key], value, rel_tol=2e-5, abs_tol=1e-6), f"{what} {key}: stacked {stacked[key]} != alone {value}"


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
        (final, history), (final_alone, history_alone) = final_and_history(own), final_and_history(alone)
        assert_close(final, final_alone, f"{case} seed {s} final")
        assert len(history) == len(history_alone) == 2
        for epoch, (entry, entry_alone) in enumerate(zip(history, history_alone)):
            assert_close(entry, entry_alone, f"{case} seed {s} epoch {epoch}")


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
