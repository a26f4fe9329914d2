"""e-prop on the recurrent spiking network (rules/recurrent/spiking_eprop.py), against its oracle:
surrogate BPTT, autograd through the model's own forward. Float64 throughout.

Where the theory says e-prop is exact (symmetric feedback, W_rec = 0, the reset detached) the gradients
must match to rounding; with W_rec != 0 they must differ (the truncation is real)."""

from __future__ import annotations

import pytest
import torch

from learnbench.models import SNN
from learnbench.rules import EProp
from learnbench.rules.base import trainable_parameters
from learnbench.tasks import get_task

STEPS, INPUTS, UNITS, OUTPUTS, BATCH = 30, 6, 7, 3, 4


def spiking_net(seed: int, recurrent: bool = True, w_rec_zero: bool = False, **options) -> SNN:
    """A small float64 SNN whose units do spike within STEPS (weights scaled up from PyTorch's default)."""
    torch.manual_seed(seed)
    options = dict(dict(neuron="lif", threshold=0.6, surrogate="piecewise_linear", readout="leaky_integrator"), **options)
    model = SNN(INPUTS, OUTPUTS, hidden_sizes=[UNITS], recurrent=recurrent, steps=STEPS, **options).double()
    with torch.no_grad():
        model.hidden[0].weight.mul_(3.0)
        if model.recurrent is not None:
            model.recurrent.weight.mul_(0.0 if w_rec_zero else 3.0)
    return model


def inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, INPUTS, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, OUTPUTS, (BATCH,), generator=generator)


LOSS = get_task("sum_over_steps_classification").loss


def surrogate_bptt(model: SNN, x, y) -> list[torch.Tensor]:
    """The oracle: autograd of the loss through the whole unrolled network."""
    loss = LOSS(model(x), y).mean()
    return list(torch.autograd.grad(loss, trainable_parameters(model)))


def eprop_grads(rule: EProp, model: SNN, x, y) -> list[torch.Tensor]:
    rule.bind(model, seed=0)
    for p in model.parameters():
        p.grad = None
    rule.estimate_grads(model, x, y, LOSS)
    return [p.grad.clone() for p in trainable_parameters(model)]


def assert_spikes(model: SNN, x) -> None:
    """Guard: an oracle match on silent units would prove nothing."""
    run = model.spiking_run(x, model.initial_state(len(x)))
    assert 0 < run.spikes.mean() < 0.5 and run.pseudo_derivative.abs().sum() > 0


EXACT_CASES = {
    "lif, leaky integrator": dict(neuron="lif"),
    "alif, leaky integrator": dict(neuron="alif", tau_adaptation=30.0, adaptation_strength=0.5),
    "lif, membrane readout": dict(neuron="lif", readout="membrane"),
    "alif, membrane readout": dict(neuron="alif", tau_adaptation=30.0, adaptation_strength=0.5, readout="membrane"),
    "lif, reset to zero, refractory": dict(neuron="lif", reset="zero", refractory_steps=2),
    "alif, refractory": dict(neuron="alif", tau_adaptation=30.0, adaptation_strength=0.5, refractory_steps=3),
    "alif, fast sigmoid": dict(neuron="alif", adaptation_strength=0.5, surrogate="fast_sigmoid"),
    "lif and alif in one layer": dict(neuron="alif", alif_units=3, tau_adaptation=30.0, adaptation_strength=0.5),
    "alif, refractory, membrane not held": dict(neuron="alif", tau_adaptation=30.0, adaptation_strength=0.5, refractory_steps=3,
                                                refractory_hold=False),
    "lif, reset to zero, refractory, not held": dict(neuron="lif", reset="zero", refractory_steps=2, refractory_hold=False),
    "alif, unit-gain readout filter": dict(neuron="alif", tau_adaptation=30.0, adaptation_strength=0.5, readout_filter="mean"),
    "bellec's eligalif": dict(neuron="alif", alif_units=3, tau_adaptation=30.0, adaptation_strength=0.5, refractory_steps=4,
                              refractory_hold=False, readout_filter="mean", init="bellec"),
}


@pytest.mark.parametrize("options", EXACT_CASES.values(), ids=EXACT_CASES.keys())
@pytest.mark.parametrize("w_rec", ["zero", "absent"])
def test_symmetric_eprop_without_recurrence_is_surrogate_bptt(options, w_rec):
    model = spiking_net(1, recurrent=w_rec == "zero", w_rec_zero=True, **options)
    x, y = inputs(2)
    assert_spikes(model, x)
    expected = surrogate_bptt(model, x, y)
    actual = eprop_grads(EProp(feedback="symmetric"), model, x, y)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)
    assert any(e.abs().sum() > 0 for e in expected[:2])  # the hidden weights do get a gradient


@pytest.mark.parametrize("neuron", ["lif", "alif"])
def test_eprop_differs_from_surrogate_bptt_with_recurrence(neuron):
    """The truncation is real: with W_rec != 0, e-prop drops the paths through other units."""
    model = spiking_net(3, neuron=neuron, adaptation_strength=0.5)
    x, y = inputs(4)
    assert_spikes(model, x)
    expected = surrogate_bptt(model, x, y)
    actual = eprop_grads(EProp(feedback="symmetric"), model, x, y)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    differs = {n for n, a, e in zip(names, actual, expected) if not torch.allclose(a, e, rtol=1e-6, atol=1e-9)}
    assert {"hidden.0.weight", "recurrent.weight"} <= differs
    for n, a, e in zip(names, actual, expected):
        if n.startswith("readout."):  # the readout's rule is exact whatever W_rec is
            torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


def test_membrane_readout_with_output_resets_to_zero_is_not_claimed_exact():
    """A LIF readout reset to zero changes its decay at every output spike: the fixed filter kappa is then an
    approximation (the docstring says where it is exact; this keeps that sentence true)."""
    model = spiking_net(5, recurrent=False, readout="membrane", reset="zero")
    with torch.no_grad():
        model.readout.weight.mul_(20.0)  # make the output layer spike
    x, y = inputs(6)
    assert model(x).amax() > model.neuron.threshold  # the output layer does spike (and reset)
    expected = surrogate_bptt(model, x, y)
    actual = eprop_grads(EProp(feedback="symmetric"), model, x, y)
    assert not torch.allclose(actual[0], expected[0], rtol=1e-6, atol=1e-9)


def test_a_mixed_layer_is_lif_units_then_alif_units():
    """Oracle: without W_rec units do not interact, so a layer of 4 LIF + 3 ALIF units spikes as a LIF layer in its
    first 4 units and as an ALIF layer in its last 3, on the same weights."""
    mixed = spiking_net(13, recurrent=False, neuron="alif", alif_units=3, adaptation_strength=0.5, tau_adaptation=30.0)
    x, _ = inputs(14)
    spikes = {}
    for neuron in ("lif", "alif"):
        pure = spiking_net(13, recurrent=False, neuron=neuron, adaptation_strength=0.5, tau_adaptation=30.0)
        pure.load_state_dict(mixed.state_dict())
        spikes[neuron] = pure.spiking_run(x, pure.initial_state(len(x))).spikes
    got = mixed.spiking_run(x, mixed.initial_state(len(x))).spikes
    torch.testing.assert_close(got[..., :4], spikes["lif"][..., :4])
    torch.testing.assert_close(got[..., 4:], spikes["alif"][..., 4:])
    assert not torch.equal(spikes["lif"][..., 4:], spikes["alif"][..., 4:])  # adaptation does change those units
    torch.testing.assert_close(mixed.adaptation_strengths, torch.tensor([0, 0, 0, 0, 0.5, 0.5, 0.5], dtype=torch.float64))


def test_random_feedback_is_drawn_from_the_seed_alone():
    """Every rank binds the rule with the same seed: the same B, whatever the model's weights."""
    feedbacks = []
    for model_seed, rule_seed in ((0, 7), (1, 7), (0, 8)):
        rule = EProp(feedback="random")
        rule.bind(spiking_net(model_seed), seed=rule_seed)
        feedbacks.append(rule.feedback)
    torch.testing.assert_close(feedbacks[0], feedbacks[1])
    assert not torch.allclose(feedbacks[0], feedbacks[2])
    assert feedbacks[0].shape == (OUTPUTS, UNITS)


def test_random_feedback_replaces_the_readout_in_the_learning_signal():
    """Oracle for random e-prop at W_rec = 0: surrogate BPTT with W_out swapped for B only on the path back
    to the hidden units (the readout's own gradient unchanged)."""
    model = spiking_net(9, w_rec_zero=True, neuron="alif", adaptation_strength=0.5)
    x, y = inputs(10)
    rule = EProp(feedback="random")
    actual = eprop_grads(rule, model, x, y)
    spikes = model.spiking_run(x, model.initial_state(len(x))).spikes
    hidden = trainable_parameters(model)[:2]
    with torch.enable_grad():
        outputs = model(x)
        error = torch.autograd.grad(LOSS(outputs, y).mean(), outputs)[0]
        # d(sum_t dL/dy_t B filtered)/dW: push the error back through a readout whose weight is B, by autograd.
        w = model.readout.weight
        with torch.no_grad():
            saved = w.clone()
            w.copy_(rule.feedback)
        through_b = model(x)
        grads = torch.autograd.grad((through_b * error).sum(), hidden)
        with torch.no_grad():
            w.copy_(saved)
    assert spikes.sum() > 0
    for a, e in zip(actual[:2], grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


def test_adaptive_feedback_gets_the_readouts_update():
    """Adaptive e-prop on the SNN: B is a parameter whose gradient is W_out's own (plus its decay), and the hidden
    weights' learning signal goes through B, not W_out: at binding B is random e-prop's draw from the same seed, so
    the hidden gradients are random e-prop's (which test_random_feedback_replaces_the_readout_in_the_learning_signal
    checks against autograd)."""
    model = spiking_net(15, w_rec_zero=True, neuron="alif", adaptation_strength=0.5)
    x, y = inputs(16)
    rule = EProp(feedback="adaptive", feedback_decay=0.1)
    actual = eprop_grads(rule, model, x, y)
    assert isinstance(rule.feedback, torch.nn.Parameter)
    torch.testing.assert_close(rule.feedback.grad, model.readout.weight.grad + 0.1 * rule.feedback.detach())
    random = EProp(feedback="random")
    through_b = eprop_grads(random, model, x, y)
    torch.testing.assert_close(random.feedback, rule.feedback.detach())
    for a, e in zip(actual, through_b, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


def test_online_windows_carry_the_traces():
    """Cut into windows with the traces carried (update_every k without stepping), the summed gradient is the
    whole sequence's: nothing is lost at a window's edge."""
    model = spiking_net(11, w_rec_zero=True, neuron="alif", adaptation_strength=0.5, encoding="current")
    x, y = inputs(12)
    whole = eprop_grads(EProp(), model, x, y)
    sequence = model.encode(x)
    per_step = get_task("sum_over_steps_classification").loss
    rule, state, total = EProp(update_every=7), None, [torch.zeros_like(p) for p in trainable_parameters(model)]
    rule.bind(model, seed=0)
    model.encoding = "none"
    try:
        for t0 in range(0, STEPS, 7):
            out = rule.estimate_grads(model, sequence[:, t0:t0 + 7], y, per_step, state)
            state = out.state
            total = [t + p.grad for t, p in zip(total, trainable_parameters(model))]
    finally:
        model.encoding = "current"
    for a, e in zip(total, whole, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("neuron", ["lif", "alif"])
def test_eprop_walks_a_long_sequence_in_pieces_and_is_still_surrogate_bptt(neuron):
    """Sequences (the data carry time) longer than a piece: both passes go 7 steps at a time (outputs first, then
    the hidden layer again with the traces carried), keeping no run longer than a piece; at W_rec = 0 the gradient
    is still surrogate BPTT's, through the whole 30 steps at once."""
    from learnbench.rules.recurrent.spiking_eprop import spiking_eprop_grads, time_chunks

    model = spiking_net(17, w_rec_zero=True, neuron=neuron, adaptation_strength=0.5, tau_adaptation=30.0, encoding="none")
    generator = torch.Generator().manual_seed(18)
    sequence = torch.rand(BATCH, STEPS, INPUTS, generator=generator, dtype=torch.float64)
    y = torch.randint(0, OUTPUTS, (BATCH,), generator=generator)
    assert_spikes(model, sequence)
    assert len(time_chunks(model, sequence, 7)) == 5  # 7 + 7 + 7 + 7 + 2 steps
    expected = surrogate_bptt(model, sequence, y)
    spiking_eprop_grads(model, model.readout.weight.detach(), sequence, y, LOSS, chunk_steps=7)
    for a, e in zip([p.grad for p in trainable_parameters(model)], expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)
    assert all(e.abs().sum() > 0 for e in expected)


@pytest.mark.parametrize("options", EXACT_CASES.values(), ids=EXACT_CASES.keys())
def test_the_adjoint_sum_equals_the_traces_walked_forward(options):
    """Two ways to e-prop's sum over a whole sequence (rules/recurrent/spiking_eprop.py): the per-synapse traces walked
    forward (trace_window, what online windows carry) and the unit-wise adjoint (adjoint_window, what a whole sequence
    takes). With W_rec as drawn (e-prop is then not the gradient, but the two must still be the same estimate), random
    feedback, the firing-rate penalty, walked in pieces of 7 steps: equal to rounding in float64."""
    from learnbench.rules.recurrent.spiking_eprop import spiking_eprop_grads

    model = spiking_net(31, encoding="none", rate_penalty=PENALTY, rate_target_hz=TARGET_HZ, **options)
    generator = torch.Generator().manual_seed(32)
    sequence = torch.rand(BATCH, STEPS, INPUTS, generator=generator, dtype=torch.float64)
    y = torch.randint(0, OUTPUTS, (BATCH,), generator=generator)
    feedback = torch.randn(OUTPUTS, UNITS, generator=generator, dtype=torch.float64)
    assert_spikes(model, sequence)
    found = {}
    for carry in (True, False):
        out = spiking_eprop_grads(model, feedback, sequence, y, LOSS, chunk_steps=7, carry=carry)
        found[carry] = [p.grad.clone() for p in trainable_parameters(model)]
        assert (out.state is None) != carry  # the adjoint carries nothing out
    for a, e in zip(found[False], found[True], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)
    assert all(g.abs().sum() > 0 for g in found[True])


@pytest.mark.parametrize(
    "options, expected",
    [
        (dict(hidden_sizes=[5, 5]), "takes one spiking hidden layer"),
        (dict(tau_syn=5.0), "set model.tau_syn=null"),
    ],
)
def test_eprop_refuses_the_networks_it_does_not_describe(options, expected):
    torch.manual_seed(0)
    model = SNN(INPUTS, OUTPUTS, **dict(dict(hidden_sizes=[UNITS], recurrent=True), **options))
    with pytest.raises(ValueError, match=expected):
        EProp().bind(model, seed=0)


def test_eprop_reads_no_backward_through_the_reset():
    """model.detach_reset chooses what surrogate BPTT differentiates; e-prop's estimate, which always leaves the reset's
    path out, is the same number either way (and with W_rec = 0 equals BPTT only with the reset detached)."""
    x, y = inputs(2)
    found = {}
    for detach in (True, False):
        model = spiking_net(1, w_rec_zero=True, neuron="alif", tau_adaptation=30.0, adaptation_strength=0.5, detach_reset=detach)
        found[detach] = (eprop_grads(EProp(feedback="symmetric"), model, x, y), surrogate_bptt(model, x, y))
    for a, b in zip(found[True][0], found[False][0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.allclose(a, b) for a, b in zip(found[False][0], found[False][1]))  # not BPTT through the reset


# ----------------------------------------------------------------------------- through the app
def test_eprop_trains_the_recurrent_snn_through_the_module(tmp_path):
    """model=snn, method=eprop on the spiral: check_time_fits lets it train a spiking model, the module takes the
    static batch in one call, and the validation loss falls over three short epochs."""
    import math

    from conftest import CSV_ONLY, compose_config, tiny
    from learnbench.train import train

    overrides = ["data=spiral", "model=snn", "model.recurrent=true", "model.readout=leaky_integrator", "method=eprop",
                 "optimizer=adam", "optimizer.lr=0.01", "model.hidden_sizes=[32]", "model.steps=10",
                 *tiny(train_batches=20, epochs=3), *CSV_ONLY]
    record = train(compose_config(overrides, tmp_path))
    assert record["status"] == "ok"
    losses = [epoch["val/loss"] for epoch in record["history"]]
    assert losses[-1] < losses[0] and all(math.isfinite(v) for v in losses)


# ----------------------------------------------------------------------------- the firing-rate penalty (Bellec et al. 2020)
PENALTY, TARGET_HZ = 3.0, 50.0  # a target well above the units' rate, so the penalty's gradient is large


def penalized_oracle(model: SNN, x, y) -> list[torch.Tensor]:
    """Autograd of the loss plus c sum_j (f_j - f0)^2, f_j the hidden unit's spikes per ms averaged over the batch and
    the steps: the network run step by step through `model.step` (not the layer-wise forward the rules use)."""
    inputs = model.encode(x)
    state, outputs, spikes = model.initial_state(len(x)), [], []
    for t in range(inputs.shape[1]):
        state, output = model.step(state, inputs[:, t])
        outputs.append(output)
        spikes.append(state.hidden[0].spikes)
    rates = torch.stack(spikes, dim=1).mean(dim=(0, 1)) / model.dt
    loss = LOSS(torch.stack(outputs, dim=1), y).mean() + PENALTY * ((rates - TARGET_HZ / 1000) ** 2).sum()
    return list(torch.autograd.grad(loss, trainable_parameters(model)))


@pytest.mark.parametrize("neuron", ["lif", "alif"])
@pytest.mark.parametrize("method", ["bp", "eprop"])
def test_the_rate_penalty_joins_the_gradient_of_bp_and_of_eprop_where_eprop_is_exact(neuron, method):
    """bp: exactly the oracle's gradient (W_rec as drawn); e-prop with symmetric feedback at W_rec = 0: the same, its
    penalty signal meeting the unfiltered traces; walked in pieces of 7 steps too (the rates over the whole window)."""
    from learnbench.rules import Backprop
    from learnbench.rules.recurrent.spiking_eprop import spiking_eprop_grads

    options = dict(neuron=neuron, adaptation_strength=0.5, tau_adaptation=30.0, rate_penalty=PENALTY, rate_target_hz=TARGET_HZ)
    model = spiking_net(21, w_rec_zero=method == "eprop", **options)
    x, y = inputs(22)
    assert_spikes(model, x)
    expected = penalized_oracle(model, x, y)
    rule = Backprop() if method == "bp" else EProp(feedback="symmetric")
    rule.bind(model, seed=0)
    out = rule.estimate_grads(model, x, y, LOSS)
    for p, e in zip(trainable_parameters(model), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-9, atol=1e-12)
    assert float(out.metrics["rate_penalty"]) > 0
    model.rate_penalty = 0.0  # guard: the penalty does change the hidden weights' gradient
    unpenalized = surrogate_bptt(model, x, y)
    assert not torch.allclose(unpenalized[0], expected[0], rtol=1e-3)
    if method == "eprop":
        sequence = model.encode(x)  # the same currents as a sequence the data carry (the network as drawn again)
        model = spiking_net(21, w_rec_zero=True, encoding="none", **options)
        expected = penalized_oracle(model, sequence, y)
        spiking_eprop_grads(model, model.readout.weight.detach(), sequence, y, LOSS, chunk_steps=7)
        for p, e in zip(trainable_parameters(model), expected, strict=True):
            torch.testing.assert_close(p.grad, e, rtol=1e-9, atol=1e-12)


def test_a_rule_that_leaves_the_rate_penalty_out_is_refused():
    from learnbench.rules import FeedbackAlignment

    model = spiking_net(3, recurrent=False, rate_penalty=1.0)
    with pytest.raises(ValueError, match=r"model.rate_penalty=1.0: FeedbackAlignment does not add the firing-rate penalty .* "
                                         r"method=bp or eprop, or set model.rate_penalty=0"):
        FeedbackAlignment().bind(model, seed=0)


def test_a_run_without_derivatives_has_the_same_spikes_and_state():
    """spiking_run(derivatives=False), e-prop's first pass over a long window: the same spikes, previous spikes and
    state after the window as the full run, and no derivative columns."""
    model = spiking_net(3, neuron="alif", alif_units=3, tau_adaptation=30.0, adaptation_strength=0.5, refractory_steps=2,
                        refractory_hold=False)
    x, _ = inputs(4)
    full = model.spiking_run(x, model.initial_state(len(x)))
    light = model.spiking_run(x, model.initial_state(len(x)), derivatives=False)
    assert torch.equal(light.spikes, full.spikes) and torch.equal(light.previous_spikes, full.previous_spikes)
    for a, b in zip(light.state.hidden[0].__dict__.values(), full.state.hidden[0].__dict__.values()):
        assert (a is None and b is None) or torch.equal(a, b)
    assert light.pseudo_derivative is None and light.membrane_decay is None and light.input_gain is None
    assert full.spikes.sum() > 0
