"""Direct feedback alignment, DFA (Nøkland 2016).

The output error e = dL/dy goes to every hidden block directly through a fixed random matrix
B_l (classes x the block's whole output map): the error at block l's output is e B_l, and
from there the block's own activation (and pooling) give delta_l = (e B_l) * f'(a_l); the weights
follow by the local update. No error travels through another block.

One autograd pass does it all: the blocks run with their inputs detached, and the backward pass
is taken of the surrogate  L + sum_l <z_l, stopgrad(e B_l)>  over the hidden block outputs z_l,
whose gradient w.r.t. each block's parameters is exactly its local DFA update (the last block's,
the readout's, is the ordinary local gradient). No chain through hidden layers: cheaper than BP.

On the feed-forward spiking network (model=snn) e is the error at the readout's input current at every step,
[batch, T, outputs], and B_l [outputs, N_l] sends it to layer l's spikes at the same step; within the layer
autograd carries it back through the unit's own membrane and current by the surrogate (a unit's own past
is local to it). With one hidden layer and B = W_out it is surrogate BPTT exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from learnbench.models.temporal import TemporalModel
from learnbench.options import Positive
from learnbench.rules.base import RuleOutput, trainable_parameters
from learnbench.rules.feedback.feedback_path import FeedbackInit, FeedbackMatrices, FeedbackRule, draw_feedback
from learnbench.rules.local import forward_trace
from learnbench.rules.locality import signals


class DirectFeedbackAlignment(FeedbackRule):
    method_name = "dfa"
    stacks_seeds = True  # a stack's B_l is block-diagonal (learnbench/seeds.py: pack_state): each seed's outputs reach its own units
    #: Also the feed-forward spiking network (model=snn): e_t B_l at every layer's spikes, the surrogate within.
    trains = ("feedforward", "spiking")

    def __init__(self, init: FeedbackInit = "kaiming_uniform", scale: Positive = 1.0, local: str = "none"):
        """`local` is only there to be refused clearly: DFA has no local-loss variant (Ren et al.'s table has
        none; its output error already reaches every block directly)."""
        if local != "none":
            raise ValueError(
                f"method.local={local}: dfa has no local-loss variant (its output error already reaches every block "
                f"directly; Ren et al.'s table has none). Local losses are options of bp, fa, fg_w and fg_a "
                f"(method=l_fa, lg_fa, ...)"
            )
        super().__init__()
        self.init, self.scale = init, scale
        self.feedback = FeedbackMatrices()

    def reads(self) -> frozenset[str]:
        """The output error sent to every layer directly through its own fixed random B."""
        return signals("pre", "post_derivative", "output_error", "feedback_weights")

    def init_state(self, model, generator):
        """B_l: [outputs, size of block l's output] for every hidden block, drawn like a layer from the
        outputs to that block (fan-in = the number of outputs)."""
        if isinstance(model, TemporalModel):  # the hidden layers' units; the outputs: the readout's
            *hidden, readout = model.feedback_layers()
            for i, linear in enumerate(hidden):
                weight_like = torch.empty(linear.out_features, readout.out_features, dtype=readout.weight.dtype)
                self.feedback.add(i, draw_feedback(weight_like, self.init, self.scale, generator).T.contiguous())
            return
        with torch.no_grad():
            traces, output, _ = forward_trace(model, torch.zeros(1, *model.input_shape))
        for i, trace in enumerate(traces[:-1]):
            size = math.prod(trace.output.shape[1:])
            weight_like = torch.empty(size, output.shape[1], dtype=output.dtype)  # a layer outputs -> block output
            self.feedback.add(i, draw_feedback(weight_like, self.init, self.scale, generator).T.contiguous())

    def projected_errors(self, traces, e):
        """sum_l <z_l, stopgrad(e B_l)>: its gradient w.r.t. block l's parameters is the DFA update."""
        e = e.flatten(1)  # a seed stack's readout is a grouped 1x1 convolution: [B, outputs, 1, 1]
        return sum((traces[i].output * (e @ b).view_as(traces[i].output)).sum() for i, b in self.feedback.items())

    def _surrogate(self, model, x, y, loss_fn):
        if isinstance(model, TemporalModel):
            return self._surrogate_in_time(model, x, y, loss_fn)
        traces, output, _ = forward_trace(model, x, detach_inputs=True)
        loss = loss_fn(output, y).mean()
        (e,) = torch.autograd.grad(loss, output, retain_graph=True)
        return traces, output, loss, loss + self.projected_errors(traces, e)

    def _surrogate_in_time(self, model, x, y, loss_fn):
        """On model=snn: e_t = dL/dc_t, the error at the readout's input current at every step, reaches hidden
        layer l's spikes as e_t B_l; L + sum_l <S^l, stopgrad(e B_l)> with every layer's input detached, so
        autograd carries e_t B_l back through the layer's own time by the surrogate and no further down."""
        spikes, readout_current, output = model.layer_walk(x, detach_inputs=True)
        loss = loss_fn(output, y).mean()
        (e,) = torch.autograd.grad(loss, readout_current, retain_graph=True)
        projected = sum((spikes[i] * (e @ b)).sum() for i, b in self.feedback.items())
        return spikes, output, loss, loss + projected

    def estimate_grads(self, model, x, y, loss_fn):
        _, output, loss, surrogate = self._surrogate(model, x, y, loss_fn)
        params = trainable_parameters(model)
        for p, g in zip(params, torch.autograd.grad(surrogate, params)):
            p.grad = g
        return RuleOutput(loss=loss.detach(), output=output.detach())

    def aligned_pairs(self, model):
        """Only the last hidden block's B has a forward counterpart: the readout weights, which backprop
        would send e through (both [outputs, hidden])."""
        last = len(model.blocks) - 2
        readout = model.blocks[-1].linear.weight
        if last in dict(self.feedback.items()) and self.feedback[last].shape == readout.shape:
            return {last: (self.feedback[last], readout)}
        return {}

    def rule_deltas(self, model, x, y, loss_fn):
        with torch.enable_grad():
            traces, _, _, surrogate = self._surrogate(model, x, y, loss_fn)
            return list(torch.autograd.grad(surrogate, [t.linear_out for t in traces]))
