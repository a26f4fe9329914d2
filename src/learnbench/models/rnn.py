"""A leaky rate RNN (a discretised continuous-time network), the model of the recurrent rules.

    h_t = (1 - a) h_{t-1} + a (W_rec phi(h_{t-1}) + W_in x_t + b),   a = dt / tau
    y_t = W_out phi(h_t) + b_out

Sequences are [batch, time, features]; `forward(x, state)` returns the outputs [batch, time, outputs]
(and, with `return_state=True`, the last state, an RNNState). A plain RNN is tau = dt (a = 1). The
rules see it through the TemporalModel protocol (models/temporal.py): decay = 1 - a, input_gain = a,
pseudo_derivative = phi', the presynaptic inputs of each weight, and the perturbation sites u_t and
y_t (models/rnn_sites.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from learnbench.models import rnn_sites
from learnbench.models.temporal import LeakyRate, TemporalModel
from learnbench.options import Positive, PositiveInt
from learnbench.state import State

ACTIVATIONS = {"tanh": (torch.tanh, lambda h: 1 - torch.tanh(h) ** 2), "identity": (lambda h: h, torch.ones_like)}


@dataclass
class RNNState(State):
    h: Tensor  # [batch, N]: the units' state before phi


class RNN(LeakyRate, TemporalModel):
    time_axis = "data"  # sequences [batch, time, features] from the data
    rate_recurrence = True  # phi before W_rec: the form rflo, eprop and rtrl are written for
    has_sites = True  # u_t and y_t (models/rnn_sites.py)

    def __init__(
        self,
        input_shape: int | Sequence[int],
        output_dim: int,
        hidden_size: PositiveInt = 50,
        tau: Positive = 10.0,
        dt: Positive = 1.0,
        recurrent_gain: Positive = 1.5,
        input_scale: Positive = 1.0,
        activation: Literal["tanh", "identity"] = "tanh",
        learn_input: bool = True,
        learn_recurrent: bool = True,
        learn_output: bool = True,
        bias: bool = True,
        output_bias: bool = True,
    ):
        super().__init__()
        if dt > tau:
            raise ValueError(f"model.dt={dt} > model.tau={tau}: a = dt / tau must be at most 1 (a leaky unit)")
        # input_shape is one example's (time, features); the input width is the last entry.
        input_dim = input_shape if isinstance(input_shape, int) else input_shape[-1]
        n = hidden_size
        self.input_dim, self.hidden_size, self.output_dim = input_dim, n, output_dim
        self.a = dt / tau
        self.activation = activation
        # Murray 2019: W_rec ~ N(0, g^2 / N) with g = 1.5 (chaotic regime before learning).
        self.w_rec = nn.Parameter(torch.randn(n, n) * recurrent_gain / math.sqrt(n), requires_grad=learn_recurrent)
        self.w_in = nn.Parameter(torch.randn(n, input_dim) * input_scale / math.sqrt(input_dim), requires_grad=learn_input)
        self.b = nn.Parameter(torch.zeros(n), requires_grad=learn_recurrent) if bias else None
        bound = 1 / math.sqrt(n)
        self.w_out = nn.Parameter(torch.empty(output_dim, n).uniform_(-bound, bound), requires_grad=learn_output)
        self.b_out = nn.Parameter(torch.zeros(output_dim), requires_grad=learn_output) if output_bias else None

    def phi(self, h: Tensor) -> Tensor:
        return ACTIVATIONS[self.activation][0](h)

    def phi_prime(self, h: Tensor) -> Tensor:
        return ACTIVATIONS[self.activation][1](h)

    # ------------------------------------------------------------------ TemporalModel
    def initial_state(self, batch: int) -> RNNState:
        """h_0 = 0 for every sequence: nothing leaks from one independent sequence into the next."""
        return RNNState(self.w_rec.new_zeros(batch, self.hidden_size))

    def step(self, state: RNNState, x_t: Tensor) -> tuple[RNNState, Tensor]:
        h = self.advance(state.h, x_t)
        return RNNState(h), self.readout(h)

    def parameter_groups(self) -> dict[str, tuple[str, ...]]:
        return {"input": ("w_in",), "recurrent": ("w_rec", "b"), "readout": ("w_out", "b_out")}

    @property
    def readout_weight(self) -> Tensor:
        """W_out: y_t = W_out r_t + b_out (the exact learning signal of e-prop and RTRL goes back through it)."""
        return self.w_out

    def state_of(self, h: Tensor) -> RNNState:
        """The state whose hidden variable is h (a rate unit has no other)."""
        return RNNState(h)

    @property
    def recurrent_weight(self) -> Tensor:
        """W_rec: the recurrence h_{t-1} -> phi -> W_rec -> h_t (RTRL's Jacobian reads it)."""
        return self.w_rec

    def pseudo_derivative(self, hs: Tensor) -> Tensor:
        return self.phi_prime(hs)

    def readout_input(self, hs: Tensor) -> Tensor:
        return self.phi(hs)

    def readout_state(self, state: RNNState) -> Tensor:
        """The part of a state the readout reads (through readout_input): h_t."""
        return state.h

    def presynaptic(self, x: Tensor, h_prev: Tensor) -> dict[str, Tensor]:
        """What multiplies a in dh_t,i / dtheta for unit i's own weights: phi(h_{t-1}) for W_rec[i, :],
        x_t for W_in[i, :], 1 for b_i; each [batch, time, fan-in]."""
        return {"w_rec": self.phi(h_prev), "w_in": x, "b": torch.ones_like(x[..., :1])}

    def site_shapes(self, x: Tensor) -> list[tuple[int, ...]]:
        return rnn_sites.rnn_site_shapes(self, x)

    def walk(self, x: Tensor, shifts=None, tangents=None, weight_tangents=None, params=None):
        return rnn_sites.rnn_walk(self, x, shifts=shifts, tangents=tangents, weight_tangents=weight_tangents, params=params)

    def site_inputs(self, trace: rnn_sites.RNNTrace) -> list[dict[str, Tensor | None]]:
        return rnn_sites.rnn_site_inputs(self, trace)

    def walk_parameters(self) -> tuple[str, ...]:
        return rnn_sites.RNN_WEIGHTS

    # ------------------------------------------------------------------ the update
    def advance(self, h: Tensor, x_t: Tensor) -> Tensor:
        """h_t from h_{t-1} and x_t."""
        u = self.phi(h) @ self.w_rec.T + x_t @ self.w_in.T
        if self.b is not None:
            u = u + self.b
        return (1 - self.a) * h + self.a * u

    def readout(self, h: Tensor) -> Tensor:
        y = self.phi(h) @ self.w_out.T
        return y if self.b_out is None else y + self.b_out

    def run(self, x: Tensor, state: RNNState | None = None) -> Tensor:
        """The hidden states h_1 .. h_T, [batch, time, N], from h_0 = state (or the initial state)."""
        h = (self.initial_state(len(x)) if state is None else state).h
        states = []
        for t in range(x.shape[1]):
            h = self.advance(h, x[:, t])
            states.append(h)
        return torch.stack(states, dim=1)

    def forward(self, x: Tensor, state: RNNState | None = None, return_state: bool = False):
        hs = self.run(x, state)
        y = self.readout(hs)
        return (y, RNNState(hs[:, -1])) if return_state else y
