"""method=stdp_gradient (rules/plasticity/stdp_gradient.py): Bengio et al.'s dW ~ rho_pre dV_post/dt.

- the integral sum_t rho_j,t (V_i,t - V_i,t-1) equals the explicit sum over examples, steps and synapses (float64);
- the rule's change on a tiny SNN is lr times that sum on the network's own trajectory, the input spikes and the
  first layer's membranes recomputed step by step (model.step, not the layer-wise forward the rule uses), for
  both pre-synaptic activities (spikes, their trace);
- the gradient claim, with the objective stated: a layer whose membrane relaxes under the nudged dynamics of an
  energy-based model, V <- V - eta ((V - W rho) + beta dC/dV), from its free fixed point V = W rho, with C the
  cross entropy of softmax(V) against a label. The rule's change over the nudged phase is, at the first step,
  exactly -eta beta dC(W rho)/dW (autograd), and over 20 steps parallel to it to cosine > 0.999 (beta small);
- its declared locality (pre, post; no task signal) is tested by intervention in tests/test_locality.py;
- refusals: negative lr, a non-spiking model, a current code.
"""

from __future__ import annotations

import pytest
import torch

from learnbench.models import MLP, SNN
from learnbench.rules import STDPGradient
from learnbench.rules.plasticity.spike_timing import trace
from learnbench.rules.plasticity.stdp_gradient import membrane_change_correlation
from learnbench.tasks import get_task

LOSS = get_task("sum_over_steps_classification").loss


def explicit_sum(rho, membrane, initial=None):
    batch, steps, pre = rho.shape
    post = membrane.shape[2]
    out = torch.zeros(post, pre, dtype=torch.float64)
    for b in range(batch):
        for t in range(steps):
            before = (initial[b] if initial is not None else torch.zeros(post, dtype=torch.float64)) if t == 0 else membrane[b, t - 1]
            for i in range(post):
                for j in range(pre):
                    out[i, j] += rho[b, t, j] * (membrane[b, t, i] - before[i])
    return out / batch


@pytest.mark.parametrize("with_initial", [False, True])
def test_the_integral_is_the_explicit_sum(with_initial):
    g = torch.Generator().manual_seed(0)
    rho = (torch.rand(3, 7, 4, generator=g, dtype=torch.float64) < 0.3).double()
    membrane = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    initial = torch.randn(3, 5, generator=g, dtype=torch.float64) if with_initial else None
    torch.testing.assert_close(membrane_change_correlation(rho, membrane, initial), explicit_sum(rho, membrane, initial),
                               rtol=1e-12, atol=1e-14)


def tiny_snn() -> SNN:
    torch.manual_seed(0)
    model = SNN(6, 2, hidden_sizes=[5], encoding="latency", steps=25, dt=0.5, tau_mem=10.0, latency_tau=5.0,
                latency_threshold=0.05).double()
    with torch.no_grad():
        model.hidden[0].weight.uniform_(0.2, 0.9)
    return model


def examples():
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 6, generator=g, dtype=torch.float64), torch.randint(0, 2, (4,), generator=g)


def membranes_step_by_step(model: SNN, x):
    """(input spikes, the first hidden layer's membranes) by model.step, one step at a time."""
    with torch.no_grad():
        pre = model.encode(x)
        state, membranes = model.initial_state(len(x)), []
        for t in range(pre.shape[1]):
            state, _ = model.step(state, pre[:, t])
            membranes.append(state.hidden[0].membrane)
    return pre, torch.stack(membranes, dim=1)


@pytest.mark.parametrize("pre_activity", ["spikes", "trace"])
def test_the_rules_change_is_lr_times_the_integral_on_the_networks_trajectory(pre_activity):
    model, (x, y) = tiny_snn(), examples()
    rule = STDPGradient(lr=0.03, pre=pre_activity, tau_pre=4.0)
    rule.bind(model, 0)
    rule.estimate_grads(model, x, y, LOSS)
    pre, membrane = membranes_step_by_step(tiny_snn(), x)
    rho = pre if pre_activity == "spikes" else trace(pre, 4.0, 0.5)
    assert pre.sum() > 0 and membrane.abs().sum() > 0
    expected = 0.03 * explicit_sum(rho, membrane)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(-model.hidden[0].weight.grad, expected, rtol=1e-10, atol=1e-13)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["hidden.0.weight"]


# ============================================================================= the gradient claim
def nudged_phase(w, rho, label, eta: float, beta: float, steps: int):
    """The membranes of the nudged phase, [1, steps, post], from the free fixed point V = W rho, of
    V <- V - eta ((V - W rho) + beta dC/dV) with C(V) = cross entropy of softmax(V) at `label`."""
    free = w @ rho
    v, membranes = free.clone(), []
    for _ in range(steps):
        dc_dv = torch.softmax(v, 0) - torch.nn.functional.one_hot(label, len(v)).double()
        v = v - eta * ((v - free) + beta * dc_dv)
        membranes.append(v)
    return free, torch.stack(membranes)[None]


def objective_gradient(w, rho, label):
    """dC(W rho)/dW by autograd: the objective is the cost of the free fixed point's output."""
    w = w.clone().requires_grad_(True)
    cost = torch.nn.functional.cross_entropy((w @ rho)[None], label[None])
    return torch.autograd.grad(cost, w)[0]


def test_the_nudged_phases_change_is_a_gradient_step_on_the_cost():
    g = torch.Generator().manual_seed(2)
    w, rho = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.rand(6, generator=g, dtype=torch.float64)
    label, eta, beta = torch.tensor(2), 0.1, 0.01
    gradient = objective_gradient(w, rho, label)
    rho_steps = rho.expand(1, 20, 6)
    free, membranes = nudged_phase(w, rho, label, eta, beta, steps=20)
    # the first step: exactly -eta beta dC/dW
    first = membrane_change_correlation(rho_steps[:, :1], membranes[:, :1], free[None])
    torch.testing.assert_close(first, -eta * beta * gradient, rtol=1e-12, atol=1e-15)
    # the whole phase: a descent direction of C, parallel to its gradient
    whole = membrane_change_correlation(rho_steps, membranes, free[None])
    cosine = torch.nn.functional.cosine_similarity(whole.flatten(), -gradient.flatten(), dim=0)
    assert cosine > 0.999
    # and the size: the relaxation's gain sum_t (1 - eta (1 + beta))^t times eta beta, to first order in beta
    gain = sum((1 - eta) ** t for t in range(20))
    torch.testing.assert_close(whole, -eta * beta * gain * gradient, rtol=2e-2, atol=0)


# ============================================================================= refusals
def test_refusals():
    with pytest.raises(ValueError, match="lr"):
        STDPGradient(lr=-1.0)
    with pytest.raises(ValueError, match="spiking"):
        STDPGradient().bind(MLP(4, 2, (3,)), 0)
    with pytest.raises(ValueError, match="encoding"):
        STDPGradient().bind(SNN(4, 2, hidden_sizes=[3], encoding="current"), 0)
