"""Local losses (method.local = loss | greedy: l_bp, lg_bp, l_fa, lg_fa, l_fg_w, lg_fg_w, l_fg_a, lg_fg_a)
and the grouped MLP (Ren et al.'s M/1/16), each against an independent oracle in float64:

- lg_bp / l_bp: autograd of the stage losses written out here by hand (heads as F.linear on the
  blocks' outputs, inputs detached where the variant cuts), the readout on its detached input;
- lg_fa / l_fa with every B equal to its forward weights (the heads' too): exactly lg_bp / l_bp;
- lg_fg_a / lg_fg_w / l_fg_*: with tangents that span the space (every basis vector once), the
  estimate times K is exactly the bp variant's gradient (the estimate is sum_k (g . e_k) e_k / K);
- the grouped layer: its local update against a grouped matmul written out with einsum, and fa with
  B = W against backprop on the grouped model;
- the method name in results.json: lg_fg_a for method=lg_fg_a and for method=fg_a method.local=greedy.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from conftest import CSV_ONLY, compose_config, tiny
from learnbench.catalog import comparable_rules
from learnbench.models import MLP
from learnbench.rules import Backprop, FeedbackAlignment, ForwardGradientActivity, ForwardGradientWeight
from learnbench.rules.local import forward_trace, local_update
from learnbench.train import train

B, IN, CLASSES = 5, 4, 3


def cross_entropy(logits, y):
    return F.cross_entropy(logits, y, reduction="none")


def make_model(groups=None, layer_norm=True, local_heads="every", hidden=(8, 8)):
    torch.manual_seed(0)
    return MLP(IN, CLASSES, list(hidden), layer_norm=layer_norm, groups=groups, local_heads=local_heads)


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, IN, generator=g), torch.randint(0, CLASSES, (B,), generator=g)


def grads(model, rule):
    return {n: p.grad.clone() for n, p in [*model.named_parameters(), *(("rule." + n, p) for n, p in rule.named_parameters())]}


def run(rule, model, x, y):
    rule.bind(model, seed=0)
    rule.setup(model, 0, 0, torch.device("cpu"))
    rule.begin_step(0)
    for p in [*model.parameters(), *rule.parameters()]:
        p.grad = None
    out = rule.estimate_grads(model, x, y, cross_entropy)
    return out, grads(model, rule)


def oracle(model, heads, x, y, greedy: bool):
    """By hand: the stage ends are the hidden blocks (local_heads=every) or the last one; a head is
    F.linear on its block's output; greedy detaches every stage's input; the readout reads a
    detached input; each head learns from its own loss on the detached output."""
    blocks = list(model.blocks)
    ends = list(range(len(blocks) - 1)) if model.local_heads == "every" else [len(blocks) - 2]
    z, total, head_losses = x, 0.0, []
    for i, block in enumerate(blocks[:-1]):
        if greedy and i - 1 in ends:
            z = z.detach()
        z = block(z)
        if i in ends:
            head = heads[ends.index(i)]
            total = total + F.cross_entropy(F.linear(z.flatten(1), head.weight, head.bias), y)
            head_losses.append((head, z.flatten(1).detach()))
    total = total + F.cross_entropy(blocks[-1](z.detach()), y)
    params = list(model.parameters())
    expected = dict(zip([n for n, _ in model.named_parameters()], torch.autograd.grad(total, params)))
    for k, (head, f) in enumerate(head_losses):
        gw, gb = torch.autograd.grad(F.cross_entropy(F.linear(f, head.weight, head.bias), y), [head.weight, head.bias])
        expected[f"rule.local_heads.heads.{k}.weight"], expected[f"rule.local_heads.heads.{k}.bias"] = gw, gb
    return expected


def assert_grads(got, expected, scale=1.0):
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name] * scale, expected[name], msg=name)


MODELS = {
    "every": dict(),
    "last": dict(local_heads="last"),
    "grouped": dict(groups=[1, 2], local_heads="last"),
    "grouped_every": dict(groups=[1, 2, 1], hidden=(8, 8, 4)),
}


@pytest.mark.parametrize("local", ["greedy", "loss"])
@pytest.mark.parametrize("shape", list(MODELS))
def test_bp_with_local_losses_is_autograd_of_the_stage_losses(float64, local, shape):
    model = make_model(**MODELS[shape])
    x, y = batch()
    rule = Backprop(local=local)
    out, got = run(rule, model, x, y)
    assert_grads(got, oracle(model, rule.local_heads.heads, x, y, greedy=local == "greedy"))
    torch.testing.assert_close(out.loss, F.cross_entropy(model(x), y))  # the logged loss is the global one


@pytest.mark.parametrize("local", ["greedy", "loss"])
def test_fa_with_feedback_equal_to_the_weights_is_bp_with_the_same_local_losses(float64, local):
    model = make_model(**MODELS["grouped_every"])
    x, y = batch()
    bp = Backprop(local=local)
    _, expected = run(bp, model, x, y)
    fa = FeedbackAlignment(local=local)
    fa.bind(model, seed=0)
    with torch.no_grad():
        for i, b in fa.feedback.items():
            b.copy_(model.blocks[i].linear.weight)
        for k, head in enumerate(fa.local_heads.heads):
            head.load_state_dict(bp.local_heads.heads[k].state_dict())
            fa.local_heads.feedback(k).copy_(head.weight)
    _, got = run(fa, model, x, y)
    assert_grads(got, expected)


def test_fa_heads_send_the_error_through_their_own_random_feedback(float64):
    model = make_model(local_heads="last")
    x, y = batch()
    fa = FeedbackAlignment(local="greedy")
    fa.bind(model, seed=0)
    with torch.no_grad():
        for i, b in fa.feedback.items():
            b.copy_(model.blocks[i].linear.weight)
    head, feedback = fa.local_heads.heads[0], fa.local_heads.feedback(0)
    assert feedback.shape == head.weight.shape and not torch.equal(feedback, head.weight)
    _, got = run(fa, model, x, y)
    # oracle: backprop where the head's backward uses B: d loss/d features = (softmax - onehot) B / batch
    z = model.blocks[1](model.blocks[0](x))
    probs = F.softmax(F.linear(z.detach(), head.weight, head.bias), -1)
    e_fa = (probs - F.one_hot(y, CLASSES)) @ feedback / B
    params = [p for b in model.blocks[:2] for p in b.parameters()]
    expected = torch.autograd.grad(z, params, e_fa)
    names = [n for n, _ in model.named_parameters()][: len(params)]
    for n, g in zip(names, expected):
        torch.testing.assert_close(got[n], g, msg=n)
    # the head itself: its exact gradient
    gw = torch.autograd.grad(F.cross_entropy(F.linear(z.detach(), head.weight, head.bias), y), head.weight)[0]
    torch.testing.assert_close(got["rule.local_heads.heads.0.weight"], gw)


def basis_site_noise(model, x):
    """fg_a's tangents replaced by every basis vector of the hidden pre-activations, the same for every example."""
    traces, _, _ = forward_trace(model, x)
    shapes = [tuple(t.pre_activation.shape[1:]) for t in traces[:-1]]
    sizes = [torch.Size(s).numel() for s in shapes]
    S = sum(sizes)

    def sample(rows, shapes_, dtype=None):
        K = rows // x.shape[0]
        assert K == S and [tuple(s) for s in shapes_] == shapes
        u = torch.eye(S, dtype=dtype)[:, None, :].expand(S, x.shape[0], S)
        return [part.reshape(rows, *s) for part, s in zip(u.split(sizes, dim=-1), shapes)]

    return S, sample


@pytest.mark.parametrize("local", ["greedy", "loss"])
@pytest.mark.parametrize("shape", ["every", "grouped", "grouped_every"])
def test_fg_a_with_spanning_tangents_is_exactly_the_bp_variant(float64, local, shape):
    """sum over the basis of (grad . e_k) e_k is grad: the estimate (a mean over K) times K is the exact
    gradient, for every hidden block (and, with groups, each tangent paired with its own group's loss)."""
    model = make_model(**MODELS[shape])
    x, y = batch()
    bp = Backprop(local=local)
    _, expected = run(bp, model, x, y)
    K, sample = basis_site_noise(model, x)
    rule = ForwardGradientActivity(local=local, directions=K, mask_inactive=True)
    rule.bind(model, seed=0)
    for k, head in enumerate(rule.local_heads.heads):
        head.load_state_dict(bp.local_heads.heads[k].state_dict())
    rule.sample_site_noise = sample
    _, got = run(rule, model, x, y)
    exact = {n for n in got if n.startswith(("rule.", f"blocks.{len(model.blocks) - 1}."))}  # readout and heads: exact
    for name in expected:
        torch.testing.assert_close(got[name] * (1 if name in exact else K), expected[name], msg=name)


@pytest.mark.parametrize("local", ["greedy", "loss"])
@pytest.mark.parametrize("shape", ["every", "grouped_no_norm"])
def test_fg_w_with_spanning_directions_is_exactly_the_bp_variant(float64, local, shape):
    """The same identity for weight tangents. With groups and no norm across them (a LayerNorm over
    all units would let one group's weights move the others' losses, which fg_w's per-group
    pairing leaves out, as Ren's does) it holds group by group."""
    kwargs = dict(groups=[1, 2], layer_norm=False, local_heads="last") if shape == "grouped_no_norm" else MODELS[shape]
    model = make_model(**kwargs)
    x, y = batch()
    bp = Backprop(local=local)
    _, expected = run(bp, model, x, y)
    hidden = sum(p.numel() for b in list(model.blocks)[:-1] for p in b.parameters())
    rule = ForwardGradientWeight(local=local, directions=hidden, table_size=0)
    rule.bind(model, seed=0)
    for k, head in enumerate(rule.local_heads.heads):
        head.load_state_dict(bp.local_heads.heads[k].state_dict())
    rule.noise.sample = lambda n, K, generator, dtype=None, out=None: torch.eye(n, dtype=dtype)  # the basis; `out` (a kept stack) unused
    _, got = run(rule, model, x, y)
    exact = {n for n in got if n.startswith(("rule.", f"blocks.{len(model.blocks) - 1}."))}
    for name in expected:
        torch.testing.assert_close(got[name] * (1 if name in exact else hidden), expected[name], msg=name)


def test_the_heads_are_rule_parameters_drawn_from_the_seed():
    model = make_model(groups=[1, 2], local_heads="last")
    rules = [Backprop(local="greedy") for _ in range(2)]
    for rule in rules:
        rule.bind(model, seed=4)
    assert len(rules[0].local_heads.heads) == 1
    assert all(torch.equal(a, b) for a, b in zip(rules[0].parameters(), rules[1].parameters()))
    assert sum(p.numel() for p in rules[0].extra_parameters()) == 8 * CLASSES + CLASSES
    assert sum(p.numel() for p in model.parameters()) == 4 * 8 + 8 + 16 + (8 * 4 + 8) + 16 + 8 * CLASSES + CLASSES


# ----------------------------------------------------------------------------- the grouped layer
def test_grouped_layer_local_update_is_the_grouped_matmul_gradient(float64):
    model = make_model(groups=[1, 4], layer_norm=False)
    x, _ = batch()
    traces, _, _ = forward_trace(model, x)
    block, trace = model.blocks[1], traces[1]
    delta = torch.randn_like(trace.pre_activation)
    local_update(block, trace, delta)
    # by hand: 4 independent (2 -> 2) maps on the groups of the input
    z = trace.input.view(B, 4, 2)
    d = delta.view(B, 4, 2)
    expected = torch.einsum("bgo,bgi->goi", d, z).reshape(8, 2, 1, 1)
    torch.testing.assert_close(block.linear.weight.grad, expected)
    torch.testing.assert_close(block.linear.bias.grad, delta.view(B, 8).sum(0))
    # and the forward pass is that grouped matmul
    W = block.linear.weight.view(4, 2, 2)
    h = torch.einsum("goi,bgi->bgo", W, z).reshape(B, 8) + block.linear.bias
    torch.testing.assert_close(trace.linear_out.view(B, 8), h)


def test_fa_with_feedback_equal_to_the_weights_is_backprop_on_the_grouped_model(float64):
    model = make_model(groups=[1, 4])
    x, y = batch()
    expected = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    fa = FeedbackAlignment()
    fa.bind(model, seed=0)
    with torch.no_grad():
        for i, b in fa.feedback.items():
            b.copy_(model.blocks[i].linear.weight)
    _, got = run(fa, model, x, y)
    for (n, _), g in zip(model.named_parameters(), expected):
        torch.testing.assert_close(got[n], g, msg=n)


def test_the_first_hidden_layer_cannot_be_grouped():
    with pytest.raises(ValueError, match="first hidden layer"):
        MLP(IN, CLASSES, [8, 8], groups=[2, 1])
    with pytest.raises(ValueError, match="divide"):
        MLP(IN, CLASSES, [8, 6], groups=[1, 4])


# ----------------------------------------------------------------------------- names and catalogue
def test_local_variants_are_their_own_kind_not_in_the_comparisons():
    feedforward, local = comparable_rules("feedforward"), comparable_rules("local")
    assert local == ["l_bp", "l_fa", "l_fg_a", "l_fg_w", "lg_bp", "lg_fa", "lg_fg_a", "lg_fg_w"]
    assert not set(local) & set(feedforward)


@pytest.mark.parametrize("overrides", [["method=lg_fg_a"], ["method=fg_a", "method.local=greedy"]])
def test_results_name_the_variant_however_it_was_chosen(overrides, tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_config(["data=spiral", "model.hidden_sizes=[16,16]", "method.table_size=0", *overrides,
                          *tiny(train_batches=3), *CSV_ONLY], run_dir)
    train(cfg)
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "ok", record["message"]
    assert record["method"] == "lg_fg_a"
    assert record["rule_parameters"] == 2 * (16 * 2 + 2)  # a head per hidden block, 2 classes
    assert "rule/local_loss/0" in record["metrics"]["final"] or any(k.startswith("rule/local_loss") for k in record["metrics"]["final"])


@pytest.mark.parametrize("method", [*comparable_rules("feedforward"), *comparable_rules("local")])
def test_every_feed_forward_rule_trains_the_grouped_model(method):
    """M/1/16's grouped layer is a grouped 1x1 Conv2d: every rule's conv path serves it (a step writes
    a finite gradient for every parameter)."""
    from learnbench.catalog import method_config, rule_from_config

    model = make_model(groups=[1, 2])
    x, y = batch()
    rule = rule_from_config(method, table_size=0) if "table_size" in method_config(method) else rule_from_config(method)
    out, got = run(rule, model, x, y)
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(got[n]).all() and got[n].shape == p.shape for n, p in model.named_parameters())


def test_fg_w_chain_walk_on_a_grouped_layer_with_several_directions_is_torch_func_jvp(float64):
    """The walk stacks K directions' kernels; on a grouped convolution each direction runs on its own
    (stacking would mix directions into groups). Oracle: torch.func.jvp of the functional loss."""
    from torch.func import functional_call, jvp

    model = make_model(groups=[1, 4], layer_norm=False)
    x, y = batch()
    rule = ForwardGradientWeight(directions=3, table_size=0)
    params = {n: p.detach() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(2)
    tangents = {n: torch.randn(3, *p.shape, generator=g) for n, p in params.items()}
    _, _, d = rule._chain_jvp(model, params, tangents, x, y, cross_entropy)

    def loss(p):
        return cross_entropy(functional_call(model, p, (x,)), y).mean()

    expected = torch.stack([jvp(loss, (params,), ({n: t[k] for n, t in tangents.items()},))[1] for k in range(3)])
    torch.testing.assert_close(d, expected)


def test_refusals_name_what_works():
    from learnbench.models import RNN
    from learnbench.rules import DirectFeedbackAlignment

    with pytest.raises(ValueError, match="dfa has no local-loss variant"):
        DirectFeedbackAlignment(local="greedy")
    with pytest.raises(ValueError, match="comm=grads"):
        ForwardGradientWeight(local="greedy", comm="scalars")
    with pytest.raises(ValueError, match="BlockChain"):
        Backprop(local="loss").bind(RNN(2, 2, hidden_size=3), seed=0)


def test_fg_w_on_groups_under_a_shared_layernorm_estimates_each_groups_own_gradient(float64):
    """M/1/16's first LayerNorm spans all groups, so a weight feeding group g also moves the other groups'
    losses; fg_w pairs it with group g's loss only (Ren's `dw.reshape([in, G, out // G]) * g_`). Oracle,
    written out: the rows of group g get d L_g / d W with L_g = loss(head(x_g, stopgrad(x_others)))."""
    model = make_model(groups=[1, 2], local_heads="last")
    x, y = batch()
    hidden = sum(p.numel() for b in list(model.blocks)[:-1] for p in b.parameters())
    rule = ForwardGradientWeight(local="greedy", directions=hidden, table_size=0)
    rule.bind(model, seed=0)
    rule.noise.sample = lambda n, K, generator, dtype=None, out=None: torch.eye(n, dtype=dtype)  # the basis; `out` (a kept stack) unused
    _, got = run(rule, model, x, y)
    head = rule.local_heads.heads[0]
    features = model.blocks[1](model.blocks[0](x)).flatten(1)  # [B, 8], groups of 4
    names = [n for n, _ in model.named_parameters()][:8]
    params = [p for b in list(model.blocks)[:2] for p in b.parameters()]
    expected = [torch.zeros_like(p) for p in params]
    for g in range(2):
        own = torch.zeros(8, dtype=torch.bool)
        own[4 * g: 4 * g + 4] = True
        mixed = torch.where(own, features, features.detach())
        grads_g = torch.autograd.grad(F.cross_entropy(F.linear(mixed, head.weight, head.bias), y), params, retain_graph=True)
        for e, gr in zip(expected, grads_g):
            e.view(2, -1)[g] = gr.view(2, -1)[g]  # rows (output units) of group g
    for n, e in zip(names, expected):
        torch.testing.assert_close(got[n] * hidden, e, msg=n)
    # and it is not lg_bp's gradient there: the shared LayerNorm's cross-group terms are left out
    bp = Backprop(local="greedy")
    bp.bind(model, seed=0)
    bp.local_heads.heads[0].load_state_dict(head.state_dict())
    _, exact = run(bp, model, x, y)
    assert not torch.allclose(got["blocks.0.linear.weight"] * hidden, exact["blocks.0.linear.weight"])
    torch.testing.assert_close(got["blocks.1.linear.weight"] * hidden, exact["blocks.1.linear.weight"])  # the grouped layer: exact


def test_heads_are_the_same_in_a_float32_and_a_float64_run():
    """Drawn in float32 on the CPU whatever the default dtype, then cast (as feedback matrices are)."""
    heads = []
    for dtype in (torch.float32, torch.float64):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            rule = Backprop(local="greedy")
            rule.bind(make_model().to(dtype), seed=0)
            heads.append(rule.local_heads.heads[0].weight.detach().double())
        finally:
            torch.set_default_dtype(previous)
    torch.testing.assert_close(heads[0], heads[1], rtol=0, atol=0)


@pytest.mark.parametrize("method", comparable_rules("local"))
def test_local_variants_step_on_a_convolutional_net_and_an_autoencoder(method):
    """LeNet: a head per conv / dense block, on the feature maps averaged over space (Ren's avgpool_token);
    the autoencoder: a linear head per hidden block predicting the target with the task's loss."""
    from learnbench.catalog import method_config, rule_from_config
    from learnbench.models import Autoencoder, LeNet

    kwargs = {"table_size": 0} if "table_size" in method_config(method) else {}
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(3, 1, 28, 28, generator=g), torch.randint(0, 10, (3,), generator=g)
    vectors = torch.rand(3, 12, generator=g)
    mse = lambda o, t: 0.5 * (o - t).pow(2).sum(1)  # noqa: E731
    for model, x, y, loss_fn in ((LeNet((1, 28, 28), 10), images, labels, cross_entropy), (Autoencoder(12, 12, [8], 4), vectors, vectors, mse)):
        rule = rule_from_config(method, **kwargs)
        rule.bind(model, seed=0)
        rule.setup(model, 0, 0, torch.device("cpu"))
        rule.begin_step(0)
        out = rule.estimate_grads(model, x, y, loss_fn)
        assert torch.isfinite(out.loss) and len(rule.local_heads.heads) == len(model.blocks) - 1
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in [*model.parameters(), *rule.parameters()])
