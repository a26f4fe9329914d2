"""The written-out paths of the local-loss forward gradients (lg_fg_a, l_fg_a, lg_fg_w, l_fg_w;
rules/local_losses.py) against float64 oracles, on the rule's own random draws (recorded as it samples):

- one backward through the losses alone (`exact_ends`) for the readout's and the heads' exact gradients
  and each stage's (group's) per-example directional derivative dL_i/dlogits_i . dlogits_i, instead of
  recomputing the heads and the readout under autograd beside a forward-mode pass of the head losses;
- the walk's cuts stopping the tangents and the stage ends' output tangents read off the traces;
- the K = 1 shortcuts of fg_a's delta and fg_w's gradient.

The oracle: torch.func.jvp of every stage's (group's) per-example losses through a plain forward of the
blocks (tangents added at the pre-activations, or on the parameters through functional_call; inputs
detached where the variant cuts; a group's loss with the other groups' features detached), the pairing
written out, and autograd for every update: a hidden block's is d/dtheta <a_l(theta), delta_l> on its
detached input, the readout's and the heads' the gradients of their mean losses on detached inputs.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.func import functional_call, jvp
from torch.nn import functional as F

from learnbench.rules import ForwardGradientActivity, ForwardGradientWeight
from learnbench.tasks import CLASSIFICATION, Classification, Reconstruction, per_example_loss
from test_local_losses import batch, cross_entropy, grads, make_model, run

pytestmark = pytest.mark.usefixtures("float64")

SHAPES = {
    "every": dict(),  # two stages of one block each
    "last": dict(local_heads="last"),  # Ren's S/1/1: one stage of both hidden blocks
    "grouped": dict(groups=[1, 2], local_heads="last"),  # M/1/16's shape: per-group losses and pairing
    "no_norm": dict(layer_norm=False),
}


def shaped_model(shape):
    model = make_model(**SHAPES[shape])
    with torch.no_grad():  # norm parameters away from their 1 / 0 initialisation
        for n, p in model.named_parameters():
            if n.split(".")[-2] == "norm":
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if n.endswith("weight") else 0.0))
    return model


def head_losses(heads, stages, outputs, y):
    """Per-example losses [B] of every (stage, group): group g's with the other groups' features detached."""
    losses = []
    for head, stage, out in zip(heads, stages, outputs):
        f = out.flatten(1)
        parts = f.chunk(stage.groups, dim=1)
        for g in range(stage.groups):
            live = torch.cat([p if j == g else p.detach() for j, p in enumerate(parts)], dim=1)
            losses.append(cross_entropy(F.linear(live, head.weight, head.bias), y))
    return losses


def pairings(stages, d, local):
    """Block -> [G', K, ...]: its stage's (group's) derivatives, plus every later stage's when local=loss."""
    per_stage, at = [], 0
    for stage in stages:
        per_stage.append(torch.stack(d[at:at + stage.groups]))
        at += stage.groups
    pairs = {}
    for k, stage in enumerate(stages):
        later = sum(per_stage[j].sum(0, keepdim=True) for j in range(k + 1, len(stages))) if local == "loss" else 0
        for l, grouped in zip(stage.blocks, stage.grouped):
            own = per_stage[k] if grouped else per_stage[k].sum(0, keepdim=True)
            pairs[l] = own + later
    return pairs


def exact_part(model, heads, stages, x, y):
    """The readout's gradient of the mean global loss on its detached input, each head's of its mean loss."""
    blocks = list(model.blocks)
    expected, z, outputs = {}, x, {}
    with torch.no_grad():
        for i, block in enumerate(blocks[:-1]):
            z = block(z)
            outputs[i] = z
    readout = blocks[-1]
    names = [n for n, _ in readout.named_parameters()]
    loss = cross_entropy(readout(z), y).mean()
    for n, g in zip(names, torch.autograd.grad(loss, list(readout.parameters()))):
        expected[f"blocks.{len(blocks) - 1}.{n}"] = g
    for k, (head, stage) in enumerate(zip(heads, stages)):
        loss = cross_entropy(F.linear(outputs[stage.end].flatten(1), head.weight, head.bias), y).mean()
        gw, gb = torch.autograd.grad(loss, [head.weight, head.bias])
        expected[f"rule.local_heads.heads.{k}.weight"], expected[f"rule.local_heads.heads.{k}.bias"] = gw, gb
    return expected


def local_update_oracle(block, z, delta):
    """d/dtheta <a(theta), delta> for a = norm(linear(z)), z detached: the block's local update."""
    a = block.norm(block.linear(block.prepare(z.detach())))
    return dict(zip([n for n, _ in block.named_parameters()], torch.autograd.grad((a * delta.detach().view_as(a)).sum(), list(block.parameters()))))


def fg_a_oracle(model, rule, x, y, u):
    """lg_fg_a / l_fg_a on the tangents u [K, B, *shape_l] the rule drew (before its ReLU mask)."""
    heads, stages = list(rule.local_heads.heads), rule.local_heads.stages
    blocks = list(model.blocks)
    K, B = u[0].shape[:2]
    starts = {s.blocks[0] for s in stages[1:]} if rule.local == "greedy" else set()
    ends = {s.end: k for k, s in enumerate(stages)}
    with torch.no_grad():  # the clean pass: inputs and pre-activations (the ReLU masks)
        inputs, pre, z = [], [], x
        for block in blocks[:-1]:
            inputs.append(z)
            a = block.norm(block.linear(block.prepare(z)))
            pre.append(a)
            z = block.after_pre_activation(a)
    masked = [t * (a > 0) for t, a in zip(u, pre)]

    def losses(shifts):
        z, outputs = x, [None] * len(stages)
        for i, block in enumerate(blocks[:-1]):
            if i in starts:
                z = z.detach()
            z = block.after_pre_activation(block.norm(block.linear(block.prepare(z))) + shifts[i])
            if i in ends:
                outputs[ends[i]] = z
        return tuple(head_losses(heads, stages, outputs, y))

    zeros = tuple(torch.zeros_like(a) for a in pre)
    d = [torch.stack(ds) for ds in zip(*(jvp(losses, (zeros,), (tuple(t[k] for t in masked),))[1] for k in range(K)))]  # each [K, B]
    expected = exact_part(model, heads, stages, x, y)
    for l, pair in pairings(stages, d, rule.local).items():  # pair [G', K, B]
        G = pair.shape[0]
        units = masked[l].reshape(K, B, G, -1)
        delta = (pair.permute(1, 2, 0).unsqueeze(-1) * units).sum(0).reshape(B, -1) / (K * B)
        expected.update({f"blocks.{l}.{n}": g for n, g in local_update_oracle(blocks[l], inputs[l], delta).items()})
    return expected


def fg_w_oracle(model, rule, x, y, v):
    """lg_fg_w / l_fg_w on the directions v [K, P] the rule drew over the hidden blocks' parameters."""
    heads, stages = list(rule.local_heads.heads), rule.local_heads.stages
    blocks = list(model.blocks)
    K = v.shape[0]
    starts = {s.blocks[0] for s in stages[1:]} if rule.local == "greedy" else set()
    ends = {s.end: k for k, s in enumerate(stages)}
    hidden = [(l, n, p) for l in range(len(blocks) - 1) for n, p in blocks[l].named_parameters()]
    V = dict(zip([(l, n) for l, n, _ in hidden], [t.view(K, *p.shape) for (_, _, p), t in zip(hidden, v.split([p.numel() for *_, p in hidden], dim=1))]))
    primal = {(l, n): p.detach() for l, n, p in hidden}

    def losses(params):
        z, outputs = x, [None] * len(stages)
        for i, block in enumerate(blocks[:-1]):
            if i in starts:
                z = z.detach()
            z = functional_call(block, {n: params[(l, n)] for l, n in params if l == i}, (z,))
            if i in ends:
                outputs[ends[i]] = z
        return tuple(loss.mean() for loss in head_losses(heads, stages, outputs, y))

    d = [torch.stack(ds) for ds in zip(*(jvp(losses, (primal,), ({key: t[k] for key, t in V.items()},))[1] for k in range(K)))]  # each [K]
    expected = exact_part(model, heads, stages, x, y)
    for l, pair in pairings(stages, d, rule.local).items():  # pair [G', K]
        G = pair.shape[0]
        for n, p in blocks[l].named_parameters():
            expected[f"blocks.{l}.{n}"] = (pair.T.reshape(K, G, 1) * V[(l, n)].reshape(K, G, -1)).sum(0).view_as(p).detach() / K
    return expected


def recorded(obj, name):
    """Wrap obj.<name> so that every draw it returns is kept (cloned) in the returned list."""
    draws, original = [], getattr(obj, name)

    def sample(*args, **kwargs):
        out = original(*args, **kwargs)
        draws.append([t.clone() for t in out] if isinstance(out, list) else out.clone())
        return out

    setattr(obj, name, sample)
    return draws


#: The loss a rule is handed: a plain function (autograd and forward mode inside the rule), or the
#: classification task's, whose gradient and jvp the rule writes out (local.cross_entropy_gradient).
LOSSES = {"function": cross_entropy, "task": Classification().loss, "task_partial": partial(per_example_loss, CLASSIFICATION)}


def run_with(rule, model, x, y, loss):
    if loss == "function":
        return run(rule, model, x, y)
    rule.bind(model, seed=0)
    rule.setup(model, 0, 0, torch.device("cpu"))
    rule.begin_step(0)
    for p in [*model.parameters(), *rule.parameters()]:
        p.grad = None
    out = rule.estimate_grads(model, x, y, LOSSES[loss])
    return out, grads(model, rule)


def assert_same(got, expected):
    assert set(expected) <= set(got)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("local", ["greedy", "loss"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_fg_a_local_equals_the_jvp_and_autograd_oracle(shape, local, K, loss):
    model = shaped_model(shape)
    x, y = batch()
    rule = ForwardGradientActivity(local=local, directions=K, mask_inactive=True, table_size=0)
    draws = recorded(rule, "sample_site_noise")
    _, got = run_with(rule, model, x, y, loss)
    (flat,) = draws
    u = [t.view(K, x.shape[0], *t.shape[1:]) for t in flat]
    assert_same(got, fg_a_oracle(model, rule, x, y, u))


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("local", ["greedy", "loss"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_fg_w_local_equals_the_jvp_and_autograd_oracle(shape, local, K, loss):
    model = shaped_model(shape)
    x, y = batch()
    rule = ForwardGradientWeight(local=local, directions=K, table_size=0)
    draws = recorded(rule.noise, "sample")
    _, got = run_with(rule, model, x, y, loss)
    (v,) = draws
    assert_same(got, fg_w_oracle(model, rule, x, y, v))


def test_the_loss_values_are_the_plain_forwards():
    """RuleOutput's loss and the local-loss metrics: the global loss at the readout, each head's mean loss."""
    model = shaped_model("every")
    x, y = batch()
    rule = ForwardGradientActivity(local="greedy", directions=1, table_size=0)
    out, _ = run(rule, model, x, y)
    with torch.no_grad():
        z, expected = x, {}
        for i, block in enumerate(list(model.blocks)[:-1]):
            z = block(z)
            head = rule.local_heads.heads[i]
            expected[f"local_loss/{i}"] = cross_entropy(F.linear(z, head.weight, head.bias), y).mean()
        torch.testing.assert_close(out.loss, cross_entropy(model(x), y).mean())
    for name, value in expected.items():
        torch.testing.assert_close(out.metrics[name], value)


def test_relu_tangent_and_mask_are_the_bool_mask_products():
    """jvp_through(ReLU) and relu_mask in float ops: the very numbers of t * (a > 0) and (a > 0).to(dtype),
    zeros of a included (where the ReLU's derivative is taken as 0)."""
    from torch import nn

    from learnbench.models.blocks import Block
    from learnbench.rules.local import jvp_through, relu_mask

    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 10, generator=g)
    a[0, :4] = 0.0
    t = torch.randn(3, 6, 10, generator=g)
    out, dt = jvp_through(nn.ReLU(), a, t)
    assert torch.equal(out, torch.relu(a)) and torch.equal(dt, t * (a > 0))
    block = Block(nn.Linear(4, 10), "relu")
    assert torch.equal(relu_mask(block, a), (a > 0).to(a.dtype))
    assert relu_mask(Block(nn.Linear(4, 10), "tanh"), a) is None


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("normalized", [(8,), (2, 4)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("tangents", ["input", "input+params", "params", "bias"])
def test_layer_norm_jvp_equals_torch_func_jvp(K, normalized, affine, tangents):
    """layer_norm_jvp (one direction: through the fused backward, the Jacobian being symmetric; several:
    written out; a zero input tangent: nothing multiplied through) against torch.func.jvp of F.layer_norm
    in its input and its own parameters."""
    from torch import nn

    from learnbench.rules.local import layer_norm_jvp

    if not affine and tangents != "input":
        pytest.skip("no parameters to carry tangents")
    g = torch.Generator().manual_seed(2)
    norm = nn.LayerNorm(normalized, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.copy_(torch.randn(normalized, generator=g))
            norm.bias.copy_(torch.randn(normalized, generator=g))
    h = torch.randn(5, *normalized, generator=g) * 3 + 1
    dh = torch.randn(K, *h.shape, generator=g) if tangents.startswith("input") else None
    dw = torch.randn(K, *normalized, generator=g) if tangents in ("input+params", "params") else None
    db = torch.randn(K, *normalized, generator=g) if tangents in ("input+params", "params", "bias") else None
    with torch.no_grad():
        out, got = layer_norm_jvp(norm, h, dh, dw, db)
    assert_jvp_of_norm(lambda h_, w_, b_: F.layer_norm(h_, normalized, w_, b_, norm.eps), norm, h, (dh, dw, db), out, got)


def assert_jvp_of_norm(functional, norm, h, tangents, out, got):
    """The oracle of the written-out norm jvps: torch.func.jvp of `functional(h, weight, bias)` in the input
    and, when the norm is affine, its own parameters, direction by direction (a missing tangent is zero)."""
    if norm.weight is not None:
        primals = (h, norm.weight.detach(), norm.bias.detach())
        f = functional
    else:
        primals = (h,)

        def f(h_):
            return functional(h_, None, None)
    for k in range(got.shape[0]):
        along = tuple(t[k] if t is not None else torch.zeros_like(p) for t, p in zip(tangents, primals))
        primal, expected = jvp(f, primals, along)
        torch.testing.assert_close(out, primal, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[k], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("spatial", [(1, 1), (2, 3)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("tangents", ["input", "input+params", "params", "bias"])
def test_group_norm_jvp_equals_torch_func_jvp(K, spatial, affine, tangents):
    """group_norm_jvp (M/1/16's per-group norm on [B, C, 1, 1], and feature maps) against torch.func.jvp
    of F.group_norm in its input and its own parameters."""
    from torch import nn

    from learnbench.rules.local import group_norm_jvp

    if not affine and tangents != "input":
        pytest.skip("no parameters to carry tangents")
    G, C = 4, 8
    g = torch.Generator().manual_seed(3)
    norm = nn.GroupNorm(G, C, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.copy_(torch.randn(C, generator=g))
            norm.bias.copy_(torch.randn(C, generator=g))
    h = torch.randn(5, C, *spatial, generator=g) * 3 + 1
    dh = torch.randn(K, *h.shape, generator=g) if tangents.startswith("input") else None
    dw = torch.randn(K, C, generator=g) if tangents in ("input+params", "params") else None
    db = torch.randn(K, C, generator=g) if tangents in ("input+params", "params", "bias") else None
    with torch.no_grad():
        out, got = group_norm_jvp(norm, h, dh, dw, db)
    assert_jvp_of_norm(lambda h_, w_, b_: F.group_norm(h_, G, w_, b_, norm.eps), norm, h, (dh, dw, db), out, got)


def test_fg_w_walks_m116s_grouped_layer_with_its_group_norm(monkeypatch):
    """fg_w on M/1/16's shape (a grouped layer with a per-group GroupNorm) takes the chain walk, not
    torch.func.jvp, and its directional derivatives are jvp's (K 1 and 3)."""
    from learnbench.rules.perturbation import forward_gradient_weight as fgw_module

    model = shaped_model("grouped")
    x, y = batch()
    params = {n: p.detach() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(4)
    for K in (1, 3):
        tangents = {n: torch.randn(K, *p.shape, generator=g) for n, p in params.items()}

        def loss(p):
            return cross_entropy(functional_call(model, p, (x,)), y).mean()

        expected = torch.stack([jvp(loss, (params,), ({n: t[k] for n, t in tangents.items()},))[1] for k in range(K)])
        with monkeypatch.context() as m:
            m.setattr(fgw_module, "jvp", None)  # the general path would fail
            _, _, d = ForwardGradientWeight(directions=K, table_size=0).directional_derivatives(model, params, tangents, x, y, cross_entropy)
        torch.testing.assert_close(d, expected, rtol=1e-10, atol=1e-12)


def test_only_the_classification_tasks_cross_entropy_is_written_out():
    from learnbench.rules.local import is_cross_entropy

    logits, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    assert is_cross_entropy(Classification().loss, logits, y)
    assert is_cross_entropy(partial(per_example_loss, CLASSIFICATION), logits, y)
    assert not is_cross_entropy(cross_entropy, logits, y)  # an unknown function: autograd / forward mode
    assert not is_cross_entropy(Reconstruction().loss, logits, torch.randn(4, 3))
    assert not is_cross_entropy(Classification().loss, logits, torch.rand(4, 3))  # class probabilities

    class Smoothed(Classification):
        def loss(self, output, target):
            return F.cross_entropy(output, target, reduction="none", label_smoothing=0.1)

    assert not is_cross_entropy(Smoothed().loss, logits, y)


def test_a_loss_function_carries_the_kind_its_task_declares():
    from learnbench.tasks import CROSS_ENTROPY, OTHER_LOSS, SequenceClassification, SequenceRegression, Task, loss_kind

    assert loss_kind(Classification().loss) == loss_kind(partial(per_example_loss, CLASSIFICATION)) == CROSS_ENTROPY
    assert loss_kind(Reconstruction().loss) == loss_kind(partial(per_example_loss, "reconstruction")) == OTHER_LOSS
    assert loss_kind(SequenceClassification().loss) == OTHER_LOSS  # cross entropy of the last step only
    for task in (SequenceClassification(), SequenceRegression()):  # a window's share of the loss is not the loss
        assert loss_kind(task.window_loss(4, 0, 2)) == loss_kind(task.window_loss(4, 2, 4)) == OTHER_LOSS

    class Relabelled(Classification):  # keeps the parent's loss, and so its kind
        name = "relabelled"

    class Declared(Task):  # a task's own loss, its kind declared beside it
        loss_kind = CROSS_ENTROPY

        def loss(self, output, target):
            return F.cross_entropy(output, target, reduction="none")

    assert loss_kind(Relabelled().loss) == loss_kind(Declared().loss) == CROSS_ENTROPY
    assert loss_kind(Classification().metrics) == OTHER_LOSS  # a task's other bound methods are not its loss


def test_cross_entropy_gradient_is_autograds():
    from learnbench.rules.local import cross_entropy_gradient

    g = torch.Generator().manual_seed(5)
    logits, y = torch.randn(6, 4, generator=g) * 3, torch.randint(0, 4, (6,), generator=g)
    leaf = logits.clone().requires_grad_()
    expected = F.cross_entropy(leaf, y, reduction="none")
    (expected_grad,) = torch.autograd.grad(expected.sum(), leaf)
    losses, grad = cross_entropy_gradient(logits, y)
    torch.testing.assert_close(losses, expected.detach(), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("K", [1, 3])
def test_loss_jvp_of_the_task_cross_entropy_is_torch_func_jvp(K):
    """fg_a's and fg_w's last step (loss_jvp) with the classification task's loss: written out, against
    torch.func.jvp of F.cross_entropy."""
    from learnbench.rules.local import loss_jvp

    g = torch.Generator().manual_seed(6)
    output, y = torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    d_output = torch.randn(K, 6, 4, generator=g)
    for loss in (Classification().loss, partial(per_example_loss, CLASSIFICATION)):
        losses, d = loss_jvp(loss, output, y, d_output)
        for k in range(K):
            primal, expected = jvp(lambda o: F.cross_entropy(o, y, reduction="none"), (output,), (d_output[k],))
            torch.testing.assert_close(losses, primal, rtol=1e-14, atol=1e-14)
            torch.testing.assert_close(d[k], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("which", ["dz", "V", "vb", "dz+V", "dz+vb", "V+vb", "dz+V+vb"])
def test_dense_linear_tangent_is_the_jvp_of_a_linear_layer(K, which):
    """W dz + V z + v_b (one direction: fused products) against torch.func.jvp of F.linear."""
    from learnbench.rules.local import dense_linear_tangent

    g = torch.Generator().manual_seed(7)
    W, b, z = torch.randn(5, 4, generator=g), torch.randn(5, generator=g), torch.randn(6, 4, generator=g)
    dz = torch.randn(K, 6, 4, generator=g) if "dz" in which else None
    V = torch.randn(K, 5, 4, generator=g) if "V" in which.split("+") else None
    vb = torch.randn(K, 5, generator=g) if "vb" in which else None
    with torch.no_grad():
        got = dense_linear_tangent(W, z, dz, V, vb)
    for k in range(K):
        along = tuple(t[k] if t is not None else torch.zeros_like(p) for t, p in zip((dz, V, vb), (z, W, b)))
        _, expected = jvp(lambda z_, W_, b_: F.linear(z_, W_, b_), (z, W, b), along)
        torch.testing.assert_close(got[k], expected, rtol=1e-12, atol=1e-13)
    assert dense_linear_tangent(W, z, None, None, None) is None


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("local", ["greedy", "loss"])
@pytest.mark.parametrize("name", ["grouped", "cnn"])
def test_lg_fg_w_walk_equals_its_torch_func_path(name, local, K, monkeypatch):
    """lg_fg_w / l_fg_w on M/1/16's grouped layer with its GroupNorm and on a CNN (convolutions, pooling)
    now take the written-out block tangents; the same estimate (the rule's own draws) as its torch.func
    path, which the walk replaced there."""
    from learnbench.models import CNN
    from learnbench.rules import local_losses

    def problem():
        if name == "grouped":
            return shaped_model("grouped"), *batch()
        torch.manual_seed(0)
        return CNN((2, 8, 8), 3, channels=(3, 4), kernel_sizes=(3, 3), hidden_sizes=(5,)), torch.randn(5, 2, 8, 8), torch.randint(0, 3, (5,))

    estimates = []
    for walk in (True, False):
        model, x, y = problem()
        with monkeypatch.context() as m:
            if walk:
                m.setattr(local_losses, "vmap", None)  # the torch.func path would fail
            else:
                m.setattr(local_losses, "block_tangent_applies", lambda block, names: False)
            estimates.append(run(ForwardGradientWeight(local=local, directions=K, table_size=0), model, x, y)[1])
    assert_same(*estimates)


def test_the_walks_layer_norm_keeps_its_stats_and_the_very_forward():
    """Without a graph the walk runs LayerNorm through aten's forward and keeps its mean and rstd on the
    trace (the local update's backward and lg_fg_w's tangents reuse them): the output is model(x) bit
    for bit, and the stats are a recomputed forward's."""
    from learnbench.rules.local import forward_trace

    model = shaped_model("every")
    x, _ = batch()
    with torch.no_grad():
        traces, output, _ = forward_trace(model, x)
        assert torch.equal(output, model(x))
        for block, trace in zip(list(model.blocks)[:-1], traces):
            norm = block.norm
            _, mean, rstd = torch.ops.aten.native_layer_norm(trace.linear_out, list(norm.normalized_shape), norm.weight, norm.bias, norm.eps)
            assert torch.equal(trace.norm_stats[0], mean) and torch.equal(trace.norm_stats[1], rstd)
            clean = trace.first_rows(2)
            assert torch.equal(clean.norm_stats[0], mean[:2])
    traces, _, _ = forward_trace(model, x)  # with a graph: the module's forward, no stats
    assert all(t.norm_stats is None for t in traces)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("spatial", [(1, 1), (2, 3)])
def test_local_update_through_a_group_norm_is_autograds(affine, spatial):
    """local_update on a block with a GroupNorm (M/1/16's grouped layer) through aten's GroupNorm backward
    kernels: the gradients autograd gives for d/dtheta <a(theta), delta> on the detached input."""
    from torch import nn

    from learnbench.models.blocks import Block
    from learnbench.rules.local import Trace, local_update

    g = torch.Generator().manual_seed(8)
    block = Block(nn.Conv2d(8, 8, 1, groups=4), "relu", nn.GroupNorm(4, 8, affine=affine))
    if affine:
        with torch.no_grad():
            block.norm.weight.copy_(torch.randn(8, generator=g))
            block.norm.bias.copy_(torch.randn(8, generator=g))
    z = torch.randn(5, 8, *spatial, generator=g)
    delta = torch.randn(5, 8, *spatial, generator=g)
    expected = local_update_oracle(block, z, delta)
    with torch.no_grad():
        h = block.linear(z)
        a = block.norm(h)
        local_update(block, Trace(z, h, a, torch.relu(a)), delta)
    for name, p in block.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-12, atol=1e-13, msg=name)
