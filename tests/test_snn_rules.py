"""The existing rules on the spiking network (model=snn): wp, fg_w, np, fg_a, fa and dfa, against oracles.
Float64 throughout; every case checks first that its hidden units spike (a match on silent units proves nothing).

- fg_w, fg_a: the forward-mode directional derivative (through the surrogate's jvp) equals autograd's surrogate
  gradient (what bp follows, reverse mode through model.forward) dotted with the same tangent, to rounding.
- The sites: the walk's output is model.forward's, and the local update from the exact site errors (autograd at
  the site currents) is autograd's parameter gradient: the sites' inputs are right.
- np: at the readout's site (the leaky integrator is linear in its input current) the loss difference over sigma
  tends to the gradient along the noise, the antithetic one at O(sigma^2); the rule's readout estimate averaged
  over many draws is the exact readout gradient within a tolerance from the draws' own spread. At the hidden
  sites the loss is piecewise constant (a spike flips or not): for small sigma the difference is exactly 0,
  so np (like wp) does not estimate the surrogate gradient there; its expectation is the noise-smoothed loss's.
- wp: along the readout's parameters the antithetic finite difference is the directional derivative to O(sigma^2);
  along the hidden weights, for small sigma, exactly 0 (the same piecewise constancy).
- fa with B = W is surrogate BPTT on the feed-forward SNN (two hidden layers); dfa with one hidden layer and
  B = W_out is too. The recurrent hidden layer is refused by both, and wp on a rate code, in one line.
"""

from __future__ import annotations

import pytest
import torch

from learnbench.catalog import comparable_rules
from learnbench.models import SNN
from learnbench.rules import DirectFeedbackAlignment, FeedbackAlignment, ForwardGradientActivity, ForwardGradientWeight, NodePerturbation, WeightPerturbation
from learnbench.rules.base import trainable_parameters
from learnbench.rules.local import loss_jvp
from learnbench.rules.perturbation.activity_space import temporal_local_update
from learnbench.tasks import get_task

STEPS, INPUTS, OUTPUTS, BATCH = 30, 6, 3, 4
SUM_OVER_STEPS = get_task("sum_over_steps_classification").loss
MAX_OVER_TIME = get_task("max_over_time_classification").loss

# Networks the rules must handle: each neuron option the walk has to carry (reset, synaptic current,
# refractory period, adaptation, W_rec, a deeper stack, the codes), with the loss it is trained by.
CASES = {
    "lif, membrane readout": (dict(), SUM_OVER_STEPS),
    "two layers, leaky integrator": (dict(hidden_sizes=[7, 5], readout="leaky_integrator"), MAX_OVER_TIME),
    "spytorch's neuron, latency code": (
        dict(tau_syn=5.0, reset="zero", refractory_steps=1, readout="leaky_integrator", encoding="latency", latency_tau=5.0),
        MAX_OVER_TIME,
    ),
    "alif, reset not detached": (dict(neuron="alif", tau_adaptation=30.0, adaptation_strength=0.5, detach_reset=False), SUM_OVER_STEPS),
    "recurrent": (dict(recurrent=True, surrogate="arctan"), SUM_OVER_STEPS),
    # Bellec's EligALIF (experiment=evidence_accumulation): LIF and ALIF units mixed, W_rec without autapses, the reset
    # differentiated, spikes blocked without the hold, the unit-gain readout filter, the piecewise-linear surrogate
    "bellec's alif, recurrent": (
        dict(recurrent=True, neuron="alif", alif_units=4, tau_adaptation=30.0, adaptation_strength=0.5, detach_reset=False,
             refractory_steps=2, refractory_hold=False, surrogate="piecewise_linear", surrogate_scale=0.3,
             readout="leaky_integrator", readout_filter="mean", autapses=False),
        SUM_OVER_STEPS,
    ),
    "reset to zero through the gradient, refractory hold, membrane readout": (
        dict(reset="zero", detach_reset=False, refractory_steps=2, tau_syn=4.0), SUM_OVER_STEPS,
    ),
}


def spiking_net(seed: int, **options) -> SNN:
    """A small float64 SNN whose units spike within STEPS (the feed-forward weights scaled up)."""
    torch.manual_seed(seed)
    options = dict(dict(hidden_sizes=[7], threshold=0.6, surrogate="fast_sigmoid", surrogate_scale=5.0), **options)
    model = SNN(INPUTS, OUTPUTS, steps=STEPS, **options).double()
    with torch.no_grad():
        for layer in model.hidden:
            layer.weight.mul_(3.0)
        if model.recurrent is not None:
            model.recurrent.weight.mul_(2.0)
    return model


def inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, INPUTS, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, OUTPUTS, (BATCH,), generator=generator)


def assert_spikes(model: SNN, x) -> None:
    trace, _, _ = model.walk(x)
    for spikes in trace.spikes:
        assert 0 < spikes.mean() < 0.6, "silent or saturated units: the oracle would prove nothing"


def surrogate_gradient(model: SNN, x, y, loss_fn) -> dict[str, torch.Tensor]:
    """The oracle: autograd (reverse mode) through model.forward, the surrogate in the spike's backward (bp)."""
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return dict(zip(named, torch.autograd.grad(loss_fn(model(x), y).mean(), list(named.values()))))


def rule_grads(rule, model: SNN, x, y, loss_fn) -> dict[str, torch.Tensor]:
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    rule.double()
    rule.begin_step(0)
    for p in model.parameters():
        p.grad = None
    rule.estimate_grads(model, x, y, loss_fn)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def case(name: str, seed: int = 1):
    options, loss_fn = CASES[name]
    model = spiking_net(seed, **options)
    x, y = inputs(seed + 1)
    assert_spikes(model, x)
    return model, x, y, loss_fn


# ------------------------------------------------------------------ the walk and its sites
@pytest.mark.parametrize("name", list(CASES))
def test_walk_is_the_forward_pass_and_its_sites_give_the_parameter_gradient(name):
    model, x, y, loss_fn = case(name)
    expected = surrogate_gradient(model, x, y, loss_fn)
    shifts = [torch.zeros(BATCH, *shape, dtype=torch.float64, requires_grad=True) for shape in model.site_shapes(x)]
    with torch.enable_grad():
        trace, output, _ = model.walk(x, shifts=shifts)
        site_errors = torch.autograd.grad(loss_fn(output, y).mean(), shifts)
    torch.testing.assert_close(output, model(x), rtol=0, atol=0)
    for p in model.parameters():
        p.grad = None
    temporal_local_update(model, trace, [e.detach() for e in site_errors])  # sum_t delta_t z_t^T at every site
    for n, g in expected.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, rtol=1e-10, atol=1e-12, msg=n)


# ------------------------------------------------------------------ forward gradients: exact through the surrogate
@pytest.mark.parametrize("name", list(CASES))
def test_fg_w_directional_derivative_is_the_surrogate_gradient_along_the_tangent(name):
    model, x, y, loss_fn = case(name)
    expected = surrogate_gradient(model, x, y, loss_fn)
    generator = torch.Generator().manual_seed(3)
    params = {n: p.detach() for n, p in model.named_parameters()}
    tangents = {n: torch.randn(3, *p.shape, generator=generator, dtype=torch.float64) for n, p in params.items()}
    _, _, d = ForwardGradientWeight(directions=3).directional_derivatives(model, params, tangents, x, y, loss_fn)
    along = torch.stack([sum((expected[n] * t[k]).sum() for n, t in tangents.items()) for k in range(3)])
    torch.testing.assert_close(d, along, rtol=1e-10, atol=1e-12)
    hidden = torch.stack([sum((expected[n] * t[k]).sum() for n, t in tangents.items() if not n.startswith("readout")) for k in range(3)])
    assert hidden.abs().min() > 1e-6, "the hidden weights' part must count: the tangent passes through the spikes"


@pytest.mark.parametrize("name", list(CASES))
def test_fg_a_directional_derivative_is_the_surrogate_gradient_at_the_sites_along_the_tangent(name):
    model, x, y, loss_fn = case(name)
    shapes = model.site_shapes(x)
    shifts = [torch.zeros(BATCH, *s, dtype=torch.float64, requires_grad=True) for s in shapes]
    with torch.enable_grad():
        _, output, _ = model.walk(x, shifts=shifts)
        site_errors = torch.autograd.grad(loss_fn(output, y).mean(), shifts)  # reverse mode: d(mean loss)/du
    generator = torch.Generator().manual_seed(4)
    tangents = [torch.randn(2, BATCH, *s, generator=generator, dtype=torch.float64) for s in shapes]
    _, primal, d_output = model.walk(x, tangents=tangents)
    losses, d = loss_jvp(loss_fn, primal, y, d_output)  # [K, B]: per example
    along = torch.stack([sum((e * t[k]).sum() for e, t in zip(site_errors, tangents)) for k in range(2)])
    torch.testing.assert_close(d.sum(-1) / BATCH, along, rtol=1e-10, atol=1e-12)
    hidden = sum((e * t[0]).sum() for e, t in zip(site_errors[:-1], tangents[:-1]))
    assert abs(hidden) > 1e-6


def test_fg_a_rule_averages_its_tangents_estimates():
    """The rule's p.grad is (1/K) sum_k d_k u_k pushed through the sites' inputs: with K tangents equal to the exact
    site errors scaled, recomputed here from the rule's own draws, it is the local update of that average."""
    model, x, y, loss_fn = case("two layers, leaky integrator")
    rule = ForwardGradientActivity(directions=2, table_size=0)
    grads = rule_grads(rule, model, x, y, loss_fn)
    rule.begin_step(0)  # the same draws again
    shapes = model.site_shapes(x)
    noise = rule.sample_site_noise(2 * BATCH, shapes, torch.float64)
    u = [n.view(2, BATCH, *s) for n, s in zip(noise, shapes)]
    trace, output, d_output = model.walk(x, tangents=u)
    _, d = loss_jvp(loss_fn, output, y, d_output)
    deltas = [(d.view(2, BATCH, 1, 1) * n).sum(0) / (2 * BATCH) for n in u]
    for p in model.parameters():
        p.grad = None
    temporal_local_update(model, trace, deltas)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-12, atol=1e-14, msg=n)


# ------------------------------------------------------------------ node perturbation
def site_loss(model, x, y, loss_fn, site: int, shift: torch.Tensor) -> torch.Tensor:
    shifts = [torch.zeros(BATCH, *s, dtype=torch.float64) for s in model.site_shapes(x)]
    shifts[site] = shift
    return loss_fn(model.walk(x, shifts=shifts)[1], y).mean()


def test_np_difference_at_the_readout_site_tends_to_the_gradient_along_the_noise():
    model, x, y, loss_fn = case("two layers, leaky integrator")
    shapes = model.site_shapes(x)
    shifts = [torch.zeros(BATCH, *s, dtype=torch.float64, requires_grad=True) for s in shapes]
    with torch.enable_grad():
        site_errors = torch.autograd.grad(loss_fn(model.walk(x, shifts=shifts)[1], y).mean(), shifts)
    v = torch.randn(BATCH, *shapes[-1], generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact = (site_errors[-1] * v).sum()
    errors = []
    for sigma in (1e-2, 1e-3):
        central = (site_loss(model, x, y, loss_fn, -1, sigma * v) - site_loss(model, x, y, loss_fn, -1, -sigma * v)) / (2 * sigma)
        errors.append(float((central - exact).abs()))
    assert errors[1] < 1e-5 * abs(float(exact)) and errors[1] < errors[0] / 50  # O(sigma^2): 100x for 10x
    # A hidden site: the spikes do not move for a small shift, so the loss does not either (piecewise constant).
    u = torch.randn(BATCH, *shapes[0], generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert site_loss(model, x, y, loss_fn, 0, 1e-9 * u) == site_loss(model, x, y, loss_fn, 0, 0 * u)
    assert (site_errors[0] * u).sum().abs() > 1e-6  # while the surrogate's gradient there is not 0


def test_np_readout_estimate_is_unbiased_over_many_draws():
    """E[(dL / sigma) v z^T] = dL/dW_out as sigma -> 0 (E[v v^T] = I); tolerance: 5 standard errors of the mean
    of independent estimates (the draws' own spread)."""
    model, x, y, loss_fn = case("two layers, leaky integrator")
    exact = surrogate_gradient(model, x, y, loss_fn)["readout.weight"]  # no spike after the readout: the exact gradient
    rule = NodePerturbation(sigma=1e-7, directions=400, table_size=0)
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    estimates = []
    for step in range(25):
        rule.begin_step(step)
        for p in model.parameters():
            p.grad = None
        rule.estimate_grads(model, x, y, loss_fn)
        estimates.append(model.readout.weight.grad.clone())
    estimates = torch.stack(estimates)
    standard_error = estimates.std(0).norm() / len(estimates) ** 0.5
    assert (estimates.mean(0) - exact).norm() < 5 * standard_error
    assert standard_error < 0.5 * exact.norm()  # tight enough to mean something


# ------------------------------------------------------------------ weight perturbation
def test_wp_finite_difference_is_the_directional_derivative_to_second_order():
    model, x, y, loss_fn = case("two layers, leaky integrator")
    expected = surrogate_gradient(model, x, y, loss_fn)
    params = {n: p.detach() for n, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(7)
    readout_only = {n: (torch.randn(1, *p.shape, generator=generator, dtype=torch.float64) if n.startswith("readout")
                        else torch.zeros(1, *p.shape, dtype=torch.float64)) for n, p in params.items()}
    exact = sum((expected[n] * t[0]).sum() for n, t in readout_only.items())
    errors = []
    for sigma in (1e-2, 1e-3):
        _, _, d = WeightPerturbation(sigma=sigma, antithetic=True).directional_derivatives(model, params, readout_only, x, y, loss_fn)
        errors.append(float((d[0] - exact).abs()))
    assert errors[1] < 1e-5 * abs(float(exact)) and errors[1] < errors[0] / 50
    # Along the hidden weights a small step flips no spike: the loss does not move, the surrogate's slope is not 0.
    hidden_only = {n: (torch.randn(1, *p.shape, generator=generator, dtype=torch.float64) if n.startswith("hidden")
                       else torch.zeros(1, *p.shape, dtype=torch.float64)) for n, p in params.items()}
    _, _, d = WeightPerturbation(sigma=1e-9, antithetic=True).directional_derivatives(model, params, hidden_only, x, y, loss_fn)
    assert d[0] == 0
    assert abs(sum((expected[n] * t[0]).sum() for n, t in hidden_only.items())) > 1e-6


def test_wp_refuses_a_rate_code_in_one_line():
    model = SNN(INPUTS, OUTPUTS, encoding="rate")
    with pytest.raises(ValueError) as error:
        WeightPerturbation().bind(model, seed=0)
    assert "model.encoding=rate draws new input spikes" in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------ feedback alignment
FEEDBACK_CASES = ["lif, membrane readout", "two layers, leaky integrator", "spytorch's neuron, latency code", "alif, reset not detached"]


@pytest.mark.parametrize("name", FEEDBACK_CASES)
def test_fa_with_the_forward_weights_as_feedback_is_surrogate_bptt(name):
    model, x, y, loss_fn = case(name)
    rule = FeedbackAlignment()
    rule.bind(model, seed=0)
    for i, linear in enumerate(model.feedback_layers()):
        if i > 0:
            getattr(rule.feedback, str(i)).copy_(linear.weight.detach())  # B_i = W_i (FA's B has W's shape)
    expected = surrogate_gradient(model, x, y, loss_fn)
    actual = rule_grads(rule, model, x, y, loss_fn)
    for n in expected:
        torch.testing.assert_close(actual[n], expected[n], rtol=1e-10, atol=1e-12, msg=n)


def test_fa_with_random_feedback_differs_from_surrogate_bptt_below_the_readout():
    model, x, y, loss_fn = case("two layers, leaky integrator")
    expected = surrogate_gradient(model, x, y, loss_fn)
    actual = rule_grads(FeedbackAlignment(), model, x, y, loss_fn)
    torch.testing.assert_close(actual["readout.weight"], expected["readout.weight"], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(actual["hidden.0.weight"], expected["hidden.0.weight"], rtol=1e-3)


@pytest.mark.parametrize("name", ["lif, membrane readout", "spytorch's neuron, latency code", "alif, reset not detached"])
def test_dfa_with_one_hidden_layer_and_the_readout_weights_as_feedback_is_surrogate_bptt(name):
    model, x, y, loss_fn = case(name)
    rule = DirectFeedbackAlignment()
    rule.bind(model, seed=0)
    rule.feedback.get_buffer("0").copy_(model.readout.weight.detach())  # B [outputs, hidden] = W_out
    expected = surrogate_gradient(model, x, y, loss_fn)
    actual = rule_grads(rule, model, x, y, loss_fn)
    for n in expected:
        torch.testing.assert_close(actual[n], expected[n], rtol=1e-10, atol=1e-12, msg=n)


@pytest.mark.parametrize("rule", [FeedbackAlignment, DirectFeedbackAlignment])
def test_feedback_rules_refuse_the_recurrent_hidden_layer_in_one_line(rule):
    model = spiking_net(0, recurrent=True)
    with pytest.raises(ValueError) as error:
        rule().bind(model, seed=0)
    message = str(error.value)
    assert "on model=snn" in message and "W_rec" in message and "model.recurrent=false" in message and "\n" not in message


# ------------------------------------------------------------------ the catalogue
def test_the_spiking_comparison_holds_every_rule_that_trains_the_snn():
    assert comparable_rules("spiking") == ["bp", "dfa", "eprop", "fa", "fg_a", "fg_w", "np", "rstdp", "stdp", "stdp_gradient", "wp"]


# ------------------------------------------------------------------ DDP: two processes on the SNN
# bp and eprop (no per-step noise: the ranks' mean is the union batch's estimate) and np (each rank its own noise,
# seed + rank; the module all-reduces the gradient). Oracle: one process without Lightning or torch.distributed,
# one rule per rank on that rank's shard (seeded with the rank), the estimates averaged by hand, the same SGD step.
DDP_CASES = {"bp": {}, "eprop": {}, "np": {"table_size": 0, "sigma": 1e-2}, "fg_w": {"table_size": 0, "directions": 2}}
DDP_WORLD, DDP_BATCH, DDP_STEPS, DDP_TASK = 2, 8, 4, "sum_over_steps_classification"


def ddp_start() -> SNN:
    torch.manual_seed(0)
    model = SNN(2, 2, hidden_sizes=[6], recurrent=True, steps=10, threshold=0.5)
    with torch.no_grad():
        model.hidden[0].weight.mul_(3.0)
    return model


def ddp_data(batch_size: int):
    from learnbench.data import SpiralDataModule

    return SpiralDataModule(train_per_arm=32, val_per_arm=4, test_per_arm=4, batch_size=batch_size, seed=11)


def _ddp_worker(rank: int, port: int, directory: str) -> None:
    import functools
    import os

    import lightning as L

    from learnbench.catalog import rule_from_config
    from learnbench.module import LearningRuleModule

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(DDP_WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    for method, options in DDP_CASES.items():
        module = LearningRuleModule(ddp_start(), rule_from_config(method, **options), optimizer=functools.partial(torch.optim.SGD, lr=0.5),
                                    task=DDP_TASK)
        trainer = L.Trainer(accelerator="cpu", devices=DDP_WORLD, strategy="ddp", precision="64-true", max_steps=DDP_STEPS,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, default_root_dir=directory)
        trainer.fit(module, datamodule=ddp_data(DDP_BATCH))
        assert trainer.global_step == DDP_STEPS
        torch.save({k: v.detach().clone() for k, v in module.model.state_dict().items()}, f"{directory}/{method}.rank{rank}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def hand_written_ddp_oracle(method: str, options: dict) -> dict:
    from learnbench.catalog import rule_from_config
    from learnbench.data.in_memory import TensorBatches

    model = ddp_start().double()
    loss_fn = get_task(DDP_TASK).loss
    rules = [rule_from_config(method, **options) for _ in range(DDP_WORLD)]
    for r, rule in enumerate(rules):
        rule.setup(model, seed=0, rank=r, device=torch.device("cpu"))
        rule.double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = ddp_data(DDP_BATCH).load_splits().train
    shards = [iter(TensorBatches(x.double(), y, DDP_BATCH, shuffle=True, seed=11, rank=r, world_size=DDP_WORLD, drop_last=True))
              for r in range(DDP_WORLD)]
    for step in range(DDP_STEPS):
        total = [torch.zeros_like(p) for p in model.parameters()]
        for rule, shard in zip(rules, shards):
            xb, yb = next(shard)
            for p in model.parameters():
                p.grad = None
            rule.begin_step(step)
            if method == "bp":  # backprop writes its gradient by autograd's backward
                loss_fn(model(xb), yb).mean().backward()
            else:
                rule.estimate_grads(model, xb, yb, loss_fn)
            for acc, p in zip(total, model.parameters()):
                acc += p.grad
        for acc, p in zip(total, model.parameters()):
            p.grad = acc / DDP_WORLD
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_two_ddp_processes_stay_identical_on_the_snn_and_equal_the_one_process_oracle(tmp_path):
    """~1 min here: two spawned processes (gloo); `pytest -m slow tests/test_snn_rules.py`."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=DDP_WORLD, join=True)
    start = {k: v.double() for k, v in ddp_start().state_dict().items()}
    for method, options in DDP_CASES.items():
        rank0, rank1 = (torch.load(tmp_path / f"{method}.rank{r}.pt") for r in range(DDP_WORLD))
        oracle = hand_written_ddp_oracle(method, options)
        assert any(not torch.equal(rank0[k], start[k]) for k in start if k.endswith("weight")), f"{method}: nothing moved"
        for k in rank0:
            torch.testing.assert_close(rank0[k], rank1[k], rtol=0, atol=0, msg=f"{method}: {k} differs across ranks")
            torch.testing.assert_close(rank0[k], oracle[k], rtol=1e-9, atol=1e-12, msg=f"{method}: {k}")


@pytest.mark.parametrize("method", ["kp", "usf"])
def test_the_feedback_rules_written_for_chains_refuse_the_snn(method):
    from learnbench.catalog import rule_from_config

    with pytest.raises(ValueError, match="does not train spiking models .* method=fa and dfa do"):
        rule_from_config(method).bind(spiking_net(0), seed=0)


# ----------------------------------------------------------------------------- through the app, in a process of its own
@pytest.mark.parametrize("method", ["fg_a", pytest.param("fg_w", marks=pytest.mark.slow)])
def test_forward_gradients_train_the_snn_through_the_app(method, tmp_path):
    """fg_a and fg_w on model=snn through `python -m learnbench.train`: the first batch's FLOP count (learnbench/compute.py)
    runs their jvp inside a dispatch mode, where torch 2.14 killed the process (a segmentation fault) on the neuron step's
    add / sub with alpha (models/neurons.py). Run in a subprocess, so that a crash fails this test, not the session."""
    from conftest import CSV_ONLY, describe, run_cli, tiny

    proc = run_cli("data=spiral", "model=snn", "model.steps=10", "model.hidden_sizes=[16]", f"method={method}",
                   *tiny(train_batches=2), *CSV_ONLY, f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
