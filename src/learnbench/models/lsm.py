"""A liquid state machine (Maass, Natschlaeger & Markram 2002): a fixed random spiking reservoir of the suite's LIF
neurons (models/neurons.py) and a linear readout over its exponentially filtered spike trains.

    I_t = W_in u_t + b + W S_{t-1}                      the input current (u_t: the data's step, or an encoded image's)
    (V_t, S_t) = Neuron.step(state, I_t)                 LIF: V_t = beta V_{t-1} + I_t - S_{t-1} thr, S_t = H(V_t - thr)
    r_t = lambda r_{t-1} + S_t,   lambda = exp(-dt / tau_filter)     the filtered spike trains (r_0 = 0)
    y_t = W_out r_t + b_out

Units: dt and every tau (tau_mem, tau_syn, tau_filter) in milliseconds. One data step (or one encoded step) is
`substeps` LIF steps of dt ms each, its input held over them, and the readout reads r at the last of them (a spike
count needs several steps to resolve a value); in LIF steps s, r_s = sum_{s' <= s} exp(-(s - s') dt / tau_filter) S_s'.

Weights (drawn in float64 from the global generator, seeded by the run's seed, then cast):
- Dale's law: the first round(excitatory_fraction N) units are excitatory, the rest inhibitory; every outgoing
  weight of a unit (a column of W) has its sign (+ excitatory, - inhibitory).
- W: round(connectivity N^2) non-zero entries at random positions, magnitudes |N(0, 1)|, times
  recurrent_scaling / sqrt(connectivity N) (an input of O(recurrent_scaling) whatever the size); when both kinds
  exist, inhibitory magnitudes are multiplied by f / (1 - f) (f the excitatory fraction) so that a unit's
  recurrent input is zero in expectation (balanced; 4 at f = 0.8, the usual "inhibition four times stronger").
- W_in: input_scaling * N(0, 1) on `input_connectivity` of its entries (the input is an external signal, not a
  population of the reservoir, so Dale's law does not apply to it), b = bias_scaling * U(-1, 1) per unit: units
  with different gains and operating points (an ESN's +-1 input weights would make every driven LIF unit fire at
  the same rate: one feature, not a population code).
No synaptic delays (Maass et al. had 1.5 / 0.8 ms ones) and no dynamic synapses: the reservoir is the suite's LIF
layer with a fixed W_rec. Only the readout learns (method=ridge in closed form, or method=bp on the readout).

Time axis: with `encoding: none` the model runs over the data's steps (series: data=mackey_glass, narma10; a washout
as the ESN's); with `encoding: current | rate | latency` (models/snn.py's encoders) it makes `steps` steps from a
static example (data=mnist) and classifies over time (`loss_over_time`); ridge then fits the one-hot class at every
step after the washout and the prediction is the mean output over those steps (sum_over_steps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from learnbench.models.esn import normal, sparse_draw
from learnbench.models.neurons import LIFState, Neuron, Reset, decay
from learnbench.models.snn import Encoding, LossOverTime, encode, option_problem, time_axis_of
from learnbench.models.temporal import TemporalModel
from learnbench.options import Fraction, NonNegative, NonNegativeInt, Positive, PositiveFraction, PositiveInt, Seed
from learnbench.state import State


@dataclass
class LSMState(State):
    neurons: LIFState  # the reservoir's LIF state [batch, N]
    trace: Tensor  # r_t, the filtered spike trains [batch, N]


class LSM(TemporalModel):
    kind = "spiking"  # surrogate BPTT (bp) trains it; ridge too (is_reservoir)
    is_reservoir = True  # train.check_time_fits: closed-form readouts (method=ridge) fit it
    time_axis = "data"  # per instance: time_axis_of(encoding)
    time_axis_of = staticmethod(time_axis_of)
    option_problem = staticmethod(option_problem)  # a rate or latency code needs data.normalize=unit

    def __init__(
        self,
        input_shape: int | Sequence[int],
        output_dim: int,
        units: PositiveInt = 500,
        excitatory_fraction: Fraction = 0.8,
        connectivity: PositiveFraction = 0.1,
        recurrent_scaling: NonNegative = 1.0,
        input_scaling: NonNegative = 1.0,
        input_connectivity: PositiveFraction = 0.1,
        bias_scaling: NonNegative = 0.0,
        dt: Positive = 1.0,
        substeps: PositiveInt = 1,
        tau_mem: Positive = 20.0,
        tau_syn: NonNegative | None = None,
        tau_filter: Positive = 20.0,
        threshold: Positive = 1.0,
        reset: Reset = "subtract",
        refractory_steps: NonNegativeInt = 2,
        washout: NonNegativeInt = 0,
        encoding: Encoding = "none",
        steps: PositiveInt = 50,
        max_rate: Positive = 1000.0,
        latency_tau: Positive = 20.0,
        latency_threshold: Positive = 0.2,
        encoding_seed: Seed = 0,
        loss_over_time: LossOverTime = "sum_over_steps",
        learn_output: bool = True,
        output_bias: bool = True,
    ):
        super().__init__()
        problem = option_problem(dict(encoding=encoding, max_rate=max_rate, dt=dt))
        if problem:
            raise ValueError(problem)
        self.time_axis = time_axis_of(dict(encoding=encoding))
        if isinstance(input_shape, int):
            input_dim = input_shape
        else:  # sequences [time, inputs]: one step's inputs; a static example: all of it, flattened
            input_dim = input_shape[-1] if self.time_axis == "data" else math.prod(input_shape)
        self.input_dim, self.units, self.output_dim = input_dim, units, output_dim
        self.washout, self.dt, self.substeps, self.encoding, self.steps = washout, dt, substeps, encoding, steps
        self.spike_probability, self.encoding_seed = max_rate * dt / 1000, encoding_seed
        self.latency_tau_steps, self.latency_threshold = latency_tau / dt, latency_threshold
        self.loss_over_time = loss_over_time
        self.neuron = Neuron(beta=decay(dt, tau_mem), alpha=decay(dt, tau_syn), threshold=threshold, reset=reset,
                             refractory_steps=refractory_steps)
        self.filter_decay = decay(dt, tau_filter)
        self.excitatory = round(excitatory_fraction * units)
        w = dale_weights(units, self.excitatory, connectivity, recurrent_scaling)
        self.w = nn.Parameter(w.float(), requires_grad=False)
        w_in = input_scaling * sparse_draw(units, input_dim, input_connectivity, normal)
        self.w_in = nn.Parameter(w_in.float(), requires_grad=False)
        self.b = nn.Parameter((bias_scaling * (2 * torch.rand(units, dtype=torch.float64) - 1)).float(), requires_grad=False)
        self.w_out = nn.Parameter(torch.zeros(output_dim, units), requires_grad=learn_output)
        self.b_out = nn.Parameter(torch.zeros(output_dim), requires_grad=learn_output) if output_bias else None
        self.register_buffer("encoding_calls", torch.zeros((), dtype=torch.long))  # a rate code's draws so far

    #: No input layer that learns: the spike-timing rules (stdp, rstdp) refuse it (rules/plasticity/stdp.check_spiking).
    first_weight_name = None

    def eprop_problem(self) -> str:
        """e-prop learns a recurrent spiking layer's weights; this reservoir's are fixed: a refusal in one line."""
        return ("method=eprop trains the weights of a recurrent spiking layer (model=snn); model=lsm is a fixed reservoir "
                "that learns only its readout: use method=ridge or bp")

    @property
    def hidden_size(self) -> int:
        return self.units

    # ------------------------------------------------------------------ TemporalModel
    def initial_state(self, batch: int) -> LSMState:
        """Rest for every sequence (V = I = S = r = 0): nothing leaks between independent sequences."""
        return LSMState(self.neuron.initial_state(batch, self.units, self.w), self.w.new_zeros(batch, self.units))

    def step(self, state: LSMState, x_t: Tensor) -> tuple[LSMState, Tensor]:
        """One step from the input at t, [batch, inputs] (for an encoded example: its encoded step)."""
        drive = x_t @ self.w_in.T + self.b
        for _ in range(self.substeps):
            state = self.advance(state, drive)
        return state, self.readout(state.trace)

    def parameter_groups(self) -> dict[str, tuple[str, ...]]:
        return {"input": ("w_in",), "recurrent": ("w", "b"), "readout": ("w_out", "b_out")}

    @property
    def readout_weight(self) -> Tensor:
        return self.w_out

    def readout_input(self, traces: Tensor) -> Tensor:
        """The readout reads the filtered spike trains r_t themselves."""
        return traces

    def readout_state(self, state: LSMState) -> Tensor:
        """The part of a state the readout reads (through readout_input): the traces r_t."""
        return state.trace

    def readout(self, traces: Tensor) -> Tensor:
        y = traces @ self.w_out.T
        return y if self.b_out is None else y + self.b_out

    # ------------------------------------------------------------------ the reservoir
    def advance(self, state: LSMState, drive: Tensor) -> LSMState:
        """One LIF step from the external drive W_in u_t + b, the recurrent input W S_{t-1} added; then the filter."""
        neurons = self.neuron.step(state.neurons, drive + state.neurons.spikes @ self.w.T)
        return LSMState(neurons, self.filter_decay * state.trace + neurons.spikes)

    def drives(self, x: Tensor) -> Tensor:
        """W_in u_t + b at every step, [batch, time, N] (static examples: encoded first)."""
        return self.encode(x) @ self.w_in.T + self.b

    def run_with_state(self, x: Tensor, state: LSMState | None = None) -> tuple[Tensor, LSMState]:
        """The filtered spike trains r_1 .. r_T [batch, time, N] and the state after them (no graph: the reservoir is fixed)."""
        state = self.initial_state(len(x)) if state is None else state
        traces = []
        with torch.no_grad():
            for drive in self.drives(x).unbind(1):
                for _ in range(self.substeps):  # the input held for substeps LIF steps; r read at the last
                    state = self.advance(state, drive)
                traces.append(state.trace)
        return torch.stack(traces, dim=1), state

    def run(self, x: Tensor, state: LSMState | None = None, teacher: Tensor | None = None) -> Tensor:
        """The readout's inputs r_t at every step, [batch, time, N] (no output feedback: `teacher` is unused)."""
        return self.run_with_state(x, state)[0]

    def forward(self, x: Tensor, state: LSMState | None = None, return_state: bool = False):
        traces, last = self.run_with_state(x, state)
        y = self.readout(traces)
        return (y, last) if return_state else y

    # ------------------------------------------------------------------ encoders (models/snn.py's)
    def encode(self, x: Tensor) -> Tensor:
        """The input at every step, [batch, steps, inputs]: the data's steps (encoding none) or the example encoded."""
        return encode(self, x)

    @property
    def draws_inputs(self) -> bool:
        """True for a rate code: every forward pass draws new input spikes (wp's separate passes would difference the
        draws; fg_w's jvp of the forward pass cannot advance the draws' counter: both refuse it)."""
        return self.encoding == "rate"


def dale_weights(units: int, excitatory: int, connectivity: float, scaling: float) -> Tensor:
    """W [N, N] float64 under Dale's law: column j (unit j's outgoing weights) >= 0 for j < `excitatory`, <= 0 after;
    round(connectivity N^2) non-zero magnitudes |N(0, 1)| * scaling / sqrt(connectivity N); inhibitory ones times
    f / (1 - f) when both kinds exist (zero mean input per unit)."""
    magnitudes = sparse_draw(units, units, connectivity, lambda k: torch.randn(k, dtype=torch.float64).abs())
    sign = torch.ones(units, dtype=torch.float64)
    sign[excitatory:] = -1.0
    if 0 < excitatory < units:
        sign[excitatory:] *= excitatory / (units - excitatory)
    return magnitudes * sign * (scaling / math.sqrt(connectivity * units))
