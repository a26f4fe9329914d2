"""Backpropagation through time, and its truncated form.

Each window runs from the carried state with autograd and takes the exact gradient of the window's
loss; the state is carried detached, so with `truncation: k` the gradient is cut every k steps
(truncated BPTT: what happened before a window's start gets no credit for the loss inside it).
`truncation: null` with `update_every: sequence` is full BPTT, the gradient of the whole sequence.
An online update (`update_every: k`) also cuts the gradient there: the weights that made the earlier
steps are gone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from learnbench.models.temporal import TemporalModel
from learnbench.options import PositiveInt
from learnbench.rules.base import LossFn, RuleOutput, trainable_parameters
from learnbench.rules.recurrent.recurrent_rule import RecurrentRule, UpdateEvery
from learnbench.rules.locality import signals


class BPTT(RecurrentRule):
    needs_rate_recurrence = False  # autograd through the model's own forward: any model that runs in time
    def __init__(self, truncation: PositiveInt | None = None, update_every: UpdateEvery = "sequence") -> None:
        super().__init__(update_every=update_every)
        self.truncation = truncation

    def claims(self) -> frozenset[str]:
        """Full BPTT is the gradient of the sequence's loss; a truncation or an online update cuts it."""
        return frozenset({"exact"}) if self.truncation is None and self.update_every == "sequence" else frozenset()

    def reads(self) -> frozenset[str]:
        """The error carried backwards through time and through W_rec^T, W_out^T."""
        return signals("pre", "post_derivative", "output_error", "transported_weights", "future")

    def estimate_grads(self, model: TemporalModel, x: Tensor, y: Tensor, loss_fn: LossFn, state: Any = None) -> RuleOutput:
        start = model.initial_state(len(x)) if state is None else state
        with torch.enable_grad():
            output, last = model(x, start, return_state=True)
            loss = loss_fn(output, y).mean()
            params = trainable_parameters(model)
            for p, g in zip(params, torch.autograd.grad(loss, params)):
                p.grad = g
        return RuleOutput(loss=loss.detach(), output=output.detach(), state=last.detach())
