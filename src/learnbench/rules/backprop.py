"""Backpropagation: the exact gradient of the batch loss, through the same interface as every rule."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learnbench.rules.base import LearningRule, LossFn, RuleOutput, trainable_parameters


class Backprop(LearningRule):
    # On model=rnn it backpropagates through the whole sequence (method=bptt adds truncation and online updates).
    trains = ("feedforward", "recurrent")
    writes_grads_by_hand = False

    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        output = model(x)
        loss = loss_fn(output, y).mean()
        params = trainable_parameters(model)
        # autograd.grad rather than backward(): a DDP wrapper's gradient hooks must not fire here,
        # since the training module all-reduces every rule's gradients itself.
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g
        return RuleOutput(loss=loss.detach(), output=output.detach())
