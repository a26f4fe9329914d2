"""experiment=akrout_mnist against Akrout et al.'s own code (makrout/Deep-Learning-without-Weight-Transport, fcnn/*.py).

Oracle: their training step, ported to float64 NumPy line by line (FCNN_BP.backpropagate / FCNN_FA.backpropagate and
the updates in FCNN_*.train: sigmoid outputs, `delta_cost = a - y`, del_w summed and del_b averaged over the batch,
W -= lr / batch * del_w, b -= lr / batch * del_b, KP's backward weights -= lr / batch * del_w.T), run from our
network's initial weights and feedback matrix on our first batches. Three steps of the suite's real training loop
(Lightning, the preset's options) must land on the same weights. Also the pieces' own closed forms: the per-class
sigmoid cross entropy and its derivative, the N(0, 1 / (fan_in + fan_out)) initialisation, the biases' lr group,
and the fixed batch order.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from conftest import compose_config
from learnbench.models.mlp import MLP
from learnbench.tasks import get_task
from learnbench.train import build

BATCH, STEPS = 32, 3


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def their_steps(weights, biases, backward, batches, lr, method):
    """FCNN_{BP,FA,KP}: `weights[l]` is (out, in), `backward` their backward_weights[-1] (in, out) of the readout."""
    weights, biases = [w.copy() for w in weights], [b.copy() for b in biases]
    backward = None if backward is None else backward.copy()
    for x, y in batches:  # x (784, B), y one-hot (10, B)
        z1 = weights[0] @ x + biases[0]
        a1 = sigmoid(z1)
        a2 = sigmoid(weights[1] @ a1 + biases[1])
        delta2 = a2 - y
        del_w2, del_b2 = delta2 @ a1.T, delta2.mean(axis=1, keepdims=True)
        feedback = weights[1].T if method == "bp" else backward
        delta1 = (feedback @ delta2) * sigmoid(z1) * (1 - sigmoid(z1))
        del_w1, del_b1 = delta1 @ x.T, delta1.mean(axis=1, keepdims=True)
        n = x.shape[1]
        weights = [w - lr / n * d for w, d in zip(weights, (del_w1, del_w2))]
        biases = [b - lr / n * d for b, d in zip(biases, (del_b1, del_b2))]
        if method == "kp":
            backward = backward - lr / n * del_w2.T
    return weights, biases, backward


@pytest.mark.parametrize("method", ["bp", "fa", "kp"])
def test_the_preset_steps_as_their_code(method, vision_data, tmp_path):
    root, _ = vision_data
    cfg = compose_config([
        "experiment=akrout_mnist", f"method={method}", f"paths.data_dir={root}", "data.val_size=40",
        f"data.batch_size={BATCH}", f"bias_lr_scale={1 / BATCH}", f"trainer.max_steps={STEPS}", "diagnostics.every_n_steps=0",
        "+trainer.limit_val_batches=1", "+trainer.enable_progress_bar=false", "+trainer.enable_checkpointing=false",
        "callbacks=none", "logger=csv",
    ], tmp_path)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, trainer, _ = build(cfg)
    blocks = module.model.blocks
    weights = [b.linear.weight.detach().double().numpy().copy() for b in blocks]
    biases = [b.linear.bias.detach().double().numpy()[:, None].copy() for b in blocks]
    backward = None if method == "bp" else module.rule.feedback[1].detach().double().numpy().T.copy()
    datamodule.setup("fit")
    batches = []
    for x, y in list(datamodule.train_dataloader())[:STEPS]:
        batches.append((x.flatten(1).double().numpy().T, np.eye(10)[y.numpy()].T))
    lr = cfg.optimizer.lr

    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == STEPS
    want_w, want_b, want_backward = their_steps(weights, biases, backward, batches, lr, method)
    for block, w, b in zip(blocks, want_w, want_b):
        np.testing.assert_allclose(block.linear.weight.detach().double().numpy(), w, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(block.linear.bias.detach().double().numpy(), b[:, 0], rtol=1e-4, atol=1e-7)
    if method == "kp":
        np.testing.assert_allclose(module.rule.feedback[1].detach().double().numpy().T, want_backward, rtol=1e-4, atol=1e-6)


def test_the_sigmoid_loss_is_their_cross_entropy_and_its_derivative_is_a_minus_y(float64):
    generator = torch.Generator().manual_seed(0)
    output = torch.randn(6, 10, generator=generator, requires_grad=True)
    target = torch.randint(0, 10, (6,), generator=generator)
    loss = get_task("classification_sigmoid").loss(output, target)
    a, y = torch.sigmoid(output), torch.nn.functional.one_hot(target, 10).double()
    torch.testing.assert_close(loss, (-y * torch.log(a) - (1 - y) * torch.log(1 - a)).sum(dim=1))
    (grad,) = torch.autograd.grad(loss.sum(), output)
    torch.testing.assert_close(grad, a.detach() - y)


def test_normal_fan_sum_draws_weights_and_biases_at_their_scale():
    torch.manual_seed(0)
    model = MLP(784, 10, hidden_sizes=[500], activation="sigmoid", init="normal_fan_sum")
    for block, fan_sum in zip(model.blocks, (784 + 500, 500 + 10)):
        for tensor in (block.linear.weight, block.linear.bias):
            n = tensor.numel()
            # The sample std of n normals: relative standard error 1 / sqrt(2 n); 5 of them.
            assert abs(tensor.std().item() * fan_sum**0.5 - 1) < 5 / (2 * n) ** 0.5


def test_the_biases_step_at_their_own_lr_and_a_fixed_order_repeats(vision_data, tmp_path):
    root, _ = vision_data
    cfg = compose_config(["experiment=akrout_mnist", "method=bp", f"paths.data_dir={root}", "data.val_size=40", "logger=csv"], tmp_path)
    datamodule, module, trainer, _ = build(cfg)
    groups = {g["name"]: g for g in module.configure_optimizers().param_groups}
    biases = {id(b.linear.bias) for b in module.model.blocks}
    assert {id(p) for p in groups["model_biases"]["params"]} == biases
    assert groups["model_biases"]["lr"] == pytest.approx(0.2 / 128) and groups["model"]["lr"] == 0.2
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    first = [y.clone() for _, y in loader]
    loader.set_epoch(1)
    assert all(torch.equal(a, b) for a, b in zip(first, [y for _, y in loader]))
