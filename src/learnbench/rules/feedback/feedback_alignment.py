"""Feedback alignment, FA (Lillicrap, Cownden, Tweed & Akerman 2016).

The error goes down one layer through a fixed random matrix B_l in place of W_l^T; the forward
weights come to align with B (the angle is logged as rule/angle_BW/<block>). B_l is drawn once
from the run seed (the same on every rank), kept as a buffer, never trained.

On the feed-forward spiking network (model=snn) B_l has W_l's shape for every layer after the first and the
readout; the error reaches layer l's spikes through B_{l+1} and goes on through the layer's own time by the
surrogate (models/snn_sites.py: layer_walk). With B_l = W_l it is surrogate BPTT exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from learnbench.models.temporal import TemporalModel
from learnbench.options import Positive
from learnbench.rules.feedback.feedback_path import FeedbackInit, FeedbackMatrices, FeedbackRule, draw_feedback, linear_with_feedback
from learnbench.rules.local_losses import Local, LocalLossesMixin, exact_local_grads
from learnbench.rules.locality import signals, with_local_losses


class FeedbackAlignment(LocalLossesMixin, FeedbackRule):
    #: Kolen-Pollack trains B (nn.Parameters); FA keeps it fixed (buffers).
    learns_feedback = False
    local_base = "fa"
    plain_stacks_seeds = True  # B_l has W_l's shape: packed seed by seed like W (kp: learned the same way)
    method_name = "fa"
    #: Also the feed-forward spiking network (model=snn): B_l in place of W_l between layers, the surrogate within.
    trains = ("feedforward", "spiking")

    def __init__(self, init: FeedbackInit = "kaiming_uniform", scale: Positive = 1.0, local: Local = "none"):
        """`local`: loss (l_fa) or greedy (lg_fa) adds local heads and losses, the heads' error sent back
        through their own fixed random B (rules/local_losses.py)."""
        super().__init__()
        self.init, self.scale = init, scale
        self.local = local
        self.feedback = FeedbackMatrices()

    def reads(self) -> frozenset[str]:
        """The error vector through fixed random B (Kolen-Pollack: B learned by the same local update as W), never W^T."""
        return with_local_losses(signals("pre", "post_derivative", "output_error", "feedback_weights"), self.local)

    def init_state(self, model: nn.Module, generator: torch.Generator) -> None:
        linears = model.feedback_layers() if isinstance(model, TemporalModel) else [block.linear for block in model.blocks]
        for i, linear in enumerate(linears):
            if i > 0:  # the first layer sends no error below its input
                b = draw_feedback(linear.weight.detach(), self.init, self.scale, generator)
                self.feedback.add(i, b, learned=self.learns_feedback)
        super().init_state(model, generator)  # the local heads (and their B), drawn after the blocks' B: the same B as plain fa for a seed

    def local_head_options(self) -> dict:
        return {"feedback": (self.init, self.scale)}

    def feedback_for(self, i, block):
        return self.feedback[i]

    def local_grads(self, model, x, y, loss_fn):
        def linear_map(i, block, z):
            return block.linear(z) if i == 0 else linear_with_feedback(block, z, self.feedback_for(i, block))

        return exact_local_grads(model, self.local_heads, x, y, loss_fn, self.local, linear_map=linear_map)
