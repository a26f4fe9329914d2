"""What the recurrent rules (bptt, rtrl, rflo, eprop) share: the time options, the model check, the
readout errors and the leak-only eligibility traces.

The training module cuts each sequence into windows and calls, per window,
`estimate_grads(model, x[:, t0:t1], y_window, window_loss, state=carried)` (docs/architecture.md,
"Time"); `state=None` starts a fresh sequence from `model.initial_state`. A rule returns its carried
state detached: nothing flows back across a window's start.

Notation (models/rnn.py): h_t = (1 - a) h_{t-1} + a (W_rec phi(h_{t-1}) + W_in x_t + b), y_t = W_out phi(h_t) + b_out.
Online rules get dL/dy_t for every step of a window at once (one autograd call on the outputs), so any
per-step or per-sequence loss works; the hidden-unit signal is c_t = (dL/dy_t F) * phi'(h_t), with
F = W_out for the exact gradient, a feedback matrix otherwise.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from learnbench.models.rnn import RNN
from learnbench.options import PositiveInt
from learnbench.rules.base import LearningRule, LossFn, RuleOutput

#: The hidden-layer parameters whose gradients go through time (the readout's is local and exact).
HIDDEN = ("w_rec", "w_in", "b")

UpdateEvery = Literal["sequence"] | PositiveInt


class RecurrentRule(LearningRule):
    trains = ("recurrent",)
    noise_differs_per_rank = False  # no noise at all

    def __init__(self, update_every: UpdateEvery = "sequence") -> None:
        super().__init__()
        # "sequence": one optimiser step per sequence (gradients of its windows summed); k: a step
        # after every k time steps, inside the sequence (the rest of the sequence runs on the new weights).
        self.update_every = update_every
        self.truncation: int | None = None  # online rules carry their traces exactly: no cut but update_every's

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, RNN):
            raise ValueError(
                f"{type(self).__name__} is a recurrent learning rule and trains model=rnn (learnbench.models.RNN); "
                f"{type(model).__name__} is not recurrent: use a feed-forward rule (bp, fa, np, ...) on it"
            )

    def estimate_grads(self, model: RNN, x: Tensor, y: Tensor, loss_fn: LossFn, state: Any = None) -> RuleOutput:
        raise NotImplementedError


def hidden_parameters(model: RNN) -> dict[str, nn.Parameter]:
    """The trainable hidden-layer parameters by name (W_in fixed in Murray's example: left out)."""
    params = {name: getattr(model, name) for name in HIDDEN}
    return {name: p for name, p in params.items() if p is not None and p.requires_grad}


def run_window(model: RNN, x: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """The window's hidden states without a graph: (h_1..h_t, h_0..h_{t-1}), each [batch, time, N]."""
    with torch.no_grad():
        hs = model.run(x, h0)
    return hs, torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1)


def readout_errors(model: RNN, hs: Tensor, y: Tensor, loss_fn: LossFn) -> tuple[Tensor, Tensor, Tensor]:
    """(batch loss, outputs, dL/dy_t [batch, time, outputs]): autograd on the outputs only."""
    with torch.enable_grad():
        output = model.readout(hs).detach().requires_grad_(True)
        loss = loss_fn(output, y).mean()
        (error,) = torch.autograd.grad(loss, output)
    return loss.detach(), output.detach(), error


def write_readout_grads(model: RNN, hs: Tensor, error: Tensor) -> None:
    """The readout's exact local rule: dL/dW_out = sum_t dL/dy_t phi(h_t)^T (a delta rule, no time)."""
    if model.w_out.requires_grad:
        model.w_out.grad = torch.einsum("bto,btn->on", error, model.phi(hs))
    if model.b_out is not None and model.b_out.requires_grad:
        model.b_out.grad = error.sum(dim=(0, 1))


def immediate_inputs(model: RNN, x: Tensor, h_prev: Tensor) -> dict[str, Tensor]:
    """What multiplies a in dh_t,i / dtheta for unit i's own weights: phi(h_{t-1}) for W_rec[i, :],
    x_t for W_in[i, :], 1 for b_i; each [batch, time, fan-in]."""
    return {"w_rec": model.phi(h_prev), "w_in": x, "b": torch.ones_like(x[..., :1])}


def leak_traces(model: RNN, x: Tensor, h_prev: Tensor, traces: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Eligibility traces that keep only the leak (RFLO, rate e-prop): e_t = (1 - a) e_{t-1} + a z_t,
    with z_t the unit's own input (immediate_inputs). They do not depend on the post-synaptic unit, so one
    trace per pre-synaptic input serves a whole row. Returns (traces at every step [batch, time, fan-in],
    traces after the last step), the latter carried into the next window."""
    a = model.a
    every_step, last = {}, {}
    for name, z in immediate_inputs(model, x, h_prev).items():
        e = traces[name]
        steps = []
        for t in range(z.shape[1]):
            e = (1 - a) * e + a * z[:, t]
            steps.append(e)
        every_step[name], last[name] = torch.stack(steps, dim=1), e
    return every_step, last


def zero_traces(model: RNN, batch: int) -> dict[str, Tensor]:
    n_in = model.w_in.shape[1]
    zeros = model.w_rec.new_zeros
    return {"w_rec": zeros(batch, model.hidden_size), "w_in": zeros(batch, n_in), "b": zeros(batch, 1)}


def write_trace_grads(model: RNN, signal: Tensor, every_step: dict[str, Tensor]) -> None:
    """dL/dW_ij ~ sum_t c_t,i e_t,j for every trained hidden parameter (b: the trace of a constant 1)."""
    for name, p in hidden_parameters(model).items():
        grad = torch.einsum("bti,btj->ij", signal, every_step[name])
        p.grad = grad.squeeze(1) if name == "b" else grad
