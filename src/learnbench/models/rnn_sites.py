"""The perturbation sites of model=rnn (its TemporalModel `walk`), for the activity-space rules (node
perturbation, FG-A), and the RNN's forward-mode pass with weight tangents (FG-W).

Two sites at every time step, as an MLP has one per block (models/rnn.py's notation):

    u_t = W_rec phi(h_{t-1}) + W_in x_t + b     the input current;  h_t = (1 - a) h_{t-1} + a u_t
    y_t = W_out phi(h_t) + b_out                the readout's pre-activation (the output)

Noise or tangents are drawn per example, unit and step ([rows, T, N] and [rows, T, O]): the
perturbation dimension is T (N + O) and grows with the sequence (Zuege et al., PRX 2023, argue that
weight perturbation then catches up with node perturbation). From estimates delta_t ~ dL/du_t and
eps_t ~ dL/dy_t every weight learns from its own input, summed over time:

    dL/dW_rec = sum_t delta_t phi(h_{t-1})^T    dL/dW_in = sum_t delta_t x_t^T    dL/db = sum_t delta_t
    dL/dW_out = sum_t eps_t phi(h_t)^T          dL/db_out = sum_t eps_t

with no factor a: the site is u_t itself, before the leak scales it. Tangents v_t on u_t and w_t on
y_t travel forward with the primal (forward-mode AD written out, h_0 fixed so dh_0 = 0):

    dh_t = (1 - a) dh_{t-1} + a (W_rec (phi'(h_{t-1}) * dh_{t-1}) + v_t),   dy_t = W_out (phi'(h_t) * dh_t) + w_t

and the loss's derivative along dy is exactly sum_t grad_{u_t} L . v_t + grad_{y_t} L . w_t.
FG-W's tangents are the weights' own, V_rec, V_in, v_b, V_out, v_bout (zero for a weight that does
not learn); they enter the same recursion as v_t = V_rec phi(h_{t-1}) + V_in x_t + v_b and
w_t = V_out phi(h_t) + v_bout, so the walk is exactly torch.func.jvp of the model's forward without
its per-op overhead on every step of the time loop.

These rules estimate the gradient of the whole sequence (as wp and fg_w do): the module hands them
the sequence in one call, so `truncation` / `update_every` (the recurrent rules' windows) do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from learnbench.state import State

if TYPE_CHECKING:  # the RNN calls these functions from its TemporalModel methods
    from learnbench.models.rnn import RNN


@dataclass
class RNNTrace(State):
    """What the local updates read from one run of the RNN (R rows: copies of the batch)."""

    x: Tensor  # [B, T, inputs]: the same for every copy
    h_prev: Tensor  # [R, T, N]: h_0 .. h_{T-1}
    hs: Tensor  # [R, T, N]: h_1 .. h_T

    def first_rows(self, n: int) -> "RNNTrace":
        return RNNTrace(self.x, self.h_prev[:n], self.hs[:n])


def rnn_site_shapes(model: RNN, x: Tensor) -> list[tuple[int, ...]]:
    """Per-example shapes of the two sites: u [T, N] and y [T, outputs]."""
    return [(x.shape[1], model.hidden_size), (x.shape[1], model.output_dim)]


# The RNN's weights by parameter name; a model with other trainable parameters (a learned initial
# state, say) is not what rnn_walk differentiates.
RNN_WEIGHTS = ("w_rec", "w_in", "b", "w_out", "b_out")


def rnn_walk(
    model: RNN,
    x: Tensor,
    shifts: list[Tensor] | None = None,
    tangents: list[Tensor] | None = None,
    weight_tangents: dict[str, Tensor] | None = None,
    params: dict[str, Tensor] | None = None,
) -> tuple[RNNTrace, Tensor, Tensor | None]:
    """Run the RNN on x from its initial state: (trace, output, output tangent or None).

    `shifts` [R, T, N], [R, T, O] are added to u_t and y_t, R a multiple of the batch (the walk runs
    R / B copies of it: a clean one, noisy ones); `tangents` [K, B, T, N], [K, B, T, O] are the
    K directions' tangents at u_t and y_t; `weight_tangents` {name: [K, *shape]} the K directions'
    tangents of the weights that move (named as in model.named_parameters()). Both are carried beside
    the primal, which is computed once. `params` replaces the model's weights by name (as
    torch.func.functional_call would)."""
    w = {n: getattr(model, n) for n in RNN_WEIGHTS} | (params or {})
    B, T = x.shape[:2]
    rows = B if shifts is None else shifts[0].shape[0]
    a, w_rec = model.a, w["w_rec"]
    drive = x @ w["w_in"].T  # W_in x_t + b for every step at once: the same on every copy
    if w["b"] is not None:
        drive = drive + w["b"]
    drive = drive.repeat(rows // B, 1, 1)
    h0 = h = model.initial_state(rows).h
    hs = []
    for t in range(T):
        u = model.phi(h) @ w_rec.T + drive[:, t]
        if shifts is not None:
            u = u + shifts[0][:, t]
        h = (1 - a) * h + a * u
        hs.append(h)
    hs = torch.stack(hs, dim=1)
    h_prev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1)
    phi_hs = model.phi(hs)
    output = phi_hs @ w["w_out"].T  # model.readout with the weights in w
    if w["b_out"] is not None:
        output = output + w["b_out"]
    if shifts is not None:
        output = output + shifts[1]
    trace = RNNTrace(x, h_prev, hs)
    if tangents is None and weight_tangents is None:
        return trace, output, None
    return trace, output, _output_tangent(model, w, trace, phi_hs, tangents, weight_tangents or {})


def _output_tangent(model: RNN, w, trace: RNNTrace, phi_hs: Tensor, tangents, V: dict[str, Tensor]) -> Tensor | None:
    """dy [K, B, T, O] after the primal pass. Nothing in the tangent of u_t but W_rec (phi' * dh_{t-1})
    depends on the tangent's own past, so the rest (the activity tangent v_t, V_rec phi(h_{t-1}),
    V_in x_t, v_b) is computed for all steps at once before the loop over time."""
    du = _sum_terms(
        None if tangents is None else tangents[0],
        _times(model.phi(trace.h_prev), V.get("w_rec")),
        _times(trace.x, V.get("w_in")),
        _bias(V.get("b"), 2),
    )
    dy = _sum_terms(
        None if tangents is None else tangents[1],
        _times(phi_hs, V.get("w_out")),
        _bias(V.get("b_out"), 2),
    )
    if du is not None:  # dh_0 = 0 (h_0 is a constant): dy_t's part through the hidden state
        K, (R, T, N) = du.shape[0], trace.hs.shape
        dhs = _hidden_tangent(model.a, w["w_rec"], model.phi_prime(trace.h_prev), du.expand(K, R, T, N))
        dy = _sum_terms(dy, (dhs * model.phi_prime(trace.hs)) @ w["w_out"].T)
    return dy


def _hidden_tangent(a: float, w_rec: Tensor, phi_prime_prev: Tensor, du: Tensor) -> Tensor:
    """dh_1 .. dh_T [K, B, T, N] from du_t: dh_t = (1 - a) dh_{t-1} + a (W_rec (phi'(h_{t-1}) * dh_{t-1}) + du_t).

    The loop is bound by per-op overhead (N ~ 50): a is folded into du and W_rec once and the K
    directions into the rows, so a step is 3 ops (a multiply, an add, an addmm) instead of 7."""
    K, B, T, N = du.shape
    a_du = (a * du).reshape(K * B, T, N)
    a_w = a * w_rec.T
    pp = phi_prime_prev.expand(K, B, T, N).reshape(K * B, T, N)
    dh = a_du[:, 0]  # dh_0 = 0
    dhs = [dh]
    for t in range(1, T):
        dh = torch.addmm(torch.add(a_du[:, t], dh, alpha=1 - a), dh * pp[:, t], a_w)
        dhs.append(dh)
    return torch.stack(dhs, dim=1).view(K, B, T, N)


def _times(z: Tensor, V: Tensor | None) -> Tensor | None:
    """V z for every row and step, [K, B, T, out], from z [B, T, in] and V [K, out, in]."""
    return None if V is None else z @ V.mT.unsqueeze(1)


def _bias(v: Tensor | None, dims: int) -> Tensor | None:
    """v [K, out] viewed to broadcast over `dims` dimensions (rows, steps)."""
    return None if v is None else v.view(v.shape[0], *[1] * dims, v.shape[1])


def _sum_terms(*terms: Tensor | None) -> Tensor | None:
    present = [t for t in terms if t is not None]
    return None if not present else sum(present[1:], present[0])


def rnn_site_inputs(model: RNN, trace: RNNTrace) -> list[dict[str, Tensor]]:
    """What each weight multiplies at its site, every step: u_t's W_rec phi(h_{t-1}), W_in x_t, b 1; y_t's
    W_out phi(h_t), b_out 1 (None: a bias, whose gradient is the site's error summed). x has the batch's
    rows only (the same on every copy); the rules fold the copies' errors onto it."""
    return [
        {"w_rec": model.phi(trace.h_prev), "w_in": trace.x, "b": None},
        {"w_out": model.phi(trace.hs), "b_out": None},
    ]
