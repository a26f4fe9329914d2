"""Recurrent networks and their rules, each against an independent oracle.

The oracle of a gradient is autograd through the whole unrolled sequence (BPTT), in float64, on random
networks and sequences; the rules' own code never computes it.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from learnbench.models import RNN
from learnbench.rules import BPTT, RFLO, RTRL, EProp
from learnbench.rules.base import trainable_parameters
from learnbench.catalog import comparable_rules, rule_from_config
from learnbench.tasks import get_task

SEQUENCE_TASKS = ("sequence_regression", "sequence_soft_classification", "sequence_classification")


def random_net(seed=0, inputs=3, outputs=2, n=6, tau=4.0, w_rec_zero=False, **options) -> RNN:
    torch.manual_seed(seed)
    model = RNN(inputs, outputs, hidden_size=n, tau=tau, **options).double()
    with torch.no_grad():
        for p in (model.b, model.b_out):  # nonzero biases: their gradients are checked too
            p.normal_(0, 0.3)
        if w_rec_zero:
            model.w_rec.zero_()
    return model


def random_batch(task: str, seed=1, batch=4, steps=9, inputs=3, outputs=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, inputs, generator=g, dtype=torch.float64)
    if task == "sequence_regression":
        y = torch.randn(batch, steps, outputs, generator=g, dtype=torch.float64)
    elif task == "sequence_soft_classification":
        y = torch.softmax(torch.randn(batch, steps, outputs, generator=g, dtype=torch.float64), dim=-1)
    else:
        y = torch.randint(outputs, (batch,), generator=g)
    return x, y


def autograd_bptt(model: RNN, x, y, task: str) -> list[torch.Tensor]:
    """The oracle: autograd of the whole sequence's loss, unrolled from h_0 = 0."""
    loss = get_task(task).loss(model(x), y).mean()
    return [g.clone() for g in torch.autograd.grad(loss, trainable_parameters(model))]


def rule_grads(rule, model, x, y, task: str, window: int | None = None) -> list[torch.Tensor]:
    """The rule's gradient of the sequence, summed over windows of `window` steps as the module does."""
    rule.bind(model, seed=0)
    steps = x.shape[1]
    window = window or steps
    spec = get_task(task)
    total = [torch.zeros_like(p) for p in trainable_parameters(model)]
    state = None
    for t0 in range(0, steps, window):
        t1 = min(t0 + window, steps)
        for p in model.parameters():
            p.grad = None
        out = rule.estimate_grads(model, x[:, t0:t1], spec.window_target(y, t0, t1), spec.window_loss(steps, t0, t1), state=state)
        state = out.state
        for acc, p in zip(total, trainable_parameters(model)):
            acc += p.grad
    return total


def assert_grads_equal(actual, expected, atol=1e-12):
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=atol)


# ------------------------------------------------------------------ exact rules equal the oracle
@pytest.mark.parametrize("task", SEQUENCE_TASKS)
@pytest.mark.parametrize("seed", [0, 1])
def test_rtrl_equals_bptt(task, seed):
    model = random_net(seed)
    x, y = random_batch(task, seed + 10)
    assert_grads_equal(rule_grads(RTRL(), model, x, y, task), autograd_bptt(model, x, y, task))


@pytest.mark.parametrize("window", [1, 2, 4])
def test_rtrl_in_windows_equals_bptt(window):
    """The influence matrix is carried across windows: cutting the sequence changes nothing."""
    model = random_net(3)
    x, y = random_batch("sequence_regression", 4)
    assert_grads_equal(rule_grads(RTRL(), model, x, y, "sequence_regression", window), autograd_bptt(model, x, y, "sequence_regression"))


def test_rtrl_with_fixed_input_weights_and_plain_rnn():
    """W_in fixed (Murray's example) and a = 1 (tau = dt): the remaining gradients are still exact."""
    model = random_net(5, tau=1.0, learn_input=False)
    x, y = random_batch("sequence_regression", 6)
    assert not model.w_in.requires_grad
    assert_grads_equal(rule_grads(RTRL(), model, x, y, "sequence_regression"), autograd_bptt(model, x, y, "sequence_regression"))


@pytest.mark.parametrize("task", SEQUENCE_TASKS)
@pytest.mark.parametrize("truncation", [9, 20])
def test_truncated_bptt_with_window_at_least_the_sequence_is_bptt(task, truncation):
    model = random_net(7)
    x, y = random_batch(task, 8)
    assert_grads_equal(rule_grads(BPTT(truncation=truncation), model, x, y, task, truncation), autograd_bptt(model, x, y, task))


def test_truncated_bptt_cuts_the_gradient():
    """Oracle for k < T: autograd with the state detached by hand at every window start."""
    model = random_net(9)
    x, y = random_batch("sequence_regression", 10)
    task = get_task("sequence_regression")
    h, loss = model.initial_state(len(x)), 0
    for t0 in range(0, 9, 4):
        out, h = model(x[:, t0:t0 + 4], h.detach(), return_state=True)
        loss = loss + task.step_loss(out, y[:, t0:t0 + 4]).sum(dim=1).mean() / 9
    expected = torch.autograd.grad(loss, trainable_parameters(model))
    actual = rule_grads(BPTT(truncation=4), model, x, y, "sequence_regression", 4)
    assert_grads_equal(actual, expected)
    full = autograd_bptt(model, x, y, "sequence_regression")
    assert not torch.allclose(actual[0], full[0])  # the cut is real


@pytest.mark.parametrize("task", SEQUENCE_TASKS)
def test_eprop_symmetric_without_recurrence_is_bptt(task):
    """With W_rec = 0 only the leak remains, which e-prop's trace keeps: the gradient is exact."""
    model = random_net(11, w_rec_zero=True)
    x, y = random_batch(task, 12)
    assert_grads_equal(rule_grads(EProp(feedback="symmetric"), model, x, y, task, window=4), autograd_bptt(model, x, y, task))


@pytest.mark.parametrize("task", SEQUENCE_TASKS)
def test_rflo_with_readout_feedback_without_recurrence_is_bptt(task):
    model = random_net(13, w_rec_zero=True)
    x, y = random_batch(task, 14)
    rule = RFLO()
    rule.bind(model, seed=0)
    rule.feedback.copy_(model.w_out.detach())  # B = W_out^T
    assert_grads_equal(rule_grads(rule, model, x, y, task), autograd_bptt(model, x, y, task))


def test_rflo_and_eprop_differ_from_bptt_with_recurrence():
    """The approximation is real once W_rec != 0 (else the equalities above would prove nothing)."""
    model = random_net(15)
    x, y = random_batch("sequence_regression", 16)
    exact = autograd_bptt(model, x, y, "sequence_regression")
    approx = rule_grads(EProp(), model, x, y, "sequence_regression")
    assert not torch.allclose(approx[0], exact[0], atol=1e-6)  # W_rec
    torch.testing.assert_close(approx[3], exact[3])  # W_out: the exact local rule


def test_random_feedback_comes_from_the_seed_alone():
    model = random_net(0)
    b0 = RFLO()
    b0.bind(model, seed=3)
    b1 = RFLO()
    b1.bind(random_net(1), seed=3)
    b2 = RFLO()
    b2.bind(model, seed=4)
    torch.testing.assert_close(b0.feedback, b1.feedback)
    assert not torch.allclose(b0.feedback, b2.feedback)


def test_adaptive_eprop_feedback_learns_the_readout_update():
    model = random_net(17)
    x, y = random_batch("sequence_regression", 18)
    rule = EProp(feedback="adaptive", feedback_decay=0.1)
    rule_grads(rule, model, x, y, "sequence_regression")
    assert rule.extra_parameters() == [rule.feedback]
    torch.testing.assert_close(rule.feedback.grad, model.w_out.grad + 0.1 * rule.feedback.detach())


# ------------------------------------------------------------------ the training module's time axis
def small_sequences(steps=8, sequences=4, batch_size=4, **kwargs):
    from learnbench.data import AddTaskDataModule

    return AddTaskDataModule(steps=steps, train_sequences=sequences, val_sequences=2, test_sequences=2,
                             batch_size=batch_size, eval_batch_size=2, data_seed=5, **kwargs)


def fit_module(rule, lr: float, data, model=None, max_epochs=1, scheduler=None, **trainer_options):
    import lightning as L

    from learnbench.module import LearningRuleModule

    model = model or random_net(21, inputs=1, outputs=2, n=5, tau=3.0).float()
    module = LearningRuleModule(model, rule, optimizer=functools.partial(torch.optim.SGD, lr=lr), scheduler=scheduler,
                                task=data.task, num_classes=2)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="64-true", max_epochs=max_epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, **trainer_options)
    trainer.fit(module, datamodule=data)
    return module, trainer


@pytest.mark.parametrize("rule_name", ["rtrl", "bptt"])
def test_online_updates_with_a_vanishing_learning_rate_approach_the_sequence_update(rule_name):
    """Oracle: autograd BPTT on the initial weights. One sequence batch, an SGD step after every time step
    (update_every=1): the summed change / (-lr) tends to the sequence gradient as lr -> 0, the gap
    shrinking in proportion to lr (each step runs on weights moved by O(lr))."""
    data = small_sequences()
    start = random_net(21, inputs=1, outputs=2, n=5, tau=3.0).float().double()  # as Lightning's 64-true casts it
    x, y = data.load_splits().train
    expected = torch.cat([g.flatten() for g in autograd_bptt(start, x.double(), y.double(), data.task)])
    gaps = []
    for lr in (1e-2, 1e-3, 1e-4):
        rule = RTRL(update_every=1) if rule_name == "rtrl" else BPTT(truncation=None, update_every=1)
        module, trainer = fit_module(rule, lr, data, model=random_net(21, inputs=1, outputs=2, n=5, tau=3.0).float())
        assert trainer.global_step == 8  # 8 time steps, one update each
        moved = torch.cat([(p0 - p).flatten() / lr for p0, p in zip(trainable_parameters(start), trainable_parameters(module.model))])
        gaps.append((moved - expected).norm().item() / expected.norm().item())
    if rule_name == "bptt":
        # BPTT with update_every=1 cuts the gradient every step: it tends to 1-step truncated BPTT, not BPTT.
        assert gaps[-1] > 1e-2
        return
    assert gaps[2] < 2e-3 and gaps[1] < gaps[0] / 5 and gaps[2] < gaps[1] / 5, gaps


class StateSpy(BPTT):
    """BPTT that records the state each window starts from (None: a fresh sequence)."""

    def __init__(self, truncation: int | None = None) -> None:
        super().__init__(truncation=truncation)
        self.seen: list = []

    def estimate_grads(self, model, x, y, loss_fn, state=None):
        self.seen.append((x.clone(), None if state is None else state.h.clone()))
        out = super().estimate_grads(model, x, y, loss_fn, state=state)
        assert not out.state.h.requires_grad  # detached: no graph crosses a window's start
        return out


def test_the_module_cuts_windows_carries_state_and_resets_between_batches():
    """Oracle: the model run by hand from h_0 = 0 over the same batch, cut where the windows should start."""
    data = small_sequences(steps=10, sequences=4, batch_size=2)
    spy = StateSpy(truncation=4)
    module, trainer = fit_module(spy, 0.0, data)
    assert [x.shape[1] for x, _ in spy.seen] == [4, 4, 2, 4, 4, 2]  # two batches of 10 steps, windows of 4
    assert [s is None for _, s in spy.seen] == [True, False, False, True, False, False]
    for first in (0, 3):  # lr = 0: the weights never move, so the hand-run oracle uses the same ones
        x = torch.cat([spy.seen[first + i][0] for i in range(3)], dim=1)
        with torch.no_grad():
            hs = module.model.run(x)
        torch.testing.assert_close(spy.seen[first + 1][1], hs[:, 3], rtol=0, atol=1e-14)
        torch.testing.assert_close(spy.seen[first + 2][1], hs[:, 7], rtol=0, atol=1e-14)


def test_sequence_windows():
    from learnbench.rules.recurrent.recurrent_rule import sequence_windows

    assert list(sequence_windows(10, None, "sequence")) == [(0, 10, True)]
    assert list(sequence_windows(10, 4, "sequence")) == [(0, 4, False), (4, 8, False), (8, 10, True)]
    assert list(sequence_windows(10, None, 5)) == [(0, 5, True), (5, 10, True)]
    assert list(sequence_windows(10, 4, 3)) == [(0, 3, True), (3, 4, False), (4, 6, True), (6, 8, False), (8, 9, True), (9, 10, True)]


# ------------------------------------------------------------------ refusals at start
def refused(overrides, tmp_path) -> str:
    from conftest import compose_config
    from learnbench.train import ConfigError, train

    cfg = compose_config([*overrides, "logger=csv", "debug=fast"], tmp_path)
    with pytest.raises(ConfigError) as error:
        train(cfg)
    return str(error.value)


def test_sequence_data_on_a_feed_forward_model_is_refused(tmp_path):
    message = refused(["data=sine_trajectory", "model=mlp", "method=bp"], tmp_path)
    assert "data=sine_trajectory is a sequence task" in message and "use model=rnn" in message
    assert "bptt" in message and "rflo" in message


def test_a_recurrent_rule_on_a_feed_forward_model_is_refused(tmp_path):
    message = refused(["data=spiral", "model=mlp", "method=rflo"], tmp_path)
    assert "method=rflo is a recurrent learning rule and model=mlp is feed-forward" in message
    assert "model=rnn" in message and "data=sine_trajectory" in message and "fa" in message


def test_the_rnn_on_feed_forward_data_is_refused(tmp_path):
    message = refused(["data=spiral", "model=rnn", "method=bptt"], tmp_path)
    assert "model=rnn is recurrent and needs sequence data" in message and "data=spiral" in message


def test_a_feed_forward_rule_on_the_rnn_is_refused(tmp_path):
    message = refused(["data=add_task", "model=rnn", "method=fa"], tmp_path)
    assert "method=fa does not train recurrent models" in message and "bptt" in message and "rtrl" in message


def test_rtrl_refuses_a_network_too_large_for_its_cost():
    with pytest.raises(ValueError, match=r"O\(N\^4\).*N=300.*hidden_size<=256"):
        RTRL().bind(RNN(1, 1, hidden_size=300), seed=0)
    RTRL(max_units=300).bind(RNN(1, 1, hidden_size=300), seed=0)  # raised on purpose: allowed


def test_sequence_splits_have_the_promised_shapes_and_targets():
    """Oracles: the formulas of the tasks, evaluated by hand."""
    import math

    from learnbench.data import SineTrajectoryDataModule

    sine = SineTrajectoryDataModule(train_sequences=3).load_splits()
    x, y = sine.train
    assert x.shape == (3, 100, 1) and torch.all(x == 1) and y.shape == (3, 100, 1)
    t = 30
    assert y[0, t, 0].item() == pytest.approx(math.sin(2 * math.pi * t / 100) + 0.5 * math.sin(4 * math.pi * t / 100) + 0.25 * math.sin(8 * math.pi * t / 100), abs=1e-6)
    add = small_sequences(steps=20, sequences=3).load_splits()
    x, y = add.train
    bits = x[..., 0]
    for t in range(9, 20):
        p = 0.5 + 0.5 * bits[:, t - 5] - 0.25 * bits[:, t - 9]
        torch.testing.assert_close(y[:, t, 0], p)
        torch.testing.assert_close(y[:, t, 1], 1 - p)
    assert not torch.equal(add.train[0][:2], add.val[0][:2])  # splits from different generators


# ------------------------------------------------------------------ two DDP processes, every recurrent rule
# name: (method, options). Every rule that trains only recurrent models, from the catalogue, with its yaml's
# defaults (a new recurrent rule is covered without editing this list), plus the variants below.
# Two ranks x batch 2 = batches of 4 sequences of 8 steps, one epoch (2 batches).
DDP_VARIANTS = {
    "bptt_truncated": ("bptt", {"truncation": 3}),
    "bptt_online": ("bptt", {"update_every": 3}),
    "rtrl_online": ("rtrl", {"update_every": 4}),
    "eprop_random_online": ("eprop", {"feedback": "random", "update_every": 2}),
    "eprop_adaptive": ("eprop", {"feedback": "adaptive", "feedback_decay": 0.1}),
}
DDP_CASES = {**{m: (m, {}) for m in sorted(set(comparable_rules("recurrent")) - set(comparable_rules("feedforward")))},
             **DDP_VARIANTS}
DDP_WORLD, DDP_BATCH, DDP_STEPS = 2, 2, 8


def ddp_data(batch_size: int):
    return small_sequences(steps=DDP_STEPS, sequences=8, batch_size=batch_size)


def ddp_start() -> RNN:
    return random_net(23, inputs=1, outputs=2, n=5, tau=3.0).float()


def _ddp_worker(rank: int, port: int, directory: str) -> None:
    import os

    import lightning as L

    from learnbench.module import LearningRuleModule

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(DDP_WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    for name, (method, options) in DDP_CASES.items():
        module = LearningRuleModule(ddp_start(), rule_from_config(method, **options), optimizer=functools.partial(torch.optim.SGD, lr=0.5),
                                    task="sequence_soft_classification", num_classes=2)
        trainer = L.Trainer(accelerator="cpu", devices=DDP_WORLD, strategy="ddp", precision="64-true", max_epochs=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0, default_root_dir=directory)
        trainer.fit(module, datamodule=ddp_data(DDP_BATCH))
        params = {f"model.{k}": v.detach().clone() for k, v in module.model.state_dict().items()}
        params.update({f"rule.{k}": v.detach().clone() for k, v in module.rule.state_dict().items()})
        torch.save(params, f"{directory}/{name}.rank{rank}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def hand_written_ddp_oracle(method, options) -> dict:
    """One process, no Lightning: the union of the ranks' batches (mean loss over equal shards = mean of the
    ranks' means), windows and updates written out here, SGD on the model's and the rule's parameters."""
    from learnbench.data.in_memory import TensorBatches

    model = ddp_start().double()
    rule = rule_from_config(method, **options)
    rule.bind(model, seed=0)
    rule.double()
    trained = [*trainable_parameters(model), *rule.extra_parameters()]
    opt = torch.optim.SGD(trained, lr=0.5)
    x, y = ddp_data(DDP_BATCH).load_splits().train
    task = get_task("sequence_soft_classification")
    every = options.get("update_every", DDP_STEPS)
    cut = options.get("truncation") or every
    for xb, yb in TensorBatches(x.double(), y.double(), DDP_BATCH * DDP_WORLD, shuffle=True, seed=0, drop_last=True):
        state, total = None, [torch.zeros_like(p) for p in trained]
        ends = sorted({*range(cut, DDP_STEPS, cut), *range(every, DDP_STEPS, every), DDP_STEPS})
        for t0, t1 in zip([0, *ends[:-1]], ends):
            out = rule.estimate_grads(model, xb[:, t0:t1], yb[:, t0:t1], task.window_loss(DDP_STEPS, t0, t1), state=state)
            state = out.state
            for acc, p in zip(total, trained):
                acc += p.grad
                p.grad = None
            if t1 % every == 0 or t1 == DDP_STEPS:
                for acc, p in zip(total, trained):
                    p.grad = acc.clone()
                    acc.zero_()
                opt.step()
    state = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    state.update({f"rule.{k}": v.detach().clone() for k, v in rule.state_dict().items()})
    return state


@pytest.mark.slow
def test_two_ddp_processes_stay_identical_and_equal_the_one_process_oracle(tmp_path):
    """~1 min here: two spawned processes (gloo), every recurrent rule; `pytest -m slow tests/test_recurrent.py`."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=DDP_WORLD, join=True)
    start = {f"model.{k}": v.double() for k, v in ddp_start().state_dict().items()}
    for name, (method, options) in DDP_CASES.items():
        rank0, rank1 = (torch.load(tmp_path / f"{name}.rank{r}.pt") for r in range(DDP_WORLD))
        oracle = hand_written_ddp_oracle(method, options)
        assert any(not torch.equal(rank0[k], start[k]) for k in start), f"{name}: nothing moved"
        assert rank0.keys() == oracle.keys()
        for k in rank0:
            torch.testing.assert_close(rank0[k], rank1[k], rtol=0, atol=0, msg=f"{name}: {k} differs across ranks")
            torch.testing.assert_close(rank0[k], oracle[k], rtol=1e-9, atol=1e-12, msg=f"{name}: {k}")


@pytest.mark.parametrize(("override", "expected"), [
    ("method.update_every=0", "method.update_every=0: expected 'sequence' or an integer >= 1"),
    ("method.update_every=seq", "method.update_every='seq': expected 'sequence' or an integer >= 1"),
    ("method.feedback=sym", "expected one of 'symmetric', 'random', 'adaptive'"),
    ("model.tau=0", "model.tau=0: expected a number > 0"),
])
def test_bad_time_options_are_refused_before_any_work(override, expected, tmp_path):
    from conftest import compose_config
    from learnbench.train import ConfigError, check_config

    cfg = compose_config(["data=sine_trajectory", "model=rnn", "method=eprop", override], tmp_path)
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert expected in str(error.value)


def test_with_max_steps_the_schedule_spans_the_sequences_that_run():
    """max_steps counts optimiser steps (with update_every=4 on 8-step sequences, 2 a batch), the scheduler steps
    once a batch: 6 steps are 3 batches, so a 3-step cosine ends at min_lr_ratio x lr, its closed form at
    progress 1 (before the fix the schedule was sized for 6 batches and stopped half way)."""
    from learnbench.schedules import warmup_cosine

    data = small_sequences(sequences=12)
    module, trainer = fit_module(RFLO(update_every=4), 0.1, data, max_steps=6, max_epochs=-1,
                                 scheduler=functools.partial(warmup_cosine, min_lr_ratio=0.25))
    assert trainer.global_step == 6
    assert math.isclose(module.optimizers().param_groups[0]["lr"], 0.1 * 0.25, rel_tol=1e-12)
