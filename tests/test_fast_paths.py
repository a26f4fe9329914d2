"""Activity and weight forward gradients on chains of blocks against autograd oracles (float64), on
an MLP and a conv net; and fg_w's block walk against its general torch.func path (two implementations
kept: docs/speed.md says what the walk saves)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import estimate
from learnbench.tasks import per_example_loss
from learnbench.models import CNN, MLP
from learnbench.catalog import rule_from_config

pytestmark = pytest.mark.usefixtures("float64")


def CE(o, t):
    return per_example_loss("classification", o, t)


class NotAChain(nn.Module):
    """The same network behind a forward of its own: rules must treat it as an arbitrary model."""

    def __init__(self, chain):
        super().__init__()
        self.chain = chain

    def forward(self, x):
        return self.chain.blocks(x)


def make(method, overrides):
    return rule_from_config(method, table_size=0, **overrides)


def problem(name):
    """Built inside the test, under the float64 fixture."""
    torch.manual_seed(0)
    if name == "mlp":
        return MLP(5, 3, (7, 6)), torch.randn(8, 5), torch.randint(0, 3, (8,))
    return CNN((2, 8, 8), 3, channels=(3, 4), kernel_sizes=(3, 3), hidden_sizes=(5,)), torch.randn(6, 2, 8, 8), torch.randint(0, 3, (6,))


def pre_activation_gradients(model, x, y):
    """The autograd oracle of the activity rules: (per-example dL_i/da_l for every block's pre-activation,
    the pre-activations, each block's input), from a zero offset on every pre-activation with the blocks'
    parts called by hand; examples are independent, so row i of the batch-sum's gradient is dL_i/da."""
    offsets, pre, inputs, z = [], [], [], x
    for block in model.blocks:
        z = block.prepare(z)
        a = block.norm(block.linear(z))
        offsets.append(torch.zeros_like(a, requires_grad=True))
        inputs.append(z)
        pre.append(a.detach())
        z = block.pool(block.activation(a + offsets[-1]))
    return torch.autograd.grad(CE(z, y).sum(), offsets), pre, inputs


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("overrides", [{}, {"directions": 3}], ids=["K1", "K3"])
def test_fg_w_walk_equals_the_general_torch_func_path(name, overrides):
    model, x, y = problem(name)
    general = NotAChain(model)
    g_walk, out_walk = estimate(make("fg_w", overrides), model, x, y, CE, seed=0, step=3)
    g_general, out_general = estimate(make("fg_w", overrides), general, x, y, CE, seed=0, step=3)
    torch.testing.assert_close(out_walk.loss, out_general.loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_walk, g_general, rtol=1e-9, atol=1e-9)
    assert g_walk.abs().sum() > 0


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("overrides", [{}, {"directions": 3}, {"mask_inactive": False}], ids=["K1", "K3", "unmasked"])
def test_fg_a_equals_its_definition_computed_by_autograd(name, overrides):
    """Oracle: per-example dL_i/da_l by autograd (a zero offset on every pre-activation, the blocks'
    parts called by hand), d_i = sum_l <dL_i/da_l, u_l,i> with the rule's tangents u, delta = d u / (K B),
    and each block's gradient by autograd through that block alone."""
    model, x, y = problem(name)
    rule = make("fg_a", overrides)
    got, _ = estimate(rule, model, x, y, CE, seed=0, step=3)
    K, B = rule.directions, len(x)
    rule.begin_step(3)  # the same tangents again
    per_example, pre, inputs = pre_activation_gradients(model, x, y)
    shapes = [tuple(a.shape[1:]) for a in pre]
    u = [n.view(K, B, *s) for n, s in zip(rule.sample_site_noise(K * B, shapes, x.dtype), shapes)]
    if rule.mask_inactive:
        u = [n * (a > 0) if isinstance(b.activation, nn.ReLU) else n for n, a, b in zip(u, pre, model.blocks)]
    d = sum((g.unsqueeze(0) * n).flatten(2).sum(-1) for g, n in zip(per_example, u))  # [K, B]
    expected = []
    for block, z_in, n in zip(model.blocks, inputs, u):
        delta = (d.view(K, B, *[1] * (n.dim() - 2)) * n).sum(0) / (K * B)
        expected += [g.reshape(-1) for g in torch.autograd.grad(block.norm(block.linear(z_in)), list(block.parameters()), delta)]
    torch.testing.assert_close(got, torch.cat(expected), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_np_approaches_fg_a_on_the_same_noise_on_conv_nets_too(name):
    model, x, y = problem(name)
    """NP's (dL / sigma) v -> FG-A's (grad . v) v as sigma -> 0 (first order), unmasked tangents."""
    fg_a, _ = estimate(make("fg_a", {"mask_inactive": False}), model, x, y, CE, seed=0, step=3)
    gaps = [((estimate(make("np", {"sigma": s}), model, x, y, CE, seed=0, step=3)[0] - fg_a).norm() / fg_a.norm()).item()
            for s in (1e-3, 1e-5)]
    assert gaps[1] < 1e-3 and gaps[1] < gaps[0] / 20, gaps
