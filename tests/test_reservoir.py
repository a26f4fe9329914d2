"""Reservoir computing: model=esn, method=ridge with a washout, the series tasks and their scores, each against an
independent oracle in float64.

- the ESN's states are reservoirpy's Reservoir node's on the same matrices, leak rate and inputs; its W has the
  requested spectral radius (numpy's eigenvalues; reservoirpy's own ARPACK estimate for the iterative path);
- the ridge readout equals torch.linalg.lstsq on the same states (after the washout, the bias unregularised) and
  reservoirpy's Ridge node's fit; with output feedback, lstsq on teacher-forced states written out in numpy;
- Mackey-Glass is reservoirpy's series; NARMA10 obeys its recurrence; Lorenz is scipy's solve_ivp's trajectory;
- RMSE, NRMSE and R^2 are reservoirpy.observables'; memory capacity is numpy's squared correlations summed, and
  stays below N; without input a reservoir of spectral radius well above 1 does not fade, and says so;
- the washout leaves its steps out of the loss (windows included) and bad options are refused in one line.

reservoirpy and scipy are test-only (`pip install -e .[oracles]`): the tests that need them skip without them.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch

from conftest import CSV_ONLY, compose_config
from learnbench.data import LorenzDataModule, MackeyGlassDataModule, MemoryCapacityDataModule, NARMA10DataModule
from learnbench.models import ESN
from learnbench.models.esn import scale_to_spectral_radius, sparse_draw, normal, spectral_radius
from learnbench.regression_metrics import MemoryCapacity, NormalisedRootMeanSquaredError, RootMeanSquaredError, RSquared
from learnbench.rules import Ridge
from learnbench.tasks import get_task
from learnbench.train import ConfigError, build, check_config, train

F64 = torch.float64


def esn(seed: int = 0, **options) -> ESN:
    torch.manual_seed(seed)
    options = {"units": 30, "spectral_radius": 0.9, "leak_rate": 0.3, "bias_scaling": 0.2, "input_connectivity": 0.5,
               **options}
    return ESN(options.pop("inputs", 1), options.pop("outputs", 1), **options).double()


def series_loss(washout: int = 0):
    task = get_task("series_regression")
    return task.with_washout(washout).loss if washout else task.loss


def fit_ridge(model: ESN, x: torch.Tensor, y: torch.Tensor, ridge: float, batches: int = 1) -> Ridge:
    rule = Ridge(ridge=ridge)
    rule.bind(model, seed=0)
    rule.begin_epoch(model)
    for rows in torch.arange(len(x)).tensor_split(batches):
        rule.estimate_grads(model, x[rows], y[rows], series_loss(model.washout))
    rule.solve(model, rule.statistics())
    return rule


# ============================================================================= the reservoir
def test_states_equal_reservoirpys_on_the_same_matrices_leak_and_inputs():
    reservoirpy = pytest.importorskip("reservoirpy")
    model = esn(units=40, spectral_radius=1.1, leak_rate=0.3, inputs=2)
    u = torch.rand(1, 300, 2, dtype=F64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ours = model.run(u)[0].numpy()
    node = reservoirpy.nodes.Reservoir(lr=0.3, W=model.w.detach().numpy(), Win=model.w_in.detach().numpy(),
                                       bias=model.b.detach().numpy())
    theirs = node.run(u[0].numpy())
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert np.abs(ours).max() > 0.1  # the states moved


@pytest.mark.parametrize("radius", [0.5, 1.25])
def test_w_has_the_requested_spectral_radius(radius):
    model = esn(units=200, spectral_radius=radius, connectivity=0.1)
    assert np.abs(np.linalg.eigvals(model.w.detach().numpy())).max() == pytest.approx(radius, rel=1e-6)  # float32 weights
    assert int((model.w != 0).sum()) == round(0.1 * 200**2)  # the connectivity: that many non-zero entries


def test_the_iterative_estimate_beyond_the_exact_size_gives_the_requested_radius():
    """The Arnoldi path (forced by exact_up_to=10) against numpy's every eigenvalue, and against reservoirpy's
    own estimate on the sparse matrix (ARPACK's eigs, what it rescales by)."""
    torch.manual_seed(3)
    w = sparse_draw(400, 400, 0.05, normal)
    scaled = scale_to_spectral_radius(w, 0.8, exact_up_to=10)
    assert np.abs(np.linalg.eigvals(scaled.numpy())).max() == pytest.approx(0.8, rel=1e-9)
    observables = pytest.importorskip("reservoirpy.observables")
    sparse = pytest.importorskip("scipy.sparse")
    assert spectral_radius(w, exact_up_to=10) == pytest.approx(observables.spectral_radius(sparse.csr_matrix(w.numpy())), rel=1e-9)


def test_output_feedback_runs_free_or_teacher_forced_as_written_out():
    """Oracle: the update written out in numpy, y_{t-1} the model's own output (y_0 = 0) or the teacher's."""
    model = esn(units=12, feedback=True, feedback_scaling=0.5, outputs=2)
    with torch.no_grad():
        model.w_out.copy_(torch.randn(2, 12, dtype=F64) * 0.3)
        model.b_out.copy_(torch.tensor([0.1, -0.2], dtype=F64))
    u = torch.rand(1, 25, 1, dtype=F64, generator=torch.Generator().manual_seed(2))
    teacher = torch.rand(1, 25, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    w, w_in, b, w_fb, w_out, b_out = (p.detach().numpy() for p in (model.w, model.w_in, model.b, model.w_fb, model.w_out, model.b_out))

    def written_out(forced: bool) -> np.ndarray:
        x, y, states = np.zeros(12), np.zeros(2), []
        for t in range(25):
            x = 0.7 * x + 0.3 * np.tanh(w @ x + w_in @ u[0, t].numpy() + b + w_fb @ y)
            states.append(x)
            y = teacher[0, t].numpy() if forced else w_out @ x + b_out
        return np.array(states)

    with torch.no_grad():
        np.testing.assert_allclose(model.run(u)[0].numpy(), written_out(False), rtol=0, atol=1e-13)
        np.testing.assert_allclose(model.run(u, teacher=teacher)[0].numpy(), written_out(True), rtol=0, atol=1e-13)
        outputs, last = model(u, return_state=True)
    np.testing.assert_allclose(outputs[0].numpy(), written_out(False) @ w_out.T + b_out, rtol=0, atol=1e-13)
    torch.testing.assert_close(last.y, outputs[:, -1])  # the state a window carries: the output fed back next


def test_without_input_states_above_spectral_radius_one_do_not_fade_and_the_run_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="learnbench"):
        stable = esn(units=100, spectral_radius=0.5, leak_rate=1.0, bias_scaling=0.0)
    assert "do not fade" not in caplog.text
    assert stable.fading_ratio() < 1e-3
    with caplog.at_level(logging.WARNING, logger="learnbench"):
        wild = esn(units=100, spectral_radius=2.0, leak_rate=1.0, bias_scaling=0.0)
    assert "do not fade" in caplog.text and "spectral radius 2" in caplog.text
    # Oracle: the zero-input update written out: x = 0 is a fixed point, a small kick away from it grows.
    w = wild.w.detach().numpy()
    x = np.full(100, 1e-6)
    for _ in range(500):
        x = np.tanh(w @ x)
    assert np.linalg.norm(x) > 1e-3 * np.sqrt(100)


# ============================================================================= the ridge readout
def augmented_lstsq(states: torch.Tensor, targets: torch.Tensor, ridge: float, bias: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Oracle: min ||Y - W X - b||^2 + lambda ||W||^2 (the bias unpenalised) by lstsq on the augmented system
    [X 1; sqrt(lambda) I 0] [W b]^T = [Y; 0] (the same minimiser as the rule's normal equations, another algorithm)."""
    n, features = states.shape
    design = torch.cat([states, torch.ones(n, 1, dtype=F64)], dim=1) if bias else states
    penalty = torch.cat([ridge**0.5 * torch.eye(features, dtype=F64), torch.zeros(features, 1, dtype=F64)], dim=1) if bias else ridge**0.5 * torch.eye(features, dtype=F64)
    solution = torch.linalg.lstsq(torch.cat([design, penalty]), torch.cat([targets, torch.zeros(features, targets.shape[1], dtype=F64)])).solution.T
    return (solution[:, :-1], solution[:, -1]) if bias else (solution, None)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_ridge_with_washout_equals_lstsq_on_the_same_states(bias):
    model = esn(washout=15, output_bias=bias, outputs=2)
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(5, 60, 1, dtype=F64, generator=generator)
    y = torch.randn(5, 60, 2, dtype=F64, generator=generator)
    fit_ridge(model, x, y, ridge=1e-3, batches=3)  # uneven batches: the sums do not care
    with torch.no_grad():
        states = model.run(x)[:, 15:].reshape(-1, 30)
    w, b = augmented_lstsq(states, y[:, 15:].reshape(-1, 2), 1e-3, bias)
    torch.testing.assert_close(model.w_out.detach(), w, rtol=1e-8, atol=1e-10)
    if bias:
        torch.testing.assert_close(model.b_out.detach(), b, rtol=1e-8, atol=1e-10)


def test_ridge_with_feedback_fits_the_teacher_forced_states():
    model = esn(washout=5, feedback=True, outputs=1)
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(2, 40, 1, dtype=F64, generator=generator)
    y = torch.sin(torch.cumsum(x, dim=1))
    fit_ridge(model, x, y, ridge=1e-4)
    w, w_in, b, w_fb = (p.detach().numpy() for p in (model.w, model.w_in, model.b, model.w_fb))
    states = []
    for seq in range(2):  # the teacher's y_{t-1} fed back, written out (y_0 = 0)
        h, fed = np.zeros(30), np.zeros(1)
        for t in range(40):
            h = 0.7 * h + 0.3 * np.tanh(w @ h + w_in @ x[seq, t].numpy() + b + w_fb @ fed)
            states.append(h)
            fed = y[seq, t].numpy()
    states = torch.tensor(np.array(states)).view(2, 40, 30)[:, 5:].reshape(-1, 30)
    w_out, b_out = augmented_lstsq(states, y[:, 5:].reshape(-1, 1), 1e-4)
    torch.testing.assert_close(model.w_out.detach(), w_out, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(model.b_out.detach(), b_out, rtol=1e-8, atol=1e-10)


def test_ridge_equals_reservoirpys_ridge_node_and_its_esn_predictions():
    """reservoirpy's Reservoir >> Ridge fitted with warmup = our washout, on the same matrices and data, gives our
    readout; on a test sequence run from a fresh (zero) state it predicts what our model predicts."""
    reservoirpy = pytest.importorskip("reservoirpy")
    model = esn(units=50, spectral_radius=1.25, leak_rate=0.3, bias_scaling=0.0, input_connectivity=0.1, washout=100)
    data = MackeyGlassDataModule(train_steps=600, val_steps=50, test_steps=300)
    (u, y), _, (u_test, y_test) = data.series()
    fit_ridge(model, torch.tensor(u)[None], torch.tensor(y)[None], ridge=1e-5)
    matrices = {"lr": 0.3, "W": model.w.detach().numpy(), "Win": model.w_in.detach().numpy(), "bias": model.b.detach().numpy()}
    readout = reservoirpy.nodes.Ridge(ridge=1e-5)
    (reservoirpy.nodes.Reservoir(**matrices) >> readout).fit(u, y, warmup=100)
    np.testing.assert_allclose(model.w_out.detach().numpy(), readout.Wout.T, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(model.b_out.detach().numpy(), np.ravel(readout.bias), rtol=1e-6, atol=1e-8)
    theirs = readout.run(reservoirpy.nodes.Reservoir(**matrices).run(u_test))
    with torch.no_grad():
        ours = model(torch.tensor(u_test)[None])[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-7)  # lambda = 1e-5: two solvers agree to ~1e-8
    assert reservoirpy.observables.rsquare(y_test[100:], theirs[100:]) > 0.99  # a fit worth comparing


def test_washout_leaves_its_steps_out_of_the_loss_and_the_windows_sum_to_it():
    """Oracle: 0.5 (y - y_hat)^2 averaged over the steps from the washout on; window losses (cut inside and after
    the washout) sum to it, so their gradients sum to the sequence's (bptt with truncation)."""
    task = get_task("series_regression").with_washout(7)
    output = torch.randn(3, 20, 2, dtype=F64, requires_grad=True)
    target = torch.randn(3, 20, 2, dtype=F64)
    expected = 0.5 * (output - target)[:, 7:].pow(2).sum(-1).mean(1)
    torch.testing.assert_close(task.loss(output, target), expected)
    windows = [(0, 5), (5, 12), (12, 20)]
    summed = sum(task.window_loss(20, t0, t1)(output[:, t0:t1], target[:, t0:t1]) for t0, t1 in windows)
    torch.testing.assert_close(summed, expected)
    metrics = task.metrics(2)
    task.update(metrics, output.detach(), target)
    assert float(metrics["mse"].compute()) == pytest.approx(float((output.detach() - target)[:, 7:].pow(2).mean()), rel=1e-6)


def test_bptt_windows_across_the_washout_sum_to_the_sequences_readout_gradient():
    """Only the readout learns (the default), and its gradient is local in time: truncated windows (cut inside and
    after the washout) sum to autograd's gradient of the whole sequence's washed loss."""
    from learnbench.rules import BPTT

    model = esn(units=10, washout=6)
    with torch.no_grad():
        model.w_out.normal_()
    task = get_task("series_regression").with_washout(6)
    x = torch.rand(2, 16, 1, dtype=F64, generator=torch.Generator().manual_seed(6))
    y = torch.randn(2, 16, 1, dtype=F64, generator=torch.Generator().manual_seed(7))
    params = [model.w_out, model.b_out]
    whole = torch.autograd.grad(task.loss(model(x), y).mean(), params)
    rule = BPTT(truncation=4)
    summed, state = [torch.zeros_like(p) for p in params], None
    for call in rule.schedule(16):
        out = rule.estimate_grads(model, x[:, call.t0:call.t1], y[:, call.t0:call.t1], task.window_loss(16, call.t0, call.t1), state)
        state = out.state
        summed = [s + p.grad for s, p in zip(summed, params)]
    assert [(c.t0, c.t1) for c in rule.schedule(16)] == [(0, 4), (4, 8), (8, 12), (12, 16)]
    for s, g in zip(summed, whole):
        torch.testing.assert_close(s, g)


# ============================================================================= the series tasks
def test_mackey_glass_is_reservoirpys_series_and_a_one_step_forecast():
    datasets = pytest.importorskip("reservoirpy.datasets")
    data = MackeyGlassDataModule(train_steps=700, val_steps=100, test_steps=200)
    (u, y), (uv, yv), (ut, yt) = data.series()
    theirs = datasets.mackey_glass(1001, seed=5555)[:, 0]  # reservoirpy's README: its default seed
    np.testing.assert_allclose(np.concatenate([u, uv, ut])[:, 0], theirs[:1000], rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.concatenate([y, yv, yt])[:, 0], theirs[1:], rtol=0, atol=1e-14)
    splits = data.load_splits()
    assert [tuple(s[0].shape) for s in (splits.train, splits.val, splits.test)] == [(1, 700, 1), (1, 100, 1), (1, 200, 1)]


def test_narma10_obeys_its_recurrence_from_rest():
    data = NARMA10DataModule(train_steps=300, val_steps=50, test_steps=60, data_seed=3)
    parts = data.series()
    for u, y in parts:
        u, y = u[:, 0], y[:, 0]
        assert u.min() >= 0 and u.max() <= 0.5
        full = np.concatenate([np.zeros(10), y])  # y_{-9} .. y_0 = 0, then y_1 .. y_T
        uu = np.concatenate([np.zeros(9), u])
        for t in range(len(u)):  # full[t + 10] is y_{t+1}, full[t + 9] is y_t
            expected = 0.3 * full[t + 9] + 0.05 * full[t + 9] * full[t:t + 10].sum() + 1.5 * uu[t] * u[t] + 0.1
            assert y[t] == pytest.approx(expected, rel=1e-12)
    assert not np.array_equal(parts[0][0][:50], parts[1][0])  # every split its own draw


def test_lorenz_follows_scipys_trajectory():
    integrate = pytest.importorskip("scipy.integrate")
    data = LorenzDataModule(train_steps=80, val_steps=10, test_steps=10, standardize=False)
    (u, y), _, _ = data.series()

    def lorenz(t, s):
        return [10 * (s[1] - s[0]), s[0] * (28 - s[2]) - s[1], s[0] * s[1] - 8 / 3 * s[2]]

    times = 0.03 * np.arange(81)
    oracle = integrate.solve_ivp(lorenz, (0, times[-1]), [1.0, 1.0, 1.0], t_eval=times, method="DOP853", rtol=1e-12, atol=1e-12).y.T
    np.testing.assert_allclose(u, oracle[:80], rtol=0, atol=1e-6)
    np.testing.assert_allclose(y, oracle[1:], rtol=0, atol=1e-6)


def test_lorenz_is_standardised_by_the_training_split():
    (u, y), (uv, _), _ = LorenzDataModule(train_steps=500, val_steps=100, test_steps=100).series()
    np.testing.assert_allclose(u.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(u.std(0), 1, atol=1e-12)
    np.testing.assert_allclose(y[:-1], u[1:], atol=1e-12)  # the target is the next input, in the same units


def test_memory_capacity_targets_are_the_delayed_inputs():
    data = MemoryCapacityDataModule(max_delay=5, amplitude=0.8, train_steps=50, val_steps=20, test_steps=20)
    for u, y in data.series():
        assert np.abs(u).max() <= 0.8 and y.shape == (len(u), 5)
        for k in range(1, 6):
            np.testing.assert_array_equal(y[k:, k - 1], u[:-k, 0])
            np.testing.assert_array_equal(y[:k, k - 1], 0)


# ============================================================================= scores
def test_rmse_nrmse_r2_are_reservoirpys_over_batches():
    observables = pytest.importorskip("reservoirpy.observables")
    generator = torch.Generator().manual_seed(8)
    target = torch.randn(4, 50, 3, dtype=F64, generator=generator) * 2 + 1
    output = target + 0.3 * torch.randn(4, 50, 3, dtype=F64, generator=generator)
    metrics = {"rmse": RootMeanSquaredError(), "nrmse": NormalisedRootMeanSquaredError(), "r2": RSquared()}
    for rows in torch.arange(4).split(3):  # batches: the sums are the split's
        for metric in metrics.values():
            metric.update(output[rows], target[rows])
    y, p = target.reshape(-1, 3).numpy(), output.reshape(-1, 3).numpy()
    assert float(metrics["rmse"].compute()) == pytest.approx(observables.rmse(y, p), rel=1e-12)
    assert float(metrics["nrmse"].compute()) == pytest.approx(observables.nrmse(y, p, norm_value=y.std()), rel=1e-12)
    assert float(metrics["r2"].compute()) == pytest.approx(observables.rsquare(y, p), rel=1e-12)


def test_memory_capacity_metric_is_the_sum_of_squared_correlations():
    generator = torch.Generator().manual_seed(9)
    target = torch.randn(2, 100, 4, dtype=F64, generator=generator)
    output = target * torch.tensor([1.0, 0.5, 0.1, 0.0], dtype=F64) + torch.randn(2, 100, 4, dtype=F64, generator=generator)
    metric = MemoryCapacity(4)
    metric.update(output[:1], target[:1])
    metric.update(output[1:], target[1:])
    y, p = target.reshape(-1, 4).numpy(), output.reshape(-1, 4).numpy()
    expected = sum(np.corrcoef(y[:, k], p[:, k])[0, 1] ** 2 for k in range(4))
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-10)


def test_memory_capacity_stays_below_the_number_of_units():
    data = MemoryCapacityDataModule(max_delay=40, train_steps=2000, val_steps=10, test_steps=1000)
    (u, y), _, (ut, yt) = data.series()
    model = esn(units=20, spectral_radius=0.95, leak_rate=1.0, input_scaling=0.1, input_connectivity=1.0, washout=40, outputs=40)
    fit_ridge(model, torch.tensor(u)[None], torch.tensor(y)[None], ridge=1e-8)
    metric = MemoryCapacity(40)
    with torch.no_grad():
        metric.update(model(torch.tensor(ut)[None])[:, 40:], torch.tensor(yt)[None, 40:])
    capacity = float(metric.compute())
    assert 5 < capacity < 20  # Jaeger 2002: at most N; a near-linear reservoir comes close


# ============================================================================= refused at start
ESN_RUN = ["experiment=reservoirpy_mackey_glass", *CSV_ONLY]


@pytest.mark.parametrize(("override", "accepts"), [
    ("model.spectral_radius=0", "a number > 0"),
    ("model.spectral_radius=-1.5", "a number > 0"),
    ("model.leak_rate=0", r"a number in \(0, 1\]"),
    ("model.leak_rate=1.5", r"a number in \(0, 1\]"),
    ("model.connectivity=0", r"a number in \(0, 1\]"),
    ("model.input_connectivity=1.2", r"a number in \(0, 1\]"),
    ("method.ridge=-1e-3", "a number >= 0"),
    ("model.washout=-1", "an integer >= 0"),
])
def test_bad_reservoir_options_are_refused_by_the_validation(override, accepts, tmp_path):
    cfg = compose_config([*ESN_RUN, override], tmp_path)
    key = override.split("=")[0].replace(".", r"\.")
    with pytest.raises(ConfigError, match=f"{key}=\\S+: expected {accepts}"):
        check_config(cfg)


def test_a_washout_as_long_as_a_split_is_refused(tmp_path):
    cfg = compose_config([*ESN_RUN, "model.washout=200"], tmp_path)  # val has 200 steps
    with pytest.raises(ConfigError, match=r"model\.washout=200 leaves nothing to fit or score: data=mackey_glass's val "
                                          r"sequences have 200 steps; use model\.washout<200 \(or data\.val_steps\)"):
        build(cfg)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data=spiral", "model=mlp", "method=ridge"], "method=ridge fits the readout of a reservoir and model=mlp has none: use model=esn"),
    (["data=mackey_glass", "model=esn", "method=ridge", "model.learn_output=false"], "the model's readout does not learn"),
    (["data=sequential_mnist", "model=esn", "method=ridge"], "method=ridge fits a target at every time step and "
                                                            "data=sequential_mnist gives one per sequence"),
    (["data=evidence_accumulation", "model=esn", "method=ridge"], "method=ridge fits a least-squares target at every time "
                                                                 "step, and data=evidence_accumulation scores one class"),
    (["data=evidence_accumulation", "model=lsm", "method=force"], "method=force fits a least-squares target"),
])
def test_a_closed_form_readout_of_a_model_without_one_is_refused(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        build(compose_config([*overrides, *CSV_ONLY], tmp_path))


@pytest.mark.parametrize(("method", "fits"), [
    ("rtrl", "method=bptt, bp, rflo or eprop"),
    # np and fg_a perturb the ESN's sites (tests/test_esn_sites.py); with output feedback it has none
    ("np", "method=bp, wp or fg_w"), ("fg_a", "method=bp, wp or fg_w"),
])
def test_rules_whose_maths_is_not_exact_on_the_esn_refuse_it_in_one_line(method, fits, tmp_path):
    extra = ["model.feedback=true", "data=force_pattern"] if method in ("np", "fg_a") else []
    cfg = compose_config(["data=mackey_glass", "model=esn", "model.learn_recurrent=true", f"method={method}", *extra, *CSV_ONLY], tmp_path)
    with pytest.raises(ConfigError) as error:
        build(cfg)
    assert fits in str(error.value) and "ESN" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("method", ["bp", "bptt", "wp", "fg_w", "np", "fg_a"])
def test_gradient_rules_train_the_esn(method, tmp_path):
    """bp and bptt take autograd through forward; wp and fg_w go through torch.func (no written-out walk):
    each writes a finite gradient for every trained parameter, and bp's is autograd's of the washed loss."""
    table = ["method.table_size=65536"] if method in ("wp", "fg_w") else []
    cfg = compose_config(["data=mackey_glass", "model=esn", "model.units=12", "model.washout=5", "model.learn_recurrent=true",
                          f"method={method}", *table, *CSV_ONLY], tmp_path)
    _, module, _, _ = build(cfg)
    x = torch.rand(2, 20, 1)
    y = torch.rand(2, 20, 1)
    module.rule.setup(module.model, seed=0, rank=0, device=torch.device("cpu"))
    module.rule.begin_step(0)
    out = module.rule.estimate_grads(module.model, x, y, module.loss_fn)
    assert torch.isfinite(out.loss)
    trained = [p for p in module.model.parameters() if p.requires_grad]
    assert {id(p) for p in trained} == {id(module.model.w_out), id(module.model.b_out), id(module.model.w), id(module.model.b)}
    for p in trained:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    if method == "bp":
        expected = torch.autograd.grad(0.5 * (module.model(x) - y)[:, 5:].pow(2).sum(-1).mean(), trained)
        for p, g in zip(trained, expected):
            torch.testing.assert_close(p.grad, g)


def test_one_sequence_a_split_is_not_sharded_over_processes():
    from types import SimpleNamespace

    data = MackeyGlassDataModule(train_steps=50, val_steps=20, test_steps=20)
    data.trainer = SimpleNamespace(world_size=2)
    with pytest.raises(ValueError, match="one sequence per split, which cannot be sharded over 2 processes: run it on one"):
        data.setup("fit")


def test_ridge_with_nothing_after_the_washout_says_so():
    model = esn(washout=30)
    with pytest.raises(ValueError, match="no training step to fit: every step fell inside model.washout"):
        fit_ridge(model, torch.rand(1, 20, 1, dtype=F64), torch.rand(1, 20, 1, dtype=F64), ridge=1e-3)


# ============================================================================= the preset, end to end
def test_the_reservoirpy_mackey_glass_preset_forecasts_as_its_readme(tmp_path):
    """The README reports RMSE 0.0020, R^2 0.99992 on its split (docs/results.md has ours, 3 seeds)."""
    cfg = compose_config([*ESN_RUN, "callbacks=none", "+trainer.enable_progress_bar=false"], tmp_path)
    record = train(cfg)
    final = record["metrics"]["final"]
    assert record["status"] == "ok" and record["steps"] == 1
    assert final["test/r2"] > 0.999 and final["test/rmse"] < 0.005
    assert final["test/nrmse"] == pytest.approx((1 - final["test/r2"]) ** 0.5, rel=1e-6)


def test_a_forward_mode_pass_over_one_sequence_takes_the_dense_path_and_equals_autograd():
    """One sequence on the CPU runs through a CSR W (run_sparse), which has no strides inside torch.func's jvp (method=fg_w,
    batch 1): the run then takes the dense path, and the directional derivative equals autograd's gradient . tangent."""
    from torch.func import functional_call, jvp

    torch.manual_seed(0)
    model = ESN(1, 1, units=30, connectivity=0.1, spectral_radius=0.9, leak_rate=0.3).double()
    x = torch.randn(1, 25, 1, dtype=torch.float64)
    assert model.sparse_run_applies(1)
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    tangents = {name: torch.randn_like(p) for name, p in params.items()}
    _, derivative = jvp(lambda ps: (functional_call(model, ps, (x,)) - 1).square().sum(), (params,), (tangents,))
    loss = (model(x) - 1).square().sum()
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    expected = sum((g * t).sum() for g, t in zip(grads, tangents.values()))
    torch.testing.assert_close(derivative, expected, rtol=1e-10, atol=1e-12)
    assert abs(expected) > 1e-3
