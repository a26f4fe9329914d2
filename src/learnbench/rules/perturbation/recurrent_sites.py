"""The perturbation sites of model=rnn, for the activity-space rules (node perturbation, FG-A).

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

These rules estimate the gradient of the whole sequence (as wp and fg_w do): the module hands them
the sequence in one call, so `truncation` / `update_every` (the recurrent rules' windows) do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from learnbench.models.rnn import RNN
from learnbench.rules.local import fold_rows


@dataclass
class RNNTrace:
    """What the local updates read from one run of the RNN (R rows: copies of the batch)."""

    x: Tensor  # [B, T, inputs]: the same for every copy
    h_prev: Tensor  # [R, T, N]: h_0 .. h_{T-1}
    hs: Tensor  # [R, T, N]: h_1 .. h_T

    def first_rows(self, n: int) -> "RNNTrace":
        return RNNTrace(self.x, self.h_prev[:n], self.hs[:n])


def rnn_site_shapes(model: RNN, x: Tensor) -> list[tuple[int, ...]]:
    """Per-example shapes of the two sites: u [T, N] and y [T, outputs]."""
    return [(x.shape[1], model.hidden_size), (x.shape[1], model.output_dim)]


def rnn_walk(model: RNN, x: Tensor, shifts: list[Tensor] | None = None, tangents: list[Tensor] | None = None) -> tuple[RNNTrace, Tensor, Tensor | None]:
    """Run the RNN on x from its initial state: (trace, output, output tangent or None).

    `shifts` [R, T, N], [R, T, O] are added to u_t and y_t, R a multiple of the batch (the walk runs
    R / B copies of it: a clean one, noisy ones); `tangents` [K, B, T, N], [K, B, T, O] are the
    K directions' tangents at u_t and y_t, carried beside the primal (which is computed once)."""
    B, T = x.shape[:2]
    rows = B if shifts is None else shifts[0].shape[0]
    a, w_rec = model.a, model.w_rec
    drive = x @ model.w_in.T  # W_in x_t + b for every step at once: the same on every copy
    if model.b is not None:
        drive = drive + model.b
    drive = drive.repeat(rows // B, 1, 1)
    h0 = h = model.initial_state(rows)
    dh, hs, dhs = None, [], []
    for t in range(T):
        u = model.phi(h) @ w_rec.T + drive[:, t]
        if shifts is not None:
            u = u + shifts[0][:, t]
        if tangents is not None:
            du = tangents[0][:, :, t]
            dh = a * du if dh is None else (1 - a) * dh + a * ((dh * model.phi_prime(h)) @ w_rec.T + du)
            dhs.append(dh)
        h = (1 - a) * h + a * u
        hs.append(h)
    hs = torch.stack(hs, dim=1)
    output = model.readout(hs)
    if shifts is not None:
        output = output + shifts[1]
    d_output = None
    if tangents is not None:
        d_output = (torch.stack(dhs, dim=2) * model.phi_prime(hs)) @ model.w_out.T + tangents[1]
    h_prev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1)
    return RNNTrace(x, h_prev, hs), output, d_output


def rnn_local_update(model: RNN, trace: RNNTrace, deltas: list[Tensor]) -> None:
    """Write every trained parameter's gradient from delta_t (at u_t) and eps_t (at y_t), summed over time.

    The deltas may hold several stacked copies of the trace's rows (directions): summed onto them."""
    rows = trace.hs.shape[0]
    delta, eps = (fold_rows(d, rows) for d in deltas)
    if model.w_rec.requires_grad:
        model.w_rec.grad = torch.einsum("btn,btm->nm", delta, model.phi(trace.h_prev))
    if model.w_in.requires_grad:  # x is the same on every copy: fold the rows down to the batch first
        model.w_in.grad = torch.einsum("btn,bti->ni", fold_rows(delta, len(trace.x)), trace.x)
    if model.b is not None and model.b.requires_grad:
        model.b.grad = delta.sum(dim=(0, 1))
    if model.w_out.requires_grad:
        model.w_out.grad = torch.einsum("bto,btn->on", eps, model.phi(trace.hs))
    if model.b_out is not None and model.b_out.requires_grad:
        model.b_out.grad = eps.sum(dim=(0, 1))
