"""Feedback alignment, FA (Lillicrap, Cownden, Tweed & Akerman 2016).

The error goes down one layer through a fixed random matrix B_l in place of W_l^T; the forward
weights come to align with B (the angle is logged as rule/angle_BW/<block>). B_l is drawn once
from the run seed (the same on every rank), kept as a buffer, never trained.
"""

from __future__ import annotations

import torch
from torch import nn

from learnbench.options import Positive
from learnbench.rules.feedback.feedback_path import FeedbackInit, FeedbackMatrices, FeedbackRule, draw_feedback


class FeedbackAlignment(FeedbackRule):
    #: Kolen-Pollack trains B (nn.Parameters); FA keeps it fixed (buffers).
    learns_feedback = False

    def __init__(self, init: FeedbackInit = "kaiming_uniform", scale: Positive = 1.0):
        super().__init__()
        self.init, self.scale = init, scale
        self.feedback = FeedbackMatrices()

    def init_state(self, model: nn.Module, generator: torch.Generator) -> None:
        for i, block in enumerate(model.blocks):
            if i > 0:  # the first block sends no error below its input
                b = draw_feedback(block.linear.weight.detach(), self.init, self.scale, generator)
                self.feedback.add(i, b, learned=self.learns_feedback)

    def feedback_for(self, i, block):
        return self.feedback[i]
