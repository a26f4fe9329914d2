"""Random-feedback local online learning, RFLO (Murray 2019, eLife 8:e43299).

Two approximations of RTRL's exact gradient: (1) the influence of a weight on the unit it feeds keeps only
the leak, e_t = (1 - a) e_{t-1} + a z_t (z: the weight's own input, phi(h_{t-1}) for W_rec, x_t for W_in),
dropping every path through other units (exact when W_rec = 0); (2) the error reaches the hidden units
through a fixed random matrix B drawn from the seed instead of W_out^T. The readout learns by its exact
local rule. Everything a synapse needs is at the synapse, and online.

In model=rnn phi is applied to h before W_rec, so unit i's own slope phi'(h_t,i) sits in the learning
signal c_t = (dL/dy_t B^T) * phi'(h_t) rather than in the trace, one trace per presynaptic input. Murray's own
units apply f after the sum, as model=esn does (TemporalModel.slope_recurrence): there the slope sits in the
trace, e_t,ij = (1 - a) e_{t-1,ij} + a f'_t,i z_t,j, one per synapse, and c_t = dL/dy_t B^T.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from learnbench.models.temporal import TemporalModel
from learnbench.options import Positive
from learnbench.rules.base import LossFn, RuleOutput
from learnbench.rules.recurrent.recurrent_rule import (
    RecurrentRule,
    TraceState,
    UpdateEvery,
    leak_traces,
    readout_errors,
    run_window,
    synapse_trace_grads,
    write_readout_grads,
    write_trace_grads,
    zero_traces,
)
from learnbench.rules.locality import signals


class RFLO(RecurrentRule):
    takes_slope_recurrence = True  # model=esn: a trace per synapse (Murray's form)

    def __init__(self, update_every: UpdateEvery = "sequence", feedback_scale: Positive = 1.0) -> None:
        super().__init__(update_every=update_every)
        self.feedback_scale = feedback_scale

    def reads(self) -> frozenset[str]:
        """Local eligibility traces times the output error through fixed random B."""
        return signals("pre", "post_derivative", "output_error", "feedback_weights")

    def init_state(self, model: TemporalModel, generator: torch.Generator) -> None:
        # B^T, shaped like W_out; Murray draws B ~ N(0, 1 / outputs). From the seed alone: every rank the same.
        shape = model.readout_weight.shape
        b = torch.randn(shape, generator=generator) * self.feedback_scale / math.sqrt(shape[0])
        self.register_buffer("feedback", b.to(model.readout_weight.dtype))

    def feedback_matrix(self, model: TemporalModel) -> Tensor:
        return self.feedback

    def estimate_grads(self, model: TemporalModel, x: Tensor, y: Tensor, loss_fn: LossFn, state: Any = None) -> RuleOutput:
        if state is None:
            start = model.initial_state(len(x))
            state = TraceState(start, zero_traces(model, x, start))
        hs, h_prev = run_window(model, x, state.model)
        loss, output, error = readout_errors(model, hs, y, loss_fn)
        write_readout_grads(model, hs, error)
        signal = (error @ self.feedback_matrix(model)) * model.pseudo_derivative(hs)
        if model.slope_recurrence:
            traces = synapse_trace_grads(model, x, h_prev, signal, state.traces)
        else:
            every_step, traces = leak_traces(model, x, h_prev, state.traces)
            write_trace_grads(model, signal, every_step)
        self.after_grads(model)
        return RuleOutput(loss=loss, output=output, state=TraceState(model.state_of(hs[:, -1]), traces))

    def after_grads(self, model: TemporalModel) -> None:
        """Hook for rules whose feedback learns (adaptive e-prop)."""
