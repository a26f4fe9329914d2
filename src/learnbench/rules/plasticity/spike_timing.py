"""Spike-timing-dependent plasticity from spike trains, by traces (the maths shared by the STDP rules).

Pre- and post-synaptic spike trains are [batch, time, units] of 0/1 on a grid of step dt. Each unit keeps
a trace that jumps at its spikes and decays by exp(-dt / tau) a step:

    all-to-all pairing       x_t = exp(-dt / tau) x_{t-1} + s_t       (every earlier spike counts)
    nearest-spike pairing    x_t = 1 if s_t else exp(-dt / tau) x_{t-1}   (only the latest one)

Pair-based STDP (Bi & Poo 1998; the trace form of Morrison, Diesmann & Gerstner 2008) then changes W_ij
(post i, pre j) at every step by

    + A+ x_j,t s_i,t          potentiation at a post spike: pre spikes at or before it, A+ exp(-(t_post - t_pre) / tau+)
    - A- y_i,t-1' s_j,t       depression at a pre spike: post spikes strictly before it, A- exp(-(t_pre - t_post) / tau-)

where y' is the post trace before this step's post spike is added: a pre and a post spike in the same step
count once, as potentiation (dt = 0). tests/test_spike_timing.py proves the traces equal the explicit sum
over every spike pair. The change is the mean over the batch's examples (each an independent presentation;
so a mean over DDP ranks of equal batches is the union's mean).

Weight dependence: `additive` (the change as above; the rule clips W to [0, w_max] after it) or
`multiplicative` (soft bounds: potentiation scaled by (w_max - W), depression by W, so W stays in
[0, w_max] by itself; van Rossum, Bi & Turrigiano 2000).

Triplet STDP (Pfister & Gerstner 2006, the minimal all-to-all model): two more traces, a slow pre trace r2
(tau_x) and a slow post trace o2 (tau_y), each read just before its own unit's spike at this step:

    + x_j,t (A2+ + A3+ o2_i,t-1') s_i,t        - y_i,t-1' (A2- + A3- r2_j,t-1') s_j,t
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Pairing = Literal["all_to_all", "nearest"]
Bounds = Literal["additive", "multiplicative"]


def trace(spikes: Tensor, tau: float, dt: float, pairing: Pairing = "all_to_all") -> Tensor:
    """The trace after each step's spike, [batch, time, units] (zero before the first step)."""
    decay = math.exp(-dt / tau)
    x = spikes.new_zeros(spikes.shape[0], spikes.shape[2])
    steps = []
    for t in range(spikes.shape[1]):
        s = spikes[:, t]
        x = decay * x + s if pairing == "all_to_all" else torch.where(s > 0, torch.ones_like(x), decay * x)
        steps.append(x)
    return torch.stack(steps, dim=1)


def before_this_step(traces: Tensor, tau: float, dt: float) -> Tensor:
    """Each step's trace before its own spike is added: the previous step's trace, decayed one step."""
    shifted = torch.cat([traces.new_zeros(traces[:, :1].shape), traces[:, :-1]], dim=1)
    return math.exp(-dt / tau) * shifted


@dataclass(frozen=True)
class STDPTimes:
    """Time constants (ms) and the grid step dt (ms)."""

    tau_pre: float = 20.0  # tau+, the pre-synaptic trace: potentiation's window
    tau_post: float = 20.0  # tau-, the post-synaptic trace: depression's window
    dt: float = 1.0
    tau_x: float = 101.0  # triplet: the slow pre trace (Pfister & Gerstner's visual-cortex fit)
    tau_y: float = 125.0  # triplet: the slow post trace


def pair_correlations(pre: Tensor, post: Tensor, times: STDPTimes, pairing: Pairing = "all_to_all") -> tuple[Tensor, Tensor]:
    """(potentiation, depression) [post, pre], each a mean over the batch of sum_t (trace x spike): the two
    sums A+ and A- weigh."""
    x = trace(pre, times.tau_pre, times.dt, pairing)
    y_before = before_this_step(trace(post, times.tau_post, times.dt, pairing), times.tau_post, times.dt)
    batch = pre.shape[0]
    return torch.einsum("bti,btj->ij", post, x) / batch, torch.einsum("bti,btj->ij", y_before, pre) / batch


def triplet_correlations(pre: Tensor, post: Tensor, times: STDPTimes) -> tuple[Tensor, Tensor]:
    """The triplet terms (all-to-all): potentiation sum_t x_j o2_i' s_i and depression sum_t y_i' r2_j' s_j
    ([post, pre], means over the batch), with o2' and r2' read before this step's own spike."""
    x = trace(pre, times.tau_pre, times.dt)
    y_before = before_this_step(trace(post, times.tau_post, times.dt), times.tau_post, times.dt)
    o2_before = before_this_step(trace(post, times.tau_y, times.dt), times.tau_y, times.dt)
    r2_before = before_this_step(trace(pre, times.tau_x, times.dt), times.tau_x, times.dt)
    batch = pre.shape[0]
    potentiation = torch.einsum("bti,btj->ij", post * o2_before, x) / batch
    depression = torch.einsum("bti,btj->ij", y_before, pre * r2_before) / batch
    return potentiation, depression


def weight_change(w: Tensor, potentiation: Tensor, depression: Tensor, a_plus: float, a_minus: float,
                  bounds: Bounds, w_max: float) -> Tensor:
    """dW from the correlations: additive, or multiplicative (soft bounds in [0, w_max])."""
    if bounds == "multiplicative":
        return a_plus * (w_max - w) * potentiation - a_minus * w * depression
    return a_plus * potentiation - a_minus * depression
