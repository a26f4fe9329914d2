"""DDP for every learning rule, and the communication-efficient `comm: scalars` mode of wp and fg_w.

Two CPU processes (gloo) train every case of CASES one after the other: one process pair is
started once (torch.multiprocessing, DDP launched "externally" through LOCAL_RANK/WORLD_SIZE, so
Lightning runs `strategy="ddp"` in place and reuses the process group), because a `ddp_spawn`
per case costs ~10 s here. Each rank saves its parameters after every case. In float64, so the
oracles can be tight. Oracles, written without Lightning or torch.distributed:

- comm=grads (every rule of the catalogue that trains this MLP, the local-loss variants too): ranks draw
  different noise (seed + rank) and the module all-reduces the gradient. Oracle: one process holding one
  rule per rank (seeded with that rank), each estimating on that rank's shard, the two estimates averaged
  by hand, then the same optimiser step. A rule whose estimate is the same on every rank (no per-step
  noise, or noise the ranks share) equals, besides, one process on the union of the shards' batches.
- comm=scalars (wp, fg_w): ranks draw the same directions and all-reduce only d. Oracle: one
  process, one rule, on the union of the two shards' batches (mean of the ranks' d = d of the
  union batch: both are linear in a mean loss over equal shards). With `clip`, this also checks
  that the clip acts on the averaged d. Unclipped, the DDP run also equals a process holding one
  rule per shard with the SAME directions and averaging gradients (comm=grads, shared directions).
"""

from __future__ import annotations

import os
import socket
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp

from conftest import NO_RANDOMNESS, draws_step_noise
from learnbench.data import SpiralDataModule
from learnbench.data.in_memory import TensorBatches
from learnbench.tasks import per_example_loss
from learnbench.models import MLP
from learnbench.module import LearningRuleModule
from learnbench.catalog import comparable_rules, rule_from_config
from learnbench.rules import ForwardGradientWeight

WORLD, STEPS, BATCH, DATA_SEED, LR = 2, 6, 16, 11, 0.1
TABLE = 4096  # a small noise table: the default (16 M numbers) would cost more than the training

# Every rule of the catalogue that trains this MLP, with a small noise table where it has one (rule_from_config
# drops table_size elsewhere). The rules that train only recurrent models have their DDP test in test_recurrent.py.
RULES = [*comparable_rules("feedforward"), *comparable_rules("local")]
# What a rule's case sets besides that.
OPTIONS = {
    "fg_w": {"table_size": 0, "directions": 2},  # fresh noise in one case
    "lg_fg_w": {"table_size": 0, "directions": 2},
    "kp": {"decay": 0.01},  # Kolen-Pollack's B is a rule parameter (optimised, all-reduced)
    "brsf": {"scale": 0.2},
    "pc": {"inference_steps": 5},  # no noise, per-example inference; the update is a batch mean like backprop's
    "ipc": {"inference_steps": 4, "weight_updates": "per_batch"},
}
# name: (method, overrides). Per-rank noise (comm=grads) for every rule, then the modes worth a case of their own.
CASES = {
    **{method: (method, {"table_size": TABLE, **OPTIONS.get(method, {})}) for method in RULES},
    "wp_scalars": ("wp", {"table_size": TABLE, "comm": "scalars"}),
    "wp_scalars_k3_antithetic": ("wp", {"table_size": 0, "comm": "scalars", "directions": 3, "antithetic": True}),
    "fg_w_scalars": ("fg_w", {"table_size": TABLE, "comm": "scalars", "directions": 3}),
    # A clip that bites: |d| is ~0.1-1 here.
    "fg_w_scalars_clip": ("fg_w", {"table_size": TABLE, "comm": "scalars", "directions": 2, "clip": 0.05}),
    # True iPC: T = 3 optimiser steps per batch (each all-reduced), so STEPS = 6 is two batches.
    "ipc_per_step": ("ipc", {"inference_steps": 3, "weight_updates": "per_step"}),
}


def make_rule(method: str, overrides: dict):
    return rule_from_config(method, **overrides)


def same_estimate_on_every_rank(method: str, overrides: dict) -> bool:
    """No per-step noise, or noise every rank shares (brsf's magnitudes, comm=scalars): then the mean of the
    ranks' estimates is the estimate on the union of their batches (a batch mean over equal shards)."""
    return not draws_step_noise(method) or not make_rule(method, overrides).noise_differs_per_rank


def initial_model() -> MLP:
    torch.manual_seed(0)
    return MLP(2, 2, hidden_sizes=(16, 16), activation="tanh")


def spiral(batch_size: int) -> SpiralDataModule:
    # 128 training points: 4 steps per epoch on each rank (batch 16), 6 steps span two epochs.
    return SpiralDataModule(train_per_arm=64, val_per_arm=8, test_per_arm=8, batch_size=batch_size, seed=DATA_SEED)


def optimizer():
    return partial(torch.optim.SGD, lr=LR, momentum=0.9)


# ------------------------------------------------------------------ the two DDP processes
def _worker(rank: int, port: int, directory: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    for name, (method, overrides) in CASES.items():
        module = LearningRuleModule(initial_model(), make_rule(method, overrides), optimizer=optimizer(), task="classification")
        trainer = L.Trainer(
            accelerator="cpu", devices=WORLD, strategy="ddp", precision="64-true", max_steps=STEPS, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
            default_root_dir=directory,
        )
        trainer.fit(module, datamodule=spiral(BATCH))
        assert trainer.global_step == STEPS and trainer.world_size == WORLD
        params = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
        params.update({f"rule.{k}": v.detach().clone() for k, v in module.rule.state_dict().items()})
        torch.save({"params": params, "bytes": module.allreduce_bytes}, Path(directory) / f"{name}.rank{rank}.pt")
    # Leave together: a rank that exits while the other still talks to it aborts the other.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> dict[str, list[dict]]:
    directory = tmp_path_factory.mktemp("ddp_rules")
    mp.spawn(_worker, args=(free_port(), str(directory)), nprocs=WORLD, join=True)
    return {name: [torch.load(directory / f"{name}.rank{r}.pt") for r in range(WORLD)] for name in CASES}


# ------------------------------------------------------------------ the oracle: one process, no Lightning
def endless(batches: TensorBatches):
    while True:  # every pass re-shuffles (TensorBatches counts epochs), as the DDP run's epochs do
        yield from batches


def hand_written_run(method: str, overrides: dict, shards: int) -> dict:
    """STEPS optimiser steps on the mean of `shards` rules' estimates, rule r on shard r of WORLD.

    shards=WORLD: rank r's batches and noise (seed + r); shards=1: the union of the ranks' batches.
    A rule with `updates_per_batch` k > 1 (iPC per_step) keeps each batch for k steps, passing its state on.
    """
    model = initial_model().double()  # made in float32 and cast, as precision="64-true" does
    x, y = spiral(BATCH).load_splits().train
    x = x.double()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rules = [make_rule(method, overrides).double() for _ in range(shards)]
        for r, rule in enumerate(rules):
            rule.setup(model, seed=0, rank=r, device=torch.device("cpu"))
            rule.double()  # rule state drawn at set-up (feedback matrices), as the module's 64-true casts it
            if r > 0 and hasattr(rule, "feedback"):  # one set of feedback weights for all shards, as DDP keeps one per rank in sync
                rule.feedback = rules[0].feedback
            if r > 0 and hasattr(rule, "local_heads"):  # likewise the local heads
                rule.local_heads = rules[0].local_heads
        trained = [*model.parameters(), *rules[0].extra_parameters()]
        batch = BATCH * WORLD // shards
        streams = [endless(TensorBatches(x, y, batch, shuffle=True, seed=DATA_SEED, rank=r, world_size=shards, drop_last=True))
                   for r in range(shards)]
        opt = optimizer()(trained)
        loss_fn = partial(per_example_loss, "classification")
        updates = rules[0].updates_per_batch
        batches, states = [None] * shards, [None] * shards
        for step in range(STEPS):
            total = [torch.zeros_like(p) for p in trained]
            for r, (rule, stream) in enumerate(zip(rules, streams)):
                if step % updates == 0:
                    batches[r], states[r] = next(stream), None
                xb, yb = batches[r]
                opt.zero_grad(set_to_none=True)
                rule.begin_step(step)  # the documented protocol: noise seeded from (seed, rank, step)
                if updates > 1:
                    states[r] = rule.estimate_grads(model, xb, yb, loss_fn, state=states[r]).state
                else:
                    rule.estimate_grads(model, xb, yb, loss_fn)
                for t, p in zip(total, trained):
                    t += p.grad
            for t, p in zip(total, trained):
                p.grad = t / shards
            opt.step()
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state.update({f"rule.{k}": v.detach().clone() for k, v in rules[0].state_dict().items()})
        return state
    finally:
        torch.set_default_dtype(previous)


# ------------------------------------------------------------------ tests
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_ranks_identical_and_equal_to_the_oracle(name, ddp_runs):
    method, overrides = CASES[name]
    rank0, rank1 = (run["params"] for run in ddp_runs[name])
    start = initial_model().double().state_dict()
    if not draws_step_noise(method) and method not in NO_RANDOMNESS:  # state drawn from the seed: compared below too
        assert any(k.startswith("rule.") for k in rank0)
    assert any(not torch.equal(rank0[k], start[k]) for k in start), "training did not move the parameters"
    for k in rank0:
        assert rank0[k].dtype == torch.float64
        torch.testing.assert_close(rank0[k], rank1[k], rtol=0, atol=0, equal_nan=True, msg=f"{k} differs across ranks")
    scalars = overrides.get("comm") == "scalars"
    oracle = hand_written_run(method, overrides, shards=1 if scalars else WORLD)
    for k in rank0:
        torch.testing.assert_close(rank0[k], oracle[k], rtol=1e-9, atol=1e-11, equal_nan=True, msg=k)
    if not scalars and same_estimate_on_every_rank(method, overrides):  # also one process on the union batch
        union = hand_written_run(method, overrides, shards=1)
        for k in rank0:
            torch.testing.assert_close(rank0[k], union[k], rtol=1e-9, atol=1e-11, msg=k)
    if scalars:
        # The same shared directions, but each shard's d used (and clipped) on its own and the
        # gradients averaged: comm=grads with shared directions. Equal by linearity, unless clipped.
        per_shard = hand_written_run(method, overrides, shards=WORLD)
        gap = max((rank0[k] - per_shard[k]).abs().max().item() for k in rank0)
        if overrides.get("clip") is None:
            assert gap < 1e-10, gap
        else:
            assert gap > 1e-3, f"the clip did not bite ({gap}): the test cannot tell where it acts"


@pytest.mark.slow
def test_scalars_mode_all_reduces_k_numbers_per_step_grads_mode_the_whole_gradient(ddp_runs):
    """The bytes the module counted: K float64s per step for comm=scalars, P float64s for comm=grads."""
    n_params = sum(p.numel() for p in initial_model().parameters())
    for name, (method, overrides) in CASES.items():
        k = overrides.get("directions", 1)
        per_step = k if overrides.get("comm") == "scalars" else n_params
        rule = make_rule(method, overrides)
        rule.bind(initial_model(), seed=0)
        per_step += sum(p.numel() for p in rule.extra_parameters())  # Kolen-Pollack's B, the local heads
        for run in ddp_runs[name]:
            assert run["bytes"] == STEPS * per_step * 8, name


def test_comm_scalars_shares_the_seed_across_ranks_and_grads_does_not():
    """The oracle above assumes this: with comm=scalars rank 1 draws rank 0's directions."""
    model = initial_model()
    for comm, same in (("scalars", True), ("grads", False)):
        draws = []
        for rank in range(WORLD):
            rule = make_rule("wp", {"table_size": 0, "comm": comm})
            rule.setup(model, seed=3, rank=rank, device=torch.device("cpu"))
            draws.append(rule.noise.sample(10, 2, rule.generator))
        assert torch.equal(draws[0], draws[1]) == same, comm


def test_unknown_comm_is_refused():
    with pytest.raises(ValueError, match="comm"):
        ForwardGradientWeight(comm="vectors")


@pytest.mark.slow
def test_comm_benchmark_measures_p_or_k_float32s_per_step():
    """`python -m learnbench.tools.bench comm` on a tiny model: the bytes it reports against 4 P and 4 K."""
    from learnbench.tools.bench import main

    result = main(["comm", "--hidden", "8", "--batch", "4", "--passes", "1", "--steps", "2", "--warmup", "1",
                   "--directions", "3", "--json"])
    n_params = sum(p.numel() for p in MLP(784, 10, [8]).parameters())
    expected = {"bp": n_params, "wp grads": n_params, "wp scalars": 1, "fg_w grads": n_params, "fg_w scalars": 1,
                "wp K=3 grads": n_params, "wp K=3 scalars": 3}
    assert {name: row["bytes_per_step"] for name, row in result["steps"].items()} == {k: 4 * v for k, v in expected.items()}
