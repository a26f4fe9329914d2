"""The spiking network (models/neurons.py, surrogates.py, snn.py), its losses over time and its presets.

Oracles, each independent of the code under test:
- closed forms (float64): the LIF and current-based LIF membrane under a constant input, the first spike
  time, the gradient through a subtractive reset with the straight-through surrogate;
- spytorch's latency formula (current2firing_time, re-typed here in numpy), the binomial's spread for the
  rate code, Bellec et al. 2020's ALIF equations written out as a numpy loop;
- snnTorch (snn.Leaky, snn.Synaptic, its surrogates and tutorial 5's network) and norse (its LIF, LIFRefrac
  and LSNN steps, its triangle and SuperSpike surrogates) on the same parameters and inputs. Both are a
  test-only extra (`pip install -e ".[oracles]"`); the tests skip, saying so, where they are missing.
"""

from __future__ import annotations

import importlib
import json
import math
import warnings

import numpy as np
import pytest
import torch

from conftest import CSV_ONLY, compose_config, tiny
from learnbench.models import SNN
from learnbench.models.neurons import Neuron
from learnbench.models.snn import latency_code, rate_code, run_layer
from learnbench.models.surrogates import spike
from learnbench.tasks import get_task
from learnbench.train import ConfigError, build, check_config, train

DT = 1.0  # ms


def lif(**options) -> Neuron:
    """A neuron with a threshold no input here reaches, unless the test sets one."""
    return Neuron(**{"beta": math.exp(-DT / 10.0), "threshold": 1e9, **options})


def constant_run(neuron: Neuron, current: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(spikes, membranes) [batch, steps, units] of a layer driven by the same current at every step."""
    state = neuron.initial_state(*current.shape, like=current)
    spikes, membranes, _ = run_layer(neuron, current.unsqueeze(1).expand(-1, steps, -1), state)
    return spikes, membranes


# ============================================================================= closed forms
def test_lif_membrane_under_constant_input_is_the_discrete_closed_form(float64):
    """V_t = beta V_{t-1} + c from V_0 = 0: V_t = c (1 - beta^t) / (1 - beta), beta = exp(-dt / tau_mem)."""
    tau_mem, steps = 10.0, 50
    c = torch.tensor([[0.1, 0.37, 2.0]])
    _, membranes = constant_run(lif(beta=math.exp(-DT / tau_mem)), c, steps)
    beta = np.exp(-DT / tau_mem)
    t = np.arange(1, steps + 1)[:, None]
    expected = c.numpy() * (1 - beta**t) / (1 - beta)
    np.testing.assert_allclose(membranes[0].numpy(), expected, rtol=1e-12)


def test_current_based_lif_membrane_under_constant_input_is_the_discrete_closed_form(float64):
    """I_t = alpha I_{t-1} + c, V_t = beta V_{t-1} + I_t: V_t = c / (1 - alpha) [(1 - beta^t) / (1 - beta)
    - alpha (beta^t - alpha^t) / (beta - alpha)], with alpha = exp(-dt / tau_syn), beta = exp(-dt / tau_mem)."""
    tau_mem, tau_syn, dt, steps = 10.0, 5.0, 0.5, 80
    c = torch.tensor([[0.2, 1.3]])
    neuron = lif(beta=math.exp(-dt / tau_mem), alpha=math.exp(-dt / tau_syn))
    _, membranes = constant_run(neuron, c, steps)
    a, b = np.exp(-dt / tau_syn), np.exp(-dt / tau_mem)
    t = np.arange(1, steps + 1)[:, None]
    expected = c.numpy() / (1 - a) * ((1 - b**t) / (1 - b) - a * (b**t - a**t) / (b - a))
    np.testing.assert_allclose(membranes[0].numpy(), expected, rtol=1e-12)


def test_the_model_converts_time_constants_in_ms_with_dt():
    """tau in ms, dt in ms: the per-step decays are exp(-dt / tau); beta given directly is used as it is."""
    model = SNN(4, 2, tau_mem=10.0, tau_syn=5.0, dt=0.5, neuron="alif", tau_adaptation=200.0)
    assert model.neuron.beta == pytest.approx(math.exp(-0.05))
    assert model.neuron.alpha == pytest.approx(math.exp(-0.1))
    assert model.neuron.rho == pytest.approx(math.exp(-0.5 / 200))
    plain = SNN(4, 2, tau_mem=None, beta=0.95, tau_syn=0.0)
    assert plain.neuron.beta == 0.95 and plain.neuron.alpha == 0.0 and not plain.neuron.synaptic
    assert SNN(4, 2, tau_syn=None).neuron.alpha == 0.0


def test_the_first_spike_comes_at_the_analytic_step(float64):
    """Plain LIF, constant c: the first t with c (1 - beta^t) / (1 - beta) > thr is floor(ln(1 - thr (1 - beta) / c) / ln beta) + 1."""
    beta, thr, steps = math.exp(-DT / 20.0), 1.0, 200
    c = torch.tensor([[0.06, 0.1, 0.23, 0.5, 1.7]])  # all above the rheobase thr (1 - beta) = 0.0488
    spikes, _ = constant_run(Neuron(beta=beta, threshold=thr), c, steps)
    first = spikes[0].argmax(dim=0) + 1  # steps count from 1
    expected = np.floor(np.log(1 - thr * (1 - beta) / c.numpy()[0]) / np.log(beta)) + 1
    np.testing.assert_array_equal(first.numpy(), expected)
    assert torch.all(spikes[0].sum(dim=0) > 0)  # argmax found a spike in every column, not a silent one


def test_straight_through_gradient_through_the_reset_is_the_closed_form(float64):
    """With the straight-through surrogate (dS/dV = 1) and reset by subtraction, dV_t/dV_{t-1} is beta - thr when the
    reset carries its gradient and beta when it is detached, whatever spikes: dV_T/dx_1 = (beta - thr)^(T-1) or beta^(T-1)."""
    beta, thr, steps = 0.9, 0.5, 12
    x = torch.rand(3, steps, 4, generator=torch.Generator().manual_seed(0)) * 0.8
    for detach, factor in ((False, beta - thr), (True, beta)):
        neuron = Neuron(beta=beta, threshold=thr, detach_reset=detach, surrogate="straight_through")
        x_grad = x.clone().requires_grad_(True)
        spikes, membranes, _ = run_layer(neuron, x_grad, neuron.initial_state(3, 4, like=x))
        assert spikes.sum() > 10  # the reset does act
        (grad,) = torch.autograd.grad(membranes[:, -1].sum(), x_grad)
        np.testing.assert_allclose(grad[:, 0].numpy(), factor ** (steps - 1), rtol=1e-12)


# ============================================================================= encoders
def spytorch_firing_times(x: np.ndarray, tau: float, thr: float, tmax: float, epsilon: float = 1e-7) -> np.ndarray:
    """spytorch's current2firing_time (SpyTorchTutorial1), typed out here."""
    idx = x < thr
    x = np.clip(x, thr + epsilon, 1e9)
    times = tau * np.log(x / (x - thr))
    times[idx] = tmax
    return times


@pytest.mark.parametrize(("dt", "latency_tau", "steps"), [(1.0, 20.0, 100), (0.5, 20.0, 100), (1.0, 10.0, 30)])
def test_latency_spike_times_are_spytorchs(dt, latency_tau, steps):
    """Every pixel value k/255 (as the data module holds it, float32): one spike at int(tau_eff ln(x / (x - thr))),
    tau_eff = latency_tau / dt steps, when that is < steps (spytorch keeps `firing_times < nb_steps`); none otherwise."""
    x = (torch.arange(256, dtype=torch.float32) / 255).reshape(1, 256)
    model = SNN(256, 2, encoding="latency", steps=steps, dt=dt, latency_tau=latency_tau, latency_threshold=0.2)
    code = model.encode(x)[0]  # [steps, inputs]
    times = spytorch_firing_times(x.numpy().astype(np.float64)[0], tau=latency_tau / dt, thr=0.2, tmax=steps).astype(int)
    fires = times < steps
    assert torch.all(code.sum(dim=0) == torch.from_numpy(fires).float())  # at most one spike each
    np.testing.assert_array_equal(code.argmax(dim=0).numpy()[fires], times[fires])
    assert fires.sum() > 100 and not fires[x.numpy()[0] <= 0.2].any()


def test_rate_code_converges_to_the_set_rate():
    """Bernoulli spikes with p = x * max_rate * dt: over n = batch x steps draws the empirical rate lies within
    4 binomial standard deviations sqrt(p (1 - p) / n) of p (fixed seed)."""
    max_rate, dt, steps, batch = 400.0, 0.5, 200, 50  # Hz, ms: p = 0.2 x
    x = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0, 1.4]).expand(batch, -1)  # 1.4 is clipped to 1
    model = SNN(6, 2, encoding="rate", max_rate=max_rate, dt=dt, steps=steps, encoding_seed=3)
    code = model.encode(x)
    p = x.clamp(max=1)[0].double() * max_rate * dt / 1000
    n = batch * steps
    rate = code.double().mean(dim=(0, 1))
    assert set(code.unique().tolist()) <= {0.0, 1.0} and rate[0] == 0
    assert torch.all((rate - p).abs() <= 4 * torch.sqrt(p * (1 - p) / n) + 1e-12), (rate, p)


def test_rate_code_draws_are_reproducible_and_new_every_call():
    """A generator seeded per call from (encoding_seed, calls so far): two models with one seed draw the same
    spikes call after call; the next call draws new ones; another seed draws others."""
    x = torch.full((4, 50), 0.5)
    a, b, c = (SNN(50, 2, encoding="rate", encoding_seed=seed) for seed in (7, 7, 8))
    first_a, first_b, first_c = a.encode(x), b.encode(x), c.encode(x)
    assert torch.equal(first_a, first_b) and not torch.equal(first_a, first_c)
    second_a = a.encode(x)
    assert torch.equal(second_a, b.encode(x)) and not torch.equal(second_a, first_a)
    assert int(a.encoding_calls) == 2  # a buffer: saved with the model, so a resumed run continues the draws
    assert torch.equal(rate_code(x, 3, 1 / 0.5), torch.ones(4, 3, 50))  # p = 0.5 x 2 = 1: a spike at every step


def test_current_code_is_the_example_at_every_step(float64):
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    model = SNN((1, 2, 2), 2, encoding="current", steps=5)
    assert torch.equal(model.encode(x), x.flatten(1).unsqueeze(1).expand(3, 5, 4))


@pytest.mark.parametrize("encoding", ["current", "latency"])
def test_layer_one_currents_are_its_weights_on_the_code(encoding, float64):
    """The shortcuts (current: W_1 x once; latency: W_1's columns at the spike steps) give W_1 applied to the code,
    and the same gradients."""
    torch.manual_seed(0)
    x = torch.rand(6, 1, 5, 5)
    model = SNN((1, 5, 5), 2, hidden_sizes=[7], encoding=encoding, steps=40, latency_tau=10.0).double()
    fast, dense = model.input_currents(x), model.hidden[0](model.encode(x))
    torch.testing.assert_close(fast, dense, rtol=1e-12, atol=1e-12)
    weights = torch.randn(fast.shape)
    grads = [torch.autograd.grad((weights * out).sum(), list(model.hidden[0].parameters())) for out in (fast, dense)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_latency_code_function_matches_the_formula_for_arbitrary_values(float64):
    x = torch.tensor([[0.0, 0.2, 0.2000001, 0.25, 0.5, 1.0, 3.0]])
    code = latency_code(x, steps=100, tau_steps=20.0, threshold=0.2)
    times = np.floor(20.0 * np.log(x.numpy()[0, 3:] / (x.numpy()[0, 3:] - 0.2))).astype(int)
    assert code[0, :, :3].sum() == 0  # at or just above the threshold: no spike within 100 steps
    np.testing.assert_array_equal(code[0, :, 3:].argmax(dim=0).numpy(), times)


# ============================================================================= surrogates: forward and derivative
SURROGATE_FORMULAS = {
    "fast_sigmoid": lambda x, k, thr: 1 / (k * np.abs(x) + 1) ** 2,
    "arctan": lambda x, a, thr: (a / 2) / (1 + (np.pi / 2 * a * x) ** 2),
    "piecewise_linear": lambda x, g, thr: g / thr * np.maximum(0, 1 - np.abs(x) / thr),
    "straight_through": lambda x, _, thr: np.ones_like(x),
}


@pytest.mark.parametrize("surrogate", sorted(SURROGATE_FORMULAS))
@pytest.mark.parametrize(("scale", "thr"), [(None, 1.0), (3.0, 0.5)])
def test_surrogate_forward_is_the_step_and_backward_the_formula(surrogate, scale, thr, float64):
    x = torch.linspace(-2, 2, 41).requires_grad_(True)
    s = spike(x, surrogate, scale, thr)
    assert torch.equal(s, (x > 0).double())  # H(0) = 0
    (grad,) = torch.autograd.grad((s * torch.arange(41.0)).sum(), x)
    defaults = {"fast_sigmoid": 25.0, "arctan": 2.0, "piecewise_linear": 0.3, "straight_through": None}
    k = defaults[surrogate] if scale is None else scale
    np.testing.assert_allclose(grad.numpy(), np.arange(41.0) * SURROGATE_FORMULAS[surrogate](x.detach().numpy(), k, thr), rtol=1e-12)


# ============================================================================= snnTorch
def oracle(name: str):
    """Import a test-only oracle, or skip saying why (not installed, or an install that does not import:
    norse pulls in nir, nirtorch and h5py)."""
    try:
        with warnings.catch_warnings():  # norse scripts functions with torch.jit at import, which torch now deprecates
            warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
            return importlib.import_module(name)
    except ImportError as error:
        pytest.skip(f"{name} (a test-only oracle) does not import: {error}; install it with pip install -e '.[oracles]'")


@pytest.fixture(scope="module")
def snntorch():
    return oracle("snntorch")


def f64(value: float) -> torch.Tensor:
    """snnTorch keeps a float decay as a float32 tensor; a float64 one keeps the oracle exact."""
    return torch.tensor(value, dtype=torch.float64)


def random_currents(batch=4, steps=60, units=7, scale=0.6, seed=0) -> torch.Tensor:
    return torch.rand(batch, steps, units, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def run_snntorch(cell, currents: torch.Tensor, synaptic: bool):
    """(spikes, membranes) of an snnTorch cell over [batch, steps, units], with its state passed explicitly."""
    spikes, membranes = [], []
    if synaptic:
        syn, mem = cell.init_synaptic()
    else:
        mem = cell.init_leaky()
    for t in range(currents.shape[1]):
        if synaptic:
            s, syn, mem = cell(currents[:, t], syn, mem)
        else:
            s, mem = cell(currents[:, t], mem)
        spikes.append(s.double())
        membranes.append(mem)
    return torch.stack(spikes, 1), torch.stack(membranes, 1)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_lif_trajectory_and_bptt_gradient_equal_snntorch_leaky(snntorch, reset):
    """snn.Leaky(beta, threshold, reset, atan surrogate): the same spikes, membranes (float64) and the same
    gradient of a loss on the membranes w.r.t. the input currents (surrogate BPTT; snnTorch detaches the reset)."""
    beta, thr = 0.9, 1.0
    currents = random_currents().requires_grad_(True)
    theirs = snntorch.Leaky(beta=f64(beta), threshold=thr, reset_mechanism=reset, spike_grad=snntorch.surrogate.atan(alpha=2.0))
    their_spikes, their_mem = run_snntorch(theirs, currents, synaptic=False)
    neuron = Neuron(beta=beta, threshold=thr, reset=reset, surrogate="arctan", surrogate_scale=2.0)
    our_spikes, our_mem, _ = run_layer(neuron, currents, neuron.initial_state(4, 7, like=currents))
    assert their_spikes.sum() > 20
    assert torch.equal(our_spikes, their_spikes)
    torch.testing.assert_close(our_mem, their_mem, rtol=1e-12, atol=1e-12)
    # snnTorch's spikes are float32, so the gradient reaching them is rounded to float32: weights that float32 holds
    # exactly keep it exact.
    weights = torch.randn(our_mem.shape, generator=torch.Generator().manual_seed(1)).double()
    (ours,) = torch.autograd.grad((weights * our_mem).sum() + (weights * our_spikes).sum(), currents)
    (theirs_grad,) = torch.autograd.grad((weights * their_mem).sum() + (weights * their_spikes).sum(), currents)
    torch.testing.assert_close(ours, theirs_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("reset", "refractory_steps"), [("subtract", 0), ("zero", 1)])
def test_current_based_lif_equals_snntorch_synaptic(snntorch, reset, refractory_steps):
    """snn.Synaptic(alpha, beta): the same spikes, currents, membranes. snnTorch's zero reset of Synaptic,
    (beta V + I)(1 - S), also drops the input of the step after a spike (spytorch's too): our reset to zero
    with one refractory step (models/neurons.py)."""
    alpha, beta = math.exp(-DT / 5.0), math.exp(-DT / 10.0)
    currents = random_currents(scale=0.5, seed=2).requires_grad_(True)
    surrogate = snntorch.surrogate.fast_sigmoid(slope=100.0)
    theirs = snntorch.Synaptic(alpha=f64(alpha), beta=f64(beta), threshold=1.0, reset_mechanism=reset, spike_grad=surrogate)
    their_spikes, their_mem = run_snntorch(theirs, currents, synaptic=True)
    neuron = Neuron(beta=beta, alpha=alpha, reset=reset, refractory_steps=refractory_steps, surrogate="fast_sigmoid",
                    surrogate_scale=100.0)
    our_spikes, our_mem, _ = run_layer(neuron, currents, neuron.initial_state(4, 7, like=currents))
    assert their_spikes.sum() > 20
    assert torch.equal(our_spikes, their_spikes)
    torch.testing.assert_close(our_mem, their_mem, rtol=1e-12, atol=1e-12)
    weights = torch.randn(our_mem.shape, generator=torch.Generator().manual_seed(1)).double()  # exact in float32 (above)
    (ours,) = torch.autograd.grad(our_mem.pow(2).sum() + (weights * our_spikes).sum(), currents)
    (theirs_grad,) = torch.autograd.grad(their_mem.pow(2).sum() + (weights * their_spikes).sum(), currents)
    torch.testing.assert_close(ours, theirs_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("ours", "theirs"), [("fast_sigmoid", ("fast_sigmoid", {"slope": 25.0})), ("arctan", ("atan", {"alpha": 2.0})),
                                               ("straight_through", ("straight_through_estimator", {}))])
def test_surrogate_derivatives_equal_snntorchs(snntorch, ours, theirs, float64):
    x = torch.linspace(-1.5, 1.5, 31).requires_grad_(True)
    their_fn = getattr(snntorch.surrogate, theirs[0])(**theirs[1])
    (their_grad,) = torch.autograd.grad(their_fn(x).sum(), x)
    (our_grad,) = torch.autograd.grad(spike(x, ours, None).sum(), x)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-12, atol=1e-12)


def snntorch_tutorial5_net(snntorch, model: SNN, beta: float):
    """snnTorch's tutorial-5 network (fc1 -> Leaky -> fc2 -> Leaky), with our model's weights."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
            self.fc1.weight, self.fc1.bias = model.hidden[0].weight, model.hidden[0].bias
            self.fc2.weight, self.fc2.bias = model.readout.weight, model.readout.bias
            self.lif1 = snntorch.Leaky(beta=f64(beta))  # defaults: threshold 1, subtract, atan(alpha=2)
            self.lif2 = snntorch.Leaky(beta=f64(beta))

        def forward(self, x, steps):
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            mem2_rec = []
            for _ in range(steps):
                spk1, mem1 = self.lif1(self.fc1(x), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1.to(x.dtype)), mem2)
                mem2_rec.append(mem2)
            return torch.stack(mem2_rec, dim=1)

    return Net()


def test_snntorch_preset_network_and_its_gradients_equal_snntorch_tutorial5(snntorch, float64):
    """model=snn with experiment=snntorch_mnist's neuron options (small sizes) against the tutorial's network on
    the same weights and images: the output membrane at every step, the summed-over-steps loss (the tutorial's
    loop of CrossEntropyLoss) and every weight's gradient."""
    torch.manual_seed(0)
    model = SNN((1, 6, 6), 5, hidden_sizes=[30], tau_mem=None, beta=0.95, tau_syn=None, reset="subtract", surrogate="arctan",
                surrogate_scale=2.0, readout="membrane", loss_over_time="sum_over_steps", encoding="current", steps=25).double()
    with torch.no_grad():
        model.hidden[0].weight.mul_(4)  # enough hidden spikes to matter
    net = snntorch_tutorial5_net(snntorch, model, beta=0.95)
    x, y = torch.rand(8, 1, 6, 6), torch.randint(0, 5, (8,))
    ours, theirs = model(x), net(x.flatten(1), 25)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    our_loss = get_task("sum_over_steps_classification").loss(ours, y).mean()
    their_loss = sum(torch.nn.CrossEntropyLoss()(theirs[:, t], y) for t in range(25))
    torch.testing.assert_close(our_loss, their_loss, rtol=1e-12, atol=0)
    params = list(model.parameters())
    our_grads = torch.autograd.grad(our_loss, params)
    their_grads = torch.autograd.grad(their_loss, params)
    for name, a, b in zip([n for n, _ in model.named_parameters()], our_grads, their_grads):
        # the gradient reaching snnTorch's float32 spikes is rounded to float32 there: agreement to ~1e-7
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9, msg=name)
    assert all(g.abs().sum() > 0 for g in our_grads)


def test_spytorch_preset_network_equals_snntorch_synaptic_layers(snntorch, float64):
    """experiment=spytorch_fashion_mnist's model (small sizes): its hidden layer is snn.Synaptic with reset to zero,
    its leaky-integrator readout snn.Synaptic with no reset and no reachable threshold; the same input spikes
    (our latency code) through both give the same outputs."""
    torch.manual_seed(1)
    alpha, beta = math.exp(-1 / 5.0), math.exp(-1 / 10.0)
    model = SNN((1, 6, 6), 4, hidden_sizes=[20], tau_mem=10.0, tau_syn=5.0, reset="zero", refractory_steps=1, surrogate_scale=100.0,
                readout="leaky_integrator", loss_over_time="max_over_time", encoding="latency", steps=100, init="spytorch",
                bias=False).double()
    with torch.no_grad():
        model.hidden[0].weight.mul_(3)
    x = torch.rand(5, 1, 6, 6)
    inputs = model.encode(x)
    hidden = snntorch.Synaptic(alpha=f64(alpha), beta=f64(beta), threshold=1.0, reset_mechanism="zero",
                               spike_grad=snntorch.surrogate.fast_sigmoid(100.0))
    readout = snntorch.Synaptic(alpha=f64(alpha), beta=f64(beta), threshold=1e30, reset_mechanism="none")
    spikes, _ = run_snntorch(hidden, model.hidden[0](inputs), synaptic=True)
    _, outputs = run_snntorch(readout, model.readout(spikes), synaptic=True)
    assert spikes.sum() > 20
    torch.testing.assert_close(model(x), outputs, rtol=1e-12, atol=1e-12)


# ============================================================================= norse
@pytest.fixture(scope="module")
def norse():
    return oracle("norse.torch.functional")


def tau_for_euler(dt: float, tau: float) -> float:
    """Our tau (ms) whose exact per-step decay exp(-dt / tau) is norse's forward-Euler decay 1 - dt / tau."""
    return -dt / math.log(1 - dt / tau)


def norse_lif_parameters(norse, tau_mem=10.0, tau_syn=5.0, **extra):
    return norse.lif.LIFParameters(tau_syn_inv=torch.as_tensor(1 / tau_syn), tau_mem_inv=torch.as_tensor(1 / tau_mem),
                                   v_th=torch.as_tensor(1.0), v_reset=torch.as_tensor(0.0), **extra)


def our_mapped_neuron(dt, tau_mem=10.0, tau_syn=5.0, **extra) -> Neuron:
    return Neuron(beta=math.exp(-dt / tau_for_euler(dt, tau_mem)), alpha=math.exp(-dt / tau_for_euler(dt, tau_syn)), reset="zero", **extra)


def test_lif_equals_norse_lif_with_its_euler_decays(norse, float64):
    """norse's lif_feed_forward_step (forward Euler, reset to 0 within the step): on taus with the same per-step
    decays and its input scaled by dt / tau_mem (norse's membrane integrates (i - v) / tau_mem), the same spikes;
    its reported membrane is ours after the reset, V_t (1 - S_t)."""
    dt, steps = 1.0, 80
    x = random_currents(steps=steps, scale=1.2, seed=3)
    p = norse_lif_parameters(norse)
    state = norse.lif.LIFFeedForwardState(v=torch.zeros(4, 7), i=torch.zeros(4, 7))
    their_spikes, their_v = [], []
    for t in range(steps):
        z, state = norse.lif.lif_feed_forward_step(x[:, t], state, p, dt=dt)
        their_spikes.append(z)
        their_v.append(state.v)
    their_spikes, their_v = torch.stack(their_spikes, 1), torch.stack(their_v, 1)
    neuron = our_mapped_neuron(dt)
    spikes, membranes, _ = run_layer(neuron, x * dt / 10.0, neuron.initial_state(4, 7, like=x))
    assert their_spikes.sum() > 20
    assert torch.equal(spikes, their_spikes)
    torch.testing.assert_close(membranes * (1 - spikes), their_v, rtol=1e-10, atol=1e-12)


def test_refractory_period_equals_norse_lif_refrac(norse, float64):
    """norse's LIFRefrac with rho_reset = k: for k steps after a spike the membrane is held at the reset value and no
    spike comes; the current keeps integrating. Ours: refractory_steps = k (reset to zero)."""
    dt, steps, k = 1.0, 80, 3
    x = random_currents(steps=steps, scale=2.0, seed=4)
    p = norse.lif_refrac.LIFRefracParameters(norse_lif_parameters(norse), torch.as_tensor(float(k)))
    lif_state = norse.lif.LIFFeedForwardState(v=torch.zeros(4, 7), i=torch.zeros(4, 7))
    state = norse.lif_refrac.LIFRefracFeedForwardState(lif_state, torch.zeros(4, 7))
    their_spikes = []
    for t in range(steps):
        z, state = norse.lif_refrac.lif_refrac_feed_forward_step(x[:, t], state, p, dt=dt)
        their_spikes.append(z)
    their_spikes = torch.stack(their_spikes, 1)
    neuron = our_mapped_neuron(dt, refractory_steps=k)
    spikes, _, _ = run_layer(neuron, x * dt / 10.0, neuron.initial_state(4, 7, like=x))
    assert their_spikes.sum() > 20
    assert torch.equal(spikes, their_spikes)
    gaps = [np.diff(np.flatnonzero(row)) for row in spikes.permute(0, 2, 1).reshape(-1, steps).numpy()]
    assert min(g.min() for g in gaps if len(g)) > k  # never two spikes within k steps


def test_adaptive_lif_equals_norse_lsnn(norse, float64):
    """norse's LSNN step (threshold b relaxing to v_th with tau_adapt, b += beta z after a spike, reset to 0; its
    membrane reads the current of the step before): our ALIF with reset to zero, the input one step later, our
    adaptation decay rho = norse's 1 - dt / tau_adapt and adaptation_strength = rho * norse's beta."""
    dt, steps, tau_adapt, beta_n = 1.0, 120, 50.0, 0.4
    x = random_currents(steps=steps, scale=2.0, seed=5)
    p = norse.lsnn.LSNNParameters(tau_syn_inv=torch.as_tensor(1 / 5.0), tau_mem_inv=torch.as_tensor(1 / 10.0),
                                  tau_adapt_inv=torch.as_tensor(1 / tau_adapt), v_th=torch.as_tensor(1.0), v_reset=torch.as_tensor(0.0),
                                  beta=torch.as_tensor(beta_n))
    zeros = torch.zeros(4, 7)
    state = norse.lsnn.LSNNFeedForwardState(v=zeros, i=zeros, b=zeros + 1.0)
    their_spikes = []
    for t in range(steps):
        z, state = norse.lsnn.lsnn_feed_forward_step(x[:, t], state, p, dt=dt)
        their_spikes.append(z)
    their_spikes = torch.stack(their_spikes, 1)
    rho = 1 - dt / tau_adapt
    neuron = our_mapped_neuron(dt, rho=rho, adaptation_strength=rho * beta_n)
    delayed = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1) * dt / 10.0
    spikes, _, _ = run_layer(neuron, delayed, neuron.initial_state(4, 7, like=x))
    plain = Neuron(beta=neuron.beta, alpha=neuron.alpha, reset="zero")
    without_adaptation, _, _ = run_layer(plain, delayed, plain.initial_state(4, 7, like=x))
    assert their_spikes.sum() > 20 and without_adaptation.sum() > spikes.sum()  # the adaptation does act
    assert torch.equal(spikes, their_spikes)


@pytest.mark.parametrize("gamma", [0.3, 1.0])
def test_piecewise_linear_surrogate_equals_norse_triangle(norse, gamma, float64):
    x = torch.linspace(-1.5, 1.5, 31).requires_grad_(True)
    (theirs,) = torch.autograd.grad(norse.threshold.threshold(x, "triangle", gamma).sum(), x)
    (ours,) = torch.autograd.grad(spike(x, "piecewise_linear", gamma, threshold=1.0).sum(), x)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_fast_sigmoid_equals_norse_superspike_at_scale_one(norse, float64):
    """norse's SuperSpike at alpha 1. (norse 1.1.0's backward is 1 / (|x| + 1)^2 whatever alpha it is given, so
    only alpha 1 is a comparison; the scale itself is checked against snnTorch's fast_sigmoid above.)"""
    x = torch.linspace(-1.5, 1.5, 31).requires_grad_(True)
    (theirs,) = torch.autograd.grad(norse.threshold.threshold(x, "super", 1.0).sum(), x)
    (ours,) = torch.autograd.grad(spike(x, "fast_sigmoid", 1.0).sum(), x)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


# ============================================================================= ALIF as Bellec et al. 2020
@pytest.mark.parametrize("refractory_steps", [0, 2])
def test_alif_with_subtractive_reset_follows_bellecs_equations(refractory_steps, float64):
    """e-prop (Bellec et al. 2020, eqs. 6-8 and Methods): v^{t+1} = alpha v^t + I^{t+1} - z^t v_th,
    a^{t+1} = rho a^t + z^t, A^t = v_th + beta a^t, z^t = H(v^t - A^t); no spike within n_ref steps of one, the
    membrane held (ours by default; Bellec's code does not hold it: the next test). Written out here as a numpy loop."""
    beta_mem, rho, beta_a, thr, steps = math.exp(-1 / 20), math.exp(-1 / 100), 0.5, 1.0, 150
    x = random_currents(steps=steps, scale=0.5, seed=6).numpy()
    v, a, z, r = (np.zeros((4, 7)) for _ in range(4))
    expected = []
    for t in range(steps):
        v_free = beta_mem * v + x[:, t] - z * thr
        v = np.where(r > 0, v - z * thr, v_free)
        a = rho * a + z
        z = np.where(r > 0, 0.0, (v - (thr + beta_a * a) > 0).astype(float))
        r = np.where(z > 0, refractory_steps, np.maximum(r - 1, 0))
        expected.append(z)
    neuron = Neuron(beta=beta_mem, threshold=thr, reset="subtract", rho=rho, adaptation_strength=beta_a, refractory_steps=refractory_steps)
    spikes, _, _ = run_layer(neuron, torch.from_numpy(x), neuron.initial_state(4, 7, like=torch.from_numpy(x)))
    assert spikes.sum() > 20
    np.testing.assert_array_equal(spikes.numpy(), np.stack(expected, 1))


@pytest.mark.parametrize("n_ref", [2, 5])
def test_alif_without_the_hold_is_bellecs_eligalif(n_ref, float64):
    """Bellec et al.'s EligALIF (IGITUGraz/eligibility_propagation, Figure_3_and_S7_e_prop_tutorials/models.py) written
    out: b = rho b + z, v = alpha v + I - z thr at every step (refractory or not), z = 0 while r > 0, and
    r = clip(r + n_ref z - 1, 0, n_ref). Ours with refractory_hold=False and refractory_steps = n_ref - 1. The block
    matters: without it the same loop spikes more."""
    beta_mem, rho, beta_a, thr, steps = math.exp(-1 / 20), math.exp(-1 / 100), 0.5, 1.0, 150
    x = random_currents(steps=steps, scale=1.5, seed=6).numpy()  # strong enough to fire again within n_ref

    def eligalif(block: bool) -> np.ndarray:
        v, b, z, r = (np.zeros((4, 7)) for _ in range(4))
        out = []
        for t in range(steps):
            b = rho * b + z
            v = beta_mem * v + x[:, t] - z * thr
            fired = (v - (thr + beta_a * b) > 0).astype(float)
            z = np.where(r > 0, 0.0, fired) if block else fired
            r = np.clip(r + n_ref * z - 1, 0, n_ref)
            out.append(z)
        return np.stack(out, 1)

    neuron = Neuron(beta=beta_mem, threshold=thr, reset="subtract", rho=rho, adaptation_strength=beta_a,
                    refractory_steps=n_ref - 1, refractory_hold=False)
    spikes, _, _ = run_layer(neuron, torch.from_numpy(x), neuron.initial_state(4, 7, like=torch.from_numpy(x)))
    expected = eligalif(block=True)
    assert spikes.sum() > 20 and expected.sum() < eligalif(block=False).sum()
    np.testing.assert_array_equal(spikes.numpy(), expected)


def test_the_unit_gain_readout_filter_is_bellecs_exp_convolve(float64):
    """readout_filter=mean: y_t = kappa y_{t-1} + (1 - kappa) W_out S_t, Bellec's exp_convolve of the spikes then
    W_out; sum (spytorch's integrator) is the same without the (1 - kappa). Against the convolution written out."""
    torch.manual_seed(0)
    outputs = {}
    for kind in ("sum", "mean"):
        torch.manual_seed(0)
        model = SNN(5, 2, hidden_sizes=[6], readout="leaky_integrator", readout_filter=kind, steps=40, bias=False).double()
        with torch.no_grad():
            model.hidden[0].weight.mul_(4)
        spikes = model.hidden_spikes(model.encode(torch.rand(3, 5, generator=torch.Generator().manual_seed(1)).double()))[-1]
        outputs[kind] = (model.output_from(spikes), spikes, model.readout.weight.detach(), model.readout_decay)
    output, spikes, w_out, kappa = outputs["mean"]
    filtered, expected = torch.zeros(3, 6, dtype=torch.float64), []
    for t in range(spikes.shape[1]):
        filtered = kappa * filtered + (1 - kappa) * spikes[:, t]
        expected.append(filtered @ w_out.T)
    assert spikes.sum() > 10
    torch.testing.assert_close(output, torch.stack(expected, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outputs["sum"][0] * (1 - kappa), output, rtol=1e-12, atol=1e-12)


def test_bellecs_initialisation():
    """init=bellec: input and recurrent weights N(0, 1 / fan_in) (sample std of 100 x 400 and 400 x 400 within 2 %, about
    three standard errors), the readout Glorot-uniform (its bound sqrt(6 / (fan_in + fan_out)) and the uniform's std)."""
    torch.manual_seed(0)
    model = SNN(100, 10, hidden_sizes=[400], recurrent=True, init="bellec")
    assert model.hidden[0].weight.std().item() == pytest.approx(1 / math.sqrt(100), rel=0.02)
    assert model.recurrent.weight.std().item() == pytest.approx(1 / math.sqrt(400), rel=0.02)
    bound = math.sqrt(6 / (400 + 10))
    assert model.readout.weight.abs().max() <= bound and model.readout.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert (model.hidden[0].bias == 0).all() and (model.readout.bias == 0).all()


@pytest.mark.parametrize("method", ["bp", "eprop", "np"])
def test_without_autapses_the_diagonal_stays_zero_under_every_rule(method, tmp_path):
    """model.autapses=false: W_rec's diagonal is zero from the start and after training steps of any rule (the module
    masks every update, models/snn.grad_masks), while the other recurrent weights do learn."""
    cfg = compose_config(["experiment=evidence_accumulation", f"method={method}", "model.rate_penalty=0", "data.cues=3",
                          "data.slot_ms=15", "data.cue_ms=10", "data.delay_ms=30", "data.recall_ms=10", "data.train_sequences=32",
                          "data.val_sequences=8", "data.test_sequences=8", "data.batch_size=8", "trainer.max_steps=3",
                          "+trainer.enable_progress_bar=false", "callbacks=none", *CSV_ONLY], tmp_path)
    check_config(cfg)
    datamodule, module, trainer, _ = build(cfg)
    before = module.model.recurrent.weight.detach().clone()
    assert (before.diagonal() == 0).all()
    trainer.fit(module, datamodule=datamodule)
    after = module.model.recurrent.weight.detach()
    assert (after.diagonal() == 0).all() and not torch.equal(after, before)


def test_without_grad_the_spike_skips_the_function_but_not_under_a_transform(float64, monkeypatch):
    """`spike` without grad mode is H(x) without SurrogateSpike (whose apply costs an inspect.signature a call); under
    torch.func.jvp or a forward-AD level, grad mode off or not, the Function still gives the surrogate's derivative
    (fg_a and fg_w on model=snn run their jvp without grad)."""
    from learnbench.models import surrogates

    x, tangent = torch.randn(50), torch.randn(50)
    expected_tangent = tangent * surrogates.DERIVATIVES["fast_sigmoid"](x, 25.0, 1.0)
    calls = []
    real_apply = surrogates.SurrogateSpike.apply
    monkeypatch.setattr(surrogates.SurrogateSpike, "apply", lambda *a: calls.append(1) or real_apply(*a))
    with torch.no_grad():
        assert torch.equal(spike(x, "fast_sigmoid", None), (x > 0).double()) and not calls
        out, out_tangent = torch.func.jvp(lambda v: spike(v, "fast_sigmoid", None), (x,), (tangent,))
        torch.testing.assert_close(out_tangent, expected_tangent)
        after_jvp = len(calls)
        import torch.autograd.forward_ad as forward_ad

        with forward_ad.dual_level():
            dual = spike(forward_ad.make_dual(x, tangent), "fast_sigmoid", None)
            torch.testing.assert_close(forward_ad.unpack_dual(dual).tangent, expected_tangent)
    assert torch.equal(out, (x > 0).double()) and 0 < after_jvp < len(calls)


# ============================================================================= the model: state, step, protocol
def test_step_by_step_equals_forward_and_state_is_per_batch(float64):
    """`step` over the encoded input reproduces `forward` (layer by layer) with a recurrent ALIF layer; the state is
    a fresh SNNState per call, so two calls on the same batch give the same output (nothing carried)."""
    torch.manual_seed(0)
    model = SNN((1, 3, 3), 3, hidden_sizes=[12, 8], recurrent=True, neuron="alif", tau_syn=5.0, refractory_steps=1,
                readout="leaky_integrator", encoding="latency", steps=30).double()
    with torch.no_grad():
        for layer in model.hidden:
            layer.weight.mul_(5)
    x = torch.rand(4, 1, 3, 3)
    out, last = model(x, return_state=True)
    state, outs = model.initial_state(4), []
    for x_t in model.encode(x).unbind(1):
        state, y_t = model.step(state, x_t)
        outs.append(y_t)
    torch.testing.assert_close(torch.stack(outs, 1), out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.hidden[1].membrane, last.hidden[1].membrane, rtol=1e-12, atol=1e-12)
    assert torch.equal(model(x), out)
    assert last.hidden[0].spikes.sum() >= 0 and model.initial_state(2).hidden[0].membrane.abs().sum() == 0
    assert model.parameter_groups() == {"input": ("hidden.0.weight", "hidden.0.bias", "hidden.1.weight", "hidden.1.bias"),
                                        "recurrent": ("recurrent.weight",), "readout": ("readout.weight", "readout.bias")}


def test_spytorch_initialisation():
    """N(0, (7 (1 - beta) / sqrt(fan_in))^2), no bias: the sample std of 784 x 1000 weights within 1 %."""
    torch.manual_seed(0)
    model = SNN(784, 10, hidden_sizes=[1000], tau_mem=10.0, init="spytorch", bias=False)
    expected = 7 * (1 - math.exp(-0.1)) / math.sqrt(784)
    assert model.hidden[0].weight.std().item() == pytest.approx(expected, rel=0.01)
    assert model.hidden[0].bias is None and model.readout.bias is None


# ============================================================================= the losses over time
def test_max_over_time_loss_is_spytorchs(float64):
    """spytorch: m, _ = max(output, 1); NLLLoss(LogSoftmax(m), y); accuracy of argmax m."""
    output, y = torch.randn(6, 20, 4), torch.randint(0, 4, (6,))
    task = get_task("max_over_time_classification")
    m, _ = torch.max(output, 1)
    torch.testing.assert_close(task.loss(output, y).mean(), torch.nn.NLLLoss()(torch.nn.LogSoftmax(dim=1)(m), y))
    metrics = task.metrics(4)
    task.update(metrics, output, y)
    assert metrics["acc"].compute().item() == pytest.approx((m.argmax(1) == y).double().mean().item())


def test_sum_over_steps_loss_is_snntorchs(float64):
    """snnTorch's tutorial 5: loss_val = sum over steps of CrossEntropyLoss()(mem_rec[step], targets)."""
    output, y = torch.randn(6, 25, 10), torch.randint(0, 10, (6,))
    task = get_task("sum_over_steps_classification")
    expected = sum(torch.nn.CrossEntropyLoss()(output[:, t], y) for t in range(25))
    torch.testing.assert_close(task.loss(output, y).mean(), expected)
    assert not task.sequential  # static targets: the module takes the batch whole


# ============================================================================= through the app
def test_bp_trains_the_snn_through_the_module(tmp_path):
    """model=snn, method=bp on the spiral: the module takes the SNN's outputs [batch, T, classes] with the loss over
    time its config names, and the validation loss falls over three short epochs."""
    overrides = ["data=spiral", "model=snn", "method=bp", "optimizer=adam", "optimizer.lr=0.01", "model.hidden_sizes=[32]",
                 "model.steps=10", *tiny(train_batches=20, epochs=3), *CSV_ONLY]
    record = train(compose_config(overrides, tmp_path))
    assert record["status"] == "ok"
    losses = [epoch["val/loss"] for epoch in record["history"]]
    assert losses[-1] < losses[0] and all(math.isfinite(v) for v in losses)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["model"]["surrogate"] == "fast_sigmoid" and "test/acc" in saved["metrics"]["final"]


def test_a_snn_checkpoint_loads_back_with_its_loss_over_time_and_rate_draws(tmp_path):
    """Oracle: the trained module. load_module rebuilds the SNN, its task (the loss over time, not the data's
    classification) and the rate code's call count from the checkpoint, so the next draws are the same."""
    from learnbench.checkpoints import load_module

    overrides = ["data=spiral", "model=snn", "model.encoding=rate", "model.max_rate=500", "model.steps=8", "model.hidden_sizes=[16]",
                 "model.loss_over_time=max_over_time", *tiny(train_batches=3), *CSV_ONLY]
    cfg = compose_config(overrides, tmp_path)
    # the spiral's inputs lie outside [0, 1]: the rate code is refused on them, so this test calls build directly
    datamodule, module, trainer, _ = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    loaded = load_module(tmp_path / "run.ckpt")
    assert loaded.task.name == "max_over_time_classification" and int(loaded.model.encoding_calls) == int(module.model.encoding_calls) > 0
    x = torch.rand(5, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module(x), rtol=0, atol=0)


@pytest.mark.parametrize(("experiment", "task", "steps"), [("spytorch_fashion_mnist", "max_over_time_classification", 100),
                                                           ("snntorch_mnist", "sum_over_steps_classification", 25)])
def test_presets_build_the_published_model(experiment, task, steps, tmp_path):
    """The preset's model and loss over time, built as train.build builds them (without loading the dataset:
    the images are not needed for the shapes)."""
    from hydra.utils import instantiate

    from learnbench.train import build_module, task_of

    cfg = compose_config([f"experiment={experiment}", *CSV_ONLY], tmp_path)
    check_config(cfg)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg, datamodule.input_shape, datamodule.output_dim, task_of(cfg, datamodule))
    assert module.task.name == task and module.model.steps == steps
    out = module.model(torch.rand(2, *datamodule.input_shape))
    assert out.shape == (2, steps, 10)


# ============================================================================= bad input, refused at the start
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.surrogate=sigmoid"], "model.surrogate='sigmoid': expected one of 'fast_sigmoid', 'arctan', 'piecewise_linear', 'straight_through'"),
        (["model.encoding=poisson"], "model.encoding='poisson': expected one of 'current', 'rate', 'latency'"),
        (["model.neuron=izhikevich"], "model.neuron='izhikevich': expected one of 'lif', 'alif'"),
        (["model.reset=soft"], "model.reset='soft': expected one of 'subtract', 'zero'"),
        (["model.readout=spikes"], "model.readout='spikes': expected one of 'leaky_integrator', 'membrane'"),
        (["model.steps=0"], "model.steps=0: expected an integer >= 1"),
        (["model.tau_mem=0"], "model.tau_mem=0: expected a number > 0 or null"),
        (["model.tau_syn=-5"], "model.tau_syn=-5: expected a number >= 0 or null"),
        (["model.tau_adaptation=0"], "model.tau_adaptation=0: expected a number > 0"),
        (["model.dt=-1"], "model.dt=-1: expected a number > 0"),
        (["model.surrogate_scale=0"], "model.surrogate_scale=0: expected a number > 0 or null"),
        (["model.beta=1.0", "model.tau_mem=null"], "model.beta=1.0: expected a number in (0, 1) or null"),
        (["model.refractory_steps=-1"], "model.refractory_steps=-1: expected an integer >= 0"),
        (["model.hidden_sizes=[]"], "model.hidden_sizes=[]: expected a list (each item an integer >= 1) with at least 1 items"),
    ],
)
def test_bad_spiking_options_are_refused_in_one_line(overrides, expected, tmp_path):
    cfg = compose_config(["data=mnist", "model=snn", *overrides], tmp_path)
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    message = str(error.value)
    assert message.startswith(expected) and "\n" not in message, message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.beta=0.9"], "model.tau_mem=20.0 and model.beta=0.9: give exactly one"),
        (["model.tau_mem=null"], "model.tau_mem=null and model.beta=null: give exactly one"),
        (["model.encoding=rate"], "model.encoding=rate reads every input as an intensity in [0, 1], but data=mnist gives data.normalize=standard: set data.normalize=unit"),
        (["model.encoding=latency", "data=spiral"], "model.encoding=latency reads every input as an intensity in [0, 1], but data=spiral gives inputs outside it"),
        (["model.encoding=rate", "data.normalize=unit", "model.max_rate=2000"], "model.max_rate=2000 Hz with model.dt=1.0 ms asks for 2 spikes per step"),
        (["model.readout_filter=mean"], "model.readout_filter=mean scales a leaky integrator's input by (1 - its decay), and model.readout=membrane"),
        (["model.autapses=false"], "model.autapses=false removes W_rec's diagonal, and model.recurrent=false has no W_rec"),
    ],
)
def test_contradicting_spiking_options_are_refused_in_one_line(overrides, expected, tmp_path):
    cfg = compose_config(["data=mnist", "model=snn", *overrides], tmp_path)
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert str(error.value).startswith(expected) and "\n" not in str(error.value), str(error.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=snn", "method=bptt"], "method=bptt does not train spiking models: on model=snn use one of bp"),
        (["model=snn", "method=kp"], "method=kp does not train spiking models: on model=snn use one of bp, dfa, eprop, fa, fg_a, fg_w, np"),
        (["model=snn", "method=ridge"], "method=ridge does not train spiking models: on model=snn use one of bp"),
        (["model=snn", "data=sine_trajectory"], "model=snn makes its own time steps from a static example, but data=sine_trajectory"),
        (["model=snn", "data=mnist_autoencoder"], "model=snn classifies static examples in time, but data=mnist_autoencoder is a reconstruction task"),
        # as before the spiking model: a recurrent-only rule on a feed-forward model, a feed-forward rule on the RNN
        (["model=mlp", "method=bptt"], "method=bptt is a recurrent learning rule and model=mlp is feed-forward"),
        (["model=rnn", "data=sine_trajectory", "method=fa"], "method=fa does not train recurrent models: on model=rnn use one of"),
    ],
)
def test_rules_and_data_that_do_not_fit_the_snn_are_refused(overrides, expected, tmp_path):
    cfg = compose_config([*overrides, f"paths.data_dir={tmp_path}", *CSV_ONLY], tmp_path)
    check_config(cfg)
    with pytest.raises(ConfigError) as error:
        build(cfg)
    assert str(error.value).startswith(expected), str(error.value)
