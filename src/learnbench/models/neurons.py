"""Spiking neurons, one time step of a layer at a time: the current-based leaky integrate-and-fire neuron
(LIF), its adaptive-threshold variant (ALIF, Bellec et al. 2020) and the non-spiking leaky integrator.

Units: every time constant (tau_mem, tau_syn, tau_adaptation) and the step dt are in milliseconds; the
dynamics see only the per-step decays exp(-dt / tau). One step t, from the state after step t-1
(I current, V membrane, S spikes, a adaptation, r refractory count) and the layer's input current x_t
(its weights times its input at step t; a recurrent layer adds W_rec S_{t-1}):

    I_t = alpha I_{t-1} + x_t                   alpha = exp(-dt / tau_syn); plain LIF (tau_syn 0 or null): I_t = x_t
    V_t = beta V_{t-1} + I_t - S_{t-1} thr      reset by subtraction (snnTorch's Leaky/Synaptic, Bellec et al. 2020)
    V_t = beta (1 - S_{t-1}) V_{t-1} + I_t      reset to zero (snnTorch's Leaky; norse resets within step t-1: same V_t)
    a_t = rho a_{t-1} + S_{t-1}                 ALIF only: rho = exp(-dt / tau_adaptation), threshold A_t = thr + beta_a a_t
    S_t = H(V_t - A_t)                          A_t = thr for LIF; backward: the surrogate derivative (models/surrogates.py)

So a spike's reset acts at the next step and V_t, what a layer reports, is the membrane before its own
spike's reset (snnTorch's recorded `mem`). `detach_reset`: the reset term S_{t-1} carries no gradient
(spytorch's numbers and e-prop's exactness at W_rec = 0 assume it; snnTorch always detaches it).
The reset subtracts the base threshold thr, not A_t (Bellec et al. 2020, eq. 6).

Refractory period, k = refractory_steps > 0: for the k steps after a spike the unit cannot spike and its
surrogate derivative is zero. `refractory_hold` (the default): the membrane is also held where the reset left it
(V_t = V_{t-1} - S_{t-1} thr, or (1 - S_{t-1}) V_{t-1}: no leak, no input); the synaptic current keeps
integrating (norse's LIFRefrac). Without the hold the membrane follows its equation through the refractory steps and
only the spikes are blocked (Bellec et al.'s EligALIF, whose n_ref = 5 blocks the 4 steps after a spike: k = 4).
spytorch's loop, V_{t+1} = (beta V_t + I_t)(1 - S_t), is reset to zero with k = 1.

State is a per-batch LIFState (learnbench/state.py); nothing is kept in the module between calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from learnbench.models.surrogates import spike, surrogate_derivative
from learnbench.state import State

Reset = Literal["subtract", "zero"]


def decay(dt: float, tau: float | None) -> float:
    """The per-step decay exp(-dt / tau) (dt and tau in ms); tau 0 or None: 0, no memory."""
    return math.exp(-dt / tau) if tau else 0.0


@dataclass
class LIFState(State):
    """One layer's state after a step, [batch, units] each; None where the neuron has no such variable."""

    membrane: Tensor  # V_t, before its own spike's reset
    spikes: Tensor  # S_t (0 or 1)
    current: Tensor | None = None  # I_t (None: plain LIF)
    adaptation: Tensor | None = None  # a_t (None: LIF)
    refractory: Tensor | None = None  # r_t: steps the unit stays refractory (None: no refractory period)


@dataclass
class IntegratorState(State):
    """A leaky integrator's state (a non-spiking readout): I_t and V_t, [batch, units]."""

    membrane: Tensor
    current: Tensor | None = None


@dataclass(frozen=True)
class Neuron:
    """The neuron model of a layer: its per-step constants (no state, no parameters that learn)."""

    beta: float  # membrane decay per step, exp(-dt / tau_mem)
    alpha: float = 0.0  # synaptic decay per step, exp(-dt / tau_syn); 0: plain LIF
    threshold: float = 1.0
    reset: Reset = "subtract"
    detach_reset: bool = True
    refractory_steps: int = 0
    refractory_hold: bool = True  # the membrane held at its reset value while refractory; False: only spikes blocked
    rho: float = 0.0  # adaptation decay per step, exp(-dt / tau_adaptation)
    adaptation_strength: float = 0.0  # beta_a: the threshold's rise per unit of adaptation; 0: LIF
    adaptive_units: int | None = None  # ALIF only these last units of a layer, the others LIF (Bellec's LSNN); None: all
    surrogate: str = "fast_sigmoid"
    surrogate_scale: float | None = None

    @property
    def synaptic(self) -> bool:
        return self.alpha > 0

    @property
    def adaptive(self) -> bool:
        return self.adaptation_strength > 0

    def unit_strengths(self, units: int, like: Tensor) -> Tensor:
        """beta_a of every unit of a layer, [units]: 0 for its LIF units (the first units - adaptive_units)."""
        strengths = like.new_full((units,), float(self.adaptation_strength))
        if self.adaptive_units is not None:
            strengths[: max(units - self.adaptive_units, 0)] = 0.0
        return strengths

    def adaptive_threshold(self, adaptation: Tensor) -> Tensor:
        """A_t = thr + beta_a a_t, with beta_a per unit where a layer mixes LIF and ALIF units."""
        return self.threshold + self.threshold_rise(adaptation)

    def threshold_rise(self, adaptation: Tensor) -> Tensor:
        """beta_a a_t (per unit where a layer mixes LIF and ALIF units): also the threshold's tangent from a's."""
        if self.adaptive_units is None:
            return self.adaptation_strength * adaptation
        return self.unit_strengths(adaptation.shape[-1], adaptation) * adaptation

    def initial_state(self, batch: int, units: int, like: Tensor) -> LIFState:
        """All zeros (dtype and device of `like`): a fresh state for every batch."""
        zeros = like.new_zeros(batch, units)
        return LIFState(
            membrane=zeros,
            spikes=zeros,
            current=zeros if self.synaptic else None,
            adaptation=zeros if self.adaptive else None,
            refractory=torch.zeros(batch, units, dtype=torch.int32, device=like.device) if self.refractory_steps else None,
        )

    def step(self, state: LIFState, input_current: Tensor) -> LIFState:
        """One time step (the module docstring's equations)."""
        current = self.alpha * state.current + input_current if self.synaptic else input_current
        last = state.spikes.detach() if self.detach_reset else state.spikes
        # The scalings as their own products, not as add / sub with alpha: under forward-mode AD (fg_w, fg_a: torch.func.jvp)
        # inside a dispatch mode (the FLOP count at a run's first batch, learnbench/compute.py), torch 2.14 crashes the
        # process (a segmentation fault) on add / sub with alpha != 1 whose scaled operand carries no tangent, as the
        # first step's zero membrane and the detached reset do (tests/test_snn_rules.py). The sub_ stays in place on
        # the fresh sum: one temporary fewer in the hot loop of surrogate BPTT.
        if self.reset == "subtract":
            membrane = torch.add(current, state.membrane * self.beta).sub_(last * self.threshold)
        else:
            membrane = torch.add(current, (1 - last) * state.membrane * self.beta)
        threshold, adaptation = self.threshold, None
        if self.adaptive:
            adaptation = self.rho * state.adaptation + state.spikes
            threshold = self.adaptive_threshold(adaptation)
        if not self.refractory_steps:
            spikes = spike(membrane - threshold, self.surrogate, self.surrogate_scale, self.threshold)
            return LIFState(membrane, spikes, current if self.synaptic else None, adaptation)
        held = (state.refractory > 0).to(membrane.dtype)  # no gradient: a count, not a function of the weights
        if self.refractory_hold:
            after_reset = state.membrane - last * self.threshold if self.reset == "subtract" else (1 - last) * state.membrane
            membrane = held * after_reset + (1 - held) * membrane
        spikes = (1 - held) * spike(membrane - threshold, self.surrogate, self.surrogate_scale, self.threshold)
        refractory = torch.where(spikes > 0, self.refractory_steps, (state.refractory - 1).clamp(min=0)).to(torch.int32)
        return LIFState(membrane, spikes, current if self.synaptic else None, adaptation, refractory)

    def step_tangent(self, before: LIFState, after: LIFState, tangent: LIFState, input_tangent: Tensor) -> LIFState:
        """Forward mode of `step`, written out: the tangents after step t ([K, batch, units], K directions) from those
        after t-1 and the input current's, at the primal step `before` -> `after`. What torch.func.jvp of `step`
        computes (tests/test_snn_rules.py), without its cost: in torch 2.14 every op that mixes a tangent-carrying
        operand with one that has none (a Python scalar, the held mask) builds its zero tangent through Python
        meta functions, ~0.25 ms an op, most of fg_w's and fg_a's time on a spiking network. The spike's tangent is
        the surrogate's, dS = psi(V - A) (dV - dA) (SurrogateSpike.jvp)."""
        current = self.alpha * tangent.current + input_tangent if self.synaptic else input_tangent
        reset = None if self.detach_reset else tangent.spikes  # the reset's S_{t-1}: no tangent when detached
        if self.reset == "subtract":
            after_reset = tangent.membrane if reset is None else tangent.membrane - self.threshold * reset
            membrane = current + self.beta * tangent.membrane
            membrane = membrane if reset is None else membrane - self.threshold * reset
        else:  # V_t = beta (1 - S_{t-1}) V_{t-1} + I_t
            after_reset = (1 - before.spikes) * tangent.membrane
            after_reset = after_reset if reset is None else after_reset - before.membrane * reset
            membrane = current + self.beta * after_reset
        threshold, threshold_tangent, adaptation = self.threshold, None, None
        if self.adaptive:
            adaptation = self.rho * tangent.adaptation + tangent.spikes
            threshold = self.adaptive_threshold(after.adaptation)
            threshold_tangent = self.threshold_rise(adaptation)
        psi = surrogate_derivative(after.membrane - threshold, self.surrogate, self.surrogate_scale, self.threshold)
        if self.refractory_steps:
            held = (before.refractory > 0).to(psi.dtype)
            if self.refractory_hold:
                membrane = held * after_reset + (1 - held) * membrane
            psi = (1 - held) * psi
        spikes = psi * (membrane if threshold_tangent is None else membrane - threshold_tangent)
        return LIFState(membrane, spikes, current if self.synaptic else None, adaptation)

    def integrator_state(self, batch: int, units: int, like: Tensor) -> IntegratorState:
        zeros = like.new_zeros(batch, units)
        return IntegratorState(membrane=zeros, current=zeros if self.synaptic else None)

    def integrate(self, state: IntegratorState, input_current: Tensor, gain: float = 1.0) -> IntegratorState:
        """A leaky integrator's step: the LIF equations without threshold or reset (spytorch's readout units);
        `gain` scales the current into the membrane (1 - beta: a low-pass filter of unit gain, Bellec's exp_convolve)."""
        current = self.alpha * state.current + input_current if self.synaptic else input_current
        return IntegratorState(self.beta * state.membrane + (current * gain if gain != 1.0 else current),
                               current if self.synaptic else None)

    def integrate_tangent(self, tangent: IntegratorState, input_tangent: Tensor, gain: float = 1.0) -> IntegratorState:
        """Forward mode of `integrate` (linear: the same step on the tangents)."""
        return self.integrate(tangent, input_tangent, gain)
