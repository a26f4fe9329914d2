"""The feedback-alignment family against independent oracles (float64): backprop by autograd where the
feedback is made equal to the forward weights, the closed form of Kolen-Pollack's decay, and the conv
local update against autograd's kernel gradient."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from torch import nn

from learnbench.data import SpiralDataModule
from learnbench.tasks import per_example_loss
from learnbench.models import CNN, MLP, LeNet
from learnbench.module import LearningRuleModule
from learnbench.rules import DirectFeedbackAlignment, FeedbackAlignment, KolenPollack, SignSymmetry
from learnbench.rules.local import forward_trace, local_update

pytestmark = pytest.mark.usefixtures("float64")
CE = partial(per_example_loss, "classification")


def grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def backprop(model, x, y) -> list[torch.Tensor]:
    return list(torch.autograd.grad(CE(model(x), y).mean(), list(model.parameters())))


def run_rule(rule, model, x, y):
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    rule.begin_step(0)
    for p in model.parameters():
        p.grad = None
    rule.estimate_grads(model, x, y, CE)
    return grads(model)


def assert_all_close(got, expected, **kw):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **kw)


def mlp_problem(sizes=(7, 6)):
    torch.manual_seed(0)
    return MLP(5, 3, sizes, activation="tanh"), torch.randn(9, 5), torch.randint(0, 3, (9,))


def lenet_problem():
    torch.manual_seed(0)
    return LeNet((1, 28, 28), 10), torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))


@pytest.mark.parametrize("problem", [mlp_problem, lenet_problem], ids=["mlp", "lenet"])
def test_fa_with_feedback_equal_to_the_forward_weights_is_backprop(problem):
    model, x, y = problem()
    rule = FeedbackAlignment()
    rule.bind(model, seed=0)
    for i, b in rule.feedback.items():
        b.copy_(model.blocks[i].linear.weight.detach())
    assert_all_close(run_rule(rule, model, x, y), backprop(model, x, y), rtol=1e-12, atol=1e-14)


def test_fa_with_random_feedback_differs_from_backprop_below_the_readout():
    """The oracle above is not vacuous: random B changes every gradient but the readout's."""
    model, x, y = mlp_problem()
    got, true = run_rule(FeedbackAlignment(), model, x, y), backprop(model, x, y)
    torch.testing.assert_close(got[-2:], true[-2:], rtol=1e-12, atol=1e-14)  # readout weight and bias: exact
    assert (got[0] - true[0]).abs().max() > 1e-3


def test_dfa_with_one_hidden_layer_and_feedback_equal_to_the_readout_is_backprop():
    model, x, y = mlp_problem(sizes=(7,))
    rule = DirectFeedbackAlignment()
    rule.bind(model, seed=0)
    rule.feedback[0].copy_(model.blocks[1].linear.weight.detach())  # e B_1 = e W_2 = dL/dz_1
    assert_all_close(run_rule(rule, model, x, y), backprop(model, x, y), rtol=1e-12, atol=1e-14)


def test_dfa_sends_the_output_error_to_every_block_directly():
    """Independent oracle on 2 hidden layers: delta_l = (e B_l) * tanh'(a_l), dW_l = delta_l^T z_l by hand."""
    model, x, y = mlp_problem()
    rule = DirectFeedbackAlignment()
    got = run_rule(rule, model, x, y)
    with torch.no_grad():
        z, zs, As = x, [], []
        for block in model.blocks:
            zs.append(z)
            a = block.linear(z)
            As.append(a)
            z = block.activation(a)
        e = torch.softmax(z, 1) - nn.functional.one_hot(y, 3)
        e = e / len(x)
        expected = []
        for i in range(2):
            delta = (e @ rule.feedback[i]) * (1 - torch.tanh(As[i]) ** 2)
            expected += [delta.T @ zs[i], delta.sum(0)]
        expected += [e.T @ zs[2], e.sum(0)]
    assert_all_close(got, expected, rtol=1e-12, atol=1e-14)


def test_usf_on_weights_of_magnitude_c_is_backprop_scaled_by_c():
    """sign(W) = W / c: each block's gradient is backprop's divided by c once per block the error crosses."""
    model, x, y = mlp_problem()
    c = 0.3
    with torch.no_grad():
        for block in model.blocks:
            w = block.linear.weight
            w.copy_(c * torch.where(torch.rand_like(w) < 0.5, -1.0, 1.0))
    got, true = run_rule(SignSymmetry("usf"), model, x, y), backprop(model, x, y)
    n_blocks = len(model.blocks)
    for i in range(n_blocks):
        crossings = n_blocks - 1 - i
        for g, t in zip(got[2 * i : 2 * i + 2], true[2 * i : 2 * i + 2]):
            torch.testing.assert_close(g, t / c**crossings, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("variant", ["brsf", "frsf"])
def test_random_magnitude_sign_symmetry_keeps_the_signs_of_w(variant):
    model, x, y = mlp_problem()
    rule = SignSymmetry(variant)
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    rule.begin_step(0)
    for i, block in enumerate(model.blocks):
        if i:
            b = rule.feedback_for(i, block)
            assert torch.equal(torch.sign(b), torch.sign(block.linear.weight)) and not torch.equal(b.abs(), torch.ones_like(b))
    rule.begin_step(1)
    again = rule.feedback_for(1, model.blocks[1]).clone()  # brsf reuses its buffer: B is valid for one step
    rule.begin_step(0)
    first = rule.feedback_for(1, model.blocks[1])
    assert torch.equal(first, again) == (variant == "frsf")  # brsf: new magnitudes every batch


class FeedbackDistance(L.Callback):
    def __init__(self):
        self.distances = []

    def on_train_batch_end(self, trainer, module, *args):
        self.distances.append(kp_distance(module))


def kp_distance(module) -> float:
    return sum(float((b - module.model.blocks[i].linear.weight).pow(2).sum()) for i, b in module.rule.feedback.items()) ** 0.5


def test_kolen_pollack_feedback_converges_to_w_at_the_closed_form_rate(tmp_path):
    """Plain SGD (lr eta) through the real training loop, decay lambda: ||B_t - W_t|| = (1 - eta lambda)^t ||B_0 - W_0||."""
    eta, decay, steps = 0.5, 0.2, 12
    torch.manual_seed(0)
    module = LearningRuleModule(MLP(2, 2, (16, 16)), KolenPollack(decay=decay), optimizer=partial(torch.optim.SGD, lr=eta))
    start = kp_distance(module)
    recorder = FeedbackDistance()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[recorder], default_root_dir=tmp_path)
    trainer.fit(module, datamodule=SpiralDataModule(batch_size=32))
    expected = [start * (1 - eta * decay) ** t for t in range(1, steps + 1)]
    torch.testing.assert_close(torch.tensor(recorder.distances), torch.tensor(expected), rtol=1e-10, atol=0)
    assert start > 1.0  # B starts far from W


def kp_sgd_steps(model, rule, x, y, eta, steps) -> list[list[tuple[torch.Tensor, ...]]]:
    """Plain SGD on the model's and the rule's parameters, `steps` times on one batch; per step (from the
    start), per block: (W, b, B or None), cloned."""
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    params = [*model.parameters(), *rule.extra_parameters()]
    optimizer = torch.optim.SGD(params, lr=eta)

    def snapshot():
        feedback = dict(rule.feedback.items())
        return [(b.linear.weight.detach().clone(), b.linear.bias.detach().clone(),
                 feedback[i].detach().clone() if i in feedback else None) for i, b in enumerate(model.blocks)]

    history = [snapshot()]
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        rule.begin_step(step)
        rule.estimate_grads(model, x, y, CE)
        optimizer.step()
        history.append(snapshot())
    return history


def hand_kp_weight_grads(layers, x, y, decay) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Kolen-Pollack's (dL/dW + lambda W, dL/db) per layer of a tanh MLP, written out: the output error
    softmax - onehot (mean over the batch) goes down through B_l in place of W_l, and every W decays."""
    zs, hs, z = [], [], x
    for weight, bias, _ in layers:
        zs.append(z)
        hs.append(z @ weight.T + bias)
        z = torch.tanh(hs[-1])
    delta = (torch.softmax(hs[-1], 1) - nn.functional.one_hot(y, hs[-1].shape[1])) / len(x)
    grads = []
    for l in reversed(range(len(layers))):
        weight, _, _ = layers[l]
        grads.append((delta.T @ zs[l] + decay * weight, delta.sum(0)))
        if l > 0:
            feedback = layers[l][2]
            delta = (delta @ feedback) * (1 - torch.tanh(hs[l - 1]) ** 2)
    return grads[::-1]


def test_kolen_pollack_every_layer_w_minus_b_decays_geometrically_and_the_first_w_decays():
    """Plain SGD (lr eta), decay lambda: W_t - B_t = (1 - eta lambda)^t (W_0 - B_0) for every block with a B
    (B has W's shape here; the papers' W - B^T), and every W's update, the first block's (no B) included, is
    -eta (dL/dW through B + lambda W), against the rule written out by hand."""
    eta, decay, steps = 0.3, 0.25, 6
    model, x, y = mlp_problem()
    history = kp_sgd_steps(model, KolenPollack(decay=decay), x, y, eta, steps)
    start = history[0]
    assert start[0][2] is None and all(B is not None for _, _, B in start[1:])
    for t, layers in enumerate(history):
        for (W, _, B), (W0, _, B0) in zip(layers[1:], start[1:]):
            torch.testing.assert_close(W - B, (1 - eta * decay) ** t * (W0 - B0), rtol=1e-12, atol=1e-12)
    for before, after in zip(history[:-1], history[1:]):
        for (W, b, _), (W_next, b_next, _), (dW, db) in zip(before, after, hand_kp_weight_grads(before, x, y, decay)):
            torch.testing.assert_close(W_next, W - eta * dW, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(b_next, b - eta * db, rtol=1e-12, atol=1e-12)
    first_w_drift = history[-1][0][0] - start[0][0]
    assert first_w_drift.abs().max() > 1e-3  # the first W moved, so its check above had something to check


def test_kolen_pollack_feedback_is_a_rule_parameter_in_the_optimiser_and_checkpoint():
    module = LearningRuleModule(MLP(2, 2, (4,)), KolenPollack(), optimizer=partial(torch.optim.SGD, lr=0.1))
    (feedback,) = module.rule.extra_parameters()
    assert any(t is feedback for t in module.trained_parameters())
    assert "rule.feedback.1" in module.state_dict()
    assert not FeedbackAlignment().extra_parameters()


def test_conv_local_update_equals_autograd_kernel_gradient():
    """For any delta at a conv block's pre-activation, the local update equals autograd's parameter gradient."""
    torch.manual_seed(1)
    model = CNN((2, 9, 9), 3, channels=(4, 5), kernel_sizes=(3, 3), hidden_sizes=(6,))
    x = torch.randn(5, 2, 9, 9)
    traces, _, _ = forward_trace(model, x)
    for block, trace in zip(model.blocks, traces):
        delta = torch.randn_like(trace.pre_activation)
        oracle = torch.autograd.grad(block.norm(block.linear(trace.input)), list(block.parameters()), delta)
        with torch.no_grad():
            local_update(block, trace, delta)
        assert_all_close([p.grad for p in block.parameters()], list(oracle), rtol=1e-12, atol=1e-13)


def test_a_rule_refuses_a_model_that_is_not_a_chain_of_blocks():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 2)

        def forward(self, x):
            return self.layer(x)

    for rule in (FeedbackAlignment(), DirectFeedbackAlignment(), KolenPollack(), SignSymmetry()):
        with pytest.raises(ValueError, match="model=mlp, autoencoder, lenet or cnn"):
            rule.bind(Custom(), seed=0)


def test_usf_matched_to_the_weight_scale_is_backprop_on_weights_of_magnitude_c():
    """sign(W) x mean|W| = W when every |W| = c: the backward pass is backprop's exactly."""
    model, x, y = mlp_problem()
    with torch.no_grad():
        for block in model.blocks:
            w = block.linear.weight
            w.copy_(0.3 * torch.where(torch.rand_like(w) < 0.5, -1.0, 1.0))
    assert_all_close(run_rule(SignSymmetry("usf", match_weight_scale=True), model, x, y), backprop(model, x, y), rtol=1e-11, atol=1e-13)
