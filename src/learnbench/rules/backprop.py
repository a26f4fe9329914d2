"""Backpropagation: the exact gradient of the batch loss, through the same interface as every rule.

With `local: loss | greedy` (method=l_bp, lg_bp) the exact gradient of Ren et al.'s local losses
instead (rules/local_losses.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learnbench.rules.base import LearningRule, LossFn, RuleOutput, trainable_parameters
from learnbench.rules.local_losses import Local, LocalLossesMixin, exact_local_grads
from learnbench.rules.locality import signals, with_local_losses


class Backprop(LocalLossesMixin, LearningRule):
    # On model=rnn it backpropagates through the whole sequence (method=bptt adds truncation and online updates);
    # on model=snn through the spiking layers' time steps, with the spikes' surrogate derivatives (models/surrogates.py).
    trains = ("feedforward", "recurrent", "spiking")
    writes_grads_by_hand = False
    local_base = "bp"
    plain_stacks_seeds = True

    def __init__(self, local: Local = "none"):
        """`local`: loss (l_bp) or greedy (lg_bp) adds local heads and losses (rules/local_losses.py)."""
        super().__init__()
        self.local = local

    @property
    def takes_rate_penalty(self) -> bool:  # the local-loss variants leave it out
        return self.local == "none"

    def claims(self) -> frozenset[str]:
        return frozenset({"exact"}) if self.local == "none" else frozenset()  # local losses: another objective's gradient

    def reads(self) -> frozenset[str]:
        """The exact gradient: the error vector carried back through the forward weights' transposes (through time on
        temporal models); a local-loss variant reads its block's own head instead."""
        base = signals("pre", "post_derivative", "output_error", "transported_weights", "future")
        return with_local_losses(base, self.local)

    def local_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        return exact_local_grads(model, self.local_heads, x, y, loss_fn, self.local)

    def global_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        metrics = {}
        if getattr(model, "rate_penalty", 0):  # model=snn's firing-rate regulariser joins the objective
            output, penalty, _ = model.penalized(x)
            metrics["rate_penalty"] = penalty.detach()
        else:
            output, penalty = model(x), 0.0
        loss = loss_fn(output, y).mean()
        params = trainable_parameters(model)
        # autograd.grad rather than backward(): a DDP wrapper's gradient hooks must not fire here,
        # since the training module all-reduces every rule's gradients itself.
        for p, g in zip(params, torch.autograd.grad(loss + penalty, params)):
            p.grad = g
        return RuleOutput(loss=loss.detach(), output=output.detach(), metrics=metrics)
