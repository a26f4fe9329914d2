"""Node perturbation and activity forward gradient on model=rnn, each against an independent oracle.

The oracle is autograd through the whole unrolled sequence (BPTT) in float64 (test_recurrent.py's
`autograd_bptt`); the rules' walk is written out by hand (recurrent_sites.py) and never calls it.
Sites: the input current u_t [T, N] and the readout y_t [T, O] of every example, D = T (N + O) numbers.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import estimate, compose_config, tiny
from test_recurrent import random_batch as recurrent_batch
from learnbench.models import RNN
from learnbench.rules import ForwardGradientActivity, NodePerturbation
from learnbench.rules.base import trainable_parameters
from learnbench.models.rnn_sites import rnn_walk
from learnbench.tasks import get_task

SEQUENCE_TASKS = ("sequence_regression", "sequence_soft_classification", "sequence_classification")
BATCH, STEPS, INPUTS, OUTPUTS, UNITS = 4, 9, 3, 2, 6


def random_net(seed=0, **options) -> RNN:
    torch.manual_seed(seed)
    model = RNN(INPUTS, OUTPUTS, hidden_size=UNITS, **{"tau": 4.0, **options}).double()
    with torch.no_grad():
        for p in (model.b, model.b_out):  # nonzero biases: their gradients are checked too
            if p is not None:
                p.normal_(0, 0.3)
    return model


def random_batch(task: str, seed=1):
    """tests/test_recurrent.py's sequence batch at this file's sizes."""
    return recurrent_batch(task, seed, BATCH, STEPS, INPUTS, OUTPUTS)


def autograd_bptt(model: RNN, x, y, task: str) -> torch.Tensor:
    """The oracle: autograd of the batch's mean sequence loss through the model's own forward."""
    loss = get_task(task).loss(model(x), y).mean()
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, trainable_parameters(model))])


def ready(rule, model, seed=0):
    rule.setup(model, seed=seed, rank=0, device=torch.device("cpu"))
    return rule


def sequence_estimate(rule, model, x, y, task: str, step: int = 0) -> torch.Tensor:
    """One estimate, as the module asks for it off the recurrent rules' windows: the whole sequence, task.loss."""
    return estimate(rule, model, x, y, get_task(task).loss, step=step)[0]


def test_both_rules_train_the_rnn_in_the_comparisons():
    from learnbench.catalog import comparable_rules

    assert {"np", "fg_a"} <= set(comparable_rules("recurrent"))


def test_the_walk_without_perturbation_is_the_model():
    model = random_net(2)
    x, _ = random_batch("sequence_regression", 3)
    trace, output, d_output = rnn_walk(model, x)
    torch.testing.assert_close(output, model(x), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(trace.hs, model.run(x), rtol=1e-12, atol=1e-14)
    assert d_output is None


# ------------------------------------------------------------------ FG-A: exact in the full basis
def one_hot_sites(directions: int):
    """A replacement for the rule's noise draw: direction k is the k-th unit vector of the D site numbers
    (the same for every example of the batch), laid out as the rule lays its draws out ([K * B] rows)."""

    def sample(rows, shapes, dtype=None):
        sizes = [math.prod(s) for s in shapes]
        assert sum(sizes) == directions and rows == directions * BATCH
        basis = torch.eye(directions, dtype=dtype).repeat_interleave(BATCH, dim=0)
        return [n.reshape(rows, *s) for n, s in zip(basis.split(sizes, dim=1), shapes)]

    return sample


@pytest.mark.parametrize("task", SEQUENCE_TASKS)
@pytest.mark.parametrize("options", [{}, {"learn_input": False, "tau": 1.0}], ids=["leaky", "plain-fixed-input"])
def test_fg_a_over_the_full_basis_equals_bptt(task, options):
    """With K = D one-hot tangents, sum_k d_k v_k is grad_u L and grad_y L exactly; the rule averages over K,
    so K times its estimate must be BPTT's gradient, every parameter (the local updates, the factor a)."""
    model = random_net(4, **options)
    x, y = random_batch(task, 5)
    D = STEPS * (UNITS + OUTPUTS)
    rule = ready(ForwardGradientActivity(directions=D, table_size=0), model)
    rule.sample_site_noise = one_hot_sites(D)
    torch.testing.assert_close(D * sequence_estimate(rule, model, x, y, task), autograd_bptt(model, x, y, task), rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------------ unbiasedness, tolerance from the variance
@pytest.mark.parametrize(
    "make_rule",
    [
        pytest.param(lambda: ForwardGradientActivity(directions=20, table_size=0), marks=pytest.mark.slow),
        pytest.param(lambda: ForwardGradientActivity(directions=20, noise="rademacher", table_size=1 << 20), marks=pytest.mark.slow),
        lambda: NodePerturbation(sigma=1e-4, directions=20, table_size=0),
        lambda: NodePerturbation(sigma=1e-3, directions=10, antithetic=True, table_size=0),
    ],
    ids=["fg_a", "fg_a-rademacher-table", "np", "np-antithetic"],
)
def test_estimates_average_to_bptt(make_rule):
    """The mean of N estimates (each averaged over K directions) approaches BPTT's gradient.

    For i.i.d. estimates E|mean - grad|^2 = tr Cov / N, with tr Cov measured from the same samples: we
    require the squared error below 2 tr Cov / N. NP's bias: with a clean (or antithetic) baseline the
    O(sigma) term of the loss difference is odd in the noise and averages out, leaving O(sigma^2 |L'''|)
    ~ 1e-8 relative at sigma = 1e-4, far below the sampling error. The scale separately: the projection
    on the unit gradient has mean |grad| within 4 standard errors (a wrong factor, e.g. a, fails this)."""
    task = "sequence_regression"
    model = random_net(6)
    x, y = random_batch(task, 7)
    grad = autograd_bptt(model, x, y, task)
    rule = ready(make_rule(), model, seed=8)
    N = 400
    samples = torch.stack([sequence_estimate(rule, model, x, y, task, step) for step in range(N)])
    mean = samples.mean(0)
    trace_cov = samples.var(0).sum()
    assert (mean - grad).pow(2).sum() < 2 * trace_cov / N
    assert trace_cov / N < 0.05 * grad.pow(2).sum()  # the bound is tight enough to mean something
    along = samples @ (grad / grad.norm())
    assert abs(along.mean() - grad.norm()) < 4 * along.std() / math.sqrt(N), (along.mean(), grad.norm())


def test_np_approaches_fg_a_on_the_same_noise():
    """Same seed, same per-example noise: NP's (dL / sigma) v -> FG-A's (grad . v) v as sigma -> 0, the gap
    shrinking like sigma (FG-A being exact, as the full-basis test shows)."""
    task = "sequence_soft_classification"
    model = random_net(9)
    x, y = random_batch(task, 10)
    fg_a = sequence_estimate(ready(ForwardGradientActivity(directions=3, table_size=0), model, seed=11), model, x, y, task)
    gaps = []
    for sigma in (1e-3, 1e-4, 1e-5):
        np_ = sequence_estimate(ready(NodePerturbation(sigma=sigma, directions=3, table_size=0), model, seed=11), model, x, y, task)
        gaps.append(((np_ - fg_a).norm() / fg_a.norm()).item())
    assert gaps[2] < 1e-3 and gaps[1] < gaps[0] / 5 and gaps[2] < gaps[1] / 5, gaps


def test_np_without_a_clean_pass_keeps_the_noisy_traces():
    """baseline=none (covariance form): the local updates read the noisy copies' states; still unbiased."""
    task = "sequence_regression"
    model = random_net(12)
    x, y = random_batch(task, 13)
    grad = autograd_bptt(model, x, y, task)
    rule = ready(NodePerturbation(sigma=0.05, baseline="none", directions=50, table_size=0), model, seed=14)
    N = 400
    samples = torch.stack([sequence_estimate(rule, model, x, y, task, step) for step in range(N)])
    assert (samples.mean(0) - grad).pow(2).sum() < 2 * samples.var(0).sum() / N


# ------------------------------------------------------------------ real runs through the app
@pytest.mark.parametrize("method", ["np", "fg_a"])
def test_a_short_run_on_the_sine_task(method, tmp_path):
    """experiment=murray_sine shrunk (20 steps, 8 units, 8 trials): the app accepts the pair, trains, and the
    estimates point along BPTT's gradient (align/cos/all, the module's own autograd comparison)."""
    from learnbench.train import train

    overrides = [
        "experiment=murray_sine", f"method={method}", "data.steps=20", "data.period=20", "data.train_sequences=8",
        "model.hidden_size=8", "method.directions=64", "method.table_size=0", "diagnostics.every_n_steps=1",
        "logger=csv", *tiny(train_batches=8, epochs=2),
    ]
    train(compose_config(overrides, tmp_path))
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "ok", record["message"]
    assert record["steps"] == 16 and record["method"] == method
    final = record["metrics"]["final"]
    assert math.isfinite(final["test/loss"])
    assert final["align/cos/all"] > 0.2, final
