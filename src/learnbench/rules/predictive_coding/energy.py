"""The energy of a predictive-coding network over a BlockChain, and its local derivatives.

Value nodes are the outputs of the blocks: node_k holds what block k outputs (k = 0 .. L-2, the
hidden layers); the input x is clamped below and the output is clamped to the target through
the top energy. Block k predicts node_k from the node below it, mu_k = block_k(node_{k-1}), and

    E = sum_{k < L-1} ||node_k - mu_k||^2 / 2  +  E_top(mu_{L-1}, y)          (per example)

Every derivative here is local to one block: the error eps_k = node_k - mu_k, its pull-back to
the block's pre-activation a_k (delta_k = dE/da_k, what the local weight update reads) and to
the node below (dE/dnode_{k-1}). Nothing builds a graph across blocks or inference steps (design
pitfall 11). Dense blocks without a norm or pooling take a hand-written path (the activation's
derivative by ATen's fused backward kernel, the one autograd runs; one matmul); convolutions, LayerNorm and pooling are differentiated by
autograd within the one block (a graph one block deep, freed at once).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from learnbench.models.blocks import Block, GroupedLinear, grouped_matmul_input_grad
from learnbench.rules.local import Trace
from learnbench.tasks import CROSS_ENTROPY, loss_kind


def predict(block: Block, below: Tensor) -> Trace:
    """Block k's prediction mu_k of node_k from the node below (input z, linear h, pre-activation a, mu)."""
    if is_plain_dense(block) and isinstance(block.linear, GroupedLinear):  # a seed stack's layer (learnbench/seeds.py)
        z = block.prepare(below)
        h = block.linear(z)
        return Trace(z, h, h, block.activation(h))
    if is_plain_dense(block):  # the same ops without the Identity modules' calls (inference repeats this T times)
        z = below.flatten(1)
        h = F.linear(z, block.linear.weight, block.linear.bias)
        return Trace(z, h, h, block.activation(h))
    z = block.prepare(below)
    h = block.linear(z)
    a = block.norm(h)
    return Trace(z, h, a, block.after_pre_activation(a))


#: Elementwise activations whose derivative activation_vjp writes out (GELU: the exact erf form only).
DENSE_ACTIVATIONS = (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.GELU)


def activation_vjp(activation: nn.Module, a: Tensor, out: Tensor, cotangent: Tensor) -> Tensor:
    """cotangent * f'(a) for an elementwise activation (a the pre-activation, out = f(a)), in one fused kernel:
    ATen's own backward of each activation (what autograd runs), e.g. GELU's cotangent * (Phi(a) + a phi(a))."""
    if isinstance(activation, nn.Identity):
        return cotangent
    if isinstance(activation, nn.ReLU):
        return torch.ops.aten.threshold_backward(cotangent, a, 0)
    if isinstance(activation, nn.LeakyReLU):
        return torch.ops.aten.leaky_relu_backward(cotangent, a, activation.negative_slope, False)
    if isinstance(activation, nn.Hardtanh):
        return torch.ops.aten.hardtanh_backward(cotangent, a, activation.min_val, activation.max_val)
    if isinstance(activation, nn.Tanh):
        return torch.ops.aten.tanh_backward(cotangent, out)
    if isinstance(activation, nn.Sigmoid):
        return torch.ops.aten.sigmoid_backward(cotangent, out)
    if isinstance(activation, nn.GELU) and activation.approximate == "none":
        return torch.ops.aten.gelu_backward(cotangent, a)
    raise TypeError(f"no closed-form derivative for {type(activation).__name__}")


def is_plain_dense(block: Block) -> bool:
    """Linear (or a seed stack's GroupedLinear) -> activation with no norm and no pooling: the hand-written path applies."""
    return (
        isinstance(block.linear, (nn.Linear, GroupedLinear))
        and isinstance(block.norm, nn.Identity)
        and isinstance(block.pool, nn.Identity)
        and isinstance(block.activation, DENSE_ACTIVATIONS)
        and (not isinstance(block.activation, nn.GELU) or block.activation.approximate == "none")
    )


def pull_back(block: Block, below: Tensor, trace: Trace, cotangent: Tensor, need_below: bool) -> tuple[Tensor, Tensor | None]:
    """(dE/da, dE/d(node below)) for a cotangent dE/dmu at the block's output (None if not needed), with the
    Jacobian taken where the trace was computed (the current nodes, or the feed-forward pass under FPA)."""
    if is_plain_dense(block):
        delta = activation_vjp(block.activation, trace.pre_activation, trace.output, cotangent)
        if not need_below:
            return delta, None
        if isinstance(block.linear, GroupedLinear):
            return delta, grouped_matmul_input_grad(delta, block.linear.weight, block.linear.groups).view_as(below)
        return delta, (delta @ block.linear.weight).view_as(below)
    with torch.enable_grad():  # autograd within this one block only, at the trace's point (FPA: feed-forward)
        z_leaf = trace.input.detach().requires_grad_(need_below)
        a = block.norm(block.linear(z_leaf))
        a_leaf = a.detach().requires_grad_()
        (delta,) = torch.autograd.grad(block.after_pre_activation(a_leaf), a_leaf, cotangent)
        below_grad = torch.autograd.grad(a, z_leaf, delta)[0].view_as(below) if need_below else None
    return delta, below_grad


def top_energy(output: Tensor, y: Tensor, loss_fn, output_loss: str) -> tuple[Tensor, Tensor]:
    """(E_top per example [batch], dE_top/d output) with the output clamped to the target y.

    `task`: the dataset's own per-example loss (cross-entropy on classification, pcx's PC-CE; the
    per-pixel mean squared error on reconstruction); `se`: ||output - target||^2 / 2 summed over
    the outputs, one-hot targets on classification (pcx's PC-SE)."""
    return TopEnergy(y, loss_fn, output_loss)(output)


class TopEnergy:
    """top_energy for one batch's target y, called at every inference step: the one-hot target is built once.
    Cross-entropy's derivative is ATen's log-softmax backward of nll_loss's (-1 at the target), the ops autograd
    runs, so it equals autograd's to the bit; other task losses are differentiated by autograd at the output."""

    def __init__(self, y: Tensor, loss_fn, output_loss: str):
        self.y, self.loss_fn, self.output_loss = y, loss_fn, output_loss
        self.cross_entropy = output_loss == "task" and loss_kind(loss_fn) == CROSS_ENTROPY and not y.is_floating_point()
        self.target: Tensor | None = None  # se: the one-hot (or flattened) target; cross-entropy: minus the one-hot

    def __call__(self, output: Tensor) -> tuple[Tensor, Tensor]:
        y = self.y
        if self.output_loss == "se":
            if self.target is None:
                self.target = F.one_hot(y, output.shape[1]).to(output.dtype) if not y.is_floating_point() else y.flatten(1)
            if self.target.shape != output.shape:
                raise ValueError(
                    f"method.output_loss=se compares the output {tuple(output.shape)} with the target itself, which has "
                    f"shape {tuple(y.shape)} here: use output_loss=task (the dataset's own loss)"
                )
            diff = output - self.target
            return 0.5 * diff.pow(2).sum(1), diff
        if self.cross_entropy and output.dim() == 2:
            if self.target is None:
                self.target = -F.one_hot(y, output.shape[1]).to(output.dtype)
            log_p = torch.log_softmax(output, 1)
            grad = torch.ops.aten._log_softmax_backward_data(self.target, log_p, 1, log_p.dtype)
            return F.nll_loss(log_p, y, reduction="none"), grad
        with torch.enable_grad():  # the loss's derivative at the output alone: no graph below it
            leaf = output.detach().requires_grad_()
            per_example = self.loss_fn(leaf, y)
            (grad,) = torch.autograd.grad(per_example.sum(), leaf)
        return per_example.detach(), grad


# ------------------------------------------------------------------ the stability bound of inference
#: The largest |f'| of each activation (GELU's slope peaks at ~1.129 near a = 2.4).
MAX_SLOPE = {nn.Identity: 1.0, nn.ReLU: 1.0, nn.Hardtanh: 1.0, nn.Tanh: 1.0, nn.Sigmoid: 0.25, nn.GELU: 1.13}


def max_slope(activation: nn.Module) -> float:
    if isinstance(activation, nn.LeakyReLU):
        return max(1.0, abs(activation.negative_slope))
    return MAX_SLOPE.get(type(activation), 1.13)


def operator_norm_bound(linear: nn.Module) -> float:
    """An upper bound on the linear map's operator norm: ||W||_2; for a convolution, which is a sum over
    the K kernel offsets of shifted 1x1 convolutions (shifts have norm <= 1), the smaller of
    sum_offsets ||W_offset||_2 and sqrt(K) ||W as [out, in K]||_2 (the K shifted copies, stacked)."""
    w = linear.weight.detach().double().cpu()
    if isinstance(linear, nn.Linear):
        return float(torch.linalg.matrix_norm(w, ord=2))
    offsets = float(torch.linalg.matrix_norm(w.permute(2, 3, 0, 1), ord=2).sum())
    stacked = math.sqrt(w[0, 0].numel()) * float(torch.linalg.matrix_norm(w.flatten(1), ord=2))
    return min(offsets, stacked)


def stable_step_bound(blocks: list[Block], momentum: float) -> tuple[float, float]:
    """(a step size below which inference is stable, the largest step any network can take).

    Inference is gradient descent (heavy ball with momentum mu) on E over the value nodes; on a
    quadratic it is stable iff step * lambda_max(H) < 2 (1 + mu). At the feed-forward start the
    hidden errors are zero, so H is J^T J with J the Jacobian of the errors: identity blocks on the
    diagonal (each node's own error) and -f'(a) W below it (the error it causes one layer up), plus
    the top loss's curvature (<= 1 for squared error, <= 1/2 for cross-entropy). Hence
        1 <= lambda_max(H) <= (1 + s)^2,   s = max over blocks above a node of max|f'| ||W||_2,
    so steps >= 2 (1 + mu) never converge, and steps < 2 (1 + mu) / (1 + s)^2 always do (near the
    start). For one linear hidden layer under a squared-error top the exact limit is
    2 (1 + mu) / (1 + ||W||^2), between the two. (LayerNorm's slope is not included.)"""
    s = max((max_slope(b.activation) * operator_norm_bound(b.linear) for b in blocks[1:]), default=0.0)
    return 2 * (1 + momentum) / (1 + s) ** 2, 2 * (1 + momentum)
