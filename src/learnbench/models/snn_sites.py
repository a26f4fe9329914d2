"""The perturbation sites of model=snn (its TemporalModel `walk`), for the activity-space rules (node
perturbation, FG-A) and FG-W, and its layer walk for the feedback rules (FA, DFA).

One site per layer and time step, the membrane's input current (models/snn.py's notation):

    u^l_t = W_l S^{l-1}_t + b_l (+ W_rec S^L_{t-1} on a recurrent last layer)   what layer l's neurons integrate
    c_t   = W_out S^L_t + b_out                                                what the readout integrates

(S^0 is the encoded input.) Noise or tangents are drawn per example, unit and step ([rows, T, N_l] and
[rows, T, outputs]). From estimates delta^l_t ~ dL/du^l_t every weight learns from its own input at its site,
summed over time (the local update the RNN's sites share):

    dL/dW_l = sum_t delta^l_t (S^{l-1}_t)^T    dL/dW_rec = sum_t delta^L_t (S^L_{t-1})^T    dL/db_l = sum_t delta^l_t

The site is the current before the synaptic filter (I_t = alpha I_{t-1} + u_t), so a weight's update needs no
factor of the neuron's. Tangents travel forward through the spikes by the surrogate's own forward-mode rule
(models/surrogates.py: dS = psi(V - A) dV), with torch.func.jvp over the network's time loop, K directions
vmapped: the directional derivative of the loss is exactly the surrogate gradient (what bp computes by
autograd) dotted with the tangent. The reset follows `detach_reset` in both modes alike.

The walk encodes the examples once (a rate code draws its spikes once per walk) and runs the clean and the
perturbed copies side by side on those same spikes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor
from torch.func import jvp, vmap
from torch.nn import functional as F

from learnbench.state import State

if TYPE_CHECKING:  # the SNN calls these functions from its TemporalModel methods
    from learnbench.models.snn import SNN


@dataclass
class SNNTrace(State):
    """What the local updates read from one walk (R rows: copies of the batch)."""

    inputs: Tensor  # the encoded input S^0 [B, T, inputs]: the same for every copy
    spikes: list[Tensor]  # every hidden layer's spikes S^l [R, T, N_l]

    def first_rows(self, n: int) -> "SNNTrace":
        return SNNTrace(self.inputs, [s[:n] for s in self.spikes])


def snn_site_shapes(model: SNN, x: Tensor) -> list[tuple[int, ...]]:
    """Per-example shapes of the sites: every hidden layer's input current [T, N_l], the readout's [T, outputs]."""
    steps = x.shape[1] if model.time_axis == "data" else model.steps
    return [*((steps, layer.out_features) for layer in model.hidden), (steps, model.output_dim)]


def snn_site_inputs(model: SNN, trace: SNNTrace) -> list[dict[str, Tensor | None]]:
    """What each weight multiplies at its site, every step (None: a bias)."""
    below = [trace.inputs, *trace.spikes[:-1]]
    sites = [{f"hidden.{i}.weight": z, f"hidden.{i}.bias": None} for i, z in enumerate(below)]
    if model.recurrent is not None:
        last = trace.spikes[-1]
        sites[-1]["recurrent.weight"] = torch.cat([torch.zeros_like(last[:, :1]), last[:, :-1]], dim=1)  # S_{t-1}, S_0 = 0
    return [*sites, {"readout.weight": trace.spikes[-1], "readout.bias": None}]


def snn_walk(
    model: SNN,
    x: Tensor,
    shifts: list[Tensor] | None = None,
    tangents: list[Tensor] | None = None,
    weight_tangents: dict[str, Tensor] | None = None,
    params: dict[str, Tensor] | None = None,
) -> tuple[SNNTrace, Tensor, Tensor | None]:
    """Run the SNN on x from its initial state: (trace, output [R, T, outputs], output tangent [K, B, T, outputs] or None).

    `shifts` (one per site, [R, T, n], R a multiple of the batch) are added to the site currents; `tangents`
    ([K, B, T, n] per site) and `weight_tangents` ({name: [K, *shape]}) are the K directions' tangents, carried
    by torch.func.jvp through the surrogate; `params` replaces the model's parameters by name."""
    weights = {n: p.detach() for n, p in model.named_parameters()} | (params or {})
    B = x.shape[0]
    rows = B if shifts is None else shifts[0].shape[0]
    first = first_layer_currents(model, x)  # encodes once: every copy and direction sees the same input spikes

    def run(moving: dict[str, Tensor], site_shifts: list[Tensor] | None):
        return run_sites(model, first, weights | moving, site_shifts, rows // B)

    if tangents is None and weight_tangents is None:
        output, spikes = run({}, shifts)
        return SNNTrace(first.inputs, list(spikes)), output, None
    moving = {n: weights[n] for n in weight_tangents or {}}
    shapes = snn_site_shapes(model, x)
    zero_sites = [x.new_zeros(rows, *s, dtype=weights["readout.weight"].dtype) for s in shapes] if shifts is None else shifts
    K = next(iter(weight_tangents.values())).shape[0] if weight_tangents else tangents[0].shape[0]

    def along(weight_tangent: dict[str, Tensor], site_tangent: list[Tensor]):
        output, d_output, spikes = jvp(run, (moving, zero_sites), (weight_tangent, site_tangent), has_aux=True)
        return output, d_output, spikes

    site_tangents = tangents if tangents is not None else [torch.zeros(K, *z.shape, dtype=z.dtype) for z in zero_sites]
    weight_tangents = weight_tangents or {}
    if K == 1:
        output, d_output, spikes = along({n: t[0] for n, t in weight_tangents.items()}, [t[0] for t in site_tangents])
        d_output = d_output.unsqueeze(0)
    else:
        output, d_output, spikes = vmap(along, out_dims=(None, 0, None))(weight_tangents, site_tangents)
    return SNNTrace(first.inputs, list(spikes)), output, d_output


@dataclass
class FirstLayer:
    """The encoded input and a map from (W_1, b_1) to layer 1's input current at every step [B, T, N_1]."""

    inputs: Tensor  # S^0 [B, T, inputs]
    currents: Callable[[Tensor, Tensor | None], Tensor]


def first_layer_currents(model: SNN, x: Tensor) -> FirstLayer:
    """Encode x once; layer 1's current computed the cheap way the code allows (models/snn.py: input_currents)."""
    inputs = model.encode(x)
    if model.encoding == "current":
        flat = x.flatten(1)
        return FirstLayer(inputs, lambda w, b: F.linear(flat, w, b).unsqueeze(1).expand(-1, model.steps, -1))
    if model.encoding == "latency":
        from learnbench.models.snn import latency_currents, latency_times

        times = latency_times(x.flatten(1), model.steps, model.latency_tau_steps, model.latency_threshold)
        return FirstLayer(inputs, lambda w, b: latency_currents(w, b, times, model.steps))
    return FirstLayer(inputs, lambda w, b: F.linear(inputs, w, b))


def run_sites(model: SNN, first: FirstLayer, p: dict[str, Tensor], shifts: list[Tensor] | None, copies: int):
    """The network on `copies` stacked copies of the batch with parameters p and `shifts` added at the sites:
    (output [R, T, outputs], every hidden layer's spikes [R, T, N_l])."""
    from learnbench.models.snn import run_layer

    state = model.initial_state(first.inputs.shape[0] * copies)
    currents = first.currents(p["hidden.0.weight"], p.get("hidden.0.bias"))
    currents = currents.repeat(copies, 1, 1) if copies > 1 else currents
    spikes = []
    for i, layer_state in enumerate(state.hidden):
        if i > 0:
            currents = F.linear(spikes[-1], p[f"hidden.{i}.weight"], p.get(f"hidden.{i}.bias"))
        if shifts is not None:
            currents = currents + shifts[i]
        last = i == len(state.hidden) - 1
        recurrent = functools.partial(F.linear, weight=p["recurrent.weight"]) if last and model.recurrent is not None else None
        spikes.append(run_layer(model.neuron, currents, layer_state, recurrent)[0])
    readout_current = F.linear(spikes[-1], p["readout.weight"], p.get("readout.bias"))
    if shifts is not None:
        readout_current = readout_current + shifts[-1]
    output, _ = model._run_output(readout_current, state.output)
    return output, tuple(spikes)


def snn_layer_walk(model: SNN, x: Tensor, linear_map=None, detach_inputs: bool = False):
    """The feedback rules' pass (rules/feedback/): (every hidden layer's spikes [B, T, N_l], the readout's input
    current [B, T, outputs], the output). `linear_map(i, linear, z)` replaces linear(z) for every linear map
    after the first (i = 1 .. L - 1 the hidden layers, L the readout), where FA sends the error through B;
    `detach_inputs` cuts every layer off from the one below (DFA: each learns only from its own error)."""
    state = model.initial_state(len(x))
    currents, spikes = model.input_currents(x), []
    linears = [*model.hidden, model.readout]

    def apply(i, z):
        z = z.detach() if detach_inputs else z
        return linears[i](z) if linear_map is None else linear_map(i, linears[i], z)

    for i, layer_state in enumerate(state.hidden):
        if i > 0:
            currents = apply(i, spikes[-1])
        spikes.append(run_layer_of(model, i, currents, layer_state))
    readout_current = apply(len(linears) - 1, spikes[-1])
    output, _ = model._run_output(readout_current, state.output)
    return spikes, readout_current, output


def run_layer_of(model: SNN, i: int, currents: Tensor, layer_state) -> Tensor:
    from learnbench.models.snn import run_layer

    recurrent = model.recurrent if i == len(model.hidden) - 1 else None
    return run_layer(model.neuron, currents, layer_state, recurrent)[0]
