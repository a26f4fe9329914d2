"""The one training loop: how a batch is taken, for every rule (docs/architecture.md, "The training step").

The rule's `schedule` says how: the whole batch once (most rules); windows of a sequence (recurrent
rules: truncation, online updates), the rule's state carried from one to the next; or several calls
on the batch with an update after each (iPC's online updates). For each call:

    zero grads -> rule.begin_step(step) -> rule.estimate_grads writes p.grad -> [summed over calls
    until an update] -> hooks.update(): all-reduce, clip, optimiser / direct step, rule.after_optimizer_step

LearningRuleModule is the hooks object (Lightning's optimiser, DDP collectives, logging); the bench
(tools/bench.py) passes a bare one, so it times this very function, not a copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from learnbench.rules.base import Call, LearningRule, trainable_parameters
from learnbench.state import detach
from learnbench.tasks import Task


class LoopHooks(Protocol):
    global_step: int  # optimiser steps so far (seeds the rule's noise)

    def zero_grad_all(self) -> None: ...
    def update(self) -> None: ...  # all-reduce, clip, step, rule.after_optimizer_step
    def diverged(self, loss: Tensor) -> bool: ...  # a non-finite loss on any rank: stop (before a bad step)
    def backprop_grads(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]: ...
    def log_alignment(self, x: Tensor, y: Tensor, true: tuple[Tensor, ...]) -> None: ...
    def log_rule_metrics(self, metrics: dict[str, Tensor], batch_size: int) -> None: ...


class OfflineHooks:
    """The loop's hooks outside a training run (verify's checks, the compute count, the bench): never diverged, nothing
    logged, no alignment (train_batch's `align` left off). Subclasses say how gradients are cleared and what an update
    does."""

    global_step = 0

    def zero_grad_all(self) -> None:
        raise NotImplementedError

    def update(self) -> None:
        raise NotImplementedError

    def diverged(self, loss: Tensor) -> bool:
        return False

    def log_rule_metrics(self, metrics: dict[str, Tensor], batch_size: int) -> None:
        pass


@dataclass
class BatchTaken:
    loss: Tensor  # the batch's training loss: the sum of a sequence's windows, else the first call's (before any update)
    output: Tensor | None  # the matching output, where the rule computed it


def train_batch(rule: LearningRule, model: nn.Module, x: Tensor, y: Tensor, task: Task, hooks: LoopHooks,
                align: bool = False) -> BatchTaken | None:
    """Take one training batch by the rule's schedule; None if the loss diverged (nothing was stepped since).

    Windows of a sequence: the carried state is detached at every window's start (a fresh initial state
    every batch: nothing leaks between independent sequences), gradients are summed until an update, the
    rule's metrics are logged per window. Several calls on the batch: the state carried as it is, an update
    after each, the metrics logged once. `align` compares the estimate with backprop (hooks.log_alignment)
    on a whole-batch schedule: for several calls, the sum of their estimates with backprop at the batch's
    starting weights."""
    calls = rule.schedule(x.shape[1] if task.sequential else None)
    windows = calls[0].t0 is not None and len(calls) > 1
    params = [*trainable_parameters(model), *rule.extra_parameters()]
    state = summed = true = estimates = None
    losses, outputs, metrics = [], [], {}
    for i, call in enumerate(calls):
        hooks.zero_grad_all()
        rule.begin_step(hooks.global_step)
        out = call_rule(rule, model, x, y, task, call, state)
        if (windows or i == 0) and hooks.diverged(out.loss):
            return None
        state = detach(out.state) if windows else out.state
        losses.append(out.loss)
        outputs.append(out.output)
        if windows:
            hooks.log_rule_metrics(out.metrics, len(x))
        else:
            metrics.update(out.metrics)
        if i == 0 and align and not windows:
            true = hooks.backprop_grads(x, y)  # at the batch's starting weights
        if not call.update:
            summed = add_grads(summed, params)
            continue
        if summed is not None:
            set_grads(params, add_grads(summed, params))
            summed = None
        if align and len(calls) == 1:
            hooks.log_alignment(x, y, true)
        elif align and not windows:
            estimates = add_grads(estimates, params)
        hooks.update()
    if estimates is not None:
        set_grads(params, estimates)
        hooks.log_alignment(x, y, true)
    if windows:
        output = torch.cat(outputs, dim=1) if all(o is not None for o in outputs) else None
        return BatchTaken(torch.stack(losses).sum(), output)
    hooks.log_rule_metrics(metrics, len(x))
    return BatchTaken(losses[0], outputs[0])


def call_rule(rule: LearningRule, model: nn.Module, x: Tensor, y: Tensor, task: Task, call: Call, state: Any):
    """One call of the rule: on the call's window of the sequence (with the window's share of the loss,
    tasks.SequenceTask.window_loss), or on the whole batch; with the carried state, if any."""
    if call.t0 is None:
        x_call, y_call, loss_fn = x, y, task.loss
    else:
        x_call, y_call = x[:, call.t0:call.t1], task.window_target(y, call.t0, call.t1)
        loss_fn = task.window_loss(x.shape[1], call.t0, call.t1)
    if state is None:
        return rule.estimate_grads(model, x_call, y_call, loss_fn)
    return rule.estimate_grads(model, x_call, y_call, loss_fn, state=state)


def add_grads(summed: list[Tensor | None] | None, params: list[nn.Parameter]) -> list[Tensor | None]:
    """Running sums of the parameters' gradients over the calls of a batch (None: no gradient yet)."""
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    if summed is None:
        return grads
    return [g if s is None else s if g is None else s + g for s, g in zip(summed, grads)]


def set_grads(params: list[nn.Parameter], grads: list[Tensor | None]) -> None:
    for p, g in zip(params, grads):
        p.grad = g
