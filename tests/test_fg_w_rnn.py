"""fg_w on model=rnn: the hand-written forward-mode pass (recurrent_sites.rnn_walk with weight tangents).

Oracles, each independent of the walk: torch.func.jvp through the model's own forward (the rule's
general path, called here directly), autograd's gradient dotted with the tangents, and the rule's
own estimate when it is made to take the jvp path (same generator state).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp, vmap

from test_recurrent import random_batch
from conftest import estimate
from learnbench.models import RNN, RNNState
from learnbench.rules import ForwardGradientWeight
from learnbench.rules.perturbation import forward_gradient_weight as fgw_module
from learnbench.tasks import get_task

BATCH, STEPS, INPUTS, OUTPUTS, UNITS = 3, 8, 2, 2, 5
# (learn_input, learn_recurrent, learn_output): all; Murray's (input fixed); readout only (no hidden
# tangent at all); hidden only (no readout tangent).
LEARNS = [(True, True, True), (False, True, True), (False, False, True), (True, True, False)]


def random_net(seed=0, tau=4.0, bias=True, learns=LEARNS[0], activation="tanh") -> RNN:
    torch.manual_seed(seed)
    learn_input, learn_recurrent, learn_output = learns
    model = RNN(INPUTS, OUTPUTS, hidden_size=UNITS, tau=tau, dt=1.0, activation=activation, bias=bias, output_bias=bias,
                learn_input=learn_input, learn_recurrent=learn_recurrent, learn_output=learn_output).double()
    with torch.no_grad():
        for p in (model.b, model.b_out):  # nonzero biases: the primal through them is checked too
            if p is not None:
                p.normal_(0, 0.3)
    return model


def ready(rule, model, seed=0):
    rule.setup(model, seed=seed, rank=0, device=torch.device("cpu"))
    return rule


def params_and_tangents(model, K, seed=5):
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    g = torch.Generator().manual_seed(seed)
    tangents = {n: torch.randn(K, *p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}
    return params, tangents


def jvp_oracle(model, params, tangents, x, y, loss_fn):
    """torch.func.jvp of the mean loss through the model's own forward, one direction at a time via vmap."""

    def loss(p):
        return loss_fn(functional_call(model, p, (x,)), y).mean()

    return vmap(lambda t: jvp(loss, (params,), (t,))[1])(tangents)


def autograd_oracle(model, tangents, x, y, loss_fn):
    """grad . V_k for every direction: autograd's gradient of the mean loss dotted with the tangents."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_fn(model(x), y).mean(), [p for _, p in named])
    return sum((tangents[n].flatten(1) @ g.flatten()) for (n, _), g in zip(named, grads))


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("activation", ["tanh", "identity"])
@pytest.mark.parametrize("learns", LEARNS, ids=["all", "no-input", "readout-only", "no-readout"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("tau", [4.0, 1.0], ids=["leaky", "plain"])
def test_the_walk_is_torch_func_jvp(tau, bias, learns, activation, K, monkeypatch):
    model = random_net(tau=tau, bias=bias, learns=learns, activation=activation)
    x, y = random_batch("sequence_regression", 1, BATCH, STEPS, INPUTS, OUTPUTS)
    loss_fn = get_task("sequence_regression").loss
    params, tangents = params_and_tangents(model, K)
    rule = ready(ForwardGradientWeight(directions=K, table_size=0), model)
    monkeypatch.setattr(fgw_module, "jvp", None)  # the walk must not fall back on torch.func.jvp
    loss, output, d = rule.directional_derivatives(model, params, tangents, x, y, loss_fn)
    monkeypatch.undo()
    assert d.shape == (K,)
    torch.testing.assert_close(d, jvp_oracle(model, params, tangents, x, y, loss_fn), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, loss_fn(model(x), y).mean(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(output, model(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("task", ["sequence_regression", "sequence_soft_classification", "sequence_classification"])
@pytest.mark.parametrize("learns", LEARNS[:2], ids=["all", "no-input"])
def test_the_walk_is_the_autograd_gradient_along_the_tangents(task, learns):
    model = random_net(1, learns=learns)
    x, y = random_batch(task, 2, BATCH, STEPS, INPUTS, OUTPUTS)
    loss_fn = get_task(task).loss
    params, tangents = params_and_tangents(model, 4, seed=7)
    rule = ready(ForwardGradientWeight(directions=4, table_size=0), model)
    _, _, d = rule.directional_derivatives(model, params, tangents, x, y, loss_fn)
    torch.testing.assert_close(d, autograd_oracle(model, tangents, x, y, loss_fn), rtol=1e-10, atol=1e-12)


def test_the_walk_reads_the_weights_it_is_given():
    """params (functional_call's convention) replace the model's weights: here shifted copies."""
    model = random_net(3)
    x, y = random_batch("sequence_regression", 4, BATCH, STEPS, INPUTS, OUTPUTS)
    loss_fn = get_task("sequence_regression").loss
    params, tangents = params_and_tangents(model, 2)
    params = {n: p + 0.1 for n, p in params.items()}
    rule = ready(ForwardGradientWeight(directions=2, table_size=0), model)
    loss, _, d = rule.directional_derivatives(model, params, tangents, x, y, loss_fn)
    torch.testing.assert_close(d, jvp_oracle(model, params, tangents, x, y, loss_fn), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, loss_fn(functional_call(model, params, (x,)), y).mean(), rtol=1e-12, atol=1e-14)


def _no_walk(model):
    """Stands in for the model's walk_parameters in the rule's dispatch: the rule then takes its general torch.func.jvp path."""
    return ()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("K", [1, 3])
def test_a_training_step_estimates_what_the_jvp_path_did(K, dtype, monkeypatch):
    """The rule's whole estimate (its own noise draw, same seed) on Murray's settings (input fixed, no
    biases) is the old path's, up to rounding."""
    model = random_net(4, tau=10.0, bias=False, learns=(False, True, True)).to(dtype)
    x, y = random_batch("sequence_regression", 5, 1, 30, INPUTS, OUTPUTS)
    x, y = x.to(dtype), y.to(dtype)
    loss_fn = get_task("sequence_regression").loss
    new, new_out = estimate(ready(ForwardGradientWeight(directions=K), model, seed=9), model, x, y, loss_fn, step=0)
    monkeypatch.setattr(RNN, "walk_parameters", _no_walk)
    old, old_out = estimate(ready(ForwardGradientWeight(directions=K), model, seed=9), model, x, y, loss_fn, step=0)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(new, old, **tol)
    assert new.abs().sum() > 0
    torch.testing.assert_close(new_out.loss, old_out.loss, **tol)
    # the walk always has the clean output (as the chain walk); jvp under vmap (K > 1) does not
    torch.testing.assert_close(new_out.output, model(x).detach(), **tol)
    assert (old_out.output is None) == (K > 1)


class RNNWithLearnedState(RNN):
    """A model the walk does not cover (a trainable h_0): the rule falls back on torch.func.jvp."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h0 = nn.Parameter(torch.randn(self.hidden_size) * 0.5)

    def initial_state(self, batch):
        return RNNState(self.h0.expand(batch, -1))


def test_other_trainable_parameters_take_the_general_path():
    torch.manual_seed(6)
    model = RNNWithLearnedState(INPUTS, OUTPUTS, hidden_size=UNITS, tau=4.0).double()
    x, y = random_batch("sequence_regression", 6, BATCH, STEPS, INPUTS, OUTPUTS)
    loss_fn = get_task("sequence_regression").loss
    params, tangents = params_and_tangents(model, 3)
    rule = ready(ForwardGradientWeight(directions=3, table_size=0), model)
    _, _, d = rule.directional_derivatives(model, params, tangents, x, y, loss_fn)
    torch.testing.assert_close(d, autograd_oracle(model, tangents, x, y, loss_fn), rtol=1e-10, atol=1e-12)
