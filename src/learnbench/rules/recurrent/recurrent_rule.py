"""What the recurrent rules (bptt, rtrl, rflo, eprop) share: the time options (their `schedule`), the
model check, the readout errors and the leak-only eligibility traces.

The training module cuts each sequence into the windows of `schedule(steps)` and calls, per window,
`estimate_grads(model, x[:, t0:t1], y_window, window_loss, state=carried)` (docs/architecture.md,
"Time"); no state starts a fresh sequence from `model.initial_state`. A rule returns its carried
state detached (a State: learnbench/state.py): nothing flows back across a window's start.

The rules read the model through the TemporalModel protocol (models/temporal.py), never a model class.
Notation (the rate RNN, models/rnn.py): h_t = decay h_{t-1} + input_gain (W_rec phi(h_{t-1}) + W_in x_t + b),
decay = 1 - a, input_gain = a, y_t = W_out r_t + b_out with r_t = readout_input(h_t) = phi(h_t).
Online rules get dL/dy_t for every step of a window at once (one autograd call on the outputs), so any
per-step or per-sequence loss works; the hidden-unit signal is c_t = (dL/dy_t F) * pseudo_derivative(h_t),
with F = W_out for the exact gradient, a feedback matrix otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from learnbench.models.temporal import TemporalModel
from learnbench.options import PositiveInt
from learnbench.rules.base import Call, LearningRule, LossFn, RuleOutput
from learnbench.state import State

UpdateEvery = Literal["sequence"] | PositiveInt


@dataclass
class TraceState(State):
    """What an online rule carries across windows: the model's state and the rule's traces (by parameter)."""

    model: State
    traces: dict[str, Tensor]


def sequence_windows(steps: int, truncation: int | None, update_every: int | str):
    """(t0, t1, update after this window) for a sequence of `steps`: a window ends every `truncation` steps
    and at every online update (every `update_every` steps, unless "sequence"); the last one ends at `steps`."""
    every = None if update_every == "sequence" else update_every
    ends = {steps}
    for period in (truncation, every):
        if period:
            ends.update(range(period, steps, period))
    t0 = 0
    for t1 in sorted(ends):
        yield t0, t1, t1 == steps or (every is not None and t1 % every == 0)
        t0 = t1


class RecurrentRule(LearningRule):
    trains = ("recurrent",)
    noise_differs_per_rank = False  # no noise at all
    #: The rule's maths is written for the rate RNN's form (TemporalModel.rate_recurrence): rflo, eprop, rtrl.
    needs_rate_recurrence = True
    #: ... or also for a slope recurrence (f after the sum, model=esn), with a trace per synapse: rflo, eprop.
    takes_slope_recurrence = False
    #: bptt, rflo and eprop stack seeds (learnbench/seeds.py): on a block-diagonal stack their traces, errors and feedback
    #: are each seed's own, and the cross-seed part of an outer product is masked off (tests/test_seeds.py).
    stacks_seeds = True

    def __init__(self, update_every: UpdateEvery = "sequence") -> None:
        super().__init__()
        # "sequence": one optimiser step per sequence (gradients of its windows summed); k: a step
        # after every k time steps, inside the sequence (the rest of the sequence runs on the new weights).
        self.update_every = update_every
        self.truncation: int | None = None  # online rules carry their traces exactly: no cut but update_every's

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, TemporalModel):
            raise ValueError(
                f"{type(self).__name__} is a recurrent learning rule and trains models that run in time (model=rnn); "
                f"{type(model).__name__} is not recurrent: use a feed-forward rule (bp, fa, np, ...) on it"
            )
        method = type(self).__name__.lower()
        slope_form = self.takes_slope_recurrence and model.slope_recurrence
        if slope_form and model.output_feedback:
            raise ValueError(f"method={method}'s traces leave out the path through the fed-back output (model.feedback=true): "
                             f"train it with method=force or bptt, or set model.feedback=false")
        if self.needs_rate_recurrence and not (model.rate_recurrence or slope_form):
            others = "bptt, bp, rflo or eprop" if model.slope_recurrence else "bptt or bp"
            raise ValueError(
                f"method={method} is written for a rate recurrence with phi applied before W_rec (model=rnn); "
                f"{type(model).__name__} applies its nonlinearity after the sum, where the rule's maths is not exact: "
                f"train it with method={others} (its readout alone: method=ridge)"
            )

    def schedule(self, steps: int | None) -> list[Call]:
        """Windows of the sequence: a cut every `truncation` steps (bptt), an optimiser step every
        `update_every` steps or once at the sequence's end; the windows' gradients are summed until a step."""
        return [Call(t0, t1, update) for t0, t1, update in sequence_windows(steps, self.truncation, self.update_every)]

    def estimate_grads(self, model: TemporalModel, x: Tensor, y: Tensor, loss_fn: LossFn, state: Any = None) -> RuleOutput:
        raise NotImplementedError


def hidden_parameters(model: TemporalModel) -> dict[str, nn.Parameter]:
    """The trainable parameters whose gradients go through time (the readout's is local and exact), by name
    in the order recurrent, input (W_in fixed in Murray's example: left out)."""
    return {**model.trained_parameters("recurrent"), **model.trained_parameters("input")}


def run_window(model: TemporalModel, x: Tensor, state: State) -> tuple[Tensor, Tensor]:
    """The window's hidden states without a graph: (h_1..h_t, h_0..h_{t-1}), each [batch, time, N]."""
    with torch.no_grad():
        hs = model.run(x, state)
    return hs, torch.cat([state.h.unsqueeze(1), hs[:, :-1]], dim=1)


def readout_errors(model: TemporalModel, hs: Tensor, y: Tensor, loss_fn: LossFn) -> tuple[Tensor, Tensor, Tensor]:
    """(batch loss, outputs, dL/dy_t [batch, time, outputs]): autograd on the outputs only."""
    with torch.enable_grad():
        output = model.readout(hs).detach().requires_grad_(True)
        loss = loss_fn(output, y).mean()
        (error,) = torch.autograd.grad(loss, output)
    return loss.detach(), output.detach(), error


def write_readout_grads(model: TemporalModel, hs: Tensor, error: Tensor) -> None:
    """The readout's exact local rule: dL/dW_out = sum_t dL/dy_t r_t^T (a delta rule, no time); a bias
    (a one-dimensional readout parameter) sums the errors."""
    params = model.trained_parameters("readout")
    if not params:
        return
    r = model.readout_input(hs)
    for p in params.values():
        p.grad = torch.einsum("bto,btn->on", error, r) if p.dim() == 2 else error.sum(dim=(0, 1))


def leak_traces(model: TemporalModel, x: Tensor, h_prev: Tensor, traces: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Eligibility traces that keep only the leak (RFLO, rate e-prop): e_t = decay e_{t-1} + input_gain z_t,
    with z_t the unit's own input (model.presynaptic). They do not depend on the post-synaptic unit, so one
    trace per pre-synaptic input serves a whole row. Returns (traces at every step [batch, time, fan-in],
    traces after the last step), the latter carried into the next window."""
    decay, gain = model.decay, model.input_gain
    every_step, last = {}, {}
    for name, z in model.presynaptic(x, h_prev).items():
        e = traces[name]
        steps = []
        for t in range(z.shape[1]):
            e = decay * e + gain * z[:, t]
            steps.append(e)
        every_step[name], last[name] = torch.stack(steps, dim=1), e
    return every_step, last


def zero_traces(model: TemporalModel, x: Tensor, state: State) -> dict[str, Tensor]:
    """A zero trace per presynaptic input (its shape read off model.presynaptic on the window's first step); for a
    slope recurrence one per synapse of every trained hidden parameter, [batch, N, fan-in]."""
    first = model.presynaptic(x[:, :1], state.h.unsqueeze(1))
    if model.slope_recurrence:
        return {name: first[name].new_zeros(len(x), model.hidden_size, first[name].shape[-1]) for name in hidden_parameters(model)}
    return {name: z.new_zeros(z.shape[0], z.shape[-1]) for name, z in first.items()}


def synapse_trace_grads(model: TemporalModel, x: Tensor, h_prev: Tensor, signal: Tensor,
                        traces: dict[str, Tensor]) -> dict[str, Tensor]:
    """A slope recurrence (TemporalModel.slope_recurrence; Murray's units, f after the sum): the trace keeps the leak
    and unit i's own slope, e_t,ij = decay e_{t-1,ij} + input_gain f'_t,i z_t,j, so it is one per synapse; writes
    dL/dW_ij ~ sum_t c_t,i e_t,ij for every trained hidden parameter, summed step by step (every step's traces would
    take [batch, time, N, fan-in]). Returns the traces after the last step, carried into the next window."""
    params = hidden_parameters(model)
    if not params:
        return traces
    with torch.no_grad():  # the slopes read the weights: no graph
        slopes, inputs = model.slopes(x, h_prev), model.presynaptic(x, h_prev)
    decay, gain = model.decay, model.input_gain
    last = {}
    for name, p in params.items():
        z, e = inputs[name], traces[name]
        grad = e.new_zeros(e.shape[1:])
        for t in range(z.shape[1]):
            e = decay * e + gain * slopes[:, t, :, None] * z[:, t, None, :]
            grad += torch.einsum("bi,bij->ij", signal[:, t], e)
        p.grad = grad.squeeze(1) if p.dim() == 1 else grad
        last[name] = e
    return last


def write_trace_grads(model: TemporalModel, signal: Tensor, every_step: dict[str, Tensor]) -> None:
    """dL/dW_ij ~ sum_t c_t,i e_t,j for every trained hidden parameter (a bias: the trace of a constant 1)."""
    for name, p in hidden_parameters(model).items():
        grad = torch.einsum("bti,btj->ij", signal, every_step[name])
        p.grad = grad.squeeze(1) if p.dim() == 1 else grad
