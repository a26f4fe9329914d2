"""fg_w's chain walk with LayerNorm's own parameters, and wp's batched K-direction walk, against oracles
(float64): torch.func.jvp through functional_call for fg_w's directional derivatives, K separate
perturbed forwards through functional_call for wp's losses, and each rule's general path (the model
behind a forward of its own) for the whole estimate on the same noise draw."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jvp

from learnbench.catalog import rule_from_config
from learnbench.models import MLP
from learnbench.rules.noise import NoiseSource
from learnbench.rules.perturbation import forward_gradient_weight as fgw_module
from learnbench.rules.perturbation import weight_perturbation as wp_module
from conftest import estimate
from test_fast_paths import CE, NotAChain

pytestmark = pytest.mark.usefixtures("float64")


MODELS = {
    "layer_norm": dict(layer_norm=True),
    "layer_norm_tanh": dict(layer_norm=True, activation="tanh"),
    "no_norm": dict(),
    "no_norm_tanh": dict(activation="tanh"),
    "layer_norm_no_bias": dict(layer_norm=True, bias=False),
    "grouped": dict(groups=[1, 2]),  # grouped 1x1 convolutions, no norm: the walk covers them
    "grouped_layer_norm": dict(groups=[1, 2], layer_norm=True),  # GroupNorm learns: its tangents written out too (group_norm_jvp)
}
FG_W_WALKS = {name: True for name in MODELS}  # every norm here is covered by the walk (a BatchNorm would not be)


def problem(name, seed=0):
    torch.manual_seed(seed)
    model = MLP(5, 3, (6, 8), **MODELS[name])
    with torch.no_grad():  # LayerNorm / GroupNorm parameters away from their 1 / 0 initialisation
        for n, p in model.named_parameters():
            if n.split(".")[-2] == "norm":
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if n.endswith("weight") else 0.0))
    return model, torch.randn(7, 5), torch.randint(0, 3, (7,))


def params_and_tangents(model, K, seed=5):
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    g = torch.Generator().manual_seed(seed)
    return params, {n: torch.randn(K, *p.shape, generator=g) for n, p in params.items()}


def forbid(monkeypatch, module, name):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{module.__name__}.{name} called: the walk was not taken")

    monkeypatch.setattr(module, name, refuse)


def counting(monkeypatch, module, name):
    calls, original = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


# ----------------------------------------------------------------------------- fg_w


@pytest.mark.parametrize("K", [1, 4])
@pytest.mark.parametrize("name", list(MODELS))
def test_fg_w_walk_equals_torch_func_jvp(name, K, monkeypatch):
    model, x, y = problem(name)
    params, tangents = params_and_tangents(model, K)

    def loss(p):
        return CE(functional_call(model, p, (x,)), y).mean()

    expected = torch.stack([jvp(loss, (params,), ({n: t[k] for n, t in tangents.items()},))[1] for k in range(K)])
    expected_loss = loss(params)
    if FG_W_WALKS[name]:
        forbid(monkeypatch, fgw_module, "jvp")
    else:
        calls = counting(monkeypatch, fgw_module, "jvp")
    rule = rule_from_config("fg_w", directions=K, table_size=0)
    got_loss, output, d = rule.directional_derivatives(model, params, tangents, x, y, CE)
    torch.testing.assert_close(d, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_loss, expected_loss, rtol=1e-12, atol=1e-14)
    if FG_W_WALKS[name]:
        torch.testing.assert_close(output, model(x), rtol=0, atol=0)
    else:
        assert calls, "a norm the walk does not cover should take torch.func's jvp"
    assert d.abs().sum() > 0


def test_fg_w_walk_carries_the_tangents_of_layer_norm_parameters_alone(monkeypatch):
    """Linear layers frozen, only the LayerNorms learn: the walk starts a tangent at the norm (zero dh)."""
    model, x, y = problem("layer_norm")
    for block in model.blocks:
        block.linear.requires_grad_(False)
    params, tangents = params_and_tangents(model, 3)
    assert set(n.split(".")[-2] for n in tangents) == {"norm"}

    def loss(p):
        return CE(functional_call(model, p, (x,)), y).mean()

    expected = torch.stack([jvp(loss, (params,), ({n: t[k] for n, t in tangents.items()},))[1] for k in range(3)])
    forbid(monkeypatch, fgw_module, "jvp")
    _, _, d = rule_from_config("fg_w", directions=3, table_size=0).directional_derivatives(model, params, tangents, x, y, CE)
    torch.testing.assert_close(d, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("table_size", [0, 4000], ids=["fresh", "table"])
@pytest.mark.parametrize("K", [1, 4])
@pytest.mark.parametrize("name", ["layer_norm", "layer_norm_tanh", "no_norm", "grouped", "grouped_layer_norm"])
def test_fg_w_estimate_equals_the_jvp_path(name, K, table_size, monkeypatch):
    """The whole estimate (the rule's own noise draw, same seed and step) is the general path's."""
    model, x, y = problem(name)
    g_general, out_general = estimate(rule_from_config("fg_w", directions=K, table_size=table_size), NotAChain(model), x, y, CE, seed=0, step=3)
    if FG_W_WALKS[name]:
        forbid(monkeypatch, fgw_module, "jvp")
    g_walk, out_walk = estimate(rule_from_config("fg_w", directions=K, table_size=table_size), model, x, y, CE, seed=0, step=3)
    torch.testing.assert_close(g_walk, g_general, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out_walk.loss, out_general.loss, rtol=1e-12, atol=1e-12)
    assert g_walk.abs().sum() > 0


# ----------------------------------------------------------------------------- wp


WP_WALKS = {name: not name.startswith("grouped") for name in MODELS}


@pytest.mark.parametrize("antithetic", [False, True], ids=["one-sided", "antithetic"])
@pytest.mark.parametrize("name", list(MODELS))
def test_wp_batched_losses_equal_k_perturbed_forwards(name, antithetic):
    K = 4
    model, x, y = problem(name)
    params, tangents = params_and_tangents(model, K)
    rule = rule_from_config("wp", directions=K, table_size=0, sigma=1e-2)
    assert wp_module.batched_walk_applies(model) == WP_WALKS[name]
    if not WP_WALKS[name]:
        return
    signs = (1.0, -1.0) if antithetic else (1.0,)
    loss, output, losses = rule._chain_losses(model, params, tangents, x, y, CE, signs, clean=True)
    for sign, got in zip(signs, losses):
        expected = torch.stack([
            CE(functional_call(model, {n: p + sign * rule.sigma * tangents[n][k] for n, p in params.items()}, (x,)), y).mean()
            for k in range(K)
        ])
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(output, model(x), rtol=0, atol=0)  # the clean pass is the model's forward
    torch.testing.assert_close(loss, CE(model(x), y).mean(), rtol=0, atol=0)


@pytest.mark.parametrize("settings", [{}, {"antithetic": True}, {"baseline": "none"}, {"baseline": "running"}],
                         ids=["clean", "antithetic", "none", "running"])
@pytest.mark.parametrize("table_size", [0, 4000], ids=["fresh", "table"])
@pytest.mark.parametrize("name", ["layer_norm", "no_norm_tanh", "layer_norm_no_bias", "grouped", "grouped_layer_norm"])
def test_wp_estimate_equals_the_functional_call_path(name, table_size, settings, monkeypatch):
    """K = 4: the same noise, the same estimate as vmap over functional_call (float64, 1e-10), and the
    batched walk is the path taken on dense chains."""
    K = 4
    model, x, y = problem(name)
    make = lambda: rule_from_config("wp", directions=K, table_size=table_size, sigma=1e-2, **settings)  # noqa: E731
    g_old, out_old = estimate(make(), NotAChain(model), x, y, CE, seed=0, step=3)
    if WP_WALKS[name]:
        forbid(monkeypatch, wp_module, "vmap")
        forbid(monkeypatch, wp_module, "functional_call")
    g_new, out_new = estimate(make(), model, x, y, CE, seed=0, step=3)
    torch.testing.assert_close(g_new, g_old, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out_new.loss, out_old.loss, rtol=1e-12, atol=1e-12)
    assert g_new.abs().sum() > 0


def test_wp_with_only_the_layer_norms_learning():
    """Frozen linear layers: the directions move the LayerNorms alone, from the first block on."""
    K = 3
    model, x, y = problem("layer_norm")
    for block in model.blocks:
        block.linear.requires_grad_(False)
    params, tangents = params_and_tangents(model, K)
    rule = rule_from_config("wp", directions=K, table_size=0, sigma=1e-2)
    _, _, (got,) = rule._chain_losses(model, params, tangents, x, y, CE, (1.0,), clean=True)
    expected = torch.stack([
        CE(functional_call(model, {n: p + rule.sigma * tangents[n][k] for n, p in params.items()}, (x,)), y).mean() for k in range(K)
    ])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- the kept stack of table slices


def test_table_slices_stacked_into_a_kept_buffer_are_the_same_draws():
    source = NoiseSource("gaussian", 1000)
    buf = torch.full((4, 300), float("nan"))
    a = source.sample(300, 4, torch.Generator().manual_seed(3), torch.float64)
    b = source.sample(300, 4, torch.Generator().manual_seed(3), torch.float64, out=buf)
    assert b.data_ptr() == buf.data_ptr()
    assert torch.equal(a, b)
