"""Backprop through the rule interface writes exactly autograd's gradients (float64).

The oracle is torch.autograd's `backward()` on an independent copy of the model, with the loss
written out here by hand (cross-entropy via log_softmax, reconstruction MSE), never the suite's
own loss function.
"""

from __future__ import annotations

import copy
from functools import partial

import lightning as L
import pytest
import torch
from torch import nn

from learnbench.data import SpiralDataModule
from learnbench.tasks import per_example_loss
from learnbench.models import MLP, Autoencoder
from learnbench.module import LearningRuleModule
from learnbench.rules import Backprop


pytestmark = pytest.mark.usefixtures("float64")  # conftest: exact float64 oracles


def oracle_loss(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if task == "classification":
        return -output.log_softmax(dim=1).gather(1, target[:, None]).mean()
    return ((output - target.flatten(1)) ** 2).mean()


def problem(task: str, layer_norm: bool, seed: int = 0):
    torch.manual_seed(seed)
    if task == "classification":
        model = MLP(12, 5, hidden_sizes=(9, 7), activation="tanh", layer_norm=layer_norm)
        x, y = torch.randn(16, 12), torch.randint(0, 5, (16,))
    else:
        model = Autoencoder(12, 12, encoder_sizes=(8,), bottleneck=3, activation="gelu", layer_norm=layer_norm)
        x = torch.randn(16, 12)
        y = x
    # Non-default LayerNorm affine parameters, so their gradients are not trivially symmetric.
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            nn.init.normal_(module.weight, 1.0, 0.3)
            nn.init.normal_(module.bias, 0.0, 0.3)
    return model, x, y


@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layernorm"])
@pytest.mark.parametrize("task", ["classification", "reconstruction"])
def test_backprop_rule_writes_autograd_gradients(task, layer_norm):
    model, x, y = problem(task, layer_norm)
    reference = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    out = Backprop().estimate_grads(model, x, y, partial(per_example_loss, task))

    expected_loss = oracle_loss(task, reference(x), y)
    expected_loss.backward()
    expected = dict(reference.named_parameters())
    named = dict(model.named_parameters())
    assert named.keys() == expected.keys()
    if layer_norm:
        assert any("norm.weight" in k for k in named), "the LayerNorm parameters must be among those checked"
    for name, p in named.items():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.dtype == torch.float64
        torch.testing.assert_close(p.grad, expected[name].grad, rtol=1e-12, atol=1e-14, msg=name)
    torch.testing.assert_close(out.loss, expected_loss.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(out.output, reference(x).detach(), rtol=0, atol=0)
    # A rule only writes gradients: it never steps.
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the rule changed {k}"


def test_backprop_leaves_frozen_parameters_alone():
    model, x, y = problem("classification", layer_norm=False)
    frozen = model.blocks[0].linear.weight
    frozen.requires_grad_(False)
    Backprop().estimate_grads(model, x, y, partial(per_example_loss, "classification"))
    assert frozen.grad is None
    reference = copy.deepcopy(model)
    oracle_loss("classification", reference(x), y).backward()
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14, msg=name)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layernorm"])
def test_training_module_takes_one_exact_sgd_step(layer_norm, tmp_path):
    """Through Lightning and LearningRuleModule: after one step, theta_1 = theta_0 - lr * dL/dtheta_0."""
    torch.manual_seed(3)
    # The whole training set in one batch: the (shuffled) order cannot change the batch's mean loss.
    data = SpiralDataModule(train_per_arm=20, val_per_arm=5, test_per_arm=5, batch_size=40, eval_batch_size=10)
    data.setup()
    x, y = data.splits.train
    x = x.double()
    model = MLP(2, 2, hidden_sizes=(8, 8), activation="tanh", layer_norm=layer_norm)
    theta0 = copy.deepcopy(model)
    lr = 0.05
    module = LearningRuleModule(model, Backprop(), optimizer=partial(torch.optim.SGD, lr=lr), task="classification")
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=1, precision="64-true", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 1

    oracle_loss("classification", theta0(x), y).backward()
    for (name, p), q in zip(module.model.named_parameters(), theta0.parameters()):
        torch.testing.assert_close(p.detach(), q.detach() - lr * q.grad, rtol=1e-12, atol=1e-14, msg=name)
