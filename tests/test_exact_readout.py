"""`exact_readout` for the perturbation rules (fg_a, np; fg_w, wp): the readout takes its exact gradient and no
noise, as in Ren et al.'s code (`global_classif_grad` on the last layer). Oracles in float64: the rule's
definition computed by autograd with the readout's tangent removed, and backprop's own gradient of the
readout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import CLASSIFICATION_LOSS, estimate
from learnbench.catalog import comparable_rules, method_config, rule_from_config
from learnbench.models import MLP
from learnbench.models.rnn import RNN
from test_fast_paths import CE, make, pre_activation_gradients, problem

pytestmark = pytest.mark.usefixtures("float64")

#: The rules that have the option (a new one joins the tests that run every such rule).
EXACT_READOUT = [m for m in comparable_rules("feedforward") if "exact_readout" in method_config(m)]


def backprop_grads(model, x, y):
    for p in model.parameters():
        p.grad = None
    CE(model(x), y).mean().backward()
    return [p.grad.clone() for p in model.parameters()]


def readout_slice(model):
    """Where the readout's parameters sit in the flattened gradient vector."""
    sizes = [p.numel() for p in model.parameters()]
    tail = sum(p.numel() for p in model.blocks[-1].parameters())
    return slice(sum(sizes) - tail, sum(sizes))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("overrides", [{}, {"directions": 3}], ids=["K1", "K3"])
def test_fg_a_exact_readout_equals_its_definition_computed_by_autograd(name, overrides):
    """d_i = sum over the hidden blocks of <dL_i/da_l, u_l,i> (the readout's tangent is gone), the hidden
    blocks' deltas d u / (K B); the readout's delta is dL/da_out of the batch-mean loss."""
    model, x, y = problem(name)
    rule = make("fg_a", {**overrides, "exact_readout": True})
    got, _ = estimate(rule, model, x, y, CE, seed=0, step=3)
    K, B = rule.directions, len(x)
    rule.begin_step(3)  # the same tangents again
    per_example, pre, inputs = pre_activation_gradients(model, x, y)
    shapes = [tuple(a.shape[1:]) for a in pre]
    u = [n.view(K, B, *s) * (a > 0) if isinstance(b.activation, nn.ReLU) else n.view(K, B, *s)
         for n, s, a, b in zip(rule.sample_site_noise(K * B, shapes, x.dtype), shapes, pre, model.blocks)]
    d = sum((g.unsqueeze(0) * n).flatten(2).sum(-1) for g, n in zip(per_example[:-1], u[:-1]))  # [K, B]
    deltas = [(d.view(K, B, *[1] * (n.dim() - 2)) * n).sum(0) / (K * B) for n in u[:-1]] + [per_example[-1] / B]
    expected = []
    for block, z_in, delta in zip(model.blocks, inputs, deltas):
        expected += [g.reshape(-1) for g in torch.autograd.grad(block.norm(block.linear(z_in)), list(block.parameters()), delta)]
    torch.testing.assert_close(got, torch.cat(expected), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method, overrides", [("fg_a", {}), ("np", {}), ("np", {"antithetic": True, "baseline": "none"}),
                                               ("np", {"baseline": "running"}), ("fg_a", {"directions": 4}),
                                               ("fg_w", {}), ("wp", {}), ("wp", {"antithetic": True}), ("wp", {"directions": 4})])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_the_readout_gradient_is_backprops_and_the_hidden_ones_are_not(method, overrides, name):
    model, x, y = problem(name)
    got, _ = estimate(make(method, {**overrides, "exact_readout": True}), model, x, y, CE, seed=0, step=3)
    bp = torch.cat([g.reshape(-1) for g in backprop_grads(model, x, y)])
    out = readout_slice(model)
    torch.testing.assert_close(got[out], bp[out], rtol=1e-10, atol=1e-12)
    hidden = slice(0, out.start)
    assert (got[hidden] - bp[hidden]).norm() > 1e-3 * bp[hidden].norm()  # still an estimate there


@pytest.mark.parametrize("difference, exact, overrides, name", [
    ("np", "fg_a", {"mask_inactive": False}, "mlp"), ("np", "fg_a", {"mask_inactive": False}, "cnn"), ("wp", "fg_w", {}, "mlp")])
def test_the_finite_difference_approaches_the_forward_gradient_with_exact_readout(difference, exact, overrides, name):
    """NP's (dL / sigma) v -> FG-A's (grad . v) v and WP's -> FG-W's as sigma -> 0, the readout's noise
    dropped on both sides."""
    model, x, y = problem(name)
    fg, _ = estimate(make(exact, {**overrides, "exact_readout": True}), model, x, y, CE, seed=0, step=3)
    gaps = [((estimate(make(difference, {"sigma": s, "exact_readout": True}), model, x, y, CE, seed=0, step=3)[0] - fg).norm()
             / fg.norm()).item()
            for s in (1e-3, 1e-5)]
    assert gaps[1] < 1e-3 and gaps[1] < gaps[0] / 20, gaps


def test_the_hidden_draws_are_those_of_the_rule_without_the_option():
    """Dropping the readout's noise changes no hidden draw: runs with and without the option are paired."""
    model, x, y = problem("mlp")
    plain, option = make("fg_a", {}), make("fg_a", {"exact_readout": True})
    for rule in (plain, option):
        rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
        rule.begin_step(5)
    shapes = [(7,), (6,), (3,)]
    a = plain.sample_site_noise(len(x), shapes, x.dtype)
    b = option.drop_readout_noise(option.sample_site_noise(len(x), shapes, x.dtype))
    torch.testing.assert_close(a[:2], b[:2], rtol=0, atol=0)
    assert b[2].abs().sum() == 0 and a[2].abs().sum() > 0


@pytest.mark.parametrize("method", EXACT_READOUT)
def test_the_shared_noise_table_is_not_written(method):
    """The readout's noise may be a view of the noise table: it is replaced, never zeroed in place."""
    model, x, y = problem("mlp")
    rule = rule_from_config(method, table_size=4096, exact_readout=True)
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    for step in range(6):
        if step == 1:
            table = rule.noise.table.clone()
        rule.begin_step(step)
        rule.estimate_grads(model, x, y, CE)
    assert table.numel() == 4096 and torch.equal(rule.noise.table, table)


def test_bad_combinations_are_refused_with_what_to_change():
    with pytest.raises(Exception, match="baseline=clean or running"):  # through Hydra's instantiate
        rule_from_config("np", exact_readout=True, baseline="none")
    rnn = RNN(2, 1, hidden_size=4)
    for method in ("np", "fg_a"):
        with pytest.raises(ValueError, match="exact_readout=false"):
            rule_from_config(method, exact_readout=True).check_model(rnn)
    rule_from_config("fg_a", exact_readout=True).check_model(MLP(3, 2, (4,)))


# ---- the weight-space rules (fg_w, wp): the readout's parameters take no direction and their exact gradient


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("overrides", [{}, {"directions": 3}], ids=["K1", "K3"])
def test_fg_w_exact_readout_equals_its_definition_computed_by_autograd(name, overrides):
    """g = (1/K) sum_k (grad_hidden . v_k,hidden) v_k on the hidden parameters, with the rule's own
    directions (drawn again from the same step's generator); the readout's gradient is backprop's."""
    model, x, y = problem(name)
    rule = make("fg_w", {**overrides, "exact_readout": True})
    got, _ = estimate(rule, model, x, y, CE, seed=0, step=3)
    bp = torch.cat([g.reshape(-1) for g in backprop_grads(model, x, y)])
    out = readout_slice(model)
    rule.begin_step(3)
    v = rule.noise.sample(bp.numel(), rule.directions, rule.generator, x.dtype).clone()
    v[:, out] = 0
    expected = (v @ bp / rule.directions) @ v
    expected[out] = bp[out]
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_weight_space_bad_combinations_are_refused_with_what_to_change():
    for method in ("fg_w", "wp"):
        with pytest.raises(Exception, match="comm=grads"):
            rule_from_config(method, exact_readout=True, comm="scalars")
        with pytest.raises(ValueError, match="exact_readout=true"):
            rule_from_config(method, exact_readout=True).check_model(RNN(2, 1, hidden_size=4))
        bn = MLP(3, 2, (4,))
        bn.blocks[0].norm = nn.BatchNorm1d(4)
        with pytest.raises(ValueError, match="BatchNorm"):
            rule_from_config(method, exact_readout=True).check_model(bn)
        rule_from_config(method, exact_readout=True).check_model(MLP(3, 2, (4,)))


@pytest.mark.parametrize("method", EXACT_READOUT)
def test_with_the_tasks_own_cross_entropy_the_readout_is_still_backprops(method):
    """The training module's loss (the classification task's cross entropy) takes the written-out softmax -
    onehot path for the readout's error where a rule has one; the gradient is backprop's all the same."""
    model, x, y = problem("mlp")
    estimate(make(method, {"exact_readout": True}), model, x, y, CLASSIFICATION_LOSS, seed=0, step=3)
    got = [p.grad.clone() for p in model.blocks[-1].parameters()]
    for p in model.parameters():
        p.grad = None
    CLASSIFICATION_LOSS(model(x), y).mean().backward()
    for g, p in zip(got, model.blocks[-1].parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-12)
