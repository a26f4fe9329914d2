"""Diehl & Cook 2015's unsupervised spiking network (model=diehl_cook): Poisson input -> excitatory layer with adaptive
thresholds <-> inhibitory layer, read out by the labels assigned to the excitatory neurons.

Units: membrane potentials in mV, times in ms (dt too), rates in Hz; conductances are dimensionless (in units of
the leak conductance, Brian's `/ nS` in the reference code). Each example is one presentation of `present_ms` of
Poisson spikes (pixel in [0, 1] -> rate pixel * max_rate: 255 / 4 = 63.75 Hz at the top, the reference's pixel / 8 *
intensity 2), `present_ms / dt` steps.

Neurons (peter-u-diehl/stdp-mnist, Diehl&Cook_spiking_MNIST.py), conductance-based LIF:

    tau_m dv/dt = (v_rest - v) + g_e (E_exc - v) + g_i (E_inh - v),   dg_e/dt = -g_e / 1 ms,  dg_i/dt = -g_i / 2 ms

    excitatory: tau_m 100 ms, v_rest -65, reset -65, threshold -52 + theta, refractory 5 ms, E_exc 0, E_inh -100
    inhibitory: tau_m 10 ms,  v_rest -60, reset -45, threshold -40,         refractory 2 ms, E_exc 0, E_inh -85

Each step: the spikes that arrive (the input's of this step, the network's of the previous step) jump the
conductances (input j -> excitatory i by W_ij; excitatory i -> its own inhibitory partner by 10.4; inhibitory k ->
every excitatory neuron but its partner by 17), then the membrane moves by the exact solution of the equation with the
conductances held at their mean over the step (`membrane_step`: exponential integration; `step_decay`: the mean
keeps each spike's charge exact at any dt, as forward Euler's geometric sum also does; the reference leaves the
integrator to Brian 1), then the conductances decay by exp(-dt / tau). A neuron above threshold spikes, is reset and
held at reset for its refractory time. An excitatory spike raises that neuron's threshold by theta_plus (adaptive threshold,
homeostasis), which decays with tau_theta (1e7 ms: it barely decays over one epoch).

Quiet examples (the reference's loop): an example whose excitatory neurons fire fewer than `min_spikes` (5) times is
shown again after the rest, at `extra_rate` Hz more (intensity 2 -> 3: +31.875 Hz), until it makes them fire; STDP
and theta run during every showing, and the response counted is the last one's. In training and evaluation alike.

Rest between images: each example starts from rest (v = v_rest, no conductance, no trace), as if the reference's
150 ms of rest had been long enough to return there (after 150 ms its v keeps exp(-1.5) = 22 % of its distance to
rest; the conductances and STDP traces are gone). The rest period still counts for theta's decay.

Adaptive thresholds across a batch (`theta`, a buffer, changed only in training mode; frozen in eval as in the
reference's test mode): the B examples of a batch run side by side from the same theta, each example's neurons
raising their own copy at their own spikes. After the batch, theta is what B presentations in a row would leave if
each had started from the batch's theta:

    theta <- theta exp(-B T_image / tau_theta) + sum_b (theta_b(end) - theta exp(-T_present / tau_theta)) exp(-T_rest / tau_theta)

With B = 1 this is exactly the sequential rule; with B > 1 an example does not see the threshold rises of the
earlier examples of its batch.

The readout (`readout_weight` [classes, neurons], fitted in closed form by method=diehl_cook from the training
responses): row c holds 1 / n_c at the n_c neurons assigned to class c. The output is [batch, 1, classes]: each
class's mean spike count over its assigned neurons (the reference's get_recognized_number_ranking), whose arg-max is
the prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from learnbench.models.temporal import TemporalModel
from learnbench.options import NonNegative, NonNegativeInt, Positive, PositiveInt, Seed

LOSS_OVER_TIME = "sum_over_steps"  # one output step: the summed-over-steps cross-entropy of the class scores


def membrane_step(v: Tensor, g_e: Tensor, g_i: Tensor, dt: float, tau_m: float, v_rest: float, e_exc: float,
                  e_inh: float) -> Tensor:
    """v after dt ms of tau_m dv/dt = (v_rest - v) + g_e (e_exc - v) + g_i (e_inh - v), the conductances held: an
    exponential approach to v_inf = (v_rest + g_e e_exc + g_i e_inh) / (1 + g_e + g_i) with time constant
    tau_m / (1 + g_e + g_i) (stable at any dt, unlike Euler at large conductances)."""
    total = 1.0 + g_e + g_i
    v_inf = (v_rest + g_e * e_exc + g_i * e_inh) / total
    return v_inf + (v - v_inf) * torch.exp(-dt * total / tau_m)


def step_decay(dt: float, tau: float) -> tuple[float, float]:
    """(a conductance's decay over one step, its mean over the step as a fraction of its start value): the membrane
    sees the step's mean, so each input spike delivers its whole charge g tau whatever dt (Brian's Euler does too:
    sum_k dt (1 - dt / tau)^k = tau), where holding the start value would deliver dt / (1 - exp(-dt / tau)) of it."""
    decay = math.exp(-dt / tau)
    return decay, tau * (1.0 - decay) / dt


def poisson_spikes(x: Tensor, steps: int, probability: float, generator: torch.Generator | None) -> Tensor:
    """Bernoulli spikes [batch, steps, inputs] with probability x * max_rate * dt per step (the Poisson process on a grid)."""
    p = (x.clamp(0, 1) * probability).unsqueeze(1).expand(-1, steps, -1)
    return torch.bernoulli(p, generator=generator)


class Presentation(NamedTuple):
    """One showing of some of a batch's examples: which (indices into the batch), their active inputs' spikes
    [shown, steps, K] at inputs `active` [shown, K], and the excitatory spikes [shown, steps, neurons]."""

    shown: Tensor
    pre: Tensor
    active: Tensor
    spikes: Tensor


def option_problem(options: dict, data: str | None = None, normalize: str | None = None) -> str | None:
    """A rate code needs pixels in [0, 1] (train.check_config asks before anything is built)."""
    if normalize is None:  # only the image datasets have the option
        return (f"model=diehl_cook turns image pixels in [0, 1] into spike rates, and data={data} has no pixels: "
                f"use data=mnist or fashion_mnist with data.normalize=unit (experiment=diehl_cook_mnist)")
    if normalize is not None and normalize != "unit":
        return (f"model=diehl_cook turns pixels in [0, 1] into spike rates, but data.normalize={normalize}: "
                f"use data.normalize=unit")
    return None


class DiehlCook(TemporalModel):
    time_axis = "model"  # static images in, presentation steps inside
    kind = "competitive_spiking"  # its own kind: only method=diehl_cook trains it (not in the model=snn comparisons)
    first_weight_name = "input_weight"  # what STDP learns: input -> excitatory [neurons, inputs]
    option_problem = staticmethod(option_problem)

    def __init__(
        self,
        input_shape: int | Sequence[int],
        output_dim: int,
        neurons: PositiveInt = 100,
        dt: Positive = 0.5,
        present_ms: Positive = 350.0,
        rest_ms: NonNegative = 150.0,
        max_rate: Positive = 63.75,
        tau_exc: Positive = 100.0,
        tau_inh: Positive = 10.0,
        tau_ge: Positive = 1.0,
        tau_gi: Positive = 2.0,
        refractory_exc: NonNegative = 5.0,
        refractory_inh: NonNegative = 2.0,
        theta_plus: NonNegative = 0.05,
        tau_theta: Positive = 1e7,
        exc_to_inh: NonNegative = 10.4,
        inh_to_exc: NonNegative = 17.0,
        init_scale: Positive = 0.3,
        min_spikes: NonNegativeInt = 5,
        extra_rate: NonNegative = 31.875,
        max_presentations: PositiveInt = 10,
        loss_over_time: str = LOSS_OVER_TIME,
        encoding_seed: Seed = 0,
    ):
        super().__init__()
        self.input_dim = input_shape if isinstance(input_shape, int) else math.prod(input_shape)
        self.output_dim, self.neurons, self.dt = output_dim, neurons, dt
        self.steps = max(1, round(present_ms / dt))
        self.present_ms, self.rest_ms, self.max_rate = present_ms, rest_ms, max_rate
        self.tau_exc, self.tau_inh, self.tau_ge, self.tau_gi = tau_exc, tau_inh, tau_ge, tau_gi
        self.refractory_steps_exc = round(refractory_exc / dt)
        self.refractory_steps_inh = round(refractory_inh / dt)
        self.theta_plus, self.tau_theta = theta_plus, tau_theta
        self.exc_to_inh, self.inh_to_exc = exc_to_inh, inh_to_exc
        self.encoding_seed = encoding_seed
        self.min_spikes, self.extra_rate, self.max_presentations = min_spikes, extra_rate, max_presentations
        # The reference's random/XeAe.npy: (U(0, 1) + 0.01) * 0.3, normalised to the rule's sum before the first image.
        self.input_weight = nn.Parameter((torch.rand(neurons, self.input_dim) + 0.01) * init_scale)
        self.readout_weight = nn.Parameter(torch.zeros(output_dim, neurons))  # the label assignment (closed form)
        self.register_buffer("theta", torch.zeros(neurons))  # mV above -52: the adaptive thresholds
        self.register_buffer("encoding_calls", torch.zeros((), dtype=torch.long))  # the Poisson draws' stream (checkpointed)

    # ------------------------------------------------------------------ constants of the reference
    V_REST_E, V_RESET_E, V_THRESH_E, E_INH_E = -65.0, -65.0, -52.0, -100.0
    V_REST_I, V_RESET_I, V_THRESH_I, E_INH_I = -60.0, -45.0, -40.0, -85.0
    E_EXC = 0.0

    def parameter_groups(self) -> dict[str, tuple[str, ...]]:
        return {"input": ("input_weight",), "recurrent": (), "readout": ("readout_weight",)}

    # ------------------------------------------------------------------ what the STDP rules read
    def encode(self, x: Tensor) -> Tensor:
        """Poisson input spikes [batch, steps, inputs] (new draws per call, from (encoding_seed, calls so far))."""
        spikes, active = self.encode_active(x)
        dense = spikes.new_zeros(spikes.shape[0], spikes.shape[1], self.input_dim)
        return dense.scatter_(2, active.unsqueeze(1).expand(-1, spikes.shape[1], -1), spikes)

    def encode_active(self, x: Tensor, max_rate: float | None = None) -> tuple[Tensor, Tensor]:
        """The same spikes kept only at each example's non-zero pixels (an MNIST digit lights about a fifth of
        them; the rest never spike): (spikes [batch, steps, K], their input indices [batch, K]), K the most
        non-zero pixels of any example in the batch (the others padded with zero pixels, which never spike)."""
        seed = int(np.random.SeedSequence([self.encoding_seed, int(self.encoding_calls)]).generate_state(1)[0])
        self.encoding_calls += 1
        generator = torch.Generator(device=x.device).manual_seed(seed)
        flat = x.flatten(1)
        k = max(1, int((flat > 0).sum(dim=1).max()))
        values, active = flat.topk(k, dim=1)
        rate = self.max_rate if max_rate is None else max_rate
        return poisson_spikes(values, self.steps, rate * self.dt / 1000.0, generator), active

    def hidden_spikes(self, inputs: Tensor) -> list[Tensor]:
        """The excitatory spikes [batch, steps, neurons] from input spikes; in training mode theta then takes the
        batch's threshold rises (module docstring)."""
        exc, theta_end = self.simulate(inputs @ self.input_weight.T, self.theta)
        if self.training:
            self.theta.copy_(self.theta_after_batch(self.theta, theta_end))
        return [exc]

    def output_from(self, last_spikes: Tensor) -> Tensor:
        """Each class's mean spike count over its assigned neurons, [batch, 1, classes]."""
        return (last_spikes.sum(dim=1) @ self.readout_weight.T).unsqueeze(1)

    def spikes_of_active(self, spikes: Tensor, active: Tensor) -> Tensor:
        """hidden_spikes from encode_active's compact spikes: the input drive from the active inputs' weights alone."""
        drive = spikes @ self.input_weight.T[active]  # [batch, steps, K] @ [batch, K, neurons]
        exc, theta_end = self.simulate(drive, self.theta)
        if self.training:
            self.theta.copy_(self.theta_after_batch(self.theta, theta_end))
        return exc

    def present(self, x: Tensor) -> tuple[list[Presentation], Tensor]:
        """Every example shown until its excitatory neurons fire `min_spikes` times, each time at `extra_rate` Hz more
        (the reference: intensity 2, 3, ... for rate = pixel / 8 * intensity), at most `max_presentations` times:
        (every presentation, each example's spikes from its last one [batch, steps, neurons])."""
        shown = torch.arange(len(x), device=x.device)
        presentations: list[Presentation] = []
        final = None
        for attempt in range(self.max_presentations):
            pre, active = self.encode_active(x[shown], self.max_rate + attempt * self.extra_rate)
            spikes = self.spikes_of_active(pre, active)
            presentations.append(Presentation(shown, pre, active, spikes))
            final = spikes if final is None else final.index_copy(0, shown, spikes)
            quiet = spikes.sum(dim=(1, 2)) < self.min_spikes
            if not bool(quiet.any()):
                break
            shown = shown[quiet]
        return presentations, final

    def forward(self, x: Tensor) -> Tensor:
        return self.output_from(self.present(x)[1])

    # ------------------------------------------------------------------ the simulation
    @torch.no_grad()
    def simulate(self, drive: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        """(excitatory spikes [batch, steps, neurons], each example's theta at the end [batch, neurons]) of one
        presentation from rest. `drive` [batch, steps, neurons]: the jumps of g_e from the input spikes, W x_t, all
        steps in one matmul (W is fixed during a batch)."""
        steps = drive.shape[1]
        like = drive[:, 0]
        v_e, v_i = torch.full_like(like, self.V_REST_E), torch.full_like(like, self.V_REST_I)
        ge_e, gi_e, ge_i = torch.zeros_like(like), torch.zeros_like(like), torch.zeros_like(like)  # no inh -> inh synapses
        refr_e, refr_i = torch.zeros_like(like), torch.zeros_like(like)
        s_e, s_i = torch.zeros_like(like), torch.zeros_like(like)
        theta_b = theta.expand_as(like).clone()
        (decay_ge, mean_ge), (decay_gi, mean_gi) = step_decay(self.dt, self.tau_ge), step_decay(self.dt, self.tau_gi)
        decay_theta = math.exp(-self.dt / self.tau_theta)
        adapt = self.theta_plus if self.training else 0.0
        out = []
        for t in range(steps):
            ge_e = ge_e + drive[:, t]
            gi_e = gi_e + self.inh_to_exc * (s_i.sum(dim=1, keepdim=True) - s_i)  # every inhibitory neuron but the partner
            ge_i = ge_i + self.exc_to_inh * s_e  # one-to-one
            v_e = membrane_step(v_e, mean_ge * ge_e, mean_gi * gi_e, self.dt, self.tau_exc, self.V_REST_E, self.E_EXC, self.E_INH_E)
            v_i = membrane_step(v_i, mean_ge * ge_i, 0.0, self.dt, self.tau_inh, self.V_REST_I, self.E_EXC, self.E_INH_I)
            ge_e, gi_e, ge_i = ge_e * decay_ge, gi_e * decay_gi, ge_i * decay_ge
            theta_b = theta_b * decay_theta
            v_e, refr_e, s_e = self.fire(v_e, refr_e, self.V_THRESH_E + theta_b, self.V_RESET_E, self.refractory_steps_exc)
            v_i, refr_i, s_i = self.fire(v_i, refr_i, self.V_THRESH_I, self.V_RESET_I, self.refractory_steps_inh)
            theta_b = theta_b + adapt * s_e
            out.append(s_e)
        return torch.stack(out, dim=1), theta_b

    @staticmethod
    def fire(v: Tensor, refractory: Tensor, threshold: Tensor | float, reset: float, refractory_steps: int):
        """Spikes where v crosses the threshold outside the refractory time; a spiking or refractory neuron is held at
        reset (v, refractory steps left, spikes)."""
        held = refractory > 0
        fired = (v > threshold) & ~held
        refractory = (refractory - 1).clamp_min_(0).masked_fill_(fired, refractory_steps)
        return v.masked_fill(fired | held, reset), refractory, fired.to(v.dtype)

    def theta_after_batch(self, theta: Tensor, theta_end: Tensor) -> Tensor:
        """theta after the batch's B presentations and rests, each example's rises counted (module docstring)."""
        batch = theta_end.shape[0]
        image_ms = self.steps * self.dt + self.rest_ms
        present = math.exp(-self.steps * self.dt / self.tau_theta)
        rest = math.exp(-self.rest_ms / self.tau_theta)
        rises = (theta_end - theta * present).sum(dim=0) * rest
        return theta * math.exp(-batch * image_ms / self.tau_theta) + rises
