"""Kolen-Pollack, KP (Kolen & Pollack 1994; Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019).

Like feedback alignment, but B_l learns: it receives the same update as W_l, and both decay,

    dW_l = -eta (delta_l^T z_l + lambda W_l),   dB_l = -eta (delta_l^T z_l + lambda B_l),

so B_l - W_l shrinks by (1 - eta lambda) every plain-SGD step and the backward pass tends to
backprop's (B_l has W_l's shape here: it stands where W_l does in the backward pass, so the
papers' W_l - B_l^T is W_l - B_l). Every W decays alike, the first block's too, though it has no B
(no error goes below the input). B_l is a rule-owned nn.Parameter: the module's optimiser steps it (its own param
group), all-reduces and clips it with the model's parameters, and checkpoints keep it.
`decay` is lambda, added to both gradients here (the optimiser's own weight decay, if any, acts on
both groups alike too).
"""

from __future__ import annotations

import torch

from learnbench.options import NonNegative
from learnbench.rules.feedback.feedback_alignment import FeedbackAlignment
from learnbench.rules.locality import signals
from learnbench.rules.feedback.feedback_path import FeedbackInit, FeedbackRule


class KolenPollack(FeedbackAlignment):
    learns_feedback = True
    method_name = "kp"
    trains = ("feedforward",)  # not fa's spiking network: its mirrored B is not written for the layer walk

    def __init__(self, decay: NonNegative = 1e-3, init: FeedbackInit = "kaiming_uniform", scale: float = 1.0):
        super().__init__(init=init, scale=scale)
        self.decay = decay
        self._feedback_grads: dict[int, torch.Tensor] = {}

    def reads(self) -> frozenset[str]:
        """FA's signals (B learned by W's own local update, never copied from W) and every weight's own decay."""
        base = super().reads()
        return base | signals("own_weight") if self.decay > 0 else base

    def estimate_grads(self, model, x, y, loss_fn):
        out = FeedbackRule.estimate_grads(self, model, x, y, loss_fn)
        feedback = dict(self.feedback.items())  # every block but the first
        for i, block in enumerate(model.blocks):
            weight = block.linear.weight
            if weight.grad is None:
                continue
            if i in feedback:
                self._set_feedback_grad(feedback[i], i, weight.grad)  # W's gradient before W's decay is added
            # Every W decays, the first block's too (it has no B, but the same update as the others).
            weight.grad.add_(weight.detach(), alpha=self.decay)
        return out

    def _set_feedback_grad(self, feedback: torch.Tensor, i: int, weight_grad: torch.Tensor) -> None:
        """B_l's gradient: W_l's plus lambda B_l. Written into a buffer kept across steps (the module sets
        grads to None each step), as W's decay is added in place: one kernel each and no temporaries, which
        kept KP at FA's cost in the benchmark (docs/speed.md)."""
        buffer = self._feedback_grads.get(i)
        if buffer is None or buffer.shape != feedback.shape or buffer.dtype != feedback.dtype or buffer.device != feedback.device:
            buffer = self._feedback_grads[i] = torch.empty_like(feedback, memory_format=torch.preserve_format)
        torch.add(weight_grad, feedback.detach(), alpha=self.decay, out=buffer)
        feedback.grad = buffer
