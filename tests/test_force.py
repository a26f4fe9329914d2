"""FORCE learning (method=force, rules/readout/force.py) and its task (data=force_pattern), each against an oracle (float64).

- RLS with P_0 = I / alpha over a sequence of states is the ridge solution with lambda = alpha on those states (lstsq on
  the augmented system; P is the regularised inverse correlation matrix): with a bias, the bias is regularised too.
- One RLS step is its closed form (Sherman-Morrison: P_new = (P^-1 + r r^T)^-1, by matrix inversion).
- Through the training module (Adam as the optimiser: the direct mode bypasses it), FORCE on a reservoir without
  feedback equals the suite's method=ridge with ridge = alpha on the same states (no bias: the conventions match),
  and every k steps with a bias, lstsq on the states it updated at.
- With output feedback the whole run equals Sussillo & Abbott's loop written out in numpy (the network on its own
  output, an update every k steps with the error before it, then testing on from where training ended).
- The feedback weights are the same for a seed; force_pattern is Sussillo's formula; mae is the mean |error|.
- Bad input is refused at start in one line: alpha <= 0, update_every < 1, a model with no readout, DDP.
"""

from __future__ import annotations

import functools

import lightning as L
import numpy as np
import pytest
import torch

from conftest import CSV_ONLY, compose_config
from learnbench.data import ForcePatternDataModule, MackeyGlassDataModule
from learnbench.models import ESN, LSM
from learnbench.module import LearningRuleModule
from learnbench.regression_metrics import MeanAbsoluteError
from learnbench.rules import FORCE, Ridge
from learnbench.rules.readout.force import rls_step
from learnbench.tasks import get_task
from learnbench.train import ConfigError, build, check_config

F64 = torch.float64


def ridge_by_lstsq(states: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """Oracle: argmin_W ||Y - W R||^2 + lambda ||W||^2 by lstsq on [R^T; sqrt(lambda) I] W^T = [Y^T; 0]."""
    n = states.shape[1]
    a = torch.cat([states, lam**0.5 * torch.eye(n, dtype=F64)])
    b = torch.cat([targets, torch.zeros(n, targets.shape[1], dtype=F64)])
    return torch.linalg.lstsq(a, b).solution.T


# ============================================================================= RLS itself
def test_rls_over_a_sequence_of_states_is_ridge_with_lambda_alpha():
    generator = torch.Generator().manual_seed(0)
    states, targets, alpha = torch.randn(40, 7, dtype=F64, generator=generator), torch.randn(40, 3, dtype=F64, generator=generator), 0.7
    p, w = torch.eye(7, dtype=F64) / alpha, torch.zeros(3, 7, dtype=F64)
    for r, y in zip(states, targets):
        w = w + rls_step(p, w, r, y)
    torch.testing.assert_close(w, ridge_by_lstsq(states, targets, alpha), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(p, torch.linalg.inv(states.T @ states + alpha * torch.eye(7, dtype=F64)), rtol=1e-10, atol=1e-12)


def test_one_rls_step_is_its_closed_form():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(6, 6, dtype=F64, generator=generator)
    p = a @ a.T + torch.eye(6, dtype=F64)  # symmetric positive definite, as every P of RLS
    w, r, y = (torch.randn(*shape, dtype=F64, generator=generator) for shape in ((2, 6), (6,), (2,)))
    p_new = torch.linalg.inv(torch.linalg.inv(p) + torch.outer(r, r))
    expected = -torch.outer(w @ r - y, p_new @ r)  # the error before the step, along the new P r
    p_in_place = p.clone()
    torch.testing.assert_close(rls_step(p_in_place, w, r, y), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(p_in_place, p_new, rtol=1e-10, atol=1e-12)


# ============================================================================= FORCE through the training module
def esn(seed: int = 0, **options) -> ESN:
    torch.manual_seed(seed)
    options = {"units": 20, "spectral_radius": 0.9, "leak_rate": 0.5, "bias_scaling": 0.2, "input_connectivity": 0.5, **options}
    return ESN(1, 1, **options).double()


def mackey_glass() -> MackeyGlassDataModule:
    return MackeyGlassDataModule(train_steps=61, val_steps=20, test_steps=20)


def train_force(model: ESN, data, **rule_options) -> LearningRuleModule:
    """One epoch of method=force through LearningRuleModule and the one training loop, float64, Adam as the optimiser
    (a direct-mode parameter must not go through it)."""
    module = LearningRuleModule(model, FORCE(**rule_options), optimizer=functools.partial(torch.optim.Adam, lr=0.1),
                                task=data.task, num_classes=1)
    trainer = L.Trainer(accelerator="cpu", precision="64-true", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    return module


def test_force_without_feedback_equals_method_ridge_on_the_same_states():
    """Without feedback the states do not depend on W_out; updating at every step after the washout, FORCE's readout is
    the suite's ridge fit with ridge = alpha (no readout bias: both then regularise every weight)."""
    alpha, data = 0.3, mackey_glass()
    module = train_force(esn(washout=6, output_bias=False), data, alpha=alpha, update_every=1)
    x, y = (t.double() for t in data.load_splits().train)
    oracle = esn(washout=6, output_bias=False)
    ridge = Ridge(ridge=alpha)
    ridge.bind(oracle, seed=0)
    ridge.begin_epoch(oracle)
    ridge.estimate_grads(oracle, x, y, get_task("series_regression").with_washout(6).loss)
    ridge.solve(oracle, ridge.statistics())
    torch.testing.assert_close(module.model.w_out.detach(), oracle.w_out.detach(), rtol=1e-9, atol=1e-11)
    assert module.model.w_out.abs().max() > 1e-2  # a fit, not zeros


def test_force_on_the_spiking_reservoir_is_ridge_on_its_filtered_spike_trains():
    """model=lsm has no output feedback: FORCE's readout after one pass is the ridge fit (lambda = alpha, bias regularised)
    on the LSM's own traces r_t at the steps it updates on (a spiking FORCE readout; the traces as the oracle's states)."""
    def lsm() -> LSM:
        torch.manual_seed(3)
        return LSM(1, 1, units=30, connectivity=0.3, input_connectivity=0.5, input_scaling=3.0, bias_scaling=0.5,
                   tau_mem=5.0, tau_filter=5.0, washout=4).double()

    alpha, data = 0.4, mackey_glass()
    module = train_force(lsm(), data, alpha=alpha, update_every=1)
    x, y = (t.double() for t in data.load_splits().train)
    with torch.no_grad():
        traces = lsm().run(x)[0]
    assert traces.abs().sum() > 0  # the reservoir spikes
    steps = list(range(4, x.shape[1]))  # the steps after the washout (the window ending at t updates if t + 1 > washout)
    augmented = torch.cat([traces[steps], torch.ones(len(steps), 1, dtype=F64)], dim=1)
    oracle = ridge_by_lstsq(augmented, y[0, steps], alpha)
    torch.testing.assert_close(module.model.w_out.detach(), oracle[:, :-1], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(module.model.b_out.detach(), oracle[:, -1], rtol=1e-9, atol=1e-11)


def test_force_every_k_steps_with_a_bias_is_ridge_on_those_states_with_the_bias_regularised():
    alpha, k, washout, data = 0.5, 3, 4, mackey_glass()
    module = train_force(esn(washout=washout), data, alpha=alpha, update_every=k)
    x, y = (t.double() for t in data.load_splits().train)
    with torch.no_grad():
        states = esn(washout=washout).run(x)[0]
    steps = [t for t in range(k - 1, x.shape[1], k) if t >= washout]  # the last step of every whole window
    augmented = torch.cat([states[steps], torch.ones(len(steps), 1, dtype=F64)], dim=1)
    oracle = ridge_by_lstsq(augmented, y[0, steps], alpha)
    torch.testing.assert_close(module.model.w_out.detach(), oracle[:, :-1], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(module.model.b_out.detach(), oracle[:, -1], rtol=1e-9, atol=1e-11)


def sussillos_loop(model: ESN, targets: np.ndarray, test_steps: int, alpha: float, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """force_external_feedback_loop.m's loop on the ESN's update, written out: x <- (1 - a) x + a tanh(W x + b + W_fb z);
    z = w^T x; at every k-th step P and w updated with the error of z; then testing runs on, learning off.
    Returns (w, training outputs, testing outputs)."""
    w_rec, b, w_fb, a = (*(p.detach().numpy() for p in (model.w, model.b, model.w_fb)), model.a)
    x, z = model.h0.numpy().copy(), 0.0
    w, p = np.zeros(len(x)), np.eye(len(x)) / alpha
    train, test = [], []
    for ti, target in enumerate(targets, start=1):
        x = (1 - a) * x + a * np.tanh(w_rec @ x + b + w_fb[:, 0] * z)
        z = w @ x
        train.append(z)
        if ti % k == 0:
            gain = p @ x
            c = 1.0 / (1.0 + x @ gain)
            p = p - c * np.outer(gain, gain)
            w = w - (z - target) * c * gain
    for _ in range(test_steps):
        x = (1 - a) * x + a * np.tanh(w_rec @ x + b + w_fb[:, 0] * z)
        z = w @ x
        test.append(z)
    return w, np.array(train), np.array(test)


def test_force_with_feedback_is_sussillo_and_abbotts_loop_and_tests_on_from_the_training_end():
    options = dict(units=30, spectral_radius=1.5, leak_rate=0.2, bias_scaling=0.0, feedback=True, feedback_connectivity=1.0,
                   feedback_distribution="uniform", initial_state_scale=0.5, output_bias=False)
    data = ForcePatternDataModule(train_time=12.1, val_time=3.0, test_time=6.0, dt=0.2)  # 61 steps: a last half window
    module = train_force(esn(**options), data, alpha=1.0, update_every=2)
    splits = data.load_splits()
    (_, y), (x_test, _) = splits.train, splits.test
    w, _, test = sussillos_loop(esn(**options), y[0, :, 0].double().numpy(), x_test.shape[1], alpha=1.0, k=2)
    np.testing.assert_allclose(module.model.w_out.detach().numpy()[0], w, rtol=1e-9, atol=1e-11)
    with torch.no_grad():
        ours = module.rule.predict(module.model, x_test.double())[0, :, 0].numpy()
    np.testing.assert_allclose(ours, test, rtol=1e-9, atol=1e-11)
    assert np.abs(w).max() > 1e-2


# ============================================================================= feedback weights, task, metric
def test_feedback_weights_are_the_same_for_a_seed_and_sussillos_uniform_on_request():
    uniform = dict(feedback=True, feedback_connectivity=1.0, feedback_distribution="uniform")
    first, again, other = esn(3, **uniform).w_fb, esn(3, **uniform).w_fb, esn(4, **uniform).w_fb
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert bool((first != 0).all()) and float(first.abs().max()) <= 1.0 and len(first.unique()) == len(first)
    signs = esn(3, feedback=True).w_fb  # reservoirpy's: +-1 on input_connectivity of the entries
    assert set(signs.unique().tolist()) <= {-1.0, 0.0, 1.0} and int((signs != 0).sum()) == round(0.5 * 20)
    # the new options draw after the weights, so they leave a seed's reservoir as it was
    assert torch.equal(esn(3, initial_state_scale=0.5, **uniform).w, esn(3).w)


def test_force_pattern_is_sussillo_and_abbotts_sum_of_four_sines_and_the_test_runs_on_in_phase():
    data = ForcePatternDataModule(train_time=1440.0, val_time=240.0, test_time=1440.0, dt=0.1)
    (u, f), (_, f_val), (_, f_test) = data.series()
    assert [len(f), len(f_val), len(f_test)] == [14400, 2400, 14400] and not u.any()
    amp, freq, t = 1.3, 1 / 60, np.arange(0, 1440, 0.1)  # force_external_feedback_loop.m: simtime = 0:dt:nsecs-dt
    ft = ((amp / 1.0) * np.sin(1.0 * np.pi * freq * t) + (amp / 2.0) * np.sin(2.0 * np.pi * freq * t)
          + (amp / 6.0) * np.sin(3.0 * np.pi * freq * t) + (amp / 3.0) * np.sin(4.0 * np.pi * freq * t)) / 1.5
    np.testing.assert_allclose(f[:, 0], ft, rtol=0, atol=1e-12)
    np.testing.assert_allclose(f[1200:, 0], f[:-1200, 0], atol=1e-9)  # it repeats every 120 time units
    np.testing.assert_allclose(f_test[:, 0], f[:, 0], atol=1e-9)  # 1440 = 12 periods: the test's target is the training's
    np.testing.assert_allclose(f_val[:, 0], f[:2400, 0], atol=1e-9)


def test_mae_is_the_mean_absolute_error_over_batches():
    generator = torch.Generator().manual_seed(2)
    output, target = torch.randn(3, 50, 2, generator=generator), torch.randn(3, 50, 2, generator=generator)
    metric = MeanAbsoluteError()
    for rows in (slice(0, 1), slice(1, 3)):
        metric.update(output[rows], target[rows])
    assert float(metric.compute()) == pytest.approx(float(np.abs(output.double().numpy() - target.double().numpy()).mean()), rel=1e-12)


# ============================================================================= refused at start
FORCE_RUN = ["experiment=force_sine", "model.units=20", *CSV_ONLY]


@pytest.mark.parametrize(("override", "accepts"), [
    ("method.alpha=0", "a number > 0"),
    ("method.alpha=-1", "a number > 0"),
    ("method.update_every=0", "an integer >= 1"),
])
def test_bad_force_options_are_refused_by_the_validation(override, accepts, tmp_path):
    cfg = compose_config([*FORCE_RUN, override], tmp_path)
    key = override.split("=")[0].replace(".", r"\.")
    with pytest.raises(ConfigError, match=f"{key}=\\S+: expected {accepts}"):
        check_config(cfg)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data=spiral", "model=mlp", "method=force"], "method=force fits the readout of a reservoir and model=mlp has none: use model=esn"),
    (["data=mackey_glass", "model=esn", "method=force", "model.learn_output=false"],
     "method=force fits the readout, but the model's readout does not learn"),
    (["data=mackey_glass", "model=esn", "method=force", "model.learn_recurrent=true"], "method=force fits only the readout"),
    (["data=mackey_glass", "model=rnn", "method=force"], "method=force fits only the readout"),
    ([*FORCE_RUN, "trainer=ddp_sim"], "method=force is recursive least squares, one sample after another: its P and "
                                      "readout cannot be shared over 2 processes; run it on one"),
])
def test_force_on_a_model_it_cannot_train_or_over_processes_is_refused_in_one_line(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as error:
        build(compose_config([*overrides, *CSV_ONLY], tmp_path))
    assert "\n" not in str(error.value)
