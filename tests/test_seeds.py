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
from learnbench.verify import SEED_STACK_TOLERANCE, seed_records_differ

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
#: The block-diagonal stacks (learnbench/seeds.py): Murray's task under every rule that stacks on it, online updates and
#: truncation, a learned feedback matrix, the add task's soft targets, reservoirs (a ridge readout solved per seed, a
#: gradient readout, rflo through an ESN's own W), and SpikeProp's XOR (exact spike times, a fixed budget).
MURRAY = ["experiment=murray_sine", "data.train_sequences=6"]
ESN = ["experiment=reservoirpy_mackey_glass", "model.units=20", "model.washout=20", "data.train_steps=400"]
RECURRENT = {
    "rnn-rflo": [*MURRAY, "method=rflo"],
    "rnn-bptt": [*MURRAY, "method=bptt"],
    "rnn-eprop": [*MURRAY, "method=eprop"],
    "rnn-eprop-adaptive-online": [*MURRAY, "method=eprop", "method.feedback=adaptive", "method.update_every=25"],
    "rnn-bptt-truncated-momentum": [*MURRAY, "method=bptt", "method.truncation=20", "optimizer.momentum=0.9"],
    "rnn-bp-add_task": ["data=add_task", "model=rnn", "method=bp", "data.steps=30", "model.hidden_size=8"],
    "esn-ridge": [*ESN, "method=ridge"],
    "esn-bptt": [*ESN, "method=bptt", "optimizer.lr=0.01"],
    "esn-rflo-recurrent": [*ESN, "method=rflo", "model.learn_recurrent=true", "optimizer.lr=0.001"],
    "srm-spikeprop": ["experiment=spikeprop_xor", "callbacks.converged=null", "trainer.check_val_every_n_epoch=1"],
}
CASES.update(RECURRENT)
#: A reservoir's readout fits its target to r^2 ~ 0.99, so its error is ~1 % of its output: the stack's dense product
#: over S N units (float32, summed in other lanes than one seed's N) moves the output by ~1e-7 of itself and the
#: error, and the error's metrics (nrmse, mse), by ~1e-5 of theirs. One order looser than float32 rounding there.
RELATIVE = {case: 1e-4 for case in RECURRENT if case.startswith("esn")}


FAST = {"fa", "bp-layer_norm", "rnn-rflo", "esn-ridge"}  # make test: a feedback path and a packed LayerNorm; make test-slow: the rest


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
        assert seed_records_differ(own, alone, rel=RELATIVE.get(case, SEED_STACK_TOLERANCE)) == [], f"{case} seed {s}"


REFUSED = {
    "np": (["method=np"], "one loss difference for the whole model"),
    "fg_a": (["method=fg_a"], "one loss difference for the whole model"),
    "brsf": (["method=brsf"], "one generator"),
    "l_bp": (["method=l_bp"], "local heads"),
    "clip": (["grad_clip_norm=1.0"], "would mix the seeds' steps"),
    "one seed": (["seeds=[3]"], "two or more different seeds"),
    "snn": (["data=mnist", "model=snn", "method=bp"], "stacks dense MLPs"),
    "rtrl": ([*MURRAY, "method=rtrl"], r"\(S N\)\^3"),
    "force": (["experiment=force_sine"], "1 \\+ r\\^T P r"),
    "sequential_mnist": (["data=sequential_mnist", "model=rnn", "method=bptt"], "a target at every step"),
    "mlp on sequences": (["data=sine_trajectory", "model=mlp", "method=bp"], "feed-forward tasks only"),
    "converged": (["experiment=spikeprop_xor"], "set callbacks.converged=null"),
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


def test_without_its_masks_a_recurrent_stack_lets_updates_cross_between_seeds(tmp_path, monkeypatch):
    """The control for the recurrent cases above: rflo's outer products give every seed's W_rec a share of the others'
    errors; only the training module's masks (SeedGradMasks) keep them apart. With the masks off the seeds' runs must
    differ from their own, so the comparison above can see a stack that mixes its seeds."""
    from learnbench.seeds import SeedGradMasks

    args = [*MURRAY, "method=rflo", *tiny(train_batches=6, epochs=1), *CSV_ONLY]
    monkeypatch.setattr(SeedGradMasks, "restrict", lambda self: None)
    train(compose_config([*args, "seeds=[0,1]"], tmp_path / "stack"))
    own = json.loads((tmp_path / "stack" / "seed_0" / "results.json").read_text())
    alone = train(compose_config([*args, "seed=0"], tmp_path / "alone"))
    assert seed_records_differ(own, alone) != []
