"""Recurrent networks and their rules, each against an independent oracle.

The oracle of a gradient is autograd through the whole unrolled sequence (BPTT), in float64, on random
networks and sequences; the rules' own code never computes it.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from learnbench.models import MLP, RNN
from learnbench.paths import CONFIG_DIR
from learnbench.rules import BPTT, RFLO, RTRL, EProp
from learnbench.rules.base import trainable_parameters
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
