"""The liquid state machine (model=lsm), each claim against an oracle in float64:

- the readout's filtered trace is its closed form sum_s exp(-(t - s) dt / tau) S_s on a given spike train;
- the reservoir is the LIF update written out in numpy (recurrence, refractory period, substeps), and under a
  constant input a unit's membrane is the closed form c (1 - beta^t) / (1 - beta) up to its first spike, which
  comes at the step the closed form says;
- W obeys Dale's law (a unit's outgoing weights share its sign) with the requested connectivity;
- ridge on the LSM's states equals torch.linalg.lstsq on the same collected features (a series with washout, and a
  static example's class at every step); bp's readout gradient is the squared error's written out;
- bad options are refused at start in one line.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import CSV_ONLY, compose_config, tiny
from learnbench.models import LSM
from learnbench.rules import Ridge
from learnbench.tasks import get_task
from learnbench.train import ConfigError, build, check_config, train

F64 = torch.float64


def lsm(seed: int = 0, inputs: int = 1, outputs: int = 1, **options) -> LSM:
    torch.manual_seed(seed)
    options = {"units": 40, "input_connectivity": 1.0, "input_scaling": 0.3, "bias_scaling": 0.1, "recurrent_scaling": 0.5,
               "refractory_steps": 2, **options}
    return LSM(inputs, outputs, **options).double()


def set_weights(model: LSM, w_in=None, w=None, b=None) -> None:
    with torch.no_grad():
        for param, value in ((model.w_in, w_in), (model.w, w), (model.b, b)):
            if value is not None:
                param.copy_(torch.as_tensor(value, dtype=F64))


# ============================================================================= the trace and the neurons
def test_the_filtered_trace_is_its_closed_form_on_a_given_spike_train():
    """Each unit's input is 2 thr at the steps of a given train and 0 elsewhere, with W = 0, no refractory period,
    reset to zero and a membrane that forgets at once (tau_mem 1e-3 ms): the unit spikes exactly on the train."""
    units, steps, dt, tau = 6, 80, 0.5, 7.0
    model = lsm(units=units, inputs=units, dt=dt, tau_mem=1e-3, tau_filter=tau, refractory_steps=0, reset="zero")
    set_weights(model, w_in=torch.eye(units), w=torch.zeros(units, units), b=torch.zeros(units))
    train_ = (torch.rand(1, steps, units, generator=torch.Generator().manual_seed(1)) < 0.2).to(F64)
    traces = model.run(2 * train_)[0].numpy()
    s = train_[0].numpy()
    t = np.arange(steps)
    kernel = np.where(t[:, None] >= t[None, :], np.exp(-(t[:, None] - t[None, :]) * dt / tau), 0.0)  # [t, s]
    np.testing.assert_allclose(traces, kernel @ s, rtol=1e-12, atol=1e-12)
    assert s.sum() > 50  # the train has spikes to filter


def numpy_lsm(model: LSM, u: np.ndarray, tau_mem: float, tau_filter: float, substeps: int = 1):
    """The reservoir written out: I = W_in u + b + W S_prev; V = beta V + I - S_prev thr (subtract), held where the
    reset left it for `refractory` steps after a spike (no spike then); r = lambda r + S; r read every `substeps`."""
    w, w_in, b = (p.detach().numpy() for p in (model.w, model.w_in, model.b))
    beta, lam, k = math.exp(-model.dt / tau_mem), math.exp(-model.dt / tau_filter), model.neuron.refractory_steps
    n = len(b)
    v, s, r, hold = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, dtype=int)
    traces, spikes = [], 0
    for u_t in u:
        for _ in range(substeps):
            current = w_in @ u_t + b + w @ s
            after_reset = v - s * model.neuron.threshold
            held = hold > 0
            v = np.where(held, after_reset, beta * v + current - s * model.neuron.threshold)
            s = np.where(held, 0.0, (v >= model.neuron.threshold).astype(float))
            hold = np.where(s > 0, k, np.maximum(hold - 1, 0))
            r = lam * r + s
            spikes += s.sum()
        traces.append(r.copy())
    return np.array(traces), spikes


@pytest.mark.parametrize("substeps", [1, 3])
def test_the_reservoir_is_the_lif_update_written_out(substeps):
    model = lsm(units=50, tau_mem=15.0, tau_filter=12.0, substeps=substeps, recurrent_scaling=2.0, inputs=2)
    u = torch.rand(1, 120, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    theirs, spikes = numpy_lsm(model, u[0].numpy(), 15.0, 12.0, substeps)
    np.testing.assert_allclose(model.run(u)[0].numpy(), theirs, rtol=1e-12, atol=1e-12)
    assert spikes > 200 and np.abs(model.w.detach().numpy()).sum() > 0  # recurrence and spikes both at work
    # step() is run()'s update one step at a time
    state, outputs = model.initial_state(1), []
    with torch.no_grad():
        for x_t in u.unbind(1):
            state, y = model.step(state, x_t)
        torch.testing.assert_close(state.trace[0], torch.tensor(theirs[-1]))


def test_under_constant_input_the_membrane_is_the_closed_form_until_its_first_spike():
    """W = 0, b = 0, input gain c_i per unit: V_t = c (1 - beta^t) / (1 - beta) (t = 1, 2, ...), and the first
    spike at the first t where that reaches the threshold (none where c / (1 - beta) < thr)."""
    gains = torch.tensor([0.02, 0.05, 0.08, 0.2, 1.5], dtype=F64)
    tau_mem, dt = 20.0, 1.0
    model = lsm(units=5, tau_mem=tau_mem, dt=dt, refractory_steps=0)
    set_weights(model, w_in=gains[:, None], w=torch.zeros(5, 5), b=torch.zeros(5))
    beta = math.exp(-dt / tau_mem)
    state, membranes, spikes = model.initial_state(1), [], []
    with torch.no_grad():
        for _ in range(100):
            state, _ = model.step(state, torch.ones(1, 1, dtype=F64))
            membranes.append(state.neurons.membrane[0])
            spikes.append(state.neurons.spikes[0])
    membranes, spikes = torch.stack(membranes), torch.stack(spikes)
    t = torch.arange(1, 101, dtype=F64)[:, None]
    closed = gains * (1 - beta**t) / (1 - beta)
    for i, c in enumerate(gains.tolist()):
        if c / (1 - beta) < 1:
            torch.testing.assert_close(membranes[:, i], closed[:, i], rtol=1e-12, atol=1e-12)
            assert spikes[:, i].sum() == 0
            continue
        first = math.ceil(math.log(1 - (1 - beta) / c) / math.log(beta))  # c (1 - beta^t) / (1 - beta) >= 1
        assert int(spikes[:, i].nonzero()[0]) + 1 == first
        torch.testing.assert_close(membranes[:first, i], closed[:first, i], rtol=1e-12, atol=1e-12)


def test_dales_law_and_the_connectivity():
    model = lsm(units=200, excitatory_fraction=0.8, connectivity=0.05)
    w = model.w.detach()
    assert model.excitatory == 160
    assert (w[:, :160] >= 0).all() and (w[:, 160:] <= 0).all()  # column j: unit j's outgoing weights
    assert (w[:, :160] > 0).any() and (w[:, 160:] < 0).any()
    assert int((w != 0).sum()) == round(0.05 * 200**2)
    # balanced in expectation: inhibitory magnitudes times f / (1 - f) = 4 (a half-normal's mean, sqrt(2 / pi), each)
    scale = 0.5 / math.sqrt(0.05 * 200) * math.sqrt(2 / math.pi)
    assert float(w[:, :160][w[:, :160] != 0].mean()) == pytest.approx(scale, rel=0.1)
    assert float(w[:, 160:][w[:, 160:] != 0].mean()) == pytest.approx(-4 * scale, rel=0.15)
    for fraction in (0.0, 1.0):  # one kind only: no balancing factor, signs still one per column
        only = lsm(units=30, excitatory_fraction=fraction).w.detach()
        assert (only >= 0).all() if fraction == 1.0 else (only <= 0).all()


# ============================================================================= readouts
def augmented_lstsq(states: torch.Tensor, targets: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """min ||Y - W X - b||^2 + lambda ||W||^2 (bias unpenalised) by lstsq on [X 1; sqrt(lambda) I 0]."""
    n, features = states.shape
    design = torch.cat([states, torch.ones(n, 1, dtype=F64)], dim=1)
    penalty = torch.cat([ridge**0.5 * torch.eye(features, dtype=F64), torch.zeros(features, 1, dtype=F64)], dim=1)
    rhs = torch.cat([targets, torch.zeros(features, targets.shape[1], dtype=F64)])
    solution = torch.linalg.lstsq(torch.cat([design, penalty]), rhs).solution.T
    return solution[:, :-1], solution[:, -1]


def fit(model: LSM, x, y, ridge: float, loss_fn, batches: int = 1) -> None:
    rule = Ridge(ridge=ridge)
    rule.bind(model, seed=0)
    rule.begin_epoch(model)
    for rows in torch.arange(len(x)).tensor_split(batches):
        rule.estimate_grads(model, x[rows], y[rows], loss_fn)
    rule.solve(model, rule.statistics())


def test_ridge_on_the_lsms_states_equals_lstsq_of_the_same_features():
    model = lsm(units=30, washout=10, outputs=2, substeps=2)
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(4, 50, 1, dtype=F64, generator=generator)
    y = torch.randn(4, 50, 2, dtype=F64, generator=generator)
    fit(model, x, y, 1e-2, get_task("series_regression").with_washout(10).loss, batches=3)
    states = model.run(x)[:, 10:].reshape(-1, 30)
    assert float(states.abs().sum()) > 0
    w, b = augmented_lstsq(states, y[:, 10:].reshape(-1, 2), 1e-2)
    torch.testing.assert_close(model.w_out.detach(), w, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(model.b_out.detach(), b, rtol=1e-8, atol=1e-10)


def test_ridge_on_static_examples_fits_the_class_at_every_step_after_the_washout():
    """model=lsm with an encoder (time axis "model"): the one-hot class repeated over the steps after the washout."""
    model = lsm(units=25, inputs=16, outputs=3, encoding="current", steps=12, washout=4, input_scaling=0.2)
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(9, 4, 4, dtype=F64, generator=generator)
    y = torch.randint(0, 3, (9,), generator=generator)
    fit(model, x, y, 1e-3, get_task("sum_over_steps_classification").with_washout(4).loss, batches=2)
    states = model.run(x)[:, 4:].reshape(-1, 25)
    targets = torch.nn.functional.one_hot(y, 3).to(F64).repeat_interleave(8, dim=0)
    w, b = augmented_lstsq(states, targets, 1e-3)
    torch.testing.assert_close(model.w_out.detach(), w, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(model.b_out.detach(), b, rtol=1e-8, atol=1e-10)


def test_bp_trains_only_the_readout_by_the_squared_errors_gradient(tmp_path):
    """bp through the LSM: W_out's gradient is the washed loss's written out, mean_b 1/T' sum_t (y_hat - y) r^T."""
    cfg = compose_config(["data=mackey_glass", "model=lsm", "model.units=20", "model.washout=5", "method=bp", *CSV_ONLY], tmp_path)
    _, module, _, _ = build(cfg)
    model = module.model.double()
    with torch.no_grad():
        model.w_out.normal_()
    x, y = torch.rand(2, 20, 1, dtype=F64) * 5, torch.rand(2, 20, 1, dtype=F64)
    module.rule.estimate_grads(model, x, y, module.loss_fn)
    r = model.run(x)[:, 5:]
    error = model.readout(r) - y[:, 5:]
    torch.testing.assert_close(model.w_out.grad, torch.einsum("bto,btn->on", error, r) / (2 * 15))
    torch.testing.assert_close(model.b_out.grad, error.sum((0, 1)) / (2 * 15))
    assert all(p.grad is None for p in (model.w, model.w_in, model.b))


# ============================================================================= refused at start
LSM_RUN = ["data=mackey_glass", "model=lsm", "method=ridge", *CSV_ONLY]


@pytest.mark.parametrize(("override", "accepts"), [
    ("model.excitatory_fraction=1.2", r"a number in \[0, 1\]"),
    ("model.excitatory_fraction=-0.1", r"a number in \[0, 1\]"),
    ("model.connectivity=0", r"a number in \(0, 1\]"),
    ("model.connectivity=1.5", r"a number in \(0, 1\]"),
    ("model.input_connectivity=0", r"a number in \(0, 1\]"),
    ("model.tau_filter=0", "a number > 0"),
    ("model.tau_mem=-5", "a number > 0"),
    ("model.dt=0", "a number > 0"),
    ("model.tau_syn=-1", "a number >= 0"),
    ("model.substeps=0", "an integer >= 1"),
])
def test_bad_lsm_options_are_refused_in_one_line(override, accepts, tmp_path):
    key = override.split("=")[0].replace(".", r"\.")
    with pytest.raises(ConfigError, match=f"^{key}=\\S+: expected {accepts}") as error:
        check_config(compose_config([*LSM_RUN, override], tmp_path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data=mnist", "model=lsm", "model.encoding=current", "model.steps=10", "model.washout=10", "data.val_size=40"],
     r"model\.washout=10 leaves nothing to fit or score of model\.steps=10"),
    (["data=mnist", "model=lsm", "model.encoding=rate"], "model.encoding=rate reads every input as an intensity in"),
    (["data=mnist", "model=lsm"], "model=lsm with model.encoding=none runs over the data's time steps"),
    (["data=mackey_glass", "model=lsm", "model.encoding=current"], "model=lsm makes its own time steps from a static example"),
])
def test_combinations_that_cannot_work_are_refused_in_one_line(overrides, message, tmp_path, vision_data):
    cfg = compose_config([*overrides, "method=ridge", f"paths.data_dir={vision_data[0]}", *CSV_ONLY], tmp_path)
    with pytest.raises(ConfigError, match=message) as error:
        check_config(cfg)
        build(cfg)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("method", "message"), [
    ("fg_w", r"method=fg_w differentiates LSM's forward pass by jvp, and model.encoding=rate draws new input spikes inside it"),
    ("wp", r"method=wp differences the losses of separate forward passes.*or method=bp$"),
    ("force", r"method=force fits a target at every time step of a sequence, and this model makes its own steps"),
    ("fa", r"LSM declares none: train it with method=bp \(its readout alone: method=ridge\)$"),  # offers only what fits
])
def test_rules_that_cannot_read_a_rate_coded_lsm_are_refused_before_any_step(method, message, tmp_path, vision_data):
    """experiment=lsm_mnist (a rate code drawn inside the forward pass, a class per static example): fg_w's jvp stopped
    with a traceback at its first step, force at its first batch, and wp's separate passes would difference the draws."""
    cfg = compose_config(["experiment=lsm_mnist", f"method={method}", f"paths.data_dir={vision_data[0]}", *CSV_ONLY], tmp_path)
    with pytest.raises(ConfigError, match=message) as error:
        check_config(cfg)
        build(cfg)
    assert "\n" not in str(error.value)


# ============================================================================= end to end
def test_the_lsm_presets_run_end_to_end(tmp_path, vision_data):
    series = train(compose_config(["experiment=lsm_mackey_glass", "model.units=40", "model.substeps=2", *tiny(), *CSV_ONLY],
                                  tmp_path / "series"))
    assert series["status"] == "ok" and math.isfinite(series["metrics"]["final"]["test/nrmse"])
    mnist_tiny = [o.replace("+trainer.limit_train_batches", "trainer.limit_train_batches") for o in tiny(2)]  # the preset sets it
    images = train(compose_config(["experiment=lsm_mnist", f"paths.data_dir={vision_data[0]}", "model.units=30", "model.steps=8",
                                   "model.washout=2", "data.val_size=40", *mnist_tiny, *CSV_ONLY], tmp_path / "mnist"))
    assert images["status"] == "ok" and 0 <= images["metrics"]["final"]["test/acc"] <= 1
