"""Predictive coding against independent oracles (float64): backprop by autograd (FPA and Z-IL exactly,
standard PC in the small-error limit), an energy written out here and differentiated by autograd
(inference steps, monotone descent, the fixed point; incremental PC's weights stepped at every inference
step), the Hessian's eigenvalues (the stability bound), and one process on the union batch (DDP)."""

from __future__ import annotations

import copy
import math
import warnings
from functools import partial

import lightning as L
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from learnbench.data import SpiralDataModule
from learnbench.models import MLP, Autoencoder, LeNet
from learnbench.module import LearningRuleModule
from learnbench.rules.predictive_coding import InferenceStabilityWarning, PredictiveCoding
from learnbench.tasks import per_example_loss

pytestmark = pytest.mark.usefixtures("float64")
CE = partial(per_example_loss, "classification")
MSE = partial(per_example_loss, "reconstruction")


def SE(output, target):  # the `se` top energy written out: ||output - target||^2 / 2 per example
    if not target.is_floating_point():
        target = F.one_hot(target, output.shape[1]).to(output.dtype)
    return 0.5 * (output - target).pow(2).sum(1)


def mlp_problem(activation="tanh", sizes=(7, 6, 4), batch=9, layer_norm=False, seed=0):
    torch.manual_seed(seed)
    return MLP(5, 3, sizes, activation=activation, layer_norm=layer_norm), torch.randn(batch, 5), torch.randint(0, 3, (batch,))


def backprop(model, x, y, loss_fn=CE) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss_fn(model(x), y).mean(), list(model.parameters())))


def rule_grads(rule, model, x, y, loss_fn=CE) -> list[torch.Tensor]:
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    rule.begin_step(0)
    rule.estimate_grads(model, x, y, loss_fn)
    return [p.grad.clone() for p in model.parameters()]


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def oracle_energy_per_example(model, x, nodes, y, top) -> torch.Tensor:
    """E of each example, written from the definition: sum_l ||node_l - block_l(node_{l-1})||^2 / 2 + top."""
    below, total = x, 0.0
    for node, block in zip(nodes, model.blocks[:-1]):
        total = total + 0.5 * (node - block(below)).pow(2).flatten(1).sum(1)
        below = node
    return total + top(model.blocks[-1](below), y)


def feed_forward_nodes(model, x) -> list[torch.Tensor]:
    nodes, below = [], x
    for block in model.blocks[:-1]:
        below = block(below).detach()
        nodes.append(below)
    return nodes


def energy_gradient(model, x, nodes, y, top) -> list[torch.Tensor]:
    """d(sum over examples of E)/d nodes: each example's own gradient (autograd)."""
    leaves = [n.detach().requires_grad_() for n in nodes]
    return list(torch.autograd.grad(oracle_energy_per_example(model, x, leaves, y, top).sum(), leaves))


# ------------------------------------------------------------------ exact variants
EXACT_CASES = {
    "tanh_ce": dict(activation="tanh", output_loss="task"),
    "gelu_ce": dict(activation="gelu", output_loss="task"),
    "leaky_relu_se": dict(activation="leaky_relu", output_loss="se"),
    "hard_tanh_ce": dict(activation="hard_tanh", output_loss="task"),
    "relu_ce_layer_norm": dict(activation="relu", output_loss="task", layer_norm=True),  # local autograd path
}


@pytest.mark.parametrize("variant", ["fpa", "zil"])
@pytest.mark.parametrize("case", list(EXACT_CASES))
def test_fpa_and_zil_updates_equal_the_backprop_gradient(variant, case):
    settings = dict(EXACT_CASES[case])
    output_loss = settings.pop("output_loss")
    model, x, y = mlp_problem(**settings)
    rule = PredictiveCoding(variant=variant, inference_lr=1.0, inference_steps=3, output_loss=output_loss)
    loss_fn = CE if output_loss == "task" else SE
    got, true = rule_grads(rule, model, x, y, loss_fn), backprop(model, x, y, loss_fn)
    for g, t in zip(got, true):
        torch.testing.assert_close(g, t, rtol=1e-12, atol=1e-14)


def test_fpa_with_a_smaller_step_converges_to_backprop_geometrically():
    """With step gamma the errors obey eps(t+1) = (1 - gamma) eps(t) + gamma J^T eps_above(t): the gap to
    backprop's deltas shrinks like a polynomial in t times (1 - gamma)^t (oracle: autograd)."""
    model, x, y = mlp_problem()
    true = flat(backprop(model, x, y))
    gaps = []
    for steps in (20, 40):
        got = flat(rule_grads(PredictiveCoding(variant="fpa", inference_lr=0.5, inference_steps=steps), model, x, y))
        gaps.append(float((got - true).norm() / true.norm()))
    assert gaps[1] < 1e-8 and gaps[1] < gaps[0] * 0.5**15, gaps


@pytest.mark.parametrize("problem", ["lenet", "autoencoder"])
def test_zil_is_backprop_on_conv_and_autoencoder_models(problem):
    """The local-autograd path (conv, pooling, flattening) and the reconstruction target clamped at the top."""
    torch.manual_seed(0)
    if problem == "lenet":
        model, x, y, loss_fn = LeNet((1, 28, 28), 10), torch.randn(2, 1, 28, 28), torch.randint(0, 10, (2,)), CE
    else:
        model, x, loss_fn = Autoencoder(12, 12, encoder_sizes=(8,), bottleneck=3, activation="gelu"), torch.randn(6, 12), MSE
        y = x
    steps = len(model.blocks) - 1
    got = rule_grads(PredictiveCoding(variant="zil", inference_lr=1.0, inference_steps=steps), model, x, y, loss_fn)
    for g, t in zip(got, backprop(model, x, y, loss_fn)):
        torch.testing.assert_close(g, t, rtol=1e-11, atol=1e-13)


# ------------------------------------------------------------------ standard PC tends to backprop
def pc_and_bp(model, x, y, output_weight=1.0):
    rule = PredictiveCoding(inference_lr=0.2, inference_steps=600, output_loss="se", output_weight=output_weight)
    return flat(rule_grads(rule, model, x, y, SE)), flat(backprop(model, x, y, SE))


def test_standard_pc_tends_to_backprop_as_the_output_weight_vanishes():
    """E = hidden errors + beta E_top, update / beta. At the inference equilibrium the nodes have moved by
    O(beta), so the top error is its feed-forward value up to O(beta) and each hidden error beta times
    backprop's delta up to O(beta^2): the relative gap r = ||pc - bp|| / ||bp|| falls like beta.
    Checked: r(beta) / beta constant within 20 % over two decades, r(1e-3) < 1e-2, and
    1 - cos <= r^2 / 2 (cos -> 1 like beta^2), cos(1e-3) > 1 - 1e-5."""
    model, x, y = mlp_problem()
    gaps, cosines = {}, {}
    for beta in (1e-1, 1e-2, 1e-3):
        got, true = pc_and_bp(model, x, y, beta)
        gaps[beta] = float((got - true).norm() / true.norm())
        cosines[beta] = float(F.cosine_similarity(got, true, dim=0))
    slopes = [gaps[b] / b for b in (1e-2, 1e-3)]
    assert abs(slopes[0] / slopes[1] - 1) < 0.2, gaps
    assert gaps[1e-3] < 1e-2 and gaps[1e-1] > gaps[1e-2] > gaps[1e-3], gaps
    for beta in gaps:
        assert 1 - cosines[beta] <= gaps[beta] ** 2 / 2 + 1e-12, (beta, cosines[beta], gaps[beta])
    assert cosines[1e-3] > 1 - 1e-5


def test_targets_close_to_the_prediction_alone_do_not_reach_backprop():
    """With beta = 1, targets y = output + s r: the equilibrium is linear in a small error, so the gap to
    backprop tends to a constant as s -> 0 (here ~0.43), not to 0: the limit is in beta, not in s."""
    model, x, _ = mlp_problem()
    with torch.no_grad():
        out = model(x)
    torch.manual_seed(1)
    direction = torch.randn_like(out)
    gaps = []
    for s in (1e-2, 1e-3):
        got, true = pc_and_bp(model, x, out + s * direction)
        gaps.append(float((got - true).norm() / true.norm()))
    assert gaps[1] > 0.1 and abs(gaps[0] - gaps[1]) < 0.1 * gaps[1], gaps


# ------------------------------------------------------------------ inference: the energy and its descent
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_inference_steps_are_gradient_descent_on_the_written_out_energy(momentum):
    """Three steps by hand on the autograd energy (heavy ball: m = mu m + grad, node -= gamma m)."""
    model, x, y = mlp_problem(activation="gelu")
    gamma, steps = 0.3, 3
    nodes, velocity = feed_forward_nodes(model, x), None
    for _ in range(steps):
        grads = energy_gradient(model, x, nodes, y, CE)
        velocity = grads if velocity is None else [momentum * v + g for v, g in zip(velocity, grads)]
        nodes = [n - gamma * v for n, v in zip(nodes, velocity)]
    rule = PredictiveCoding(inference_lr=gamma, inference_steps=steps, inference_momentum=momentum)
    result = rule.infer(model, x, y, CE)
    for got, expected in zip(result.nodes, nodes):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(result.energies[-1], oracle_energy_per_example(model, x, nodes, y, CE).mean(), rtol=1e-12, atol=0)


def written_out_inference(model, x, y, top, gamma, steps, momentum=0.0) -> list[list[torch.Tensor]]:
    """The node states 0 .. steps of heavy-ball descent on the autograd energy."""
    nodes, velocity, states = feed_forward_nodes(model, x), None, []
    for _ in range(steps):
        states.append(nodes)
        grads = energy_gradient(model, x, nodes, y, top)
        velocity = grads if velocity is None else [momentum * v + g for v, g in zip(velocity, grads)]
        nodes = [n - gamma * v for n, v in zip(nodes, velocity)]
    return [*states, nodes]


def weight_gradient_of_energy(model, x, nodes, y, top) -> torch.Tensor:
    """dE/dW at fixed nodes, E the batch mean of the written-out energy (autograd)."""
    return flat(torch.autograd.grad(oracle_energy_per_example(model, x, nodes, y, top).mean(), list(model.parameters())))


@pytest.mark.parametrize(("variant", "activation", "output_loss"), [("standard", "gelu", "task"), ("standard", "relu", "se"),
                                                                     ("ipc", "leaky_relu", "se"), ("ipc", "tanh", "task")])
def test_standard_and_ipc_updates_are_the_written_out_energy_gradients(variant, activation, output_loss):
    """standard: dE/dW at the nodes after T steps; ipc: the sum of dE/dW at the states 0 .. T-1 (autograd)."""
    model, x, y = mlp_problem(activation=activation)
    top = CE if output_loss == "task" else SE
    gamma, steps, momentum = 0.3, 4, 0.25
    states = written_out_inference(model, x, y, top, gamma, steps, momentum)
    if variant == "standard":
        expected = weight_gradient_of_energy(model, x, states[-1], y, top)
    else:
        expected = sum(weight_gradient_of_energy(model, x, s, y, top) for s in states[:-1])
    rule = PredictiveCoding(variant=variant, inference_lr=gamma, inference_steps=steps, inference_momentum=momentum,
                            output_loss=output_loss)
    torch.testing.assert_close(flat(rule_grads(rule, model, x, y, top)), expected, rtol=1e-11, atol=1e-13)


def test_small_steps_lower_the_energy_monotonically_to_a_fixed_point():
    model, x, y = mlp_problem(activation="tanh")
    rule = PredictiveCoding(inference_lr=0.2, inference_steps=600)
    result = rule.infer(model, x, y, CE)
    energies = torch.stack(result.energies)
    assert (energies[1:] <= energies[:-1] + 1e-14).all(), energies
    assert energies[-1] < energies[0] - 1e-3  # inference did something
    first = oracle_energy_per_example(model, x, feed_forward_nodes(model, x), y, CE).mean()
    torch.testing.assert_close(energies[0], first, rtol=1e-12, atol=0)
    gradient = flat(energy_gradient(model, x, result.nodes, y, CE))
    assert gradient.abs().max() < 1e-9, gradient.abs().max()  # dE/dx = 0: the fixed-point equation


def test_without_a_target_the_feed_forward_state_is_the_energy_minimum():
    """Why `predict` is the forward pass: with no top term, every error is zero at the feed-forward values
    (E = 0, its minimum) and its gradient vanishes there (autograd), so inference would not move them."""
    model, x, y = mlp_problem()
    nodes = feed_forward_nodes(model, x)
    no_top = lambda output, target: torch.zeros(len(output))  # noqa: E731
    with torch.no_grad():
        assert float(oracle_energy_per_example(model, x, nodes, y, no_top).abs().max()) == 0.0
    assert float(flat(energy_gradient(model, x, nodes, y, no_top)).abs().max()) == 0.0
    rule = PredictiveCoding()
    torch.testing.assert_close(rule.predict(model, x), model(x), rtol=0, atol=0)


# ------------------------------------------------------------------ stability
def hessian_lambda_max(model, x, y, top) -> float:
    """The largest eigenvalue of the energy's Hessian over one example's nodes at the feed-forward state."""
    nodes = feed_forward_nodes(model, x[:1])
    sizes = [n.numel() for n in nodes]

    def energy_of(vector):
        parts = [p.view_as(n) for p, n in zip(vector.split(sizes), nodes)]
        return oracle_energy_per_example(model, x[:1], parts, y[:1], top).sum()

    h = torch.autograd.functional.hessian(energy_of, flat(nodes))
    return float(torch.linalg.eigvalsh(h).max())


@pytest.mark.parametrize("factor", [0.95, 1.05])
def test_a_step_above_the_linear_layer_bound_warns_and_diverges(factor):
    """One linear hidden layer, squared-error top: H = I + W2^T W2, so inference converges iff
    gamma < 2 / (1 + ||W2||^2) (oracle: the Hessian's eigenvalues by autograd, and the run itself)."""
    torch.manual_seed(0)
    model, x = MLP(3, 2, (4,), activation="identity"), torch.randn(5, 3)
    with torch.no_grad():
        model.blocks[1].linear.weight.mul_(3)  # a readout large enough that the bound bites below 1
    y = torch.randn(5, 2)
    exact = 2 / hessian_lambda_max(model, x, y, SE)
    sigma = float(torch.linalg.matrix_norm(model.blocks[1].linear.weight, ord=2))
    torch.testing.assert_close(exact, 2 / (1 + sigma**2), rtol=1e-10, atol=0)
    rule = PredictiveCoding(inference_lr=factor * exact, inference_steps=400, output_loss="se")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rule.bind(model, seed=0)
    assert any(issubclass(w.category, InferenceStabilityWarning) for w in caught)  # the sufficient bound is below
    energies = torch.stack(rule.infer(model, x, y, SE).energies)
    if factor > 1:
        assert energies[-1] > 1e3 * energies[0]
    else:
        assert (energies[1:] <= energies[:-1] + 1e-12).all()


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "leaky_relu", "sigmoid"])
def test_the_warning_bound_is_never_laxer_than_the_true_curvature(activation):
    """The step the rule accepts silently, 2 / (1 + s)^2, is below 2 / lambda_max of the autograd Hessian."""
    for seed in range(3):
        model, x, y = mlp_problem(activation=activation, seed=seed)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(2.0)
        from learnbench.rules.predictive_coding.energy import stable_step_bound

        safe, _ = stable_step_bound(list(model.blocks), momentum=0.0)
        assert safe <= 2 / hessian_lambda_max(model, x, y, SE) * (1 + 1e-9), (seed, safe)


def test_impossible_or_inexact_settings_are_refused_at_start():
    with pytest.raises(ValueError, match="cannot converge"):
        PredictiveCoding(inference_lr=2.0)
    with pytest.raises(ValueError, match=r"2 \(1 \+ momentum\) = 3"):
        PredictiveCoding(inference_lr=3.0, inference_momentum=0.5)
    with pytest.raises(ValueError, match="inference_lr=1"):
        PredictiveCoding(variant="zil", inference_lr=0.5)
    with pytest.raises(ValueError, match="inference_steps >= 3"):
        PredictiveCoding(variant="zil", inference_lr=1.0, inference_steps=2).bind(mlp_problem()[0], seed=0)
    with pytest.raises(ValueError, match="method.variant"):
        PredictiveCoding(variant="exact")


def test_a_model_that_is_not_a_chain_of_blocks_is_refused():
    with pytest.raises(ValueError, match="model=mlp, autoencoder, lenet or cnn"):
        PredictiveCoding().bind(nn.Sequential(nn.Linear(2, 2)), seed=0)


# ------------------------------------------------------------------ in the training loop
def test_the_training_loop_logs_the_energies_and_the_update_descends(tmp_path):
    torch.manual_seed(0)
    module = LearningRuleModule(MLP(2, 2, (16, 16), activation="tanh"), PredictiveCoding(inference_steps=5),
                                optimizer=partial(torch.optim.SGD, lr=0.1), diagnostics_every_n_steps=1)
    trainer = L.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=SpiralDataModule(batch_size=32))
    means = module.diagnostic_means()
    for key in ("rule/energy_first", "rule/energy_last", "rule/output_loss", "align/cos/all", "align/cos/blocks.0"):
        assert key in means, sorted(means)
    assert means["rule/energy_last"] < means["rule/energy_first"]
    assert means["align/cos/all"] > 0.5  # inference moves the update towards backprop's direction


def test_the_update_on_the_union_batch_is_the_mean_of_the_halves():
    """What makes the module's all-reduce (a mean over ranks) right for PC: inference is per example
    and the weight gradient a batch mean, so two equal shards average to the union batch."""
    model, x, y = mlp_problem(batch=10)
    for variant in ("standard", "ipc"):
        union = flat(rule_grads(PredictiveCoding(variant=variant, inference_steps=5), model, x, y))
        halves = [flat(rule_grads(PredictiveCoding(variant=variant, inference_steps=5), model, x[s], y[s]))
                  for s in (slice(0, 5), slice(5, 10))]
        torch.testing.assert_close(union, (halves[0] + halves[1]) / 2, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ incremental PC: the weights move at every inference step
def hand_written_ipc(model, x, y, top, gamma, steps, lr, momentum=0.0, beta=1.0) -> torch.Tensor:
    """pcx's iPC written from the energy (autograd), on a copy of the model: at each of T steps, the gradients
    of E over the nodes (per example) and of its batch mean over the weights, both at (x_t, W_t); then heavy-ball
    SGD on the nodes and plain SGD (step lr / beta, pcx's mul=1/beta) on the weights. The weights after the batch."""
    model = copy.deepcopy(model)
    params = list(model.parameters())
    weighted_top = lambda output, target: beta * top(output, target)  # noqa: E731
    nodes, velocity = feed_forward_nodes(model, x), None
    for _ in range(steps):
        leaves = [n.detach().requires_grad_() for n in nodes]
        per_example = oracle_energy_per_example(model, x, leaves, y, weighted_top)
        node_grads = torch.autograd.grad(per_example.sum(), leaves, retain_graph=True)
        weight_grads = torch.autograd.grad(per_example.mean(), params)
        velocity = node_grads if velocity is None else [momentum * v + g for v, g in zip(velocity, node_grads)]
        nodes = [n - gamma * v for n, v in zip(leaves, velocity)]
        with torch.no_grad():
            for p, g in zip(params, weight_grads):
                p -= lr / beta * g
    return flat([p.detach() for p in params])


def trained_on_one_batch(model, rule, x, y, loss_fn, lr, tmp_path, **options) -> tuple[torch.Tensor, LearningRuleModule]:
    """The training module's weights after one batch (plain SGD), on a copy of the model."""
    task = "reconstruction" if loss_fn is MSE else "classification"
    module = LearningRuleModule(copy.deepcopy(model), rule, optimizer=partial(torch.optim.SGD, lr=lr), task=task,
                                num_classes=3, **options)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(x))
    trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == rule.updates_per_batch  # one optimiser step per update
    return flat([p.detach() for p in module.model.parameters()]), module


IPC_CASES = {
    "tanh_ce": dict(problem=dict(activation="tanh"), output_loss="task", momentum=0.0, beta=1.0),
    "leaky_relu_se_momentum": dict(problem=dict(activation="leaky_relu"), output_loss="se", momentum=0.35, beta=1.0),
    "gelu_layer_norm_beta": dict(problem=dict(activation="gelu", layer_norm=True), output_loss="task", momentum=0.2, beta=0.5),
    "lenet": dict(problem=None, output_loss="task", momentum=0.35, beta=1.0),  # conv and pooling: local autograd
}


@pytest.mark.parametrize("case", list(IPC_CASES))
def test_per_step_ipc_weights_after_a_batch_equal_the_written_out_loop(case, tmp_path):
    """T optimiser steps inside one batch through the training module (each all-reduced, clipped, stepped like
    any other) against the loop above; the weights move, so every later step's predictions use the new weights."""
    settings = IPC_CASES[case]
    if settings["problem"] is None:
        torch.manual_seed(0)
        model, x, y = LeNet((1, 28, 28), 3), torch.randn(3, 1, 28, 28), torch.randint(0, 3, (3,))
    else:
        model, x, y = mlp_problem(**settings["problem"])
    top = CE if settings["output_loss"] == "task" else SE
    # T = 7 > the depth: the first block's weights move (its error arrives after L - 1 steps) and are then used.
    gamma, steps, lr = 0.3, 7, 0.2
    rule = PredictiveCoding(variant="ipc", weight_updates="per_step", inference_lr=gamma, inference_steps=steps,
                            inference_momentum=settings["momentum"], output_loss=settings["output_loss"],
                            output_weight=settings["beta"])
    got, module = trained_on_one_batch(model, rule, x, y, CE, lr, tmp_path)
    expected = hand_written_ipc(model, x, y, top, gamma, steps, lr, settings["momentum"], settings["beta"])
    assert not torch.allclose(expected, flat(model.parameters()))  # the batch did move the weights
    torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-13)
    means = module.diagnostic_means()  # logged once per batch: E at the feed-forward start is beta E_top there
    with torch.no_grad():
        first = settings["beta"] * top(model(x), y).mean()
    assert set(means) == {"rule/energy_first", "rule/energy_last", "rule/output_loss"}
    torch.testing.assert_close(means["rule/energy_first"], float(first), rtol=1e-12, atol=0)


def test_one_inference_step_is_the_per_batch_update_and_the_output_layers_delta_rule(tmp_path):
    """T = 1: per_step and per_batch take the same single step, at the feed-forward state, where every hidden
    error is zero: the hidden weights keep their values and the output block takes backprop's step (autograd)."""
    model, x, y = mlp_problem()
    lr = 0.3
    runs = {mode: trained_on_one_batch(model, PredictiveCoding(variant="ipc", weight_updates=mode, inference_steps=1), x, y,
                                       CE, lr, tmp_path)[0] for mode in ("per_step", "per_batch")}
    torch.testing.assert_close(runs["per_step"], runs["per_batch"], rtol=0, atol=0)
    top = list(model.blocks[-1].parameters())
    top_grads = dict(zip(map(id, top), torch.autograd.grad(CE(model(x), y).mean(), top)))
    expected = flat([p.detach() - lr * top_grads[id(p)] if id(p) in top_grads else p.detach() for p in model.parameters()])
    torch.testing.assert_close(runs["per_step"], expected, rtol=1e-13, atol=1e-15)


def test_per_step_and_per_batch_differ_at_second_order_in_the_weight_learning_rate(tmp_path):
    """With plain SGD, per_batch takes lr times the sum of the T gradients at W_0; per_step takes them at W_t =
    W_0 + O(lr): the two weight changes differ by O(lr^2) (the gap falls 100 x when lr falls 10 x)."""
    model, x, y = mlp_problem(activation="tanh")
    start, gaps = flat(model.parameters()).detach(), {}
    for lr in (1e-2, 1e-3):
        moved = {mode: trained_on_one_batch(model, PredictiveCoding(variant="ipc", weight_updates=mode, inference_steps=5,
                                                                    inference_lr=0.3), x, y, CE, lr, tmp_path)[0] - start
                 for mode in ("per_step", "per_batch")}
        gaps[lr] = float((moved["per_step"] - moved["per_batch"]).norm() / moved["per_batch"].norm())
    assert gaps[1e-3] > 0
    assert 8 < gaps[1e-2] / gaps[1e-3] < 12, gaps  # relative gap O(lr): absolute O(lr^2)


def test_per_step_alignment_compares_the_summed_estimates_with_backprop_before_the_batch(tmp_path):
    """align/* under per_step: the sum of the T estimates against backprop at the batch's starting weights.
    With a vanishing weight lr the weights do not move, so it equals per_batch's alignment (one estimate, the
    same sum); the oracle for the sum itself is test_standard_and_ipc_updates_are_the_written_out_energy_gradients."""
    model, x, y = mlp_problem(activation="tanh")
    logged = {}
    for mode in ("per_step", "per_batch"):
        rule = PredictiveCoding(variant="ipc", weight_updates=mode, inference_steps=5, inference_lr=0.3)
        _, module = trained_on_one_batch(model, rule, x, y, CE, 1e-14, tmp_path, diagnostics_every_n_steps=1)
        logged[mode] = module.diagnostic_means()
    align = [k for k in logged["per_batch"] if k.startswith("align/")]
    assert "align/cos/all" in align and "align/cos/blocks.0" in align
    for key in align:
        assert math.isclose(logged["per_step"][key], logged["per_batch"][key], rel_tol=1e-9), key


def test_with_max_steps_the_schedule_spans_the_batches_that_run(tmp_path):
    """max_steps counts optimiser steps (T a batch under per_step), the scheduler steps once a batch: 6 steps of
    T = 3 are 2 batches, so a 2-step cosine ends at min_lr_ratio x lr (its closed form at progress 1)."""
    from learnbench.schedules import warmup_cosine

    torch.manual_seed(0)
    module = LearningRuleModule(MLP(2, 2, (8,), activation="tanh"),
                                PredictiveCoding(variant="ipc", weight_updates="per_step", inference_steps=3),
                                optimizer=partial(torch.optim.SGD, lr=0.1), scheduler=partial(warmup_cosine, min_lr_ratio=0.25))
    trainer = L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=SpiralDataModule(batch_size=32))
    assert trainer.global_step == 6
    assert math.isclose(module.optimizers().param_groups[0]["lr"], 0.1 * 0.25, rel_tol=1e-12)


def test_per_step_weight_updates_are_incremental_pc_only():
    with pytest.raises(ValueError, match="use it with variant=ipc"):
        PredictiveCoding(variant="standard", weight_updates="per_step")
    with pytest.raises(ValueError, match="weight_updates"):
        PredictiveCoding(variant="ipc", weight_updates="online")
    assert PredictiveCoding(variant="ipc", weight_updates="per_step", inference_steps=6).updates_per_batch == 6
    assert PredictiveCoding(variant="ipc", inference_steps=6).updates_per_batch == 1


# ------------------------------------------------------------------ two DDP processes
# pc and ipc (per_batch and per_step) are cases of tests/test_ddp_rules.py (ranks identical, equal to one process on
# the union batch; per_step: an all-reduce for every one of the T optimiser steps of a batch).


def test_the_energy_figure_starts_each_curve_at_the_batch_loss():
    """tools/pc_energy: at inference step 0 only the top term is non-zero, so E equals the batch's mean
    cross-entropy of the feed-forward output, recomputed here from the same batch (F.cross_entropy)."""
    from learnbench.tools import pc_energy

    torch.set_default_dtype(torch.float32)  # the tool's own setting (the fixture restores float64)
    curves = pc_energy.energy_curves(steps=2, at=[0, 1], rule_options=dict(inference_steps=3), lr=0.1)
    assert sorted(curves) == [0, 1] and all(len(c) == 4 for c in curves.values())
    torch.manual_seed(0)
    model = MLP(2, 2, (64, 64))
    x, y = SpiralDataModule().load_splits().train
    rows = torch.randint(0, len(x), (100,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = float(F.cross_entropy(model(x[rows]), y[rows]))
    assert math.isclose(curves[0][0], expected, rel_tol=1e-5)
    assert curves[0][-1] < curves[0][0]
