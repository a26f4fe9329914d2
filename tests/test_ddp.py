"""DDP on 2 CPU processes (gloo): hand-written gradients must be all-reduced explicitly.

In-process tests use `ddp_spawn` (plain `ddp` would re-execute pytest). Each rank saves its
parameters to a file; the parent compares them with each other and with an independent oracle:
one process training on the union of the two ranks' batches (mean of two equal-size batch means
= mean over the union), so K synchronised DDP steps equal K single-process steps.
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import CSV_ONLY, compose_config, describe, multirun_jobs, results_under, run_cli, tiny
from learnbench.data import SpiralDataModule
from learnbench.models import MLP
from learnbench.module import LearningRuleModule
from learnbench.rules import Backprop
from learnbench.train import train

STEPS, BATCH = 6, 16


pytestmark = pytest.mark.usefixtures("restore_process_state")  # conftest.py

class SaveParameters(L.Callback):
    """Each rank writes its final parameters (and step count) to <directory>/rank<r>.pt."""

    def __init__(self, directory: str):
        self.directory = directory

    def on_train_end(self, trainer, pl_module):
        state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
        torch.save({"params": state, "steps": trainer.global_step, "world": trainer.world_size},
                   Path(self.directory) / f"rank{trainer.global_rank}.pt")


def spiral(batch_size: int) -> SpiralDataModule:
    # 128 training points: 4 steps per epoch on each of 2 ranks (batch 16) or on 1 process (batch 32).
    return SpiralDataModule(train_per_arm=64, val_per_arm=8, test_per_arm=8, batch_size=batch_size, seed=11)


def initial_model() -> MLP:
    torch.manual_seed(0)
    return MLP(2, 2, hidden_sizes=(16, 16), activation="tanh")


def fit(model, data, directory: Path, **trainer_kwargs) -> None:
    module = LearningRuleModule(
        model, Backprop(), optimizer=partial(torch.optim.SGD, lr=0.5, momentum=0.9), task="classification",
        allreduce_grads=trainer_kwargs.pop("allreduce_grads", True),
    )
    trainer = L.Trainer(
        accelerator="cpu", max_steps=STEPS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[SaveParameters(str(directory))],
        default_root_dir=directory, **trainer_kwargs,
    )
    trainer.fit(module, datamodule=data)


def load_ranks(directory: Path, world: int) -> list[dict]:
    states = [torch.load(directory / f"rank{r}.pt") for r in range(world)]
    assert all(s["steps"] == STEPS and s["world"] == world for s in states)
    return [s["params"] for s in states]


@pytest.fixture(scope="module")
def single_process_reference(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("single")
    fit(initial_model(), spiral(2 * BATCH), directory, devices=1)
    return load_ranks(directory, 1)[0]


@pytest.mark.slow
@pytest.mark.parametrize("allreduce", [True, False], ids=["allreduce", "no_allreduce"])
def test_ddp_ranks_stay_identical_only_with_the_all_reduce(allreduce, single_process_reference, tmp_path):
    model = initial_model()
    start = copy.deepcopy(model.state_dict())
    fit(model, spiral(BATCH), tmp_path, devices=2, strategy="ddp_spawn", allreduce_grads=allreduce)
    rank0, rank1 = load_ranks(tmp_path, 2)
    assert rank0.keys() == start.keys()
    assert any(not torch.equal(rank0[k], start[k]) for k in start), "training did not move the parameters"
    if allreduce:
        for k in rank0:
            assert torch.equal(rank0[k], rank1[k]), f"{k} differs across ranks"
            torch.testing.assert_close(rank0[k], single_process_reference[k], rtol=1e-4, atol=1e-5, msg=k)
    else:
        # Without the explicit all-reduce DDP averages nothing (the rule never calls backward):
        # each rank follows its own shard and the replicas drift apart, silently.
        gap = max((rank0[k] - rank1[k]).abs().max().item() for k in rank0)
        assert gap > 1e-3, gap
        diff_from_reference = max((rank0[k] - single_process_reference[k]).abs().max().item() for k in rank0)
        assert diff_from_reference > 1e-3


def ddp_sim_args(log_dir: Path) -> list[str]:
    return ["data=spiral", "trainer=ddp_sim", *tiny(train_batches=4), *CSV_ONLY, f"paths.log_dir={log_dir}"]


def single_process_record(seed: int, directory: Path) -> dict:
    """The oracle for a ddp_sim run: one process with batch 2 x 100 for the same 4 steps. Rank r's batch i is
    permutation[r::2][100 i : 100 (i + 1)], so the two ranks' batches together are the single process's batch i
    of 200 (same seed, same permutation), and the all-reduced mean of the two batch-mean gradients is its gradient."""
    overrides = ["data=spiral", "trainer=cpu", "data.batch_size=200", f"seed={seed}", *tiny(train_batches=4), *CSV_ONLY]
    record = train(compose_config(overrides, directory))
    assert record["status"] == "ok" and record["steps"] == 4
    return record


def check_ddp_record(record: dict, reference: dict) -> None:
    assert record["status"] == "ok", record["message"]
    assert record["config"]["trainer"]["strategy"] == "ddp" and record["config"]["trainer"]["devices"] == 2
    assert record["config"]["data"]["batch_size"] * 2 == reference["config"]["data"]["batch_size"]
    assert record["steps"] == 4
    # Both ranks ended with bit-identical models (callbacks.RankSync: every tensor's digest compared across ranks).
    assert record["ranks"] == {"world_size": 2, "in_sync": True, "differ": [], "step": 4}
    # Metrics synchronised over both ranks (torchmetrics) on the whole test split and on the 800 training
    # examples both saw: the single process's, up to float reassociation in the all-reduce (a point on
    # the decision boundary may flip: 1e-3 is two of the 2000 test points).
    ddp, single = record["metrics"]["final"], reference["metrics"]["final"]
    assert ddp["test/acc"] == pytest.approx(single["test/acc"], abs=1e-3), (ddp, single)
    assert ddp["test/loss"] == pytest.approx(single["test/loss"], rel=1e-5), (ddp, single)
    assert ddp["train/loss"] == pytest.approx(single["train/loss"], rel=1e-5), (ddp, single)


@pytest.mark.slow
def test_ddp_sim_multirun_every_job_finishes(tmp_path):
    """Lightning re-launches rank 1 from the command line: inside a multirun ddp_launch must rebuild
    it for this job only, and the next job must not inherit the previous job's process group."""
    log_dir = tmp_path / "logs"
    proc = run_cli("-m", "seed=0,1", *ddp_sim_args(log_dir), cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, describe(proc)
    jobs = multirun_jobs(log_dir)
    records = results_under(log_dir)
    assert set(records) == set(jobs) and len(jobs) == 2, list(records)
    for job, seed in zip(jobs, (0, 1)):
        check_ddp_record(records[job], single_process_record(seed, tmp_path / f"single{seed}"))
        assert records[job]["seed"] == seed
    # Rank 1 wrote into its job's directory: no stray single-run directories appeared.
    assert not (log_dir / "runs").exists()


@pytest.mark.slow
def test_ddp_sim_single_run(tmp_path):
    log_dir = tmp_path / "logs"
    proc = run_cli(*ddp_sim_args(log_dir), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, describe(proc)
    records = results_under(log_dir)
    assert len(records) == 1
    check_ddp_record(next(iter(records.values())), single_process_record(0, tmp_path / "single"))


def test_lightning_still_builds_the_relaunch_command_where_we_replace_it():
    """ddp_launch replaces Lightning's private `_hydra_subprocess_cmd(local_rank) -> (command, cwd)`; its launcher
    must still call it for every child rank. Fails loudly when a Lightning release changes this."""
    import inspect

    from lightning.pytorch.strategies.launchers import subprocess_script

    from learnbench import ddp_launch

    assert list(inspect.signature(subprocess_script._hydra_subprocess_cmd).parameters) == ["local_rank"]
    assert "_hydra_subprocess_cmd(local_rank)" in inspect.getsource(subprocess_script._SubprocessScriptLauncher._call_children_scripts)
    original = subprocess_script._hydra_subprocess_cmd
    try:
        ddp_launch.install()
        assert subprocess_script._hydra_subprocess_cmd is ddp_launch._job_subprocess_cmd
    finally:
        subprocess_script._hydra_subprocess_cmd = original


# ----------------------------------------------------------------------------- splits smaller than the processes
# Every generated task (no download): (data, model, the option that sets an evaluation split's size).
GENERATED = [
    ("spiral", "mlp", ["data.arms=3", "data.test_per_arm={n}"]),  # 3 arms: the split holds 3 n points
    ("add_task", "rnn", ["data.steps=6", "data.test_sequences={n}"]),
    ("zipser_andersen", "mlp", ["data.test_size={n}"]),
    ("sine_trajectory", "rnn", ["data.steps=6"]),  # one validation and one test trial, always
]


def generated(data: str, model: str, sizes: list[str], n: int) -> list[str]:
    small = {"mlp": ["model.hidden_sizes=[8]"], "rnn": ["model.hidden_size=4"]}[model]
    return [f"data={data}", f"model={model}", *small, *(s.format(n=n) for s in sizes)]


@pytest.mark.parametrize(("data", "model", "sizes"), GENERATED, ids=[g[0] for g in GENERATED])
def test_a_split_smaller_than_the_processes_is_refused_at_start(data, model, sizes, tmp_path):
    """One rank without an evaluation batch never joins the metrics' all-gather: the other dies in gloo."""
    from hydra.utils import instantiate

    from learnbench.config_validation import ConfigError

    fixed = data == "sine_trajectory"
    datamodule = instantiate(compose_config(generated(data, model, sizes, n=1), tmp_path).data)
    datamodule.check_splits_fit(world_size=1)
    spiral_points = 3  # data.arms=3: one per arm is still 3 >= 2 processes; 4 processes are too many
    world = 4 if data == "spiral" else 2
    with pytest.raises(ConfigError) as error:
        datamodule.check_splits_fit(world_size=world, name=f"data={data}")
    split = "validation" if fixed else "test"
    count = spiral_points if data == "spiral" else 1
    assert str(error.value).startswith(
        f"the {split} split of data={data} has {count} example(s), fewer than the {world} processes: each process needs at least one: "
    )
    remedy = "its size is fixed: run on one process (trainer=cpu)" if fixed else "or run on one process (trainer=cpu)"
    assert str(error.value).endswith(remedy)


@pytest.mark.slow
def test_the_reported_sine_trajectory_command_is_refused_in_one_line(tmp_path):
    proc = run_cli("trainer=ddp_sim", "data=sine_trajectory", "model=rnn", "method=rflo", "trainer.max_steps=10",
                   *CSV_ONLY, f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, describe(proc)
    assert ("the validation split of data=sine_trajectory has 1 example(s), fewer than the 2 processes: each process "
            "needs at least one: its size is fixed: run on one process (trainer=cpu)") in proc.stdout + proc.stderr, describe(proc)
    assert "Traceback" not in proc.stdout + proc.stderr and "gloo" not in proc.stdout + proc.stderr, describe(proc)


@pytest.mark.slow
@pytest.mark.parametrize(("data", "model", "sizes"), GENERATED[:3], ids=[g[0] for g in GENERATED[:3]])
def test_an_uneven_split_is_scored_on_two_processes_as_on_one(data, model, sizes, tmp_path):
    """Oracle: the one-process score of the same model. 3 test examples on 2 processes (2 + 1, eval batch 1: the ranks
    run unequal numbers of batches); torchmetrics' all-gather sums weighted means, so nothing is counted twice or lost."""
    from hydra.utils import instantiate

    from learnbench.train import build_module

    n = 1 if data == "spiral" else 3
    cfg = compose_config([*generated(data, model, sizes, n), "data.eval_batch_size=1"], tmp_path)
    scores = []
    for devices in (1, 2):
        datamodule = instantiate(cfg.data)
        datamodule.check_splits_fit(world_size=devices)
        torch.manual_seed(0)
        module = build_module(cfg, datamodule.input_shape, datamodule.output_dim, datamodule.task)
        strategy = {"strategy": "ddp_spawn"} if devices > 1 else {}
        trainer = L.Trainer(accelerator="cpu", devices=devices, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **strategy)
        scores.append(trainer.test(module, datamodule=datamodule, verbose=False)[0])
    assert scores[0].keys() == scores[1].keys()
    for key in scores[0]:
        assert scores[1][key] == pytest.approx(scores[0][key], rel=1e-6), (key, scores)
