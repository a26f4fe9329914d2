"""Diehl & Cook 2015's network (models/diehl_cook.py) and its learning (rules/plasticity/diehl_cook.py).

Oracles: scipy's ODE solver for the conductance membrane; closed forms for a spike's charge, the adaptive
threshold's decay and rises, and the batch's theta; an explicit event-by-event simulation of the reference's STDP
equations (eqs_stdp_pre_ee / eqs_stdp_post_ee) for the trace computation; dense tensors for the compact
active-input code; a hand-computed table for the label assignment; an uninterrupted run for a run resumed mid-epoch.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from scipy.integrate import solve_ivp

from conftest import CSV_ONLY, compose_config
from learnbench.config_validation import ConfigError
from learnbench.models.diehl_cook import DiehlCook, membrane_step, step_decay
from learnbench.rules.plasticity.diehl_cook import DiehlCookSTDP, assignment_readout, assignments
from learnbench.train import build, check_config


def small_model(**options) -> DiehlCook:
    torch.manual_seed(0)
    return DiehlCook(784, 10, **{"neurons": 6, "dt": 1.0, "present_ms": 40.0, **options}).double()


# ----------------------------------------------------------------------------- neurons
@pytest.mark.parametrize(("g_e", "g_i", "tau_m", "e_inh"), [(0.7, 0.0, 100.0, -100.0), (2.5, 1.3, 100.0, -100.0), (0.4, 3.0, 10.0, -85.0)])
def test_membrane_under_constant_conductance_follows_the_ode(g_e, g_i, tau_m, e_inh):
    """tau_m dv/dt = (v_rest - v) + g_e (0 - v) + g_i (e_inh - v) with the conductances held, solved by scipy (RK45,
    tight tolerances), equals membrane_step taken 40 times at dt 0.5 ms."""
    v_rest, v0, dt, steps = -65.0, -58.0, 0.5, 40
    ode = solve_ivp(lambda t, v: ((v_rest - v) + g_e * (0.0 - v) + g_i * (e_inh - v)) / tau_m, (0.0, dt * steps), [v0],
                    t_eval=np.arange(1, steps + 1) * dt, rtol=1e-11, atol=1e-11)
    v = torch.tensor([v0], dtype=torch.float64)
    ours = []
    for _ in range(steps):
        v = membrane_step(v, torch.tensor(g_e, dtype=torch.float64), torch.tensor(g_i, dtype=torch.float64), dt, tau_m, v_rest, 0.0, e_inh)
        ours.append(float(v))
    np.testing.assert_allclose(ours, ode.y[0], rtol=0, atol=1e-8)


@pytest.mark.parametrize(("dt", "tau"), [(0.5, 1.0), (1.0, 1.0), (1.0, 2.0)])
def test_a_spike_delivers_its_whole_charge_at_any_dt(dt, tau):
    """The conductance the membrane sees, summed over the steps after a jump of g0, times dt: the integral
    g0 tau of g0 exp(-t / tau) (the closed form), whatever dt."""
    decay, mean = step_decay(dt, tau)
    charge = sum(mean * decay**k * dt for k in range(2000))
    assert charge == pytest.approx(tau, rel=1e-12)


def drive_for(model: DiehlCook, batch: int, level: float = 3.0) -> torch.Tensor:
    """A constant input drive strong enough to make the excitatory neurons fire."""
    return torch.full((batch, model.steps, model.neurons), level, dtype=torch.float64)


def test_adaptive_threshold_decays_and_rises_as_the_closed_form():
    """One example (B = 1), tau_theta short enough to see: theta at the end of the presentation and rest is
    theta_0 exp(-(T + rest) / tau) + theta_plus sum_k exp(-(T - t_k) / tau) exp(-rest / tau), t_k the spike times
    read from the returned spikes (a spike at step k lands at (k + 1) dt)."""
    model = small_model(theta_plus=0.8, tau_theta=30.0, rest_ms=10.0).train()
    model.theta.copy_(torch.linspace(0.0, 2.0, model.neurons, dtype=torch.float64))
    theta0 = model.theta.clone()
    exc, theta_end = model.simulate(drive_for(model, 1), model.theta)
    model.theta.copy_(model.theta_after_batch(model.theta, theta_end))
    assert exc.sum() > 3
    T, dt, tau, rest = model.steps, model.dt, 30.0, 10.0
    times = torch.arange(1, T + 1, dtype=torch.float64) * dt
    rises = 0.8 * (exc[0] * torch.exp(-(T * dt - times) / tau).unsqueeze(1)).sum(dim=0)
    expected = (theta0 * math.exp(-T * dt / tau) + rises) * math.exp(-rest / tau)
    torch.testing.assert_close(model.theta, expected, rtol=1e-12, atol=1e-12)


def test_a_batch_raises_theta_by_theta_plus_per_spike_and_eval_leaves_it():
    """With tau_theta 1e7 ms (the paper's), a training batch raises each neuron's theta by theta_plus times its
    spikes over the batch's examples (counted from the spikes returned); an evaluation pass changes nothing."""
    model = small_model(theta_plus=0.05).train()
    x = torch.rand(5, 784, dtype=torch.float64)
    spikes = model.hidden_spikes(model.encode(x))[0]
    # (to within the decay over the batch's 5 x 190 ms, exp(-950 / 1e7) = 1 - 1e-4)
    torch.testing.assert_close(model.theta, 0.05 * spikes.sum(dim=(0, 1)), rtol=1e-4, atol=1e-9)
    assert spikes.sum() > 0
    before = model.theta.clone()
    model.eval()
    model(x)
    assert torch.equal(model.theta, before)


def test_the_compact_active_input_code_equals_the_dense_one():
    """encode (dense [batch, steps, 784]) and encode_active (non-zero pixels only) draw the same spikes; the drive
    from the active weights equals the dense matmul; STDP's change from the active inputs equals the dense change."""
    model, rule = small_model(), DiehlCookSTDP()
    x = torch.rand(3, 784, dtype=torch.float64) * (torch.rand(3, 784, dtype=torch.float64) < 0.3)
    model.encoding_calls.zero_()
    dense = model.encode(x)
    model.encoding_calls.zero_()
    compact, active = model.encode_active(x)
    assert dense.sum() > 0 and dense.sum() == compact.sum()
    w = model.input_weight.detach()
    torch.testing.assert_close(compact @ w.T[active], dense @ w.T)
    post = (torch.rand(3, model.steps, model.neurons, dtype=torch.float64) < 0.1).double()
    torch.testing.assert_close(rule.change_of_active(w, compact, active, post, 1.0), rule.change(w, dense, post, 1.0))


def test_quiet_examples_are_shown_again_at_a_higher_rate_until_they_fire():
    """A blank image never makes the network fire: it is shown max_presentations times, each at extra_rate Hz more;
    a bright one fires at once and is shown once. Its final spikes are those of its last showing."""
    model = small_model(max_presentations=4, min_spikes=5).eval()
    with torch.no_grad():
        model.input_weight.fill_(0.2)
    x = torch.zeros(2, 784, dtype=torch.float64)
    x[1] = 1.0
    rates = []
    original = model.encode_active
    model.encode_active = lambda x, rate=None: rates.append(rate) or original(x, rate)
    presentations, final = model.present(x)
    assert [p.shown.tolist() for p in presentations] == [[0, 1], [0], [0], [0]]
    assert rates == [63.75, 95.625, 127.5, 159.375]
    assert final[1].sum() >= 5 and torch.equal(final[1], presentations[0].spikes[1]) and final[0].sum() == 0


# ----------------------------------------------------------------------------- STDP
def reference_stdp(pre: np.ndarray, post: np.ndarray, dt: float, nu_pre=1e-4, nu_post=1e-2, tau_pre=20.0, tau_1=20.0, tau_2=40.0):
    """The reference's equations event by event, every example and synapse in Python loops (float64), W held:
    each step the traces decay; at a pre spike pre = 1 and w -= nu_pre * post1; at a post spike
    w += nu_post * pre * post2 (read before it is reset), then post1 = post2 = 1. Summed over the examples."""
    batch, steps, n_pre = pre.shape
    n_post = post.shape[2]
    dw = np.zeros((n_post, n_pre))
    for b in range(batch):
        x, y1, y2 = np.zeros(n_pre), np.zeros(n_post), np.zeros(n_post)
        for t in range(steps):
            x *= math.exp(-dt / tau_pre)
            y1 *= math.exp(-dt / tau_1)
            y2 *= math.exp(-dt / tau_2)
            for j in range(n_pre):
                if pre[b, t, j]:
                    x[j] = 1.0
                    for i in range(n_post):
                        dw[i, j] -= nu_pre * y1[i]
            for i in range(n_post):
                if post[b, t, i]:
                    for j in range(n_pre):
                        dw[i, j] += nu_post * x[j] * y2[i]
                    y1[i] = y2[i] = 1.0
    return dw


@pytest.mark.parametrize("dt", [0.5, 1.0])
def test_stdp_change_equals_the_reference_equations_event_by_event(dt):
    rng = np.random.default_rng(1)
    pre = (rng.random((3, 60, 5)) < 0.15).astype(np.float64)
    post = (rng.random((3, 60, 4)) < 0.1).astype(np.float64)
    rule = DiehlCookSTDP()
    ours = rule.change(torch.zeros(4, 5, dtype=torch.float64), torch.from_numpy(pre), torch.from_numpy(post), dt)
    np.testing.assert_allclose(ours.numpy(), reference_stdp(pre, post, dt), rtol=1e-12, atol=1e-15)


def test_normalisation_keeps_each_sum_at_78_and_bounds_keep_weights_in_range():
    """After the direct update (W -= p.grad, as the module applies it) and the rule's after-step hook: without
    normalisation every weight lies in [0, w_max] (clipped: the weights pushed out sit at the bounds, the rest moved
    by exactly dW); with it, every neuron's incoming weights sum to 78."""
    model = small_model()
    rule = DiehlCookSTDP(normalize_to=78.0)
    rule.bind(model, 0)
    torch.testing.assert_close(model.input_weight.sum(dim=1), torch.full((6,), 78.0, dtype=torch.float64))
    w0 = torch.rand(6, 784, dtype=torch.float64)
    dw = torch.randn(6, 784, dtype=torch.float64)
    clip_only = DiehlCookSTDP(normalize_to=1.0)
    clip_only.normalize_to = None
    with torch.no_grad():
        model.input_weight.copy_(w0 + dw)
    clip_only.after_optimizer_step(model)
    w = model.input_weight.detach()
    assert w.min() >= 0.0 and w.max() <= 1.0
    inside = ((w0 + dw) > 0) & ((w0 + dw) < 1)
    torch.testing.assert_close(w[inside], (w0 + dw)[inside])
    with torch.no_grad():
        model.input_weight.copy_(w0 + dw)
    rule.after_optimizer_step(model)
    torch.testing.assert_close(model.input_weight.sum(dim=1), torch.full((6,), 78.0, dtype=torch.float64))
    assert model.input_weight.min() >= 0.0


# ----------------------------------------------------------------------------- labels
def test_label_assignment_is_the_argmax_of_the_mean_response_per_class():
    """A hand-computed table: 3 classes, 4 neurons. Mean responses per class (sums / counts):
        class 0 (2 examples): [4, 0, 1, 0] / 2 = [2,   0,   0.5, 0]
        class 1 (4 examples): [4, 8, 1, 0] / 4 = [1,   2,   0.25, 0]
        class 2 (1 example):  [0, 3, 1, 0] / 1 = [0,   3,   1,   0]
    neuron 0 -> class 0, neuron 1 -> class 2 (3 > 2: the mean, not the sum, decides), neuron 2 -> class 2, neuron 3
    never responded -> unassigned (-1). The readout: class 2's score is the mean count of neurons 1 and 2."""
    responses = torch.tensor([[4.0, 0, 1, 0], [4, 8, 1, 0], [0, 3, 1, 0]], dtype=torch.float64)
    counts = torch.tensor([2.0, 4, 1], dtype=torch.float64)
    labels = assignments(responses, counts)
    assert labels.tolist() == [0, 2, 2, -1]
    readout = assignment_readout(labels, 3)
    expected = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0.5, 0.5, 0]], dtype=torch.float64)
    torch.testing.assert_close(readout, expected)
    counts_of_one_example = torch.tensor([[1.0, 6, 2, 9]], dtype=torch.float64)
    assert (counts_of_one_example @ readout.T).argmax().item() == 2  # 4 > 1 > 0; neuron 3's 9 spikes count for nothing


def test_the_rule_assigns_from_the_training_responses_it_recorded():
    """solve() on the table estimate_grads filled equals the hand computation from the same spike counts."""
    model = small_model().train()
    rule = DiehlCookSTDP(assign_window=None)
    rule.bind(model, 0)
    torch.manual_seed(3)
    x, y = torch.rand(8, 784, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 3, 3])
    finals = []
    original = model.present

    def recording(*args):
        presentations, spikes = original(*args)
        finals.append(spikes)
        return presentations, spikes

    model.present = recording
    rule.estimate_grads(model, x, y, lambda out, target: out.sum(dim=(1, 2)) * 0)
    c = finals[0].sum(dim=1)
    responses = torch.stack([c[y == k].sum(dim=0) for k in range(10)])
    n = torch.tensor([float((y == k).sum()) for k in range(10)], dtype=torch.float64)
    rule.solve(model, rule.statistics())
    torch.testing.assert_close(model.readout_weight.detach(), assignment_readout(assignments(responses, n), 10))


def test_the_learning_summary_reads_closed_forms():
    """tools/diehl_cook_eval.learning_summary on hand-made states. Concentration (the share of a neuron's input weight in its
    top quarter of inputs): equal weights 0.25; all weight on 10 inputs 1.0; a linear ramp w_k = k over 784 inputs, whose
    top quarter k = 589..784 holds (sum k over it) / (784 * 785 / 2). Selectivity: the largest class share of a neuron's
    recorded spikes; spikes per neuron: the table's column sums."""
    from learnbench.tools.diehl_cook_eval import learning_summary

    model, rule = small_model(neurons=3), DiehlCookSTDP(assign_window=None)
    rule.bind(model, 0)
    with torch.no_grad():
        model.input_weight.zero_()
        model.input_weight[0] = 1.0
        model.input_weight[1, :10] = 1.0
        model.input_weight[2] = torch.arange(1, 785, dtype=torch.float64)
    rule.responses.zero_()
    rule.responses[0] = torch.tensor([3.0, 0.0, 1.0])
    rule.responses[1] = torch.tensor([1.0, 2.0, 1.0])
    rule.counts.fill_(1.0)
    summary = learning_summary(model, rule)
    ramp = sum(range(589, 785)) / (784 * 785 / 2)
    assert summary["concentration"][0] == pytest.approx(0.25, abs=1e-3)
    assert summary["concentration"][-1] == pytest.approx(1.0, abs=1e-3)
    assert sorted(summary["concentration"])[2] == pytest.approx(round(ramp, 3), abs=1e-3)  # the median: the ramp
    assert summary["learned"] == 1  # only the 10-input neuron reaches 0.55 (the ramp: 0.437)
    assert summary["table_spikes_per_neuron"][0] == 2.0 and summary["table_spikes_per_neuron"][-1] == 4.0
    assert summary["selectivity"][0] == pytest.approx(0.5) and summary["selectivity"][-1] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(("override", "says"), [
    ("method.assign_on=test", "method.assign_on=test would label the neurons"),
    ("method.assign_on=val", "use method.assign_on=train"),
    ("method.tau_pre=-20", "method.tau_pre"),
    ("model.tau_theta=-1", "model.tau_theta"),
    ("model.max_rate=-63.75", "model.max_rate"),
    ("method.nu_post=-0.01", "method.nu_post"),
    ("data.normalize=standard", "use data.normalize=unit"),
])
def test_bad_options_are_refused_at_start_in_one_line(override, says, tmp_path):
    cfg = compose_config(["experiment=diehl_cook_mnist", override, *CSV_ONLY], tmp_path)
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    assert says in str(error.value) and "\n" not in str(error.value)


TINY_RUN = ["experiment=diehl_cook_mnist", "data.val_size=16", "data.batch_size=8", "data.eval_batch_size=30",
            "model.neurons=5", "model.present_ms=30", "model.dt=1.0", "+trainer.limit_test_batches=1",
            "+trainer.enable_progress_bar=false", "callbacks=none", *CSV_ONLY]


def fit(tmp_path, data_dir, ckpt_path=None, checkpoint_every=None):
    cfg = compose_config([*TINY_RUN, f"paths.data_dir={data_dir}", "+trainer.limit_train_batches=6"], tmp_path)
    L.seed_everything(cfg.seed, verbose=False)
    saving = [ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="{step}", every_n_train_steps=checkpoint_every,
                              save_top_k=-1)] if checkpoint_every else []
    datamodule, module, trainer, _ = build(cfg, extra_callbacks=saving)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return module, trainer


def test_a_run_resumed_mid_epoch_follows_the_uninterrupted_one(vision_data, tmp_path):
    """6 batches straight equal the same run resumed from its checkpoint after batch 3 (as a stopped run resumes): the
    loader skips the batches the checkpoint had seen (TensorBatches.state_dict), the Poisson draws, theta and the
    response table carry over."""
    data_dir = vision_data[0]
    straight, _ = fit(tmp_path / "straight", data_dir, checkpoint_every=3)
    checkpoint = tmp_path / "straight" / "checkpoints" / "step=3.ckpt"
    resumed, trainer = fit(tmp_path / "resumed", data_dir, ckpt_path=str(checkpoint))
    assert trainer.global_step == 6
    for name in ("model.input_weight", "model.theta", "model.encoding_calls", "rule.responses", "rule.counts"):
        torch.testing.assert_close(resumed.state_dict()[name], straight.state_dict()[name], msg=name)


def test_several_processes_are_refused_in_one_line(vision_data, tmp_path):
    """The adaptive thresholds rise with each rank's own images, outside the all-reduced update: on 2 processes the ranks'
    theta drifted apart (learnbench.verify's ranks check found it), so the rule is one process only."""
    from learnbench.train import build

    cfg = compose_config([*TINY_RUN, "trainer=ddp_sim", f"paths.data_dir={vision_data[0]}"], tmp_path)
    with pytest.raises(ConfigError, match=r"method=diehl_cook's adaptive thresholds rise with each process's own images, .* "
                                          r"2 processes would drift apart; run it on one \(trainer=cpu\)") as error:
        build(cfg)
    assert "\n" not in str(error.value)


def test_brian_trained_weights_load_with_the_table_our_runs_keep(vision_data, tmp_path, capsys):
    """tools/diehl_cook_brian score: a Brian run's weights and theta go into the model as saved, and its training
    responses into the table by the closed form R_c = sum_k exp(-(n - 1 - k) / window) [y_k = c] counts_k (the table
    forgetting once per image, as at batch 1); then the CLI scores the test set by the assigned labels."""
    import argparse
    import json

    from learnbench.tools.diehl_cook_brian import load_trained, score

    module, _ = fit(tmp_path / "run", vision_data[0], checkpoint_every=6)
    model, rule = module.model, module.rule
    generator = np.random.default_rng(0)
    n, neurons = 40, model.neurons
    saved = {"weight": generator.random((neurons, 784)), "theta": generator.random(neurons) * 5,
             "counts": generator.integers(0, 9, (n, neurons)).astype(np.int32), "labels": generator.integers(0, 10, n).astype(np.uint8),
             "done": n}
    np.savez(tmp_path / "brian.npz", **saved)
    load_trained(model, rule, np.load(tmp_path / "brian.npz"))
    torch.testing.assert_close(model.input_weight.detach().double(), torch.from_numpy(saved["weight"]))
    torch.testing.assert_close(model.theta.double(), torch.from_numpy(saved["theta"]))
    age = np.arange(n - 1, -1, -1)
    forget = np.exp(-age / rule.assign_window)
    expected = np.zeros((10, neurons))
    np.add.at(expected, saved["labels"].astype(int), forget[:, None] * saved["counts"])
    torch.testing.assert_close(rule.responses, torch.from_numpy(expected))
    torch.testing.assert_close(rule.counts, torch.from_numpy(np.bincount(saved["labels"], weights=forget, minlength=10)))

    score(argparse.Namespace(file=str(tmp_path / "brian.npz"), checkpoint=str(tmp_path / "run" / "checkpoints" / "step=6.ckpt"),
                             data_dir=vision_data[0], images=20))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["trained_images"] == n and printed["test_images"] == 20 and 0 <= printed["test_acc"] <= 1
