"""What a rule's training step costs, in FLOPs and in forward-pass equivalents of its model.

`measure_step` counts, with torch.utils.flop_counter.FlopCounterMode, the floating-point operations of one
training batch taken by the one training loop (training_loop.train_batch: everything the rule does on the
batch, every call of its schedule), of one forward pass of the model on the same batch, and of the rule's
`predict` (what evaluation runs) there. The ratio train / forward is the step's cost in forward passes, which
does not depend on the batch; `learnbench.callbacks.ComputeMeter` multiplies it by the examples a run trained
and evaluated (results.json's `compute`, and a running total in every epoch of its history).

What FlopCounterMode sees: matrix products and convolutions (mm, addmm, bmm, baddbmm, convolution and their
backward; einsum and matmul through them), in forward, backward and forward-mode (jvp, vmap) alike, and a
custom autograd Function's (the spiking surrogate's) matmuls, since its Python backward calls the same ops.
What it does not see: elementwise work (activations, the surrogate's derivative itself, losses, norms, noise
draws, the optimiser's update), sparse and linear-algebra kernels (a closed-form solve). The count is then the
step's dense linear algebra: exact for the MLPs and CNNs of the suite, whose cost is that, and a lower bound
where elementwise work matters (long recurrences of small networks, spiking neurons): there, the CPU seconds
of results.json's `resources` are the other measure.

The batch is taken twice on copies of the model and the rule (so the run's own weights, rule state, batch-norm
statistics and noise stream are untouched) and the second is counted: a first call may do one-time work (a dry
run that caches shapes). No optimiser steps in between; counts of dense products do not depend on the values.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from learnbench.rules.base import LearningRule, no_reduction, trainable_parameters
from learnbench.tasks import Task
from learnbench.training_loop import OfflineHooks, train_batch

COUNTED_BY = ("torch.utils.flop_counter.FlopCounterMode: matmuls and convolutions (forward, backward, forward-mode); "
              "elementwise work, random draws, sparse and solver kernels are not counted")


def count_flops(fn: Callable[[], object]) -> int:
    """The FLOPs FlopCounterMode counts while `fn()` runs (a product of [n, k] and [k, m] counts 2 n k m)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class CountingHooks(OfflineHooks):
    """The training loop's hooks for a count: no optimiser, no logging, no all-reduce, never diverged
    (training_loop.LoopHooks); the rule's after-step hook runs, as in training."""

    def __init__(self, rule: LearningRule, model: nn.Module):
        self.rule, self.model, self.global_step = rule, model, 0

    def zero_grad_all(self) -> None:
        for p in [*trainable_parameters(self.model), *self.rule.extra_parameters()]:
            p.grad = None

    def update(self) -> None:
        self.rule.after_optimizer_step(self.model)


def copies(model: nn.Module, rule: LearningRule) -> tuple[nn.Module, LearningRule]:
    """Deep copies of the model and the rule, in one copy so what they share stays shared; the copy's
    `reduce_mean` is the identity (the rule's own is the training module's collective)."""
    reduce_mean = rule.reduce_mean
    rule.reduce_mean = no_reduction
    try:
        model_copy, rule_copy = copy.deepcopy((model, rule))
    finally:
        rule.reduce_mean = reduce_mean
    return model_copy, rule_copy


def measure_step(rule: LearningRule, model: nn.Module, x: Tensor, y: Tensor, task: Task) -> dict:
    """FLOPs of one training batch (x, y) by the rule (`train_step_flops`), of one forward pass of the model
    on it (`forward_flops`) and of the rule's prediction on it (`predict_flops`), with the batch's size."""
    model, rule = copies(model, rule)
    if rule.generator is None:  # before fit (a budget in forward equivalents): the copy's noise from seed 0, which no count depends on
        rule.setup(model, seed=0, rank=0, device=next(model.parameters()).device)
    hooks = CountingHooks(rule, model)
    was_training = model.training
    model.train()
    with torch.enable_grad():
        train_batch(rule, model, x, y, task, hooks)  # one-time work (shape caches) out of the count
        train = count_flops(lambda: train_batch(rule, model, x, y, task, hooks))
    model.eval()
    with torch.no_grad():
        forward = count_flops(lambda: model(x))
        predict = count_flops(lambda: rule.predict(model, x))
    model.train(was_training)
    return {"batch": len(x), "forward_flops": forward, "train_step_flops": train, "predict_flops": predict}


def ratio(flops: int, forward_flops: int) -> float | None:
    """flops in forward passes of the model; None when the forward pass counts nothing."""
    return flops / forward_flops if forward_flops else None
