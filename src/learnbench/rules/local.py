"""What every local rule shares: one forward walk over a chain's blocks, and the local update.

Local rules (node perturbation, FG-A, feedback alignment and its relatives, local losses,
predictive coding) need more than the model's output: each block's input z_l, its linear output
h_l and its pre-activation a_l, and a way to change the pass (add noise or tangents at a_l,
replace the linear map's backward, cut the graph between blocks). `forward_trace` is the one
place that walks a `BlockChain` and offers those; `local_update` turns an error signal
delta_l = dL/da_l into the block's parameter gradients from z_l alone (for nn.Linear
dW = delta^T z, for nn.Conv2d the kernel gradient of the same correlation), with no chain
through other blocks.

Tangents (forward-mode AD written out): with `tangent_in` or a `perturb` that starts a tangent,
the walk carries dz beside z with K directions batched in front, [K, rows, ...], so the primal
is computed once and each direction costs one matmul per later layer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from learnbench.models.blocks import Block, BlockChain, GroupedLinear, grouped_matmul_weight_grad
from learnbench.rules.base import trainable_parameters
from learnbench.tasks import CROSS_ENTROPY, loss_kind


@dataclass
class Trace:
    """One block's part of a forward pass."""

    input: Tensor  # z: what the linear part reads (flattened for nn.Linear)
    linear_out: Tensor  # h = linear(z)
    pre_activation: Tensor  # a = norm(h), after any perturbation
    output: Tensor  # the block's output (after activation and pooling): the next block's input
    output_tangent: Tensor | None = None  # its tangent [K, rows, ...] when the walk carries tangents (else None)
    # (mean, rstd) of a LayerNorm step over linear_out, when the walk ran it without a graph: the local
    # update's backward and a later tangent reuse them instead of recomputing the forward
    norm_stats: tuple[Tensor, Tensor] | None = None

    def first_rows(self, n: int) -> "Trace":
        """The trace of the first n rows (the clean copy of the batch when perturbed copies follow)."""
        stats = None if self.norm_stats is None else tuple(s[:n] for s in self.norm_stats)
        return Trace(*(t[:n] for t in (self.input, self.linear_out, self.pre_activation, self.output)), None, stats)


# (block index, block, pre-activation a, its tangent or None) -> (a, tangent)
Perturb = Callable[[int, Block, Tensor, "Tensor | None"], "tuple[Tensor, Tensor | None]"]
# (block index, block, z) -> h: replaces the block's linear map (e.g. a backward through feedback weights)
LinearMap = Callable[[int, Block, Tensor], Tensor]
# (block index, block, z, tangent of z or None) -> tangent of h
LinearTangent = Callable[[int, Block, Tensor, "Tensor | None"], "Tensor | None"]
# (block index, block, h, tangent of h or None) -> (a = norm(h), its tangent): replaces jvp_through(block.norm, ...)
NormTangent = Callable[[int, Block, Tensor, "Tensor | None"], "tuple[Tensor, Tensor | None]"]


def chain_blocks(model: nn.Module, rule: str = "this rule") -> list[Block]:
    """The blocks of a chain model; a clear error for any other model (at set-up, not at the first step)."""
    if not isinstance(model, BlockChain):
        raise ValueError(
            f"{rule} walks the model block by block and needs a learnbench.models.BlockChain "
            f"(model=mlp, autoencoder, lenet or cnn); {type(model).__name__} is not one"
        )
    blocks = list(model.blocks)
    covered = {id(p) for b in blocks for p in b.parameters()}
    if any(id(p) not in covered for p in trainable_parameters(model)):
        raise ValueError(f"{rule}: {type(model).__name__} has trainable parameters outside its blocks, which no local update reaches")
    return blocks


def weight_tangent(block: Block, dz: Tensor | None) -> Tensor | None:
    """The tangent of h = linear(z) for a tangent dz [K, rows, ...] of the input (weights fixed)."""
    if dz is None:
        return None
    linear = block.linear
    if isinstance(linear, nn.Linear):
        return F.linear(dz, linear.weight)
    K = dz.shape[0]
    out = F.conv2d(dz.flatten(0, 1), linear.weight, None, linear.stride, linear.padding, linear.dilation, linear.groups)
    return out.view(K, -1, *out.shape[1:])


def forward_trace(
    model: nn.Module,
    x: Tensor,
    *,
    perturb: Perturb | None = None,
    linear_map: LinearMap | None = None,
    linear_tangent: LinearTangent | None = None,
    norm_tangent: NormTangent | None = None,
    detach_inputs: bool | Collection[int] = False,
) -> tuple[list[Trace], Tensor, Tensor | None]:
    """Run a chain model on x block by block: (a Trace per block, the output, the output's tangent or None).

    `perturb` may change a block's pre-activation and start or add to its tangent; it may also add
    rows (several perturbed copies of the batch: later blocks see them all). `norm_tangent` replaces
    the norm's step (fg_w: the tangents of a LayerNorm's own parameters). `detach_inputs` cuts
    the autograd graph at every block's input (rules that send errors to each block directly), or
    at the inputs of the blocks it lists (local losses: a cut between stages and before the readout);
    a cut stops the tangent too (a stop-gradient's derivative is zero: the block's input has none).

    The model must be a BlockChain; that no trainable parameter lies outside its blocks is checked once,
    at the rule's set-up (`chain_blocks` in check_model), not on every step (~50 us a call on S/1/1)."""
    traces, z, dz = [], x, None
    blocks = list(model.blocks) if isinstance(model, BlockChain) else chain_blocks(model)
    cut = range(len(blocks)) if detach_inputs is True else (detach_inputs or ())
    for i, block in enumerate(blocks):
        if i in cut:
            z, dz = z.detach(), None
        z = block.prepare(z)
        if dz is not None:
            dz = dz.flatten(2) if isinstance(block.linear, nn.Linear) else dz.view(*dz.shape[:2], *z.shape[1:])
        h = block.linear(z) if linear_map is None else linear_map(i, block, z)
        dh = weight_tangent(block, dz) if linear_tangent is None else linear_tangent(i, block, z, dz)
        stats = None
        if norm_tangent is not None:
            a, da = norm_tangent(i, block, h, dh)
        elif isinstance(block.norm, nn.LayerNorm) and not torch.is_grad_enabled():
            # aten's LayerNorm forward (what the module runs) keeping its mean and rstd for the trace
            norm = block.norm
            a, *stats = torch.ops.aten.native_layer_norm(h, list(norm.normalized_shape), norm.weight, norm.bias, norm.eps)
            da = None if dh is None else layer_norm_tangent(norm, h, *stats, dh)
        else:
            a, da = jvp_through(block.norm, h, dh)
        if perturb is not None:
            a, da = perturb(i, block, a, da)
        output, dz = jvp_through(block.activation, a, da)
        output, dz = jvp_through(block.pool, output, dz)
        traces.append(Trace(z, h, a, output, dz, None if stats is None else tuple(stats)))
        z = output
    return traces, z, dz


def jvp_through(module: Callable[[Tensor], Tensor], a: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """(module(a), its tangent) for a module without trainable tangents (norm, activation, pool).

    `t` has leading direction dimensions over `a` ([K, B, ...] against [B, ...]): the primal is
    computed once and every direction's tangent from it."""
    if t is not None and isinstance(module, NORMS_WRITTEN_OUT) and not torch.is_grad_enabled():
        return norm_jvp(module, a, t)
    out = module(a)
    if t is None or _is_identity(module):
        return out, t
    if isinstance(module, nn.ReLU):
        # t where a > 0, else 0: the same numbers as t * (a > 0), in one pass (a bool mask and the
        # float-by-bool product cost ~90 us on S/1/1's [100, 256] against ~15 us for this)
        return out, torch.ops.aten.threshold_backward(t, a, 0)
    from torch.func import jvp, vmap

    def along(tangent: Tensor) -> Tensor:
        return jvp(module, (a,), (tangent,))[1]

    for _ in range(t.dim() - a.dim()):
        along = vmap(along)
    return out, along(t)


def layer_norm_jvp(norm: nn.LayerNorm, h: Tensor, dh: Tensor | None, d_weight: Tensor | None = None, d_bias: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """(norm(h), its tangent) for tangents dh [K, rows, ...] written out (weights fixed): with
    xhat = (h - mean) * rstd, d xhat = rstd (dh_c - xhat mean(xhat dh_c)), dh_c = dh - mean(dh), times
    the weight. The same derivative as torch.func's jvp (equal to rounding), without its dual
    tensors and vmap on every step; mean and rstd are the forward's own (aten.native_layer_norm).
    With one direction, d xhat comes from aten's fused LayerNorm backward: the Jacobian of xhat,
    rstd (I - 11^T/N - xhat xhat^T/N), is symmetric, so its product with dh is the backward's input
    gradient of dh (one kernel instead of ~10 element-wise ops: ~70 -> ~30 us on [100, 256]).
    Under no_grad only (jvp_through keeps torch.func's jvp where a graph is recorded). `d_weight`,
    `d_bias` [K, *normalized_shape]: tangents of the norm's own parameters (fg_w), adding d_weight xhat + d_bias;
    `dh` None is a zero input tangent (a block whose linear part has none): nothing is multiplied through
    for it. With no tangent at all the tangent is None."""
    out, mean, rstd = torch.ops.aten.native_layer_norm(h, list(norm.normalized_shape), norm.weight, norm.bias, norm.eps)
    return out, layer_norm_tangent(norm, h, mean, rstd, dh, d_weight, d_bias)


def layer_norm_tangent(norm: nn.LayerNorm, h: Tensor, mean: Tensor, rstd: Tensor, dh: Tensor | None, d_weight: Tensor | None = None,
                       d_bias: Tensor | None = None) -> Tensor | None:
    """layer_norm_jvp's tangent on the forward's own mean and rstd (aten.native_layer_norm's, kept on a Trace)."""
    shape = list(norm.normalized_shape)
    dims = tuple(range(-len(shape), 0))
    xhat = None
    dx = None
    if dh is not None:
        if dh.shape[0] == 1:
            dx = torch.ops.aten.native_layer_norm_backward(dh[0], h, shape, mean, rstd, None, None, [True, False, False])[0].unsqueeze(0)
        else:
            xhat = (h - mean) * rstd
            dc = dh - dh.mean(dims, keepdim=True)
            dx = (dc - xhat * (dc * xhat).mean(dims, keepdim=True)) * rstd
    lead = [1] * (h.dim() - len(shape))
    if dx is not None and norm.weight is not None and d_weight is not None and d_bias is not None:
        # fg_w on a LayerNorm block: dx w + d_weight xhat + d_bias in two fused products (four ops otherwise)
        if xhat is None:
            xhat = (h - mean) * rstd
        params = torch.addcmul(d_bias.view(d_bias.shape[0], *lead, *shape), d_weight.view(d_weight.shape[0], *lead, *shape), xhat)
        return torch.addcmul(params, dx, norm.weight)
    if dx is not None and norm.weight is not None:
        dx = dx * norm.weight
    if d_weight is not None:
        if xhat is None:
            xhat = (h - mean) * rstd
        term = d_weight.view(d_weight.shape[0], *lead, *shape) * xhat
        dx = term if dx is None else dx + term
    if d_bias is not None:
        term = d_bias.view(d_bias.shape[0], *lead, *shape)
        dx = h.new_zeros(d_bias.shape[0], *h.shape) + term if dx is None else dx + term
    return dx


def group_norm_jvp(norm: nn.GroupNorm, h: Tensor, dh: Tensor | None, d_weight: Tensor | None = None, d_bias: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """layer_norm_jvp for a GroupNorm (M/1/16's per-group LayerNorm): h [N, C, *spatial], tangents dh
    [K, N, C, *spatial], `d_weight`, `d_bias` [K, C]. Each group is normalised over its C/G channels and
    the spatial positions as a LayerNorm is over its shape, so its tangent is the same formula per group
    (one direction through aten's fused GroupNorm backward, whose per-group Jacobian is symmetric), then
    times the per-channel weight, plus d_weight xhat + d_bias. Under no_grad only."""
    N, C, G = h.shape[0], h.shape[1], norm.num_groups
    HxW = h[0, 0].numel()
    out, mean, rstd = torch.ops.aten.native_group_norm(h, norm.weight, norm.bias, N, C, HxW, G, norm.eps)
    per_channel = [C, *[1] * (h.dim() - 2)]  # a [C] vector against [..., N, C, *spatial]
    xhat = None
    dx = None

    def normalised():  # xhat [N, G, C/G * HxW]
        return (h.reshape(N, G, -1) - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)

    if dh is not None:
        K = dh.shape[0]
        if K == 1:
            dx = torch.ops.aten.native_group_norm_backward(dh[0], h, mean, rstd, None, N, C, HxW, G, [True, False, False])[0].unsqueeze(0)
        else:
            xhat = normalised()
            dg = dh.reshape(K, N, G, -1)
            dc = dg - dg.mean(-1, keepdim=True)
            dx = ((dc - xhat * (dc * xhat).mean(-1, keepdim=True)) * rstd.unsqueeze(-1)).view(dh.shape)
        if norm.weight is not None:
            dx = dx * norm.weight.view(per_channel)
    if d_weight is not None:
        if xhat is None:
            xhat = normalised()
        term = d_weight.view(d_weight.shape[0], 1, *per_channel) * xhat.view(h.shape)
        dx = term if dx is None else dx + term
    if d_bias is not None:
        term = d_bias.view(d_bias.shape[0], 1, *per_channel)
        dx = h.new_zeros(d_bias.shape[0], *h.shape) + term if dx is None else dx + term
    return out, dx


def norm_jvp(norm: nn.Module, h: Tensor, dh: Tensor | None, d_weight: Tensor | None = None, d_bias: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """layer_norm_jvp or group_norm_jvp, by the norm's type (NORMS_WRITTEN_OUT)."""
    jvp = layer_norm_jvp if isinstance(norm, nn.LayerNorm) else group_norm_jvp
    return jvp(norm, h, dh, d_weight, d_bias)


#: The norms whose tangent (input and own parameters) is written out: norm_jvp.
NORMS_WRITTEN_OUT = (nn.LayerNorm, nn.GroupNorm)


#: The parameters a block's written-out weight tangent (block_tangent) covers.
TANGENT_PARAMS = frozenset({"linear.weight", "linear.bias", "norm.weight", "norm.bias"})


def block_tangent_applies(block: Block, names) -> bool:
    """Whether block_tangent covers this block with tangents on the parameters `names`: a Linear or
    Conv2d (M/1/16's grouped 1x1 convolution), no norm or a LayerNorm / GroupNorm."""
    return isinstance(block.norm, (nn.Identity, *NORMS_WRITTEN_OUT)) and set(names) <= TANGENT_PARAMS


def dense_linear_tangent(weight: Tensor, z: Tensor, dz: Tensor | None, V: Tensor | None, vb: Tensor | None) -> Tensor | None:
    """The tangent [K, B, out] of h = z W^T + b (nn.Linear) for the input's tangent dz [K, B, in] and the
    parameters' V [K, out, in], vb [K, out] (each None: zero): W dz + V z + v_b. With one direction
    (Ren's setting) it is two fused products, addmm(V z + v_b, dz, W^T) (five ops otherwise; equal to rounding)."""
    K = next((t.shape[0] for t in (dz, V, vb) if t is not None), None)
    if K is None:
        return None
    if K == 1:
        if V is not None:
            dh = F.linear(z, V[0], None if vb is None else vb[0])
        elif vb is not None:
            dh = vb[0].expand(z.shape[0], -1)
        else:
            return F.linear(dz, weight)
        return (dh if dz is None else torch.addmm(dh, dz[0], weight.T)).unsqueeze(0)
    dh = None if dz is None else F.linear(dz, weight)
    if V is not None:
        Vz = torch.matmul(z, V.mT)
        dh = Vz if dh is None else dh.add_(Vz)
    if vb is not None:
        vb = vb.unsqueeze(1)
        dh = vb.expand(K, z.shape[0], vb.shape[-1]) if dh is None else dh.add_(vb)
    return dh


def linear_tangent(linear: nn.Module, z: Tensor, dz: Tensor | None, V: Tensor | None, vb: Tensor | None) -> Tensor | None:
    """The tangent of a block's linear map (nn.Linear: dense_linear_tangent; nn.Conv2d: the same sum with
    convolutions) for the input's tangent dz [K, B, ...] and the parameters' V [K, *weight], vb [K, out]."""
    if isinstance(linear, nn.Linear):
        return dense_linear_tangent(linear.weight, z, dz, V, vb)
    conv = (linear.stride, linear.padding, linear.dilation, linear.groups)
    dh = None
    if dz is not None:
        out = F.conv2d(dz.flatten(0, 1), linear.weight, None, *conv)
        dh = out.view(dz.shape[0], -1, *out.shape[1:])
    if V is not None:
        if linear.groups > 1:  # grouped: stacking would mix the directions into the groups
            Vz = torch.stack([F.conv2d(z, Vk, None, *conv) for Vk in V])
        else:  # one convolution with the K directions' kernels stacked as output channels
            K = V.shape[0]
            out = F.conv2d(z, V.flatten(0, 1), None, *conv)
            Vz = out.view(out.shape[0], K, -1, *out.shape[2:]).transpose(0, 1)
        dh = Vz if dh is None else dh.add_(Vz)
    if vb is not None:
        vb = vb.view(vb.shape[0], 1, -1, *[1] * (z.dim() - 2))
        dh = vb.expand(vb.shape[0], z.shape[0], *vb.shape[2:]) if dh is None else dh.add_(vb)
    return dh


def activation_tangent(block: Block, a: Tensor, da: Tensor) -> Tensor:
    """The tangent of the block's output (activation, pooling) at its pre-activation a for da: a ReLU
    without a pooling is threshold_backward on a alone (the output is not recomputed)."""
    if isinstance(block.activation, nn.ReLU) and _is_identity(block.pool):
        return torch.ops.aten.threshold_backward(da, a, 0)
    out, d_out = jvp_through(block.activation, a, da)
    return jvp_through(block.pool, out, d_out)[1]


def block_tangent(block: Block, trace: Trace, dz: Tensor | None, V: dict[str, Tensor]) -> Tensor | None:
    """The tangent of a block's output [K, B, ...] along parameter tangents V (name -> [K, *shape]) and
    the input's tangent dz (None: zero), on the block's primal trace: W dz + V z + v_b (linear_tangent),
    the norm's jvp plus its parameters' tangents (norm_jvp), the activation's (forward-mode AD written
    out: no zero input tangent multiplied through, the primal not recomputed)."""
    z = trace.input
    if dz is not None:
        dz = dz.flatten(2) if isinstance(block.linear, nn.Linear) else dz.view(*dz.shape[:2], *z.shape[1:])
    dh = linear_tangent(block.linear, z, dz, V.get("linear.weight"), V.get("linear.bias"))
    if isinstance(block.norm, NORMS_WRITTEN_OUT) and ("norm.weight" in V or "norm.bias" in V or dh is not None):
        if trace.norm_stats is not None:  # the walk's LayerNorm stats: no forward recomputed
            dh = layer_norm_tangent(block.norm, trace.linear_out, *trace.norm_stats, dh, V.get("norm.weight"), V.get("norm.bias"))
        else:
            dh = norm_jvp(block.norm, trace.linear_out, dh, V.get("norm.weight"), V.get("norm.bias"))[1]
    if dh is None:
        return None
    return activation_tangent(block, trace.pre_activation, dh)


def layer_norm_backward(norm: nn.LayerNorm, h: Tensor, delta: Tensor, stats: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(dL/dh, dL/dweight, dL/dbias) of a = norm(h) for dL/da = delta: the kernel autograd's backward
    calls, on the stats (mean, rstd) of the walk's forward when given (Trace.norm_stats), else of a forward
    recomputed without a graph (the same numbers, bit for bit)."""
    weight, bias, shape = norm.weight, norm.bias, list(norm.normalized_shape)
    mask = [True, weight is not None and weight.requires_grad, bias is not None and bias.requires_grad]
    with torch.no_grad():
        mean, rstd = stats if stats is not None else torch.ops.aten.native_layer_norm(h, shape, weight, bias, norm.eps)[1:]
        return torch.ops.aten.native_layer_norm_backward(delta, h, shape, mean, rstd, weight, bias, mask)


def group_norm_backward(norm: nn.GroupNorm, h: Tensor, delta: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """layer_norm_backward for a GroupNorm (M/1/16's per-group norm): the kernels autograd's GroupNorm
    backward calls, on the stats of a forward recomputed without a graph (no autograd graph built)."""
    weight, bias, G = norm.weight, norm.bias, norm.num_groups
    N, C = h.shape[0], h.shape[1]
    HxW = h[0, 0].numel()
    mask = [True, weight is not None and weight.requires_grad, bias is not None and bias.requires_grad]
    with torch.no_grad():
        _, mean, rstd = torch.ops.aten.native_group_norm(h, weight, bias, N, C, HxW, G, norm.eps)
        return torch.ops.aten.native_group_norm_backward(delta.contiguous(), h, mean, rstd, weight, N, C, HxW, G, mask)


def _is_identity(module) -> bool:
    if isinstance(module, nn.Sequential):
        return all(_is_identity(m) for m in module)
    return isinstance(module, nn.Identity)


def is_cross_entropy(loss_fn, output: Tensor, y: Tensor) -> bool:
    """Whether loss_fn is a task's per-example cross entropy (tasks.loss_kind) on logits [B, C] and class
    indices [B]: then its gradient and jvp are written out (cross_entropy_gradient) instead of taken by autograd."""
    return loss_kind(loss_fn) == CROSS_ENTROPY and output.dim() == 2 and y.dim() == 1 and not y.is_floating_point()


def cross_entropy_gradient(output: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(per-example cross entropies [B], each example's gradient dL_i/doutput_i = softmax - onehot [B, C]),
    written out: F.cross_entropy(reduction="none") is -log_softmax at the target, the same kernels, and
    its backward is exp(log_softmax) - onehot (equal to autograd's to rounding; tests/test_local_losses_speed.py).
    Targets are class indices (no ignore_index: none are used in this suite)."""
    logp = torch.log_softmax(output, -1)
    index = y.unsqueeze(-1)
    losses = -logp.gather(-1, index).squeeze(-1)
    grad = logp.exp_()
    grad.scatter_add_(-1, index, grad.new_full(index.shape, -1.0))
    return losses, grad


def loss_jvp(loss_fn, output: Tensor, y: Tensor, d_output: Tensor) -> tuple[Tensor, Tensor]:
    """(per-example losses [B], their derivatives along each direction [K, B]) at `output`, for
    output tangents d_output [K, B, ...]: the last step of a hand-written forward-mode pass.
    The cross entropy of a classification task is written out: d = (softmax - onehot) . d_output
    (one pass, ~30 us, against ~130-270 us for the dual tensor below on S/1/1)."""
    if is_cross_entropy(loss_fn, output, y):
        losses, grad = cross_entropy_gradient(output, y)
        return losses, (d_output * grad).sum(-1)
    if d_output.shape[0] == 1:
        # One direction: a dual tensor directly, the same numbers as the vmap below (bit for bit) at a
        # fraction of its per-call cost (torch.func's vmap and jvp wrappers were ~2.5 ms of a 10 ms step on S/1/1).
        import torch.autograd.forward_ad as fwAD

        with fwAD.dual_level():
            primal, tangent = fwAD.unpack_dual(loss_fn(fwAD.make_dual(output, d_output[0]), y))
        if tangent is None:  # the loss does not depend on the output's tangent
            tangent = torch.zeros_like(primal)
        return primal, tangent.unsqueeze(0)
    from torch.func import jvp, vmap

    return vmap(lambda t: jvp(lambda o: loss_fn(o, y), (output,), (t,)), out_dims=(None, 0))(d_output)


def relu_mask(block: Block, a: Tensor) -> Tensor | None:
    """1 where the unit after this pre-activation is active; None when the activation is not a ReLU."""
    # sign(relu(a)): 1 where a > 0, else 0, as (a > 0).to(a.dtype) (two float ops, ~6x cheaper than the bool mask and its cast)
    return torch.sign(torch.relu(a)) if isinstance(block.activation, nn.ReLU) else None


def fold_rows(delta: Tensor, rows: int) -> Tensor:
    """delta with R copies of `rows` rows (one per direction, stacked) summed onto those rows."""
    return delta if delta.shape[0] == rows else delta.view(-1, rows, *delta.shape[1:]).sum(0)


def local_update(block: Block, trace: Trace, delta: Tensor) -> None:
    """Write the block's parameter gradients from its input z, linear output h and dL/da = delta.

    delta may hold several stacked copies of the batch's rows (directions); they are summed onto
    the rows of z. A norm between the linear map and a is differentiated locally (this block only)."""
    z, h = trace.input, trace.linear_out
    delta = fold_rows(delta, h.shape[0])
    if isinstance(block.norm, nn.LayerNorm):
        delta, dweight, dbias = layer_norm_backward(block.norm, h.detach(), delta, trace.norm_stats)
        if dweight is not None:
            block.norm.weight.grad = dweight
        if dbias is not None:
            block.norm.bias.grad = dbias
    elif isinstance(block.norm, nn.GroupNorm):
        delta, dweight, dbias = group_norm_backward(block.norm, h.detach(), delta)
        if dweight is not None:
            block.norm.weight.grad = dweight
        if dbias is not None:
            block.norm.bias.grad = dbias
    elif not isinstance(block.norm, nn.Identity):
        norm_params = [p for p in block.norm.parameters() if p.requires_grad]
        with torch.enable_grad():
            h_leaf = h.detach().requires_grad_()
            grads = torch.autograd.grad(block.norm(h_leaf), [h_leaf, *norm_params], delta)
        delta = grads[0]
        for p, g in zip(norm_params, grads[1:]):
            p.grad = g
    delta = fold_rows(delta, z.shape[0])
    linear = block.linear
    if linear.weight.requires_grad:
        linear.weight.grad = weight_gradient(linear, z, delta)
    if linear.bias is not None and linear.bias.requires_grad:
        linear.bias.grad = delta.sum(0) if delta.dim() == 2 else delta.sum((0, 2, 3))


def weight_gradient(linear: nn.Module, z: Tensor, delta: Tensor) -> Tensor:
    """dL/dW of h = linear(z) for dL/dh = delta: delta^T z, or the kernel correlation of a convolution."""
    if isinstance(linear, nn.Linear):
        return delta.T @ z
    if isinstance(linear, GroupedLinear):
        return grouped_matmul_weight_grad(z, delta, linear.groups, linear.weight.shape)
    return torch.nn.grad.conv2d_weight(z, linear.weight.shape, delta, linear.stride, linear.padding, linear.dilation, linear.groups)
