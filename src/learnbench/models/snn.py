"""A spiking network that classifies static examples in time: encoder -> spiking layers -> readout over T steps.

    x (an image) --encoder--> input [batch, T, inputs] --W_1--> LIF/ALIF layer 1 --...--> layer L (recurrent: + W_rec S_{t-1})
                 --W_out--> readout: a leaky integrator (spytorch) or a LIF layer's membrane (snnTorch) -> [batch, T, outputs]

The model owns its time axis (`time_axis = "model"`): the data are static examples, the model encodes each
into `steps` steps of `dt` ms. A loss over time turns the output into a class (tasks.py:
max_over_time_classification, sum_over_steps_classification; `loss_over_time` names which). The neurons,
their units and step order are in models/neurons.py, the surrogate derivatives in models/surrogates.py.

Encoders (`encoding`), from the flattened example x:

    none      no encoder: the data are sequences [batch, time, inputs] (time_axis "data"), the input at every step

    current   x itself is the input at every step (snnTorch's tutorial 5): layer 1's current W_1 x is computed once
    rate      at every step, input i spikes with probability x_i * max_rate * dt (x clipped to [0, 1]; max_rate in Hz,
              dt in ms / 1000), drawn from a generator seeded per call from (encoding_seed, calls so far): reproducible
    latency   one spike per input at step floor(tau / dt * ln(x / (x - thr))) (spytorch's current2firing_time with
              tau = latency_tau ms, thr = latency_threshold); inputs at or below thr, or later than the last step, never spike

Rate and latency read x as intensities in [0, 1] (data.normalize=unit; train refuses other scalings).
State: an SNNState per batch (every layer's LIFState and the readout's), created by `initial_state`, never
kept in the module. Weights: `init: pytorch` is nn.Linear's default (U(+-1/sqrt(fan_in)), snnTorch's
tutorials), `spytorch` draws N(0, (7 (1 - beta) / sqrt(fan_in))^2) with zero biases (Zenke's spytorch).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from torch import Tensor, nn

from learnbench.models import snn_sites
from learnbench.models.neurons import IntegratorState, LIFState, Neuron, Reset, decay
from learnbench.models.surrogates import Surrogate, resolved_scale, surrogate_derivative
from learnbench.models.temporal import SpikingTrajectory, TemporalModel
from learnbench.options import MinLen, NonNegative, NonNegativeInt, OpenFraction, Positive, PositiveInt, Seed
from learnbench.state import State

Encoding = Literal["current", "rate", "latency", "none"]
Readout = Literal["leaky_integrator", "membrane"]
LossOverTime = Literal["max_over_time", "sum_over_steps"]


@dataclass
class SNNState(State):
    hidden: list[LIFState]  # one per spiking hidden layer
    output: LIFState | IntegratorState  # the readout's (a LIF layer's for readout=membrane)


def option_problem(options: dict, data: str | None = None, normalize: str | None = None) -> str | None:
    """What is wrong with a combination of the model's options (`options`: its config, by name), or with the
    data (`data`: its name, `normalize`: its pixel scaling), in one line naming what fits; None if nothing.
    Single options' types and ranges are checked from SNN's annotations (config_validation);
    train.check_config calls this before anything is built, the constructor for its own options."""
    tau_mem, beta = options.get("tau_mem", 20.0), options.get("beta")
    encoding, max_rate, dt = options.get("encoding", "current"), options.get("max_rate", 1000.0), options.get("dt", 1.0)
    if (tau_mem is None) == (beta is None):
        shown = {key: "null" if value is None else value for key, value in (("tau_mem", tau_mem), ("beta", beta))}
        return (f"model.tau_mem={shown['tau_mem']} and model.beta={shown['beta']}: give exactly one, the membrane time constant in ms "
                f"(a decay of exp(-dt / tau_mem) per step) or snnTorch's decay per step beta, and set the other to null")
    if encoding == "rate" and max_rate * dt / 1000 > 1:
        return (f"model.max_rate={max_rate} Hz with model.dt={dt} ms asks for {max_rate * dt / 1000:g} spikes per step; "
                f"a Bernoulli code gives at most 1: set model.max_rate to {1000 / dt:g} or less")
    if options.get("readout_filter", "sum") == "mean" and options.get("readout", "membrane") != "leaky_integrator":
        return ("model.readout_filter=mean scales a leaky integrator's input by (1 - its decay), and model.readout="
                f"{options.get('readout', 'membrane')} is a spiking layer's membrane: set model.readout=leaky_integrator, or readout_filter=sum")
    if options.get("autapses", True) is False and not options.get("recurrent", False):
        return "model.autapses=false removes W_rec's diagonal, and model.recurrent=false has no W_rec: set model.recurrent=true, or leave autapses"
    if encoding in ("rate", "latency") and data is not None and normalize != "unit":
        scaled = f"data.normalize={normalize}" if normalize else "inputs outside it"
        return (f"model.encoding={encoding} reads every input as an intensity in [0, 1], but data={data} gives {scaled}: "
                f"set data.normalize=unit (MNIST, Fashion-MNIST) or use model.encoding=current")
    return None


def time_axis_of(options: dict) -> str:
    """Who owns time for these options: the data with `encoding: none` (sequences [batch, time, inputs] are the
    input at every step), else the model (it encodes a static example into `steps` steps)."""
    return "data" if options.get("encoding", "current") == "none" else "model"


class SNN(TemporalModel):
    time_axis = "model"  # static examples in, `steps` time steps inside (per instance: time_axis_of its encoding)
    time_axis_of = staticmethod(time_axis_of)  # train.check_time_fits reads it from the config, before building
    kind = "spiking"  # the rules that train it list "spiking" in `trains`
    option_problem = staticmethod(option_problem)  # train.check_config asks it about combinations of options
    has_sites = True  # every layer's input current and the readout's, per unit and step (models/snn_sites.py)

    def __init__(
        self,
        input_shape: int | Sequence[int],
        output_dim: int,
        hidden_sizes: Annotated[Sequence[PositiveInt], MinLen(1)] = (100,),
        recurrent: bool = False,
        neuron: Literal["lif", "alif"] = "lif",
        tau_mem: Positive | None = 20.0,
        beta: OpenFraction | None = None,
        tau_syn: NonNegative | None = None,
        tau_adaptation: Positive = 200.0,
        adaptation_strength: Positive = 1.8,
        alif_units: NonNegativeInt | None = None,
        threshold: Positive = 1.0,
        reset: Reset = "subtract",
        detach_reset: bool = True,
        refractory_steps: NonNegativeInt = 0,
        refractory_hold: bool = True,
        surrogate: Surrogate = "fast_sigmoid",
        surrogate_scale: Positive | None = None,
        readout: Readout = "membrane",
        readout_filter: Literal["sum", "mean"] = "sum",
        loss_over_time: LossOverTime = "sum_over_steps",
        encoding: Encoding = "current",
        steps: PositiveInt = 25,
        dt: Positive = 1.0,
        max_rate: Positive = 1000.0,
        latency_tau: Positive = 20.0,
        latency_threshold: Positive = 0.2,
        encoding_seed: Seed = 0,
        init: Literal["pytorch", "spytorch", "bellec"] = "pytorch",
        bias: bool = True,
        autapses: bool = True,
        rate_penalty: NonNegative = 0.0,
        rate_target_hz: NonNegative = 10.0,
    ):
        """`rate_penalty` c and `rate_target_hz` f0: the firing-rate regulariser of Bellec et al. 2020, added to the loss,
        c sum_j (f_j - f0)^2 with f_j unit j's mean rate over the batch and the steps, in spikes per ms (their reg_f 1,
        reg_rate 10 Hz); every hidden unit. Rules that take it: bp, bptt, eprop (`penalized`)."""
        super().__init__()
        problem = option_problem(dict(tau_mem=tau_mem, beta=beta, encoding=encoding, max_rate=max_rate, dt=dt, readout=readout,
                                      readout_filter=readout_filter, autapses=autapses, recurrent=recurrent))
        if problem:
            raise ValueError(problem)
        self.time_axis = time_axis_of(dict(encoding=encoding))
        if isinstance(input_shape, int):
            self.input_dim = input_shape
        else:  # sequences [time, inputs]: the inputs at one step; a static example: all of it, flattened
            self.input_dim = input_shape[-1] if self.time_axis == "data" else math.prod(input_shape)
        self.output_dim = output_dim
        self.steps, self.dt, self.encoding = steps, dt, encoding
        self.spike_probability = max_rate * dt / 1000  # per step, for an input of intensity 1
        self.latency_tau_steps, self.latency_threshold = latency_tau / dt, latency_threshold
        self.encoding_seed = encoding_seed
        self.readout_kind, self.loss_over_time = readout, loss_over_time
        self.rate_penalty, self.rate_target_hz = rate_penalty, rate_target_hz
        membrane_decay = decay(dt, tau_mem) if beta is None else beta
        self.surrogate_scale = resolved_scale(surrogate, surrogate_scale)  # recorded as used
        self.neuron = Neuron(
            beta=membrane_decay, alpha=decay(dt, tau_syn), threshold=threshold, reset=reset, detach_reset=detach_reset,
            refractory_steps=refractory_steps, refractory_hold=refractory_hold, rho=decay(dt, tau_adaptation) if neuron == "alif" else 0.0,
            adaptation_strength=adaptation_strength if neuron == "alif" else 0.0, surrogate=surrogate,
            adaptive_units=alif_units if neuron == "alif" else None,
            surrogate_scale=self.surrogate_scale,
        )
        # The output layer: the same neuron without adaptation (readout=membrane), or its leaky integrator.
        self.output_neuron = dataclasses.replace(self.neuron, rho=0.0, adaptation_strength=0.0, adaptive_units=None)
        sizes = [self.input_dim, *hidden_sizes]
        self.hidden = nn.ModuleList(nn.Linear(n_in, n_out, bias=bias) for n_in, n_out in zip(sizes, sizes[1:]))
        self.recurrent = nn.Linear(sizes[-1], sizes[-1], bias=False) if recurrent else None
        self.readout = nn.Linear(sizes[-1], output_dim, bias=bias)
        if init == "spytorch":
            self._spytorch_init(membrane_decay)
        elif init == "bellec":
            self._bellec_init()
        # readout_filter=mean: the readout's input scaled by (1 - kappa), a low-pass filter of the spikes with unit gain
        # (Bellec's exp_convolve); sum: y_t = kappa y_{t-1} + W_out S_t (spytorch). The logits' scale per unit of W_out
        # differs by 1 / (1 - kappa) (20 at tau 20 ms), which moves what one optimiser step does to them.
        self.readout_gain = 1.0 - self.output_neuron.beta if readout_filter == "mean" else 1.0
        self.autapses = autapses
        if not autapses:  # Bellec's recurrent_disconnect_mask: no unit feeds its own spikes back
            with torch.no_grad():
                self.recurrent.weight.fill_diagonal_(0.0)
        # Rate-code draws so far: the per-call seed. A buffer, so a resumed run continues the same draws.
        self.register_buffer("encoding_calls", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _spytorch_init(self, membrane_decay: float) -> None:
        """spytorch: w ~ N(0, (7 (1 - beta) / sqrt(fan_in))^2), scaled to the membrane's leak; no bias."""
        for linear in [*self.hidden, *([self.recurrent] if self.recurrent is not None else []), self.readout]:
            linear.weight.normal_(0.0, 7 * (1 - membrane_decay) / math.sqrt(linear.in_features))
            if linear.bias is not None:
                linear.bias.zero_()

    @torch.no_grad()
    def _bellec_init(self) -> None:
        """Bellec et al.'s code (EligALIF): input and recurrent weights N(0, 1 / fan_in); the readout Glorot-uniform
        (tf.get_variable's default); zero biases."""
        for linear in [*self.hidden, *([self.recurrent] if self.recurrent is not None else [])]:
            linear.weight.normal_(0.0, 1.0 / math.sqrt(linear.in_features))
        nn.init.xavier_uniform_(self.readout.weight)
        for linear in [*self.hidden, self.readout]:
            if linear.bias is not None:
                linear.bias.zero_()

    def grad_masks(self) -> dict[str, Tensor]:
        """Parameters held at zero in places, by name: the mask their every update is multiplied by (the training
        module applies it before the optimiser, whatever the rule): W_rec's diagonal without autapses."""
        if self.autapses or self.recurrent is None:
            return {}
        n = self.recurrent.weight.shape[0]
        return {"recurrent.weight": 1.0 - torch.eye(n, dtype=self.recurrent.weight.dtype, device=self.recurrent.weight.device)}

    # ------------------------------------------------------------------ TemporalModel
    def parameter_groups(self) -> dict[str, tuple[str, ...]]:
        names = [name for name, _ in self.named_parameters()]
        return {
            "input": tuple(n for n in names if n.startswith("hidden.")),  # feed-forward weights into the spiking layers
            "recurrent": tuple(n for n in names if n.startswith("recurrent.")),
            "readout": tuple(n for n in names if n.startswith("readout.")),
        }

    def initial_state(self, batch: int) -> SNNState:
        """Zeros for every layer: a fresh state for every batch (nothing leaks between examples)."""
        like = self.readout.weight
        hidden = [self.neuron.initial_state(batch, layer.out_features, like) for layer in self.hidden]
        if self.readout_kind == "membrane":
            return SNNState(hidden, self.output_neuron.initial_state(batch, self.output_dim, like))
        return SNNState(hidden, self.output_neuron.integrator_state(batch, self.output_dim, like))

    def step(self, state: SNNState, x_t: Tensor) -> tuple[SNNState, Tensor]:
        """One time step of the whole network: x_t is the encoded input at step t, [batch, inputs]; returns
        the new state and the output at t (the readout's membrane), [batch, outputs]."""
        inputs, hidden = x_t, []
        for i, (linear, layer_state) in enumerate(zip(self.hidden, state.hidden)):
            current = linear(inputs)
            if self.recurrent is not None and i == len(self.hidden) - 1:
                current = current + self.recurrent(layer_state.spikes)
            layer_state = self.neuron.step(layer_state, current)
            hidden.append(layer_state)
            inputs = layer_state.spikes
        output = self._output_step(state.output, self.readout(inputs))
        return SNNState(hidden, output), output.membrane

    def forward(self, x: Tensor, state: SNNState | None = None, return_state: bool = False):
        """Outputs [batch, steps, outputs] (the readout's membrane at every step) of static examples x [batch, ...]."""
        outputs, _, state = self.penalized(x, state)
        return (outputs, state) if return_state else outputs

    def penalized(self, x: Tensor, state: SNNState | None = None) -> tuple[Tensor, Tensor, SNNState]:
        """(outputs, the firing-rate penalty of this run (0 without model.rate_penalty), the state after it).

        Layer by layer rather than step by step (the same arithmetic as `step`): each feed-forward weight
        multiplies all steps in one matmul, only the neurons (and W_rec) run in the time loop."""
        state = self.initial_state(len(x)) if state is None else state
        currents = self.input_currents(x, static=True)
        hidden, rates = [], []
        for i, layer_state in enumerate(state.hidden):
            if i > 0:
                currents = self.hidden[i](spikes)
            recurrent = self.recurrent if i == len(self.hidden) - 1 else None
            spikes, _, layer_state = run_layer(self.neuron, currents, layer_state, recurrent, steps=self.steps, membranes=False)
            hidden.append(layer_state)
            if self.rate_penalty:
                rates.append(spikes.mean(dim=(0, 1)))
        outputs, output_state = self._run_output(self.readout(spikes), state.output)
        penalty = self.penalty_of_rates(torch.cat(rates)) if rates else outputs.new_zeros(())
        return outputs, penalty, SNNState(hidden, output_state)

    def penalty_of_rates(self, spike_means: Tensor) -> Tensor:
        """c sum_j (f_j - f0)^2 from each unit's spikes per step averaged over the batch and the steps, [units]."""
        return self.rate_penalty * ((spike_means / self.dt - self.rate_target_hz / 1000) ** 2).sum()

    def rate_penalty_signal(self, spike_means: Tensor, examples_times_steps: int) -> Tensor:
        """dPenalty/dS_t,j for every example and step, [units]: 2 c (f_j - f0) / (batch steps dt), the same for all
        (e-prop's learning signal for the regulariser)."""
        return 2 * self.rate_penalty * (spike_means / self.dt - self.rate_target_hz / 1000) / (examples_times_steps * self.dt)

    # ------------------------------------------------------------------ from encoded inputs (the STDP rules)
    #: The weight of the first spiking layer, input -> hidden (what method=stdp and rstdp learn).
    first_weight_name = "hidden.0.weight"

    def hidden_spikes(self, inputs: Tensor, state: SNNState | None = None) -> list[Tensor]:
        """Every hidden layer's spikes [batch, steps, units] from already encoded inputs `inputs` [batch, steps,
        inputs] (`encode(x)`: a rate code draws new spikes per call, so a rule encodes once and passes them here)."""
        state = self.initial_state(len(inputs)) if state is None else state
        currents, spikes = self.hidden[0](inputs), []
        for i, layer_state in enumerate(state.hidden):
            if i > 0:
                currents = self.hidden[i](spikes[-1])
            recurrent = self.recurrent if i == len(self.hidden) - 1 else None
            spikes.append(run_layer(self.neuron, currents, layer_state, recurrent)[0])
        return spikes

    def output_from(self, last_spikes: Tensor) -> Tensor:
        """The readout's output [batch, steps, outputs] driven by the last hidden layer's spikes (a fresh state)."""
        return self._run_output(self.readout(last_spikes), self.initial_state(len(last_spikes)).output)[0]

    # ------------------------------------------------------------------ what spiking e-prop reads (models/temporal.py)
    def eprop_problem(self) -> str | None:
        """What keeps e-prop's eligibility vectors (LIF: the membrane; ALIF: membrane and adaptation) from
        describing this network, in one line; None if nothing."""
        if len(self.hidden) != 1:
            return (f"method=eprop on model=snn takes one spiking hidden layer (model.hidden_sizes=[N]); "
                    f"got {len(self.hidden)} layers: use method=bp for deeper networks")
        if self.neuron.synaptic or self.output_neuron.synaptic:
            return "method=eprop on model=snn needs plain LIF/ALIF units: set model.tau_syn=null (no synaptic current)"
        # model.detach_reset is not asked: e-prop's traces always leave the reset's own-unit path out (Bellec's e-prop
        # stops z's gradient everywhere); the option chooses only what bp, and the alignment's reference, differentiate.
        return None

    @property
    def readout_weight(self) -> Tensor:
        return self.readout.weight

    @property
    def readout_decay(self) -> float:
        return self.output_neuron.beta

    @property
    def adaptation_decay(self) -> float:
        return self.neuron.rho

    @property
    def adaptation_strengths(self) -> Tensor:
        """beta_a per hidden unit, [N]."""
        return self.neuron.unit_strengths(self.hidden[0].out_features, self.readout.weight)

    @torch.no_grad()
    def spiking_run(self, x: Tensor, state: SNNState, derivatives: bool = True) -> SpikingTrajectory:
        """The hidden layer over the window, step by step, with psi and the own-unit derivatives of V_t.
        `derivatives=False`: the spikes and the state alone (psi, the decays and the gains None), what e-prop's first
        pass over a long window keeps (about a third of that pass's time saved)."""
        neuron, inputs = self.neuron, self.encode(x)
        names = ("previous", "spikes", "psi", "decay", "gain") if derivatives else ("previous", "spikes")
        layer_state, columns = state.hidden[0], {name: [] for name in names}
        currents = self.hidden[0](inputs)
        for current in currents.unbind(1):
            previous = layer_state
            if self.recurrent is not None:
                current = current + self.recurrent(previous.spikes)
            layer_state = neuron.step(previous, current)
            columns["previous"].append(previous.spikes)
            columns["spikes"].append(layer_state.spikes)
            if not derivatives:
                continue
            free = 1.0 if previous.refractory is None else (previous.refractory == 0).to(current.dtype)  # not refractory
            threshold = neuron.adaptive_threshold(layer_state.adaptation) if neuron.adaptive else neuron.threshold
            psi = surrogate_derivative(layer_state.membrane - threshold, neuron.surrogate, neuron.surrogate_scale, neuron.threshold)
            # Reset detached: subtract leaves dV_t/dV_{t-1} = beta (1 while held); zero multiplies it by (1 - S_{t-1}).
            kept = 1 - previous.spikes if neuron.reset == "zero" else torch.ones_like(current)
            columns["psi"].append(psi * free)
            moving = free if neuron.refractory_hold else 1.0  # without the hold the membrane integrates while refractory
            columns["decay"].append(kept * (neuron.beta * moving + (1 - moving)))
            columns["gain"].append(torch.ones_like(current) * moving)
        stacked = {name: torch.stack(values, dim=1) for name, values in columns.items()}
        return SpikingTrajectory(
            inputs=inputs, previous_spikes=stacked["previous"], spikes=stacked["spikes"], pseudo_derivative=stacked.get("psi"),
            membrane_decay=stacked.get("decay"), input_gain=stacked.get("gain"), state=SNNState([layer_state], state.output),
        )

    def run_readout(self, spikes: Tensor, state: SNNState) -> tuple[Tensor, SNNState]:
        """The readout over the hidden spikes [batch, time, N]: (outputs, the state with the readout advanced)."""
        outputs, output_state = self._run_output(self.readout(spikes), state.output)
        return outputs, SNNState(state.hidden, output_state)

    # ------------------------------------------------------------------ sites and walks (np, fg_a, fg_w; fa, dfa)
    @property
    def draws_inputs(self) -> bool:
        """True for a rate code: every forward pass draws new input spikes, so two separate passes (wp's clean and
        perturbed ones) see different inputs; the walk encodes once for all its copies."""
        return self.encoding == "rate"

    def site_shapes(self, x: Tensor) -> list[tuple[int, ...]]:
        return snn_sites.snn_site_shapes(self, x)

    def walk(self, x: Tensor, shifts=None, tangents=None, weight_tangents=None, params=None):
        return snn_sites.snn_walk(self, x, shifts=shifts, tangents=tangents, weight_tangents=weight_tangents, params=params)

    def site_inputs(self, trace: snn_sites.SNNTrace) -> list[dict[str, Tensor | None]]:
        return snn_sites.snn_site_inputs(self, trace)

    def walk_parameters(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.named_parameters())

    def feedback_problem(self, method: str) -> str | None:
        """What keeps a feedback rule (fa, dfa: the output error sent down through fixed random matrices, then
        through each layer's own time by the surrogate) from this network, in one line; None if nothing."""
        if self.recurrent is not None:
            return (f"method={method} on model=snn sends the error between layers through fixed random matrices, but the "
                    f"recurrent layer's error also travels back in time through W_rec, which no feedback matrix stands in "
                    f"for: set model.recurrent=false, or use method=bp or eprop")
        return None

    def feedback_layers(self) -> list[nn.Linear]:
        """The linear maps in order, the errors' way down: hidden layers, then the readout."""
        return [*self.hidden, self.readout]

    def layer_walk(self, x: Tensor, linear_map=None, detach_inputs: bool = False):
        return snn_sites.snn_layer_walk(self, x, linear_map=linear_map, detach_inputs=detach_inputs)

    # ------------------------------------------------------------------ encoders
    def encode(self, x: Tensor) -> Tensor:
        """The input spikes (or currents) at every step, [batch, steps, inputs]."""
        return encode(self, x)

    def input_currents(self, x: Tensor, static: bool = False) -> Tensor:
        """Layer 1's input current at every step, [batch, steps, units]: W_1 applied to `encode(x)`, computed
        the cheap way where a code allows (current: W_1 x once; latency: W_1's columns added at their spike steps).
        `static`: the current code's W_1 x as it is, [batch, units], the same at every step (run_layer takes it)."""
        if self.encoding == "none":
            return self.hidden[0](x)
        if self.encoding == "current":
            current = self.hidden[0](x.flatten(1))
            return current if static else current.unsqueeze(1).expand(-1, self.steps, -1)
        if self.encoding == "latency":
            times = latency_times(x.flatten(1), self.steps, self.latency_tau_steps, self.latency_threshold)
            return latency_currents(self.hidden[0].weight, self.hidden[0].bias, times, self.steps)
        return self.hidden[0](self.encode(x))

    # ------------------------------------------------------------------ the readout
    def _output_step(self, state: LIFState | IntegratorState, current: Tensor) -> LIFState | IntegratorState:
        if self.readout_kind == "membrane":
            return self.output_neuron.step(state, current)
        return self.output_neuron.integrate(state, current, self.readout_gain)

    def _run_output(self, currents: Tensor, state: LIFState | IntegratorState) -> tuple[Tensor, LIFState | IntegratorState]:
        outputs = []
        for current in currents.unbind(1):  # unbind, not currents[:, t]: one backward for all steps, not T full-size zeros
            state = self._output_step(state, current)
            outputs.append(state.membrane)
        return torch.stack(outputs, dim=1), state


def encode(model: nn.Module, x: Tensor) -> Tensor:
    """A model's input at every step, [batch, steps, inputs], by its `encoding` (model=snn and lsm share it): the data's
    own steps (none), the static example as a current every step, Bernoulli spikes (rate: a new draw per call, from the
    model's encoding seed and call count) or one spike at the time to first spike (latency)."""
    if model.encoding == "none":
        return x
    flat = x.flatten(1)
    if model.encoding == "current":
        return flat.unsqueeze(1).expand(-1, model.steps, -1)
    if model.encoding == "rate":
        generator = encoding_generator(model.encoding_seed, int(model.encoding_calls), x.device)
        model.encoding_calls += 1
        return rate_code(flat, model.steps, model.spike_probability, generator)
    return latency_code(flat, model.steps, model.latency_tau_steps, model.latency_threshold)


def encoding_generator(encoding_seed: int, calls: int, device: torch.device) -> torch.Generator:
    """A generator seeded from (encoding_seed, calls so far): every run with the same seed draws the same spikes."""
    seed = int(np.random.SeedSequence([encoding_seed, calls]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(seed)


def run_layer(neuron: Neuron, currents: Tensor, state: LIFState, recurrent: nn.Linear | None = None,
              steps: int | None = None, membranes: bool = True):
    """A spiking layer over all steps: (spikes, membranes) [batch, steps, units] and the last state.
    `currents`: the feed-forward input current at every step, [batch, steps, units], or a static one [batch, units]
    that drives each of `steps` steps (a static image's W_1 x: autograd sums its gradient over the steps without
    the [batch, steps, units] stack an expanded view's backward builds); `recurrent`: W_rec, which adds W_rec S_{t-1};
    `membranes=False`: None for the membranes (the forward pass needs only the spikes: one stack fewer)."""
    spike_list, membrane_list = [], []
    per_step = [currents] * steps if currents.dim() == 2 else currents.unbind(1)  # unbind, not currents[:, t]: one backward for all steps
    for current in per_step:
        if recurrent is not None:
            current = current + recurrent(state.spikes)
        state = neuron.step(state, current)
        spike_list.append(state.spikes)
        if membranes:
            membrane_list.append(state.membrane)
    return torch.stack(spike_list, dim=1), torch.stack(membrane_list, dim=1) if membranes else None, state


def rate_code(x: Tensor, steps: int, probability: float, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli spikes [batch, steps, inputs]: input i spikes at each step with probability clip(x_i, 0, 1) * probability."""
    p = (x.clamp(0, 1) * probability).unsqueeze(1).expand(-1, steps, -1)
    return torch.bernoulli(p, generator=generator)


def latency_times(x: Tensor, steps: int, tau_steps: float, threshold: float) -> Tensor:
    """Each input's spike step floor(tau ln(x / (x - thr))) (spytorch's current2firing_time), `steps` (never)
    for x <= thr; [batch, inputs], float64 so that the floor matches spytorch's numpy."""
    x64 = x.to(torch.float64)
    above = x64 > threshold
    safe = torch.where(above, x64, 2.0 * threshold)  # no log of a negative ratio where nothing fires anyway
    return torch.where(above, torch.floor(tau_steps * torch.log(safe / (safe - threshold))), float(steps)).clamp(max=steps)


def latency_code(x: Tensor, steps: int, tau_steps: float, threshold: float) -> Tensor:
    """One spike per input at its latency_times step, [batch, steps, inputs]; none at a step >= steps."""
    times = latency_times(x, steps, tau_steps, threshold)
    code = x.new_zeros(x.shape[0], steps, x.shape[1])
    index = times.clamp(max=steps - 1).long().unsqueeze(1)
    return code.scatter_(1, index, (times < steps).to(x.dtype).unsqueeze(1))


def latency_currents(weight: Tensor, bias: Tensor | None, times: Tensor, steps: int) -> Tensor:
    """F.linear(latency_code, weight, bias) [batch, steps, units] without the dense code: each input spikes at most
    once, so the current at step t is the sum of W's columns of the inputs that spike at t (plus the bias). ~B x 150
    column additions for an MNIST image instead of a [B x steps, inputs] x [inputs, units] product."""
    batch = times.shape[0]
    example, pixel = (times < steps).nonzero(as_tuple=True)
    rows = example * steps + times[example, pixel].long()
    columns = weight.T.contiguous()  # rows to gather: contiguous, or the gather crawls
    currents = columns.new_zeros(batch * steps, weight.shape[0]).index_add(0, rows, columns[pixel])
    if bias is not None:
        currents = currents + bias
    return currents.view(batch, steps, -1)
