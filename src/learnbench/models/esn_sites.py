"""The perturbation sites of model=esn (its TemporalModel `walk`), for node perturbation and FG-A, and its forward-mode
pass with weight tangents (FG-W): models/rnn_sites.py's two sites, for the ESN's form (tanh after the sum).

Two sites at every step (models/esn.py's notation, x the reservoir's state, u the input):

    p_t = W x_{t-1} + W_in u_t + b     the pre-activation;  x_t = (1 - a) x_{t-1} + a tanh(p_t)
    y_t = W_out x_t + b_out            the readout (the output)

From estimates delta_t ~ dL/dp_t and eps_t ~ dL/dy_t every weight learns from its own input, summed over time:
dL/dW = sum_t delta_t x_{t-1}^T, dL/dW_in = sum_t delta_t u_t^T, dL/db = sum_t delta_t, dL/dW_out = sum_t eps_t x_t^T,
dL/db_out = sum_t eps_t. Tangents v_t on p_t and w_t on y_t travel forward with the primal (x_0 fixed, dx_0 = 0):

    dp_t = v_t + W dx_{t-1},   dx_t = (1 - a) dx_{t-1} + a tanh'(p_t) dp_t,   dy_t = W_out dx_t + w_t

FG-W's weight tangents V, V_in, v_b, V_out, v_bout enter as v_t = V x_{t-1} + V_in u_t + v_b and w_t = V_out x_t +
v_bout: the walk is torch.func.jvp of the forward pass written out (tests/test_reservoir.py checks it against jvp).
A reservoir with output feedback (model.feedback) has no sites here: y_{t-1} would enter p_t (`ESN.has_sites`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from learnbench.models.rnn_sites import _bias, _sum_terms, _times
from learnbench.state import State

if TYPE_CHECKING:
    from learnbench.models.esn import ESN

#: The ESN's weights the walk differentiates, by parameter name (W_fb is not: a feedback reservoir has no sites).
ESN_WEIGHTS = ("w", "w_in", "b", "w_out", "b_out")


@dataclass
class ESNTrace(State):
    """What the local updates read from one run (R rows: copies of the batch)."""

    x: Tensor  # [B, T, inputs]: the same for every copy
    h_prev: Tensor  # [R, T, N]: x_0 .. x_{T-1}
    hs: Tensor  # [R, T, N]: x_1 .. x_T
    pre: Tensor  # [R, T, N]: p_1 .. p_T (tanh' for the tangents)

    def first_rows(self, n: int) -> "ESNTrace":
        return ESNTrace(self.x, self.h_prev[:n], self.hs[:n], self.pre[:n])


def esn_site_shapes(model: ESN, x: Tensor) -> list[tuple[int, ...]]:
    """Per-example shapes of the two sites: p [T, N] and y [T, outputs]."""
    return [(x.shape[1], model.hidden_size), (x.shape[1], model.output_dim)]


def esn_walk(model: ESN, x: Tensor, shifts: list[Tensor] | None = None, tangents: list[Tensor] | None = None,
             weight_tangents: dict[str, Tensor] | None = None, params: dict[str, Tensor] | None = None):
    """Run the ESN on x from its initial state: (trace, output, output tangent or None); the arguments as
    models/rnn_sites.rnn_walk's (shifts [R, T, N], [R, T, O]; tangents [K, B, T, N], [K, B, T, O]; weight tangents
    {name: [K, *shape]}; params replacing the model's weights by name)."""
    w = {n: getattr(model, n) for n in ESN_WEIGHTS} | (params or {})
    B, T = x.shape[:2]
    rows = B if shifts is None else shifts[0].shape[0]
    a = model.a
    drive = x @ w["w_in"].T + w["b"]  # W_in u_t + b for every step at once: the same on every copy
    drive = drive.repeat(rows // B, 1, 1)
    h0 = h = model.initial_state(rows).h
    hs, pres = [], []
    for t in range(T):
        p = drive[:, t] + h @ w["w"].T
        if shifts is not None:
            p = p + shifts[0][:, t]
        h = (1 - a) * h + a * torch.tanh(p)
        hs.append(h)
        pres.append(p)
    hs, pres = torch.stack(hs, dim=1), torch.stack(pres, dim=1)
    h_prev = torch.cat([h0.expand(rows, -1).unsqueeze(1), hs[:, :-1]], dim=1)
    output = hs @ w["w_out"].T
    if w["b_out"] is not None:
        output = output + w["b_out"]
    if shifts is not None:
        output = output + shifts[1]
    trace = ESNTrace(x, h_prev, hs, pres)
    if tangents is None and weight_tangents is None:
        return trace, output, None
    V = weight_tangents or {}
    dp = _sum_terms(None if tangents is None else tangents[0], _times(h_prev, V.get("w")), _times(x, V.get("w_in")),
                    _bias(V.get("b"), 2))
    dy = _sum_terms(None if tangents is None else tangents[1], _times(hs, V.get("w_out")), _bias(V.get("b_out"), 2))
    if dp is not None:  # dy_t's part through the reservoir: the recursion over time
        K, (R, _, N) = dp.shape[0], hs.shape
        dp = dp.expand(K, R, T, N)
        slope = a * (1 - torch.tanh(pres) ** 2)  # d x_t / d p_t
        dx, dxs = torch.zeros_like(dp[:, :, 0]), []
        for t in range(T):
            dx = (1 - a) * dx + slope[:, t] * (dp[:, :, t] + dx @ w["w"].T)
            dxs.append(dx)
        dy = _sum_terms(dy, torch.stack(dxs, dim=2) @ w["w_out"].T)
    return trace, output, dy


def esn_site_inputs(model: ESN, trace: ESNTrace) -> list[dict[str, Tensor | None]]:
    """What each weight multiplies at its site, every step: p_t's W x_{t-1}, W_in u_t, b 1; y_t's W_out x_t, b_out 1
    (None: a bias)."""
    return [{"w": trace.h_prev, "w_in": trace.x, "b": None}, {"w_out": trace.hs, "b_out": None}]
