"""Local losses, an option of bp, fa, fg_w and fg_a (Ren, Kornblith, Liao & Hinton, ICLR 2023).

`method.local`: `none` (the rule as it is), `loss` (L-: local losses added) or `greedy` (LG-: local
greedy). What follows is read off the authors' code, google-research `local_forward_gradient/`
(train_mixer_supervised.py, spatial_avg_linear_v2.py), and written for this suite's chains of blocks.

Stages and heads. The hidden blocks are cut into stages (a stage is one of Ren's mixer blocks); a
local head, a linear classifier, reads each stage's last output: after its norm, activation and
pooling (Ren: `states['block_k/pre_pred']`, the block's post-ReLU output), averaged over space
when it is a feature map (`avgpool_token`: `spatial_avg_group_linear_cross_entropy`). The model
says where stages end (`model.local_heads`: after `every` hidden block, or only the `last`: Ren's
MNIST MLPs are his `block0`, two layers under one loss). One head per stage reads all of the
stage's units (`same_head`, `concat_groups`); its weights are rule-owned nn.Parameters (the
model's parameter count stays the model's), drawn from the run seed, optimised in the rule's
param group, all-reduced and checkpointed like Kolen-Pollack's B.

Groups. When the stage's last block is grouped (a grouped 1x1 convolution with a per-group norm:
M/1/16), the head's input splits into G groups and there is one loss per group,
L_g = loss(head(x_g, stopgrad(x_other groups))) (spatial_avg_linear_v2.py:
`spatial_avg_group_linear_cross_entropy_v2` with its eye(G) mask; the fused custom jvp computes
the same per-group derivative, `spatial_avg_group_linear_cross_entropy_jvp_`). For an exact
gradient the split changes nothing (sum_g dL_g/dx_g = dL/dx), so bp and fa use the plain head
loss; for forward gradients it is the point: a tangent on group g's units only has to explain
group g's loss (`update_forward_grad_activations`: `g_ = g[blk][:, :, :, None]` against
`dz.reshape([B, P, G, -1])`), which divides the estimate's variance by about G. A block's units
count as group g's when every later block of the stage is grouped alike (M/1/16's first layer:
unit group g feeds only group g of the grouped layer); other units pair with the sum over groups.

Where the gradient stops (train_mixer_supervised.py::loss and predict):
  - the model's own readout (last block) is trained by the global loss on its detached input
    (`readout=True`): the global loss reaches no hidden block in either variant;
  - `loss` (L-, `update_local_backprop`): the objective is global + sum of local losses, the
    gradient flows across stages, so a block learns from its own stage's loss and every later one;
  - `greedy` (LG-, `update_local_stopgrad_backprop`, `stop_gradient=True`): the input of every
    stage is detached, so a block learns from its own stage's loss only (and, with groups, a
    forward-gradient tangent from its own group's loss only).
  - heads: each gets the exact gradient of its own loss w.r.t. its weights, on the detached stage
    output (`local_classif_grad`; the custom vjp's P * G factor is divided back out by
    `same_head` / `avgpool_token`, leaving the plain gradient of the mean loss). With fa the error
    reaches the stage output through a fixed random B of the head's shape (Ren's `fa_linear` on
    the loss layers), the head's own update staying exact.

Forward gradients (`update_forward_grad_activations`, `update_forward_grad_weights`): fg_a puts
a tangent on every hidden pre-activation (the readout gets none: its gradient is exact), fg_w on
every hidden block's parameters; the jvp gives each stage's (and group's) directional derivative
d_{s,g}; a block's estimate pairs its tangent with the derivatives of the losses it reaches:
its stage's (its group's) in `greedy`, plus every later stage's in `loss`. fg_a is an unbiased
estimate of the matching bp variant's gradient. fg_w pairs a block's parameters by output unit
as Ren does (`dw.reshape([in, G, out // G]) * g_[None, :, None]`); where a norm mixes the groups
(M/1/16's first LayerNorm) a weight's perturbation also moves other groups' losses, which this
pairing leaves out: fg_w there estimates the own-group gradient, not exactly lg_bp's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap
from torch.nn import functional as F

from learnbench.models.blocks import Block
from learnbench.rules.base import RuleOutput, clipped, trainable_parameters
from learnbench.rules.local import (block_tangent, block_tangent_applies, chain_blocks, cross_entropy_gradient, forward_trace,
                                   is_cross_entropy, local_update, relu_mask)

#: `method.local`: none, loss (L-), greedy (LG-).
Local = Literal["none", "loss", "greedy"]
#: The method name a variant is written under (results.json, reports): l_bp, lg_fg_a, ...
LOCAL_PREFIX = {"none": "", "loss": "l_", "greedy": "lg_"}


def method_name(choice: str | None, local: str | None) -> str | None:
    """The name a run is recorded under: the chosen method config with the prefix of its `local` option,
    so `method=lg_fg_a` and `method=fg_a method.local=greedy` are both `lg_fg_a` (and `method=lg_bp
    method.local=none` is `bp`)."""
    if choice is None or local is None:
        return choice
    base = choice
    for prefix in ("lg_", "l_"):
        if base.startswith(prefix):
            base = base[len(prefix):]
            break
    return LOCAL_PREFIX[local] + base


@dataclass
class Stage:
    """A run of hidden blocks trained by one local head."""

    end: int  # the block whose output the head reads
    blocks: list[int]  # the blocks its loss trains
    groups: int  # G: the head's input splits into G groups
    grouped: list[bool]  # per block: its units feed one group only (pair with that group's loss)


def block_groups(block: Block) -> int:
    """G of a grouped block whose groups stay independent (grouped linear map, no norm across groups); else 1."""
    linear, norm = block.linear, block.norm
    groups = linear.groups if isinstance(linear, nn.Conv2d) else 1
    if groups > 1 and not (isinstance(norm, nn.Identity) or (isinstance(norm, nn.GroupNorm) and norm.num_groups % groups == 0)):
        return 1
    return groups


def stages_of(model: nn.Module, rule: str = "a local-loss rule") -> list[Stage]:
    blocks = chain_blocks(model, rule)
    if len(blocks) < 2:
        raise ValueError(f"{rule} puts local heads after hidden blocks; {type(model).__name__} has none")
    mode = getattr(model, "local_heads", "every")
    if mode not in ("every", "last"):
        raise ValueError(f"model.local_heads={mode!r}: choose every or last")
    ends = list(range(len(blocks) - 1)) if mode == "every" else [len(blocks) - 2]
    stages, start = [], 0
    for end in ends:
        groups = block_groups(blocks[end])
        members = list(range(start, end + 1))
        grouped = [all(block_groups(blocks[m]) == groups for m in range(l + 1, end + 1)) for l in members]
        stages.append(Stage(end, members, groups, grouped))
        start = end + 1
    return stages


def head_features(output: Tensor) -> Tensor:
    """What a head reads from a stage output [B, ...]: feature maps averaged over space, else flattened."""
    return output.mean((2, 3)) if output.dim() == 4 else output.flatten(1)


def head_feature_tangent(d_output: Tensor) -> Tensor:
    """The same for K tangents [K, B, ...]."""
    return d_output.mean((3, 4)) if d_output.dim() == 5 else d_output.flatten(2)


class LocalHeads(nn.Module):
    """One linear head per stage (rule-owned Parameters), and with `feedback` a fixed random B per head (fa)."""

    def __init__(self, model: nn.Module, generator: torch.Generator, rule: str, feedback: tuple[str, float] | None = None):
        super().__init__()
        self.stages = stages_of(model, rule)
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            traces, output, _ = forward_trace(model, torch.zeros(1, *model.input_shape, dtype=dtype))
        self.heads = nn.ModuleList()
        for k, stage in enumerate(self.stages):
            features, classes = head_features(traces[stage.end].output).shape[1], output.shape[1]
            # skip_init: no draw from the global stream; weights from the seed alone, PyTorch's default
            # Linear distribution U(+-1/sqrt(fan_in)) drawn in float32 on the CPU, then cast.
            head = nn.utils.skip_init(nn.Linear, features, classes, dtype=dtype)
            bound = 1 / math.sqrt(features)
            with torch.no_grad():
                for p in (head.weight, head.bias):
                    p.copy_((torch.rand(p.shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound)
            self.heads.append(head)
            if feedback is not None:
                from learnbench.rules.feedback.feedback_path import draw_feedback

                self.register_buffer(f"feedback_{k}", draw_feedback(head.weight.detach(), *feedback, generator))

    def feedback(self, k: int) -> Tensor | None:
        return getattr(self, f"feedback_{k}", None)

    def logits(self, k: int, features: Tensor) -> Tensor:
        """The head's output; with feedback, the error reaches `features` through B (the head's update exact)."""
        head, feedback = self.heads[k], self.feedback(k)
        if feedback is None:
            return head(features)
        from learnbench.rules.feedback.feedback_path import _FeedbackLinear

        return _FeedbackLinear.apply(features, head.weight, head.bias, feedback, head)


class LocalLossesMixin:
    """The `local` option of a rule (bp, fa, fg_w, fg_a), put before the rule's base class:
    `class Backprop(LocalLossesMixin, LearningRule)`. The rule's __init__ sets `self.local`; the rule
    states its base name (`local_base`: the method name with local=none), its estimator with local
    losses (`local_grads`) and any LocalHeads options (`local_head_options`: fa's feedback). With
    local=none every hook is the base class's own: check_model, init_state, estimate_grads.

    The heads are drawn after whatever the rule's own init_state draws first (fa: the blocks' B), so a
    seed gives the same rule state as the plain rule; a rule that draws state calls super().init_state last."""

    #: The method name without a local prefix: bp, fa, fg_w, fg_a.
    local_base: str
    local: Local
    #: LearningRule.stacks_seeds with local=none (the rule or its base class sets it; a local-loss variant never stacks).
    plain_stacks_seeds: bool | str

    @property
    def stacks_seeds(self) -> bool | str:
        if self.local != "none":
            return "its local heads read every unit of a layer, the other seeds' too"
        return self.plain_stacks_seeds

    def local_rule_name(self) -> str:
        """The rule as error messages name it: `method=lg_fg_a`."""
        return f"method={method_name(self.local_base, self.local)}"

    def local_head_options(self) -> dict:
        """Extra LocalHeads arguments (fa: feedback=(init, scale))."""
        return {}

    def local_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn) -> RuleOutput:
        """estimate_grads with local losses (self.local_heads built)."""
        raise NotImplementedError

    def global_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn) -> RuleOutput:
        """estimate_grads with local=none: the base class's, unless the rule has its own (bp)."""
        return super().estimate_grads(model, x, y, loss_fn)

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        if self.local != "none":
            stages_of(model, self.local_rule_name())

    def init_state(self, model: nn.Module, generator: torch.Generator) -> None:
        super().init_state(model, generator)
        if self.local != "none":
            self.local_heads = LocalHeads(model, generator, self.local_rule_name(), **self.local_head_options())

    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn) -> RuleOutput:
        if self.local != "none":
            return self.local_grads(model, x, y, loss_fn)
        return self.global_grads(model, x, y, loss_fn)


def cut_points(model: nn.Module, stages: list[Stage], local: str) -> set[int]:
    """Blocks whose input is detached: the readout always, every stage's first block when greedy."""
    cut = {len(model.blocks) - 1}
    if local == "greedy":
        cut |= {stage.blocks[0] for stage in stages[1:]}
    return cut


def local_metrics(stages: list[Stage], losses: list[Tensor]) -> dict[str, Tensor]:
    return {f"local_loss/{stage.end}": loss for stage, loss in zip(stages, losses)}


# ----------------------------------------------------------------------------- exact rules (bp, fa)
def exact_local_grads(model, heads: LocalHeads, x, y, loss_fn, local: str, linear_map=None) -> RuleOutput:
    """bp / fa with local losses: autograd of global + sum of local losses, cut where `local` says
    (`update_local_backprop`, `update_local_stopgrad_backprop`, `update_local_[stopgrad_]feedback_alignment`).
    `linear_map` sends the error through feedback weights (fa); the heads' own feedback is in `heads`."""
    traces, output, _ = forward_trace(model, x, linear_map=linear_map, detach_inputs=cut_points(model, heads.stages, local))
    loss = loss_fn(output, y).mean()
    local_losses = [loss_fn(heads.logits(k, head_features(traces[s.end].output)), y).mean() for k, s in enumerate(heads.stages)]
    params = [*trainable_parameters(model), *heads.parameters()]
    for p, g in zip(params, torch.autograd.grad(loss + sum(local_losses), params)):
        p.grad = g
    return RuleOutput(loss=loss.detach(), output=output.detach(), metrics=local_metrics(heads.stages, [l.detach() for l in local_losses]))


# ----------------------------------------------------------------------------- forward gradients
def paired_derivatives(stages: list[Stage], d: list[Tensor], local: str, clip: float | None) -> dict[int, Tensor]:
    """Block index -> the derivatives its tangents pair with, [G', K, ...] (G' = the stage's G when the
    block's units are grouped, else 1): its stage's (group's) loss, plus every later stage's with `loss`."""
    later = [None] * len(stages)
    total = None
    for k in reversed(range(len(stages))):
        later[k] = total
        own = d[k].sum(0, keepdim=True)
        total = own if total is None else total + own
    pairs = {}
    for k, stage in enumerate(stages):
        for l, grouped in zip(stage.blocks, stage.grouped):
            pair = d[k] if grouped else d[k].sum(0, keepdim=True)
            if local == "loss" and later[k] is not None:
                pair = pair + later[k]
            pairs[l] = clipped(pair, clip)
    return pairs


def readout_grads(model: nn.Module, readout_input: Tensor, y: Tensor, loss_fn) -> Tensor:
    """The readout's exact gradient of the global loss on its detached input (`readout=True`); returns the loss."""
    readout = model.blocks[-1]
    params = [p for p in readout.parameters() if p.requires_grad]
    with torch.enable_grad():
        loss = loss_fn(readout(readout_input.detach()), y).mean()
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g
    return loss.detach()


def plain_readout(block: Block) -> bool:
    """Whether the readout's output is its linear map's (no norm, activation or pooling after it), so its
    exact gradient is the local update of dL/d(output)."""
    return all(isinstance(m, nn.Identity) for m in (block.norm, block.activation, block.pool))


def head_tangents(head: nn.Linear, d_features: Tensor, groups: int) -> Tensor:
    """Each group's tangent of the head's logits [G, K, B, classes]: group g's features moved by their
    tangent, the other groups held (spatial_avg_linear_v2.py's per-group jvp; G = 1: W df)."""
    if groups == 1:
        return F.linear(d_features, head.weight).unsqueeze(0)
    K, B = d_features.shape[:2]
    weight = head.weight.view(head.weight.shape[0], groups, -1)
    return torch.einsum("kbgd,cgd->gkbc", d_features.view(K, B, groups, -1), weight)


def exact_ends(model: nn.Module, heads: LocalHeads, traces: list, output: Tensor, features: list[Tensor],
               d_features: list[Tensor], y: Tensor, loss_fn) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The readout's and the heads' exact gradients (written into their .grad) and each stage's (group's)
    per-example directional derivatives [G, K, B], from one backward through the losses alone:
    (global loss, local losses, derivatives).

    The losses are per example, so the backward of their sum gives each example's dL_i/dlogits_i (all
    heads' and the readout's logits stacked along the rows: one loss call, one backward), and
    d_i = dL_i/dlogits_i . dlogits_i is the loss's jvp (before: a forward-mode pass of the head losses);
    a head's gradient is (dL_i/dlogits_i / B)^T features, the readout's the local update of
    dL/d(output). Before, the heads' logits and the readout's output were recomputed under autograd,
    one backward each, beside a forward-mode pass of the head losses: equal to rounding
    (tests/test_local_losses_speed.py)."""
    readout = list(model.blocks)[-1]
    plain = plain_readout(readout)
    logits = [F.linear(f, h.weight, h.bias) for h, f in zip(heads.heads, features)]
    B, S = y.shape[0], len(logits)
    if plain:
        logits.append(output)
    # Every loss in one call on the logits stacked along the rows (the losses are per example, so rows
    # do not mix): one loss node and one backward for the heads and the readout together.
    stacked, targets = torch.cat(logits), torch.cat([y] * len(logits))
    if is_cross_entropy(loss_fn, stacked, targets):  # the classification task's: written out, no autograd
        losses, grad = cross_entropy_gradient(stacked, targets)
    else:
        stacked.requires_grad_()
        with torch.enable_grad():
            losses = loss_fn(stacked, targets)
            (grad,) = torch.autograd.grad(losses.sum(), stacked)
    losses, grads = losses.detach().view(len(logits), B), grad.view(len(logits), B, *grad.shape[1:])
    if plain:
        local_update(readout, traces[-1], grads[S] / B)
        loss = losses[S].mean()
    else:
        loss = readout_grads(model, traces[-1].input, y, loss_fn)
    d = []
    for head, stage, f, df, g in zip(heads.heads, heads.stages, features, d_features, grads):
        d.append((head_tangents(head, df, stage.groups) * g).sum(-1))
        g = g / B
        head.weight.grad, head.bias.grad = g.T @ f, g.sum(0)
    return loss, [losses[k].mean() for k in range(S)], d


@torch.no_grad()
def forward_gradient_activity_local(rule, model, heads: LocalHeads, x, y, loss_fn) -> RuleOutput:
    """fg_a with local losses (`update_forward_grad_activations`): tangents u_l on every hidden
    pre-activation (masked on inactive ReLUs), cut at stage inputs when greedy; each stage's (group's)
    derivative d from its head; delta_l = d u_l / B per example, then the shared local update."""
    from learnbench.rules.perturbation.activity_space import pre_activation_shapes

    K, B, local = rule.directions, x.shape[0], rule.local
    blocks, stages = list(model.blocks), heads.stages
    readout = len(blocks) - 1
    shapes = pre_activation_shapes(model, x)[:readout]
    dtype = next(model.parameters()).dtype
    u = [n.view(K, B, *s) for n, s in zip(rule.sample_site_noise(K * B, shapes, dtype), shapes)]

    def add_tangent(i, block, a, da):
        if i == readout:
            return a, None  # the readout's input is detached: no tangent reaches the global loss
        mask = relu_mask(block, a) if rule.mask_inactive else None
        if mask is not None:
            u[i] = u[i] * mask
        return a, u[i] if da is None else da + u[i]

    # The cuts (stage inputs when greedy, the readout's input) stop the tangents inside the walk, and
    # each stage end's output tangent comes back on its trace (nothing carried past a cut or recomputed).
    traces, output, _ = forward_trace(model, x, perturb=add_tangent, detach_inputs=cut_points(model, stages, local))
    ends = [traces[s.end] for s in stages]
    features = [head_features(t.output) for t in ends]
    loss, local_losses, d = exact_ends(model, heads, traces, output, features,
                                       [head_feature_tangent(t.output_tangent) for t in ends], y, loss_fn)
    for l, pair in paired_derivatives(stages, d, local, rule.clip).items():
        G = pair.shape[0]
        if G == 1 and K == 1:  # the same numbers as below (a sum over one direction is a copy)
            delta = (pair[0, 0].unsqueeze(-1) * u[l].reshape(B, -1)) / (K * B)
        else:
            delta = (pair.permute(1, 2, 0).unsqueeze(-1) * u[l].reshape(K, B, G, -1)).sum(0) / (K * B)
        local_update(blocks[l], traces[l], delta.view(B, *shapes[l]))
    return RuleOutput(loss=loss, output=output.detach(), metrics=local_metrics(stages, local_losses))


@torch.no_grad()
def forward_gradient_weight_local(rule, model, heads: LocalHeads, x, y, loss_fn) -> RuleOutput:
    """fg_w with local losses (`update_forward_grad_weights`): directions V over the hidden blocks'
    parameters, the jvp of each stage's features (greedy: one jvp per stage from its detached input;
    loss: one through all stages), each stage's (group's) batch derivative d; grad = d V per block,
    paired by output unit with its group; the readout and the heads get their exact local gradients."""
    K, local = rule.directions, rule.local
    blocks, stages = list(model.blocks), heads.stages
    traces, output, _ = forward_trace(model, x)
    named = {l: {n: p for n, p in blocks[l].named_parameters() if p.requires_grad} for s in stages for l in s.blocks}
    flat = [(l, n, p) for l, ps in named.items() for n, p in ps.items()]
    sizes = [p.numel() for _, _, p in flat]
    v = rule.noise.sample(sum(sizes), K, rule.generator, next(model.parameters()).dtype)  # [K, P]
    tangents = {(l, n): t.view(K, *p.shape) for (l, n, p), t in zip(flat, v.split(sizes, dim=1))}

    def run(stage_list, z):
        if all(block_tangent_applies(blocks[l], named[l]) for s in stage_list for l in s.blocks):
            # Ren's MLPs (dense blocks with LayerNorm; M/1/16's grouped layer with its GroupNorm): the
            # tangents written out on the primal trace (rules/local.py) instead of torch.func's jvp, which
            # recomputed the primal and multiplied a zero input tangent through every stage's first layer
            # (lg_fg_w on S/1/1: ~3.5x bp's step before).
            fs, dfs, dz = [], [], None
            for stage in stage_list:
                for l in stage.blocks:
                    dz = block_tangent(blocks[l], traces[l], dz, {n: tangents[(l, n)] for n in named[l]})
                fs.append(head_features(traces[stage.end].output))
                dfs.append(head_feature_tangent(dz))
            return fs, dfs

        def features(params):
            out, h = [], z
            for stage in stage_list:
                for l in stage.blocks:
                    h = functional_call(blocks[l], {n: params[(l, n)] for n in named[l]}, (h,))
                out.append(head_features(h))
            return tuple(out)

        keys = [(l, n) for s in stage_list for l in s.blocks for n in named[l]]
        p0 = {(l, n): named[l][n].detach() for l, n in keys}

        def along(t):
            return jvp(features, (p0,), (t,))

        t = {key: tangents[key] for key in keys}
        f, df = vmap(along, out_dims=(None, 0))(t)
        return list(f), list(df)

    if local == "greedy":
        fs, dfs = [], []
        for stage in stages:
            f, df = run([stage], traces[stage.blocks[0]].input)
            fs += f
            dfs += df
    else:
        fs, dfs = run(stages, x)
    B = x.shape[0]
    loss, local_losses, d = exact_ends(model, heads, traces, output, fs, dfs, y, loss_fn)
    d = [dk.sum(-1) / B for dk in d]
    spans, start = {}, 0  # block -> where its parameters' directions sit in v
    for l, ps in named.items():
        spans[l] = (start, [p.numel() for p in ps.values()])
        start += sum(spans[l][1])
    for l, pair in paired_derivatives(stages, d, local, rule.clip).items():  # pair: [G', K]
        G = pair.shape[0]
        if K == 1 and G == 1:  # the block's whole gradient d v in one product (the same numbers as below)
            at, block_sizes = spans[l]
            for p, g in zip(named[l].values(), (v[0, at:at + sum(block_sizes)] * pair.reshape(())).split(block_sizes)):
                p.grad = g.view_as(p)
            continue
        for n, p in named[l].items():
            V = tangents[(l, n)]
            if K == 1:  # the same numbers as below (a sum over one direction is a copy, / 1 exact)
                p.grad = (pair.reshape(G, 1) * V.reshape(G, -1)).view_as(p)
            else:
                p.grad = (pair.T.reshape(K, G, 1) * V.reshape(K, G, -1)).sum(0).view_as(p) / K
    return RuleOutput(loss=loss, output=output.detach(), metrics=local_metrics(stages, local_losses))
