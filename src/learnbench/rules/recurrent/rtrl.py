"""Real-time recurrent learning (Williams & Zipser 1989): the exact gradient, computed forward in time.

The influence matrix M_t = dh_t / dtheta (per example, [N, P] for the P hidden-layer parameters) obeys

    M_t = J_t M_{t-1} + I_t,   J_t = (1 - a) 1 + a W_rec diag(phi'(h_{t-1})),   I_t = dh_t/dtheta at fixed h_{t-1}

and dL/dtheta = sum_t c_t M_t with c_t = (dL/dy_t W_out) * phi'(h_t). M is carried across windows
(it is part of the state), so the gradient equals BPTT's however the sequence is cut. The price:
J_t M_{t-1} costs N^2 P = O(N^4) per example and step, memory N P = O(N^3). With `update_every: k`
the weights change inside the sequence and M keeps the old weights' history (the usual online RTRL,
an approximation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from learnbench.models.temporal import TemporalModel
from learnbench.options import PositiveInt
from learnbench.rules.base import LossFn, RuleOutput
from learnbench.rules.recurrent.recurrent_rule import (
    RecurrentRule,
    UpdateEvery,
    hidden_parameters,
    readout_errors,
    run_window,
    write_readout_grads,
)
from learnbench.state import State
from learnbench.rules.locality import signals

log = logging.getLogger("learnbench")

#: Above this many units a warning: N^4 multiply-adds per example and step (64: 17 M; 128: 268 M).
WARN_UNITS = 64


@dataclass
class InfluenceState(State):
    """Carried across windows: the model's state and M = dh / dtheta per trained hidden parameter."""

    model: State
    influence: dict[str, Tensor]


class RTRL(RecurrentRule):
    stacks_seeds = ("its influence tensor on a stack of S networks of N units would hold (S N)^3 numbers per example, "
                    "S^3 times the cost of S separate runs")

    def __init__(self, update_every: UpdateEvery = "sequence", max_units: PositiveInt = 256) -> None:
        super().__init__(update_every=update_every)
        self.max_units = max_units

    def claims(self) -> frozenset[str]:
        """The exact gradient, carried forward: at fixed weights the sum of its windows' estimates is full BPTT's."""
        return frozenset({"exact"})

    def reads(self) -> frozenset[str]:
        """Forward in time (the influence matrix, through W_rec), the learning signal through W_out^T: no future."""
        return signals("pre", "post_derivative", "output_error", "transported_weights")

    def check_model(self, model: TemporalModel) -> None:
        super().check_model(model)
        if getattr(model, "recurrent_weight", None) is None:
            raise ValueError(f"method=rtrl differentiates a rate recurrence h -> phi -> W_rec -> h; {type(model).__name__} "
                             "has none (no recurrent_weight): use method=bptt or eprop")
        n = model.hidden_size
        if n > self.max_units:
            raise ValueError(
                f"method=rtrl costs O(N^4) per step: N={n} is {n**4:.1e} multiply-adds per example and step, minutes "
                f"per sequence on a CPU. Use model.hidden_size<={self.max_units}, raise method.max_units, "
                f"or an approximation (method=rflo, eprop) or method=bptt"
            )
        if n > WARN_UNITS:
            log.warning("method=rtrl with N=%d units: O(N^4) = %.1e multiply-adds per example and step", n, n**4)

    def estimate_grads(self, model: TemporalModel, x: Tensor, y: Tensor, loss_fn: LossFn, state: Any = None) -> RuleOutput:
        params = hidden_parameters(model)
        if state is None:
            start = model.initial_state(len(x))
            state = InfluenceState(start, {name: start.h.new_zeros(len(x), *influence_shape(model, p)) for name, p in params.items()})
        hs, h_prev = run_window(model, x, state.model)
        loss, output, error = readout_errors(model, hs, y, loss_fn)
        write_readout_grads(model, hs, error)
        signal = (error @ model.readout_weight.detach()) * model.pseudo_derivative(hs)  # dL/dh_t through y_t alone
        influence, grads = self.run_influence(model, x, h_prev, signal, state.influence)
        for name, p in params.items():
            p.grad = grads[name].view_as(p)  # a bias's [N, 1] influence gives an [N, 1] gradient
        return RuleOutput(loss=loss, output=output, state=InfluenceState(model.state_of(hs[:, -1]), influence))

    @torch.no_grad()
    def run_influence(self, model: TemporalModel, x: Tensor, h_prev: Tensor, signal: Tensor, influence: dict[str, Tensor]):
        """Carry every M_t through the window, summing c_t M_t; returns (M after the last step, gradients)."""
        decay, gain, w_rec = model.decay, model.input_gain, model.recurrent_weight.detach()
        inputs = model.presynaptic(x, h_prev)
        grads = {name: m.new_zeros(m.shape[2:]) for name, m in influence.items()}
        slope = model.pseudo_derivative(h_prev)
        for t in range(x.shape[1]):
            for name, m in influence.items():
                # J_t M_{t-1}: the leak, plus the path through every unit's rate phi(h_{t-1}).
                # (a batched matmul over M flattened to [batch, N, P]: ~1.5x faster than the same einsum here)
                weighted = (expand_like(slope[:, t], m) * m).reshape(len(m), len(w_rec), -1)
                through_rates = torch.matmul(w_rec, weighted).view_as(m)
                m = decay * m + gain * through_rates
                # I_t: unit i's own weights, dh_t,i / dtheta_(i, j) = a z_t,j (M's diagonal in (i, row)).
                m.diagonal(dim1=1, dim2=2).add_(gain * inputs[name][:, t].unsqueeze(-1))
                influence[name] = m
                grads[name] += torch.einsum("bi,bi...->...", signal[:, t], m)
        return influence, grads


def influence_shape(model: TemporalModel, p: Tensor) -> tuple[int, ...]:
    """dh / dtheta for one example: [N, rows, fan-in] (the bias as a [N, 1] matrix)."""
    return (model.hidden_size, *(p.shape if p.dim() == 2 else (p.shape[0], 1)))


def expand_like(slope: Tensor, m: Tensor) -> Tensor:
    """phi'(h_{t-1}) [batch, N] broadcast over M's parameter axes."""
    return slope.view(*slope.shape, *([1] * (m.dim() - 2)))
