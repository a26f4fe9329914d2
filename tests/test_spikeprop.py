"""SpikeProp on the spike-response network (models/srm.py, rules/spiking/spikeprop.py, data/spike_xor.py).

Oracles: float64 central finite differences of the loss through the exact spike times (the gradient); the
membrane summed term by term from Bohte's kernel and the first spike time in closed form by Lambert's W (scipy,
test-only); the XOR patterns as Bohte et al. 2002 state them; the refusals' messages.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.special import lambertw

from conftest import CSV_ONLY, compose_config
from learnbench.config_validation import ConfigError
from learnbench.data import SpikeXORDataModule, spike_xor_patterns
from learnbench.models import MLP, SRM
from learnbench.models.srm import epsilon_slope
from learnbench.rules import SpikeProp
from learnbench.tasks import get_task
from learnbench.train import build, train

TAU, THRESHOLD = 7.0, 1.0
LOSS = get_task("spike_time_regression").loss


def xor_network(seed: int, **options) -> SRM:
    torch.manual_seed(seed)
    return SRM((3,), 1, **options).double()


def batch_loss(model: SRM, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(LOSS(model(x), y).mean())


# ============================================================================= the gradient
def finite_difference_grads(model: SRM, x: torch.Tensor, y: torch.Tensor, h: float = 1e-6) -> list[torch.Tensor]:
    """(L(w + h) - L(w - h)) / 2h for every weight of every layer, each L re-solving every threshold crossing."""
    grads = []
    for layer in model.layers:
        weight, numeric = layer.weight.data, torch.zeros_like(layer.weight)
        for index in range(weight.numel()):
            original = weight.view(-1)[index].item()
            weight.view(-1)[index] = original + h
            up = batch_loss(model, x, y)
            weight.view(-1)[index] = original - h
            down = batch_loss(model, x, y)
            weight.view(-1)[index] = original
            numeric.view(-1)[index] = (up - down) / (2 * h)
        grads.append(numeric)
    return grads


@pytest.mark.parametrize("seed", [1, 2])
def test_spikeprop_gradient_equals_central_finite_differences_of_every_weight(seed):
    """Every weight, hidden and output, on the four XOR patterns at once (the mean loss): Bohte's
    dt/dw = -(du/dw)/(du/dt) chained through the hidden spike times equals (L(w + h) - L(w - h)) / 2h, where each
    L re-solves every threshold crossing. A 3-3-1 network with 4 sub-synapses a connection keeps it to seconds."""
    model = xor_network(seed, hidden_sizes=[3], synapses=4, delay_step=3.0, inhibitory_hidden=1)
    x, y = (t.double() for t in spike_xor_patterns())
    times = model.spike_times(x)
    assert all(torch.isfinite(t).all() for t in times[1:]), "every neuron fires (else its weights' gradient is trivially 0)"
    rule = SpikeProp(min_slope=0.0)
    rule.bind(model, seed)
    rule.estimate_grads(model, x, y, LOSS)
    for layer, numeric in zip(model.layers, finite_difference_grads(model, x, y)):
        assert numeric.abs().max() > 1e-2, "the loss depends on this layer"
        torch.testing.assert_close(layer.weight.grad, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", [1, 4])
def test_several_spikes_gradient_equals_central_finite_differences_of_every_weight(seed):
    """Booij & Nguyen 2005 (model.max_spikes=3): the hidden neurons fire two or three times, each spike moving with
    the weights, the spikes below it and its own earlier spikes (the refractory kernel); the gradient of the loss on
    the output's first spike equals central differences of every weight. Negative control: with the own earlier
    spikes held fixed in the refractory term the hidden layer's gradient is off by 0.06-0.2 (checked by hand)."""
    model = xor_network(seed, hidden_sizes=[3], synapses=4, delay_step=3.0, inhibitory_hidden=1, max_spikes=3)
    x, y = (t.double() for t in spike_xor_patterns())
    hidden = model.spike_times(x)[1]
    assert int(torch.isfinite(hidden[..., 1:]).sum()) >= 10, "later spikes must exist for the recursion to matter"
    rule = SpikeProp(min_slope=0.0)
    rule.bind(model, seed)
    rule.estimate_grads(model, x, y, LOSS)
    for layer, numeric in zip(model.layers, finite_difference_grads(model, x, y)):
        assert numeric.abs().max() > 1e-2, "the loss depends on this layer"
        torch.testing.assert_close(layer.weight.grad, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("min_slope", [0.0, 0.1])
def test_the_several_spikes_path_at_one_spike_is_bohtes_rule(min_slope):
    """Two implementations: with one spike per neuron the implicit-function rewrite that autograd differentiates
    (several_spikes_grads) gives Bohte's hand-written chain rule (layer_grads), floor and all, to rounding."""
    model = xor_network(2, hidden_sizes=[3], synapses=4, delay_step=3.0)
    x, y = (t.double() for t in spike_xor_patterns())
    rule = SpikeProp(min_slope=min_slope)
    rule.bind(model, 0)
    rule.estimate_grads(model, x, y, LOSS)
    bohte = [layer.weight.grad.clone() for layer in model.layers]
    rule.several_spikes_grads(model, x, y, LOSS)
    for layer, expected in zip(model.layers, bohte):
        torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-12, atol=1e-13)


def test_each_of_several_spikes_is_a_threshold_crossing_with_the_membrane_below_between():
    """Every spike found is where u (the inputs' kernels plus the refractory kernels of the neuron's earlier spikes)
    reaches the threshold from below; between spikes, on a 0.01 ms grid, u stays below it; the first spike is the
    one-spike model's; no spike after a neuron's last."""
    from learnbench.models.srm import refractory_kernel

    model = xor_network(5, hidden_sizes=[3], synapses=4, delay_step=3.0, max_spikes=4)
    x, _ = (t.double() for t in spike_xor_patterns())
    hidden = model.spike_times(x)[1]  # [4, 3, 4]
    torch.manual_seed(5)
    single = SRM((3,), 1, hidden_sizes=[3], synapses=4, delay_step=3.0).double()
    assert torch.equal(single.spike_times(x)[1], hidden[..., 0])
    membrane = model.layers[0].membrane(x, model.tau)
    grid = torch.arange(0.0, model.window, 0.01, dtype=torch.float64)
    for b in range(4):
        for j in range(3):
            spikes = hidden[b, j][torch.isfinite(hidden[b, j])]
            assert torch.isinf(hidden[b, j, len(spikes):]).all()
            for f, spike in enumerate(spikes):
                at = torch.cat([grid[(grid > (spikes[f - 1] if f else -1.0)) & (grid < spike)], spike.view(1)])
                u = membrane(at.view(1, 1, -1).expand(4, 3, -1))[b, j]
                u = u + refractory_kernel(at.unsqueeze(-1) - spikes[:f], model.threshold, model.tau_refractory).sum(-1)
                assert u[-1].item() == pytest.approx(model.threshold, abs=1e-9)
                assert (u[:-1] < model.threshold).all()
    assert int(torch.isfinite(hidden[..., 1:]).sum()) > 0


@pytest.mark.parametrize("weight", [2.0, 1.05])
def test_the_slope_floor_scales_the_gradient_only_where_the_crossing_is_flatter(weight):
    """min_slope (respikeprop's 0.1) floors du/dt at the spike: one neuron crossing with slope u' gets the exact
    gradient where u' >= 0.1 (w = 2: u' = 0.47) and the exact one times u' / 0.1 where it is flatter (w = 1.05)."""
    model = one_neuron([weight])
    x, y = torch.zeros(1, 1, dtype=torch.float64), torch.full((1, 1), 3.0, dtype=torch.float64)
    spike = model.spike_times(x)[-1]
    slope = float(weight * epsilon_slope(spike - 1.0, TAU))
    grads = {}
    for floor in (0.0, 0.1):
        model.zero_grad()
        SpikeProp(min_slope=floor).estimate_grads(model, x, y, LOSS)
        grads[floor] = model.layers[0].weight.grad.clone()
    assert float(grads[0.0]) != 0
    torch.testing.assert_close(grads[0.1], grads[0.0] * min(1.0, slope / 0.1), rtol=1e-14, atol=0)
    assert (slope > 0.1) == (weight == 2.0)


# ============================================================================= one neuron in closed form
def one_neuron(weights: list[float], delay: float = 1.0) -> SRM:
    """One input neuron per weight, one sub-synapse each (delay `delay`), into one output neuron."""
    model = SRM((len(weights),), 1, hidden_sizes=[], synapses=1, first_delay=delay, tau=TAU, threshold=THRESHOLD,
                inhibitory_hidden=0).double()
    model.layers[0].weight.data[:] = torch.tensor(weights, dtype=torch.float64).view(1, -1, 1)
    return model


def kernel(s: float) -> float:
    return s / TAU * math.exp(1 - s / TAU) if s > 0 else 0.0


def lambert_first_crossing(weights: list[float], arrivals: list[float]) -> float:
    """u(t) = e^(1 - t/tau)/tau (A t - B) once every input has arrived (A = sum w e^(a/tau), B = sum w a e^(a/tau));
    u = threshold at t = B/A - tau W0(-threshold e^(B/(A tau) - 1) / A), the principal branch the first crossing."""
    a = sum(w * math.exp(t / TAU) for w, t in zip(weights, arrivals))
    b = sum(w * t * math.exp(t / TAU) for w, t in zip(weights, arrivals))
    w0 = lambertw(-THRESHOLD * math.exp(b / (a * TAU) - 1) / a, 0)
    assert abs(w0.imag) < 1e-15
    return b / a - TAU * w0.real


@pytest.mark.parametrize(("weights", "input_times"), [
    ([2.0], [0.0]),                                   # one spike: t = t0 + d - tau W0(-theta / (w e))
    ([0.5, 0.4, 0.6], [0.0, 1.5, 2.5]),               # three spikes, all in before the crossing
    ([0.9, -0.3, 0.7], [0.0, 0.5, 1.0]),              # one inhibitory
])
def test_membrane_and_first_spike_time_equal_the_closed_form(weights, input_times):
    model = one_neuron(weights)
    x = torch.tensor([input_times], dtype=torch.float64)
    arrivals = [t + 1.0 for t in input_times]
    t = torch.linspace(0.0, 30.0, 61, dtype=torch.float64)
    u = model.layers[0].membrane(x, TAU)(t.view(1, 1, -1)).flatten()
    expected = [sum(w * kernel(float(s) - a) for w, a in zip(weights, arrivals)) for s in t]
    torch.testing.assert_close(u, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-13)
    spike = float(model.spike_times(x)[-1])
    closed = lambert_first_crossing(weights, arrivals)
    assert closed > max(arrivals), "the closed form holds once every input has arrived"
    assert spike == pytest.approx(closed, rel=1e-14, abs=1e-13)


def test_a_neuron_that_never_reaches_threshold_is_silent_and_read_as_the_window():
    model = one_neuron([0.5])  # peak 0.5 < threshold 1
    x = torch.zeros(1, 1, dtype=torch.float64)
    assert math.isinf(float(model.spike_times(x)[-1]))
    assert float(model(x)) == model.window
    model.zero_grad()
    SpikeProp().estimate_grads(model, x, torch.full((1, 1), 10.0, dtype=torch.float64), LOSS)
    assert float(model.layers[0].weight.grad.abs().sum()) == 0.0, "the loss is flat in the weights of a silent neuron"


# ============================================================================= the data
def test_spike_xor_patterns_and_targets_are_bohtes():
    """Inputs spike at 0 or 6 ms with a bias neuron at 0 ms; the output should fire at 16 ms when the inputs are
    equal, 10 ms when they differ (Bohte et al. 2002, section 3.1)."""
    x, y = spike_xor_patterns()
    assert x.tolist() == [[0, 0, 0], [0, 6, 0], [6, 0, 0], [6, 6, 0]]
    assert y.tolist() == [[16], [10], [10], [16]]
    splits = SpikeXORDataModule(repeats=2).load_splits()
    assert splits.train[0].shape == (8, 3) and torch.equal(splits.test[0], x) and torch.equal(splits.val[1], y)
    torch.testing.assert_close(LOSS(y + torch.tensor([[1.0], [2.0], [0.0], [-3.0]]), y), torch.tensor([0.5, 2.0, 0.0, 4.5]))


def test_the_preset_initialises_as_bohte():
    """Hidden weights U(-0.5, 1), output U(0, 1) except from the last (inhibitory) hidden unit, U(-0.5, 0);
    16 sub-synapses with delays 1..16 ms."""
    model = SRM((3,), 1)
    hidden, output = (layer.weight.detach() for layer in model.layers)
    assert hidden.shape == (5, 3, 16) and output.shape == (1, 5, 16)
    assert model.layers[0].delays.tolist() == [float(d) for d in range(1, 17)]
    assert hidden.min() >= -0.5 and hidden.max() <= 1.0 and hidden.min() < 0
    assert output[:, :4].min() >= 0 and output[:, :4].max() <= 1
    assert output[:, 4].min() >= -0.5 and output[:, 4].max() <= 0


# ============================================================================= refusals
@pytest.mark.parametrize(("overrides", "message"), [
    (["experiment=spikeprop_xor", "method=bp"], "method=bp does not train model=srm .* use method=spikeprop"),
    (["experiment=spikeprop_xor", "method=fa"], "method=fa does not train model=srm"),
    (["data=spiral", "model=mlp", "method=spikeprop"],
     "method=spikeprop differentiates exact spike times and trains only model=srm"),
    (["data=spiral", "model=srm", "method=spikeprop"], "model=srm maps input spike times .* use data=spike_xor"),
])
def test_refusals_are_one_line_naming_what_fits(overrides, message, tmp_path):
    cfg = compose_config([*overrides, *CSV_ONLY], tmp_path)
    with pytest.raises(ConfigError, match=message) as error:
        build(cfg)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("override", "message"), [
    ("model.inhibitory_hidden=6", r"model.inhibitory_hidden=6 is more than the 5 hidden units .* use model.inhibitory_hidden=5 or less"),
    ("model.hidden_init=[1.0,-0.5]", r"model.hidden_init=\[1.0, -0.5\]: give the uniform range as \[low, high\]"),
    ("model.tau_refractory=0", r"model.tau_refractory=0: expected a number > 0"),
    ("model.max_spikes=0", r"model.max_spikes=0: expected an integer >= 1"),
])
def test_contradictory_model_options_are_refused_before_anything_is_built(override, message, tmp_path):
    from learnbench.train import check_config

    with pytest.raises(ConfigError, match=message):
        check_config(compose_config(["experiment=spikeprop_xor", override, *CSV_ONLY], tmp_path))


def test_spikeprop_refuses_a_model_without_spike_times():
    with pytest.raises(ValueError, match="trains only model=srm"):
        SpikeProp().bind(MLP(input_shape=(3,), output_dim=1, hidden_sizes=[4]), seed=0)


# ============================================================================= the preset learns XOR
@pytest.mark.slow
def test_the_preset_learns_xor_and_stops_at_the_criterion(tmp_path):
    """experiment=spikeprop_xor through learnbench.train (Lightning): the run stops at the first epoch whose
    error (train/sse) is below 1 ms^2, long before max_epochs; the tool that counts epochs over seeds
    (tools/spikeprop_convergence.py) counts the same epochs for the same seed."""
    from learnbench.tools.spikeprop_convergence import epochs_to_converge

    cfg = compose_config(["experiment=spikeprop_xor", "seed=0", "callbacks.progress_bar=null", "callbacks.checkpoint=null",
                          *CSV_ONLY], tmp_path)
    record = train(cfg)
    assert record["status"] == "ok"
    sse = [epoch["train/sse"] for epoch in record["history"]]
    assert sse[-1] < 1.0 and min(sse[:-1]) >= 1.0
    assert record["epochs"] < cfg.trainer.max_epochs
    assert record["metrics"]["final"]["test/sse"] < 1.0
    assert epochs_to_converge(0, cfg.trainer.max_epochs, 1.0, [])["epochs"] == record["epochs"]


@pytest.mark.slow
def test_the_convergence_count_of_a_stack_of_seeds_is_each_seeds_own():
    """tools/spikeprop_convergence.py --stack: seeds trained side by side as one block-diagonal network count the epochs
    each counts alone. A loose threshold (20 ms^2) and a short cap, so that within 40 epochs some seeds get there and
    one does not: both the counts and the failure must match."""
    from learnbench.tools.spikeprop_convergence import epochs_to_converge, stack_epochs_to_converge

    seeds = [0, 1, 2, 3]
    alone = [epochs_to_converge(s, 40, 10.0, []) for s in seeds]
    stacked = stack_epochs_to_converge(seeds, 40, 10.0, [])
    assert [r["epochs"] for r in stacked] == [r["epochs"] for r in alone]
    assert any(r["epochs"] is None for r in alone) and any(r["epochs"] is not None for r in alone)
    for a, b in zip(alone, stacked):
        assert a["silent_at_start"] == b["silent_at_start"]
        if a["epochs"] is None:
            assert b["final_error"] == pytest.approx(a["final_error"], rel=1e-4)
