"""Shared by the rules that send the error down through feedback weights B_l instead of W_l^T.

The backward pass is autograd's, with one change: each block's linear map differentiates its
input through B_l (a custom autograd function), while its weight gradient stays the exact local
one, delta_l^T z_l (the shared `weight_gradient`). Everything between the linear maps (norms,
activations, pooling, flattening) is differentiated as usual, so one backward pass costs what
backprop's does, on Linear and Conv2d layers alike.

A subclass says which matrix plays W_l's part in the backward pass (`feedback_for`): a fixed
random B (FA), a learned one (Kolen-Pollack), or one built from W's signs (sign symmetry). The
first block needs none (no error goes below the input). B_l has W_l's shape; the error at the
block's input is delta_h B_l for a dense layer and the transposed convolution with B_l for a
convolution.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from learnbench.models.blocks import Block, GroupedLinear, grouped_matmul, grouped_matmul_input_grad
from learnbench.models.temporal import TemporalModel
from learnbench.rules.base import LearningRule, LossFn, RuleOutput, trainable_parameters
from learnbench.rules.local import chain_blocks, forward_trace, weight_gradient


#: How random feedback matrices are drawn (see draw_feedback).
FeedbackInit = Literal["kaiming_uniform", "xavier_uniform", "gaussian"]


class _FeedbackLinear(torch.autograd.Function):
    """h = linear(z) forward; backward: dL/dz through `feedback`, dL/dW and dL/db exact."""

    @staticmethod
    def forward(ctx, z, weight, bias, feedback, layer):
        ctx.save_for_backward(z, feedback)
        ctx.layer, ctx.has_bias = layer, bias is not None
        if isinstance(layer, nn.Linear):
            return F.linear(z, weight, bias)
        if isinstance(layer, GroupedLinear):
            return grouped_matmul(z, weight, bias, layer.groups)
        return F.conv2d(z, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)

    @staticmethod
    def backward(ctx, delta):
        z, feedback = ctx.saved_tensors
        layer = ctx.layer
        grad_z = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if isinstance(layer, nn.Linear):
                grad_z = delta @ feedback
            elif isinstance(layer, GroupedLinear):
                grad_z = grouped_matmul_input_grad(delta, feedback, layer.groups)
            else:
                grad_z = torch.nn.grad.conv2d_input(z.shape, feedback, delta, layer.stride, layer.padding, layer.dilation, layer.groups)
        if ctx.needs_input_grad[1]:  # a dense layer's rows may carry time ([batch, T, in]: model=snn): all rows count
            grad_w = weight_gradient(layer, z.flatten(0, -2), delta.flatten(0, -2)) if isinstance(layer, nn.Linear) else weight_gradient(layer, z, delta)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = delta.flatten(0, -2).sum(0) if isinstance(layer, nn.Linear) else delta.sum((0, 2, 3))
        return grad_z, grad_w, grad_b, None, None


def linear_with_feedback(block: Block, z: Tensor, feedback: Tensor) -> Tensor:
    return feedback_linear(block.linear, z, feedback)


def feedback_linear(linear: nn.Module, z: Tensor, feedback: Tensor) -> Tensor:
    """linear(z) whose backward sends the error to z through `feedback` (z may carry time: [batch, T, in])."""
    return _FeedbackLinear.apply(z, linear.weight, linear.bias, feedback, linear)


def draw_feedback(weight: Tensor, init: str, scale: float, generator: torch.Generator) -> Tensor:
    """A random matrix of W's shape (drawn on the CPU in float32 from the seed alone, then cast to W's
    dtype, so a float64 run draws the same B as a float32 one).

    `kaiming_uniform`: the distribution PyTorch gives W itself at initialisation (U(-1/sqrt(fan_in),
    1/sqrt(fan_in)), what biotorch's layers use), so B starts at W's scale; `xavier_uniform`;
    `gaussian`: N(0, 1/fan_in). `scale` multiplies the result."""
    fan_out, fan_in = weight.shape[0], math.prod(weight.shape[1:])
    shape, dtype = tuple(weight.shape), torch.float32
    if init == "kaiming_uniform":
        bound = 1 / math.sqrt(fan_in)
        b = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound
    elif init == "xavier_uniform":
        receptive = math.prod(weight.shape[2:])
        bound = math.sqrt(6 / ((fan_in + fan_out * receptive) if weight.dim() > 2 else (fan_in + fan_out)))
        b = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound
    elif init == "gaussian":
        b = torch.randn(shape, generator=generator, dtype=dtype) / math.sqrt(fan_in)
    else:
        raise ValueError(f"method.init={init!r}: choose kaiming_uniform, xavier_uniform or gaussian")
    return (b * scale).to(weight.dtype)


def angle_degrees(a: Tensor, b: Tensor) -> float:
    cos = F.cosine_similarity(a.reshape(-1).double(), b.reshape(-1).double(), dim=0).clamp(-1, 1)
    return math.degrees(math.acos(float(cos)))


class FeedbackMatrices(nn.Module):
    """B_l by block index: buffers when fixed (never frozen Parameters), nn.Parameters when learned."""

    def add(self, index: int, matrix: Tensor, learned: bool = False) -> None:
        if learned:
            self.register_parameter(str(index), nn.Parameter(matrix))
        else:
            self.register_buffer(str(index), matrix)

    def __getitem__(self, index: int) -> Tensor:
        return getattr(self, str(index))

    def items(self) -> list[tuple[int, Tensor]]:
        return [(int(name), t) for name, t in [*self.named_parameters(recurse=False), *self.named_buffers(recurse=False)]]


class FeedbackRule(LearningRule):
    """Backward through `feedback_for(i, block)` in place of W_i for every block after the first.

    On a model that runs in time and declares a feedback path (models/temporal.py: model=snn's
    `feedback_layers`, `layer_walk`, `feedback_problem`), the same: the linear maps after the first send the
    error down through B_i, and within each layer autograd carries it back through the layer's own time
    (each unit's membrane and synaptic current) by the surrogate derivative."""

    #: Feed-forward chains; fa and dfa also the feed-forward spiking network (their own `trains`).
    method_name = "fa"

    def check_model(self, model: nn.Module) -> None:
        if isinstance(model, TemporalModel):
            if model.kind not in self.trains:  # kp, sign symmetry: written for chains of blocks only
                raise ValueError(f"{type(self).__name__} does not train {model.kind} models (model={type(model).__name__}); "
                                 f"of the feedback rules, method=fa and dfa do")
            # Only what fits is offered: wp and fg_w cannot read a model that draws its inputs inside the forward pass (a
            # rate-coded LSM), nor force a model that makes its own steps from a static example (lsm_mnist).
            others = "method=bp" if getattr(model, "draws_inputs", False) else "method=bp, wp or fg_w"
            readouts = "method=ridge" if getattr(model, "time_axis", None) == "model" else "method=ridge or force"
            problem = model.feedback_problem(self.method_name) if hasattr(model, "feedback_problem") else (
                f"method={self.method_name} sends the error down a model's layers, and {type(model).__name__} declares none: "
                f"train it with {others} (its readout alone: {readouts})")
            if problem:
                raise ValueError(problem)
            return
        chain_blocks(model, type(self).__name__)

    def feedback_for(self, i: int, block: Block) -> Tensor:
        raise NotImplementedError

    def forward_with_feedback(self, model: nn.Module, x: Tensor):
        """(traces, output); on a model in time (the hidden spikes, output)."""
        if isinstance(model, TemporalModel):
            def time_map(i, linear, z):
                return feedback_linear(linear, z, self.feedback_for(i, linear))

            spikes, _, output = model.layer_walk(x, linear_map=time_map)
            return spikes, output

        def linear_map(i, block, z):
            return block.linear(z) if i == 0 else linear_with_feedback(block, z, self.feedback_for(i, block))

        traces, output, _ = forward_trace(model, x, linear_map=linear_map)
        return traces, output

    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        traces, output = self.forward_with_feedback(model, x)
        loss = loss_fn(output, y).mean()
        params = trainable_parameters(model)
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g
        return RuleOutput(loss=loss.detach(), output=output.detach())

    # ------------------------------------------------------------------ diagnostics
    def aligned_pairs(self, model: nn.Module) -> dict[int, tuple[Tensor, Tensor]]:
        """Block index -> (the feedback matrix, the forward weights it stands in for)."""
        return {i: (self.feedback_for(i, b), b.linear.weight) for i, b in enumerate(model.blocks) if i > 0}

    def rule_deltas(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> list[Tensor]:
        """dL/dh_l, the error at each block's linear output, as this rule computes it."""
        with torch.enable_grad():
            traces, output = self.forward_with_feedback(model, x)
            return list(torch.autograd.grad(loss_fn(output, y).mean(), [t.linear_out for t in traces]))

    @torch.no_grad()
    def diagnostics(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> dict[str, float]:
        """Per block, in degrees: the angle between B_l and the forward weights it stands in for (how far
        feedback and forward weights have aligned), and between this rule's delta_l and backprop's."""
        if isinstance(model, TemporalModel):  # the module's align/cos/<layer> compares the estimate with surrogate BPTT's
            return {}
        names = {id(b): n for n, b in model.named_modules() if isinstance(b, Block)}
        values = {}
        for i, (feedback, weight) in self.aligned_pairs(model).items():
            values[f"angle_BW/{names[id(model.blocks[i])]}"] = angle_degrees(feedback, weight)
        with torch.enable_grad():
            traces, output, _ = forward_trace(model, x)
            true = torch.autograd.grad(loss_fn(output, y).mean(), [t.linear_out for t in traces])
        ours = self.rule_deltas(model, x, y, loss_fn)
        for block, d_true, d_rule in zip(model.blocks[:-1], true[:-1], ours[:-1]):  # the readout's delta is exact
            values[f"angle_delta/{names[id(block)]}"] = angle_degrees(d_rule, d_true)
        return values
