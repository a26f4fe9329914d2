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
(models/surrogates.py: dS = psi(V - A) dV), step by step beside the primal pass (Neuron.step_tangent, K
directions at once): the directional derivative of the loss is exactly the surrogate gradient (what bp computes
by autograd) dotted with the tangent, as torch.func.jvp of the time loop gives it (the tests' oracle), at a
fraction of its cost. The reset follows `detach_reset` in both modes alike.

The walk encodes the examples once (a rate code draws its spikes once per walk) and runs the clean and the
perturbed copies side by side on those same spikes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor
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
    forward beside the primal pass through the surrogate (run_sites_forward_mode); `params` replaces the model's
    parameters by name."""
    weights = {n: p.detach() for n, p in model.named_parameters()} | (params or {})
    B = x.shape[0]
    rows = B if shifts is None else shifts[0].shape[0]
    first = first_layer_currents(model, x)  # encodes once: every copy and direction sees the same input spikes

    if tangents is None and weight_tangents is None:
        output, spikes = run_sites(model, first, weights, shifts, rows // B)
        return SNNTrace(first.inputs, list(spikes)), output, None
    output, d_output, spikes = run_sites_forward_mode(model, first, weights, shifts, rows // B, weight_tangents or {}, tangents)
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


@torch.no_grad()
def run_sites_forward_mode(model: SNN, first: "FirstLayer", p: dict[str, Tensor], shifts: list[Tensor] | None, copies: int,
                           weight_tangents: dict[str, Tensor], site_tangents: list[Tensor] | None):
    """run_sites and its forward mode side by side, step by step: (output [R, T, outputs], its tangent [K, R, T, outputs],
    every hidden layer's spikes). `weight_tangents` {name: [K, *shape]} (a weight without one: a zero tangent) and
    `site_tangents` ([K, R, T, n] per site, or None) are the K directions. The tangent of each step is written out
    (Neuron.step_tangent): exactly torch.func.jvp of run_sites (tests/test_snn_rules.py), at a fraction of its cost."""
    V = weight_tangents
    K = next(iter(V.values())).shape[0] if V else site_tangents[0].shape[0]  # the directions
    state = model.initial_state(first.inputs.shape[0] * copies)
    currents = first.currents(p["hidden.0.weight"], p.get("hidden.0.bias"))
    currents = currents.repeat(copies, 1, 1) if copies > 1 else currents
    d_currents = first_layer_tangent(first, V, K, copies)
    spikes, d_spikes = [], None
    for i, layer_state in enumerate(state.hidden):
        weight, bias = f"hidden.{i}.weight", f"hidden.{i}.bias"
        if i > 0:
            currents = F.linear(spikes[-1], p[weight], p.get(bias))
            d_currents = _sum(linear_tangent(spikes[-1], V.get(weight), V.get(bias)), F.linear(d_spikes, p[weight]))
        if shifts is not None:
            currents = currents + shifts[i]
        if site_tangents is not None:
            d_currents = _sum(d_currents, site_tangents[i])
        recurrent = ((p["recurrent.weight"], V.get("recurrent.weight"))
                     if i == len(state.hidden) - 1 and model.recurrent is not None else None)
        layer_spikes, d_spikes = layer_forward_mode(model.neuron, currents, d_currents, layer_state, recurrent, K)
        spikes.append(layer_spikes)
    readout_current = F.linear(spikes[-1], p["readout.weight"], p.get("readout.bias"))
    d_readout = _sum(linear_tangent(spikes[-1], V.get("readout.weight"), V.get("readout.bias")),
                     F.linear(d_spikes, p["readout.weight"]))
    if shifts is not None:
        readout_current = readout_current + shifts[-1]
    if site_tangents is not None:
        d_readout = _sum(d_readout, site_tangents[-1])
    output, d_output = output_forward_mode(model, readout_current, d_readout, state.output, K)
    return output, d_output, tuple(spikes)


def first_layer_tangent(first: "FirstLayer", V: dict[str, Tensor], K: int, copies: int) -> Tensor | None:
    """Layer 1's current's tangent [K, R, T, N_1] from W_1's and b_1's (the current is affine in them: the weight's
    part is the same map applied to its tangent, the bias adds its tangent at every step); None: no tangent."""
    d = None
    if "hidden.0.weight" in V:
        d = torch.stack([first.currents(V["hidden.0.weight"][k], None) for k in range(K)])
        d = d.repeat(1, copies, 1, 1) if copies > 1 else d
    if "hidden.0.bias" in V:
        d = _sum(d, V["hidden.0.bias"][:, None, None, :])
    return d


def linear_tangent(z: Tensor, weight_tangent: Tensor | None, bias_tangent: Tensor | None) -> Tensor | None:
    """The tangent of F.linear(z, W, b) from W's and b's alone, [K, R, T, out] (z [R, T, in] has none here)."""
    d = None if weight_tangent is None else torch.matmul(z.unsqueeze(0), weight_tangent.transpose(1, 2).unsqueeze(1))
    return d if bias_tangent is None else _sum(d, bias_tangent[:, None, None, :])


def _sum(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a + b


def zero_tangent(state, K: int):
    """The tangent of a fresh state ([K, *each field's shape] of zeros; the refractory count has none)."""
    fields = {name: None if value is None or name == "refractory" else value.new_zeros(K, *value.shape)
              for name, value in vars(state).items()}
    return type(state)(**fields)


def layer_forward_mode(neuron, currents: Tensor, d_currents: Tensor | None, state, recurrent, K: int):
    """A spiking layer over all steps with its tangents (run_layer's loop): (spikes [R, T, N], their tangent
    [K, R, T, N]). `recurrent` (W_rec, its tangent or None) adds W_rec S_{t-1} and, to the tangent, W_rec dS_{t-1}
    + dW_rec S_{t-1}."""
    tangent = zero_tangent(state, K)
    spikes, d_spikes = [], []
    for t, current in enumerate(currents.unbind(1)):
        d_current = d_currents[:, :, t] if d_currents is not None else torch.zeros_like(tangent.membrane)
        if recurrent is not None:
            w_rec, v_rec = recurrent
            current = current + F.linear(state.spikes, w_rec)
            d_current = d_current + F.linear(tangent.spikes, w_rec)
            if v_rec is not None:
                d_current = d_current + torch.matmul(state.spikes, v_rec.transpose(1, 2))
        after = neuron.step(state, current)
        tangent = neuron.step_tangent(state, after, tangent, d_current)
        state = after
        spikes.append(state.spikes)
        d_spikes.append(tangent.spikes)
    return torch.stack(spikes, dim=1), torch.stack(d_spikes, dim=2)


def output_forward_mode(model: SNN, currents: Tensor, d_currents: Tensor, state, K: int) -> tuple[Tensor, Tensor]:
    """The readout over all steps with its tangent (SNN._run_output's loop): (output [R, T, O], [K, R, T, O])."""
    tangent = zero_tangent(state, K)
    outputs, d_outputs = [], []
    for t, current in enumerate(currents.unbind(1)):
        after = model._output_step(state, current)
        if model.readout_kind == "membrane":
            tangent = model.output_neuron.step_tangent(state, after, tangent, d_currents[:, :, t])
        else:
            tangent = model.output_neuron.integrate_tangent(tangent, d_currents[:, :, t], model.readout_gain)
        state = after
        outputs.append(state.membrane)
        d_outputs.append(tangent.membrane)
    return torch.stack(outputs, dim=1), torch.stack(d_outputs, dim=2)


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
