"""The protocol of models that run in time: what the training loop and the rules may ask of them.

Rate RNNs (models/rnn.py), spiking networks and reservoirs implement it; rules are written against
it and never import a model class (`isinstance(model, TemporalModel)` is the one test a rule makes).

    time_axis                     who owns time: "data" (sequences [batch, time, features] from the
                                  data) or "model" (the model encodes a static example into T steps)
    kind                          the kind of model a rule must list in `trains` to train it: "recurrent"
                                  (rate RNNs, reservoirs) or "spiking" (models/snn.py)
    initial_state(batch)          a fresh State for every batch (the reset; learnbench/state.py)
    step(state, x_t)              one time step: (state, output_t)
    forward(x, state, return_state)   the unrolled outputs [batch, time, outputs] (and the last state)
    parameter_groups()            parameter names by role: "input", "recurrent", "readout"

What e-prop-like rules read (RFLO, e-prop, RTRL: rules/recurrent/recurrent_rule.py):

    run(x, state)                 the hidden trajectory [batch, time, N] (no readout); state.h is h_0
    state_of(h)                   the state whose hidden variable is h (the online rules carry it)
    readout(hs), readout_input(hs), readout_weight    y_t = W_out r_t + b_out, r_t and W_out
    readout_state(state)          what a state holds that readout_input reads (h_t; model=lsm: its traces): FORCE
    recurrent_weight              W_rec of a rate recurrence h -> r -> W_rec -> h (RTRL; None: none)
    decay, input_gain             h_t = decay * h_{t-1} + input_gain * (the unit's input current)
    pseudo_derivative(hs)         d r_t / d h_t (phi' for rate units; a surrogate for spiking units)
    presynaptic(x, h_prev)        {parameter name: what multiplies input_gain in dh_t,i / dW_ij} [batch, time, fan-in]

What the spike-timing rules read (method=stdp, rstdp: rules/plasticity/), from models of kind "spiking":

    dt                            the time step in ms (the STDP time constants are in ms too)
    encode(x)                     the input spikes [batch, time, inputs] (a rate code draws anew per call)
    hidden_spikes(inputs)         every hidden layer's spikes [batch, time, units] from encoded inputs
    output_from(last_spikes)      the readout's output [batch, time, outputs] from the last hidden layer's spikes
    first_weight_name             the name of the input -> first hidden layer weight [units, inputs]

What spiking e-prop reads (kind "spiking"; rules/recurrent/spiking_eprop.py), one recurrent spiking layer:

    eprop_problem()               None, or what keeps e-prop from this network, in one line (a refusal)
    spiking_run(x, state, derivatives=True)  a SpikingTrajectory (below) of the hidden layer, without a graph
                                  (derivatives=False: spikes and state only)
    run_readout(spikes, state)    (outputs [batch, time, outputs], the state after them), differentiable in the
                                  readout's parameters: the readout learns by autograd through itself alone
    readout_weight, readout_decay W_out and kappa, the readout's decay per step (y_t = kappa y_{t-1} + W_out S_t)
    adaptation_decay              rho (a_t = rho a_{t-1} + S_{t-1}), and adaptation_strengths: beta_a per unit [N]
                                  (0 for LIF units: one layer may mix LIF and ALIF)

The sites where activity noise or tangents enter (np, fg_a) and the forward-mode walk (fg_w); model=rnn:
u_t and y_t (models/rnn_sites.py); model=snn: every layer's membrane input current and the readout's, the
tangents through the spikes by the surrogate's jvp (models/snn_sites.py):

    site_shapes(x)                per-example shape of every site
    walk(x, shifts=, tangents=, weight_tangents=, params=)   (trace, output, output tangent or None)
    site_inputs(trace)            per site, {parameter name: its input at every step} (the local update's z)
    walk_parameters()             the parameter names the walk differentiates (others: torch.func)

What the feedback rules read (fa, dfa: rules/feedback/), from models in time that have layers to send the error down:

    feedback_problem(method)      None, or what keeps the rule from this network, in one line (model=snn: W_rec)
    feedback_layers()             the linear maps in order (hidden layers, then the readout): B_l takes W_l's shape
    layer_walk(x, linear_map=, detach_inputs=)   (each hidden layer's output [batch, time, N_l], the readout's input
                                  [batch, time, outputs], the output); linear_map(i, linear, z) replaces every linear
                                  map after the first, detach_inputs cuts each layer off from the one below

Declarations the rules and the training module read (class attributes, or set per instance):

    draws_inputs                  True: every forward pass draws new inputs (an SNN's rate code), so the losses of
                                  two separate passes differ by the draw (wp refuses it; the walk encodes once)

    washout                       the first steps of every sequence, the model's transient from its initial
                                  state: left out of the loss, the metrics and closed-form fits (0: none)
    rate_recurrence               True: the update is h_t = decay h_{t-1} + input_gain (W_rec r(h_{t-1}) +
                                  W_in x_t + b) with r = readout_input applied BEFORE W_rec (models/rnn.py),
                                  and the model gives decay ... recurrent_weight above. rflo, eprop and rtrl
                                  are written for this form
    slope_recurrence              True: the update is h_t = decay h_{t-1} + input_gain f(W h_{t-1} + W_in x_t + b)
                                  with f applied AFTER the sum (models/esn.py; Murray's own units): the unit's
                                  slope f'(.) sits in each synapse's trace, so rflo and eprop keep a trace per
                                  synapse, e_t,ij = decay e_{t-1,ij} + input_gain f'_t,i z_t,j, and the model gives
                                  slopes(x, h_prev) [batch, time, N] beside decay, input_gain, presynaptic;
                                  pseudo_derivative is then 1 (the readout reads h). rtrl refuses this form
    has_sites                     True: the model gives site_shapes, walk, site_inputs and walk_parameters
                                  (np and fg_a need them; fg_w takes torch.func's jvp without them)
    output_feedback               True: the readout's output y_{t-1} enters the update, and run(x, state,
                                  teacher=y) feeds the target in its place (teacher forcing: method=ridge)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from learnbench.state import State

TimeAxis = Literal["data", "model"]

#: The parameter roles a rule may address (a reservoir learns only its readout; RFLO fixes W_in in Murray's task).
ROLES = ("input", "recurrent", "readout")


@dataclass
class SpikingTrajectory:
    """A spiking layer's run over a window, each [batch, time, ...], with the own-unit derivatives e-prop's
    eligibility vectors need (the reset's gradient detached, so these hold whatever the spikes were):

        V_t = membrane_decay_t * V_{t-1} + input_gain_t * I_t + (terms without a weight's gradient)
    """

    inputs: Tensor  # x_t, the layer's feed-forward input at every step [batch, time, inputs]
    previous_spikes: Tensor  # S_{t-1}, what W_rec multiplies at step t [batch, time, units]
    spikes: Tensor  # S_t
    pseudo_derivative: Tensor | None  # psi_t = dS_t / d(V_t - A_t) as the surrogate's backward gives it (0 while refractory)
    membrane_decay: Tensor | None  # dV_t / dV_{t-1} along the unit's own path
    input_gain: Tensor | None  # dV_t / dI_t (0 while a held membrane is refractory); these three None: derivatives=False
    state: object  # the model's state after the window (its readout's part not yet advanced)


class TemporalModel(nn.Module):
    """Base of the models that run in time; subclasses implement the methods below."""

    time_axis: TimeAxis = "data"
    washout: int = 0
    rate_recurrence: bool = False
    slope_recurrence: bool = False
    has_sites: bool = False
    output_feedback: bool = False
    draws_inputs: bool = False
    kind: str = "recurrent"

    def initial_state(self, batch: int) -> State:
        raise NotImplementedError

    def step(self, state: State, x_t: Tensor) -> tuple[State, Tensor]:
        raise NotImplementedError

    def parameter_groups(self) -> dict[str, tuple[str, ...]]:
        raise NotImplementedError

    def trained_parameters(self, role: str) -> dict[str, nn.Parameter]:
        """The trainable parameters of one role, by name (a fixed W_in is left out)."""
        params = dict(self.named_parameters())
        return {name: params[name] for name in self.parameter_groups()[role] if name in params and params[name].requires_grad}


class LeakyRate:
    """decay and input_gain of a leaky rate unit with leak a (`self.a`): h_t = (1 - a) h_{t-1} + a (...), model=rnn's
    and model=esn's form (what rflo, eprop and rtrl read)."""

    a: float

    @property
    def decay(self) -> float:
        return 1 - self.a

    @property
    def input_gain(self) -> float:
        return self.a
