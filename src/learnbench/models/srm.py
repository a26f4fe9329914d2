"""A spike-response-model network whose neurons fire once, at exact times (Bohte, Kok & La Poutré 2002).

Every connection i -> j is `synapses` sub-synapses with delays d_k (1, 2, ..., 16 ms by default) and weights w_ijk.
A neuron's membrane, from the first spike t_i of each presynaptic neuron (times in ms):

    u_j(t) = sum_i sum_k w_ijk eps(t - t_i - d_k),     eps(s) = s / tau exp(1 - s / tau) for s > 0, else 0

and it fires once, at t_j, the first time u_j reaches the threshold (later crossings are ignored: SpikeProp's
one spike per neuron). A neuron that never reaches it within `window` ms is silent: t_j = inf, and it moves
nothing downstream.

How t_j is found: u_j, in closed form (`Membrane`), on a grid of `grid_dt` ms over [0, window] brackets the first
crossing (the first grid point at or above the threshold and the one before it); the bracket is then cut into 256
points, u_j evaluated at each and the first crossing bracketed again, until the bracket is below the resolution of a
float time (a 256-way bisection: six times in float64, 0.1 ms / 256^6 = 4e-16 ms; twice in float32). So t_j is exact
to rounding, not to the grid. A crossing that rises above the threshold and falls back between two grid points is
missed (respikeprop's reference simulation, stepped at 0.1 ms, misses it too).

Several spikes per neuron (`max_spikes` > 1; Booij & Nguyen 2005, "A gradient descent rule for spiking neurons
emitting multiple spikes"): each of a neuron's own earlier spikes t_j^f adds the refractory kernel
eta(t - t_j^f) = -threshold exp(-(t - t_j^f) / tau_refractory) to its membrane (Booij & Nguyen's eta, their tau_r 20 ms), and
every spike of a presynaptic neuron reaches it through every sub-synapse. The spikes are found one after the other:
the next is the first crossing after the last (just after a spike u is 0, the kernel having taken the threshold
away). A layer's times are then [batch, units, max_spikes], in order, inf after a neuron's last spike; the loss reads
the output's first spike.

The input is the input neurons' spike times [batch, inputs] (data=spike_xor: two inputs and a bias neuron); the
output the output neurons' spike times [batch, outputs], a silent output read as `window` (a finite loss; its
gradient is zero, as the time is flat in the weights there). `spike_times` gives every layer's times for
method=spikeprop (rules/spiking/spikeprop.py), the one rule that trains it (`kind = "spike_times"`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from learnbench.options import NonNegativeInt, Positive, PositiveInt

SPIKE_TIMES = "spike_times"  # the kind of model (rules name it in `trains`)
# The bracket of the first crossing is narrowed by evaluating u at POINTS points inside it, as many times as it takes
# to reach the resolution of a time in the window (float64: 6 times, 0.1 ms / 256^6 = 4e-16 ms; float32: twice).
POINTS = 256


def epsilon(s: Tensor, tau: float) -> Tensor:
    """Bohte's spike-response kernel s / tau exp(1 - s / tau) for s > 0, else 0 (its peak: 1 at s = tau)."""
    positive = s.clamp(min=0) / tau
    return torch.where(s > 0, positive * torch.exp(1 - positive), torch.zeros_like(s))


def epsilon_slope(s: Tensor, tau: float) -> Tensor:
    """d eps / ds: (1 - s / tau) exp(1 - s / tau) / tau for s > 0, else 0."""
    positive = s.clamp(min=0) / tau
    return torch.where(s > 0, (1 - positive) * torch.exp(1 - positive) / tau, torch.zeros_like(s))


def refractory_kernel(s: Tensor, threshold: float, tau: float) -> Tensor:
    """Booij & Nguyen's eta(s) = -threshold exp(-s / tau) for s > 0, else 0: a neuron's own spike at s before."""
    return torch.where(s > 0, -threshold * torch.exp(-s.clamp(min=0) / tau), torch.zeros_like(s))


def refractory_slope(s: Tensor, threshold: float, tau: float) -> Tensor:
    """d eta / ds: threshold / tau exp(-s / tau) for s > 0, else 0."""
    return torch.where(s > 0, threshold / tau * torch.exp(-s.clamp(min=0) / tau), torch.zeros_like(s))


class SpikeResponseLayer(nn.Module):
    """The sub-synapses into one layer: weight [outputs, inputs, synapses], delays [synapses] (ms, a buffer)."""

    def __init__(self, inputs: int, outputs: int, delays: Tensor):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(outputs, inputs, len(delays)))
        self.register_buffer("delays", delays.clone())

    def arrivals(self, input_times: Tensor) -> Tensor:
        """When each presynaptic spike reaches each sub-synapse: [batch, inputs, synapses] (inf: silent)."""
        return input_times.unsqueeze(-1) + self.delays.to(input_times.dtype)

    def membrane(self, input_times: Tensor, tau: float) -> "Membrane":
        """u_j(t) of this layer's neurons under the input spikes [batch, inputs] or [batch, inputs, spikes] (several
        per input neuron: each reaches every sub-synapse; inf: none) (a function of t)."""
        weight = self.weight.detach().to(input_times.dtype)
        if input_times.dim() == 3:  # arrivals [batch, inputs, spikes, synapses]: each spike's weight is its synapse's
            weight = weight.unsqueeze(2).expand(-1, -1, input_times.shape[2], -1)
        return Membrane(self.arrivals(input_times).flatten(1), weight.flatten(1), tau)


class Membrane:
    """u_j(t) = sum_n w_jn eps(t - a_n) over arrivals a_n [batch, arrivals] (inf: none), in closed form.

    For t > a, eps(t - a) = e^(1 - t/tau) / tau (t - a) e^(a/tau), so u_j(t) = e^(1 - t/tau) / tau (t A_j(t) - B_j(t))
    with A_j(t) = sum_{a_n < t} w_jn e^(a_n/tau) and B_j(t) = sum_{a_n < t} w_jn a_n e^(a_n/tau): prefix sums over the
    arrivals in time order, read at t by a binary search. One exp per time point, none per arrival and point."""

    def __init__(self, arrivals: Tensor, weight: Tensor, tau: float):
        order = arrivals.argsort(dim=1)
        self.arrivals = arrivals.gather(1, order).contiguous()  # [batch, n], silent (inf) last
        self.tau = tau
        finite = torch.isfinite(self.arrivals)
        a = torch.where(finite, self.arrivals, torch.zeros_like(self.arrivals))
        grow = torch.where(finite, torch.exp(a / tau), torch.zeros_like(a))  # e^(a/tau), 0 for a silent input
        batch, outputs = arrivals.shape[0], weight.shape[0]
        w = weight.unsqueeze(0).expand(batch, -1, -1).gather(2, order.unsqueeze(1).expand(-1, outputs, -1))  # [batch, outputs, n]
        zero = torch.zeros(batch, outputs, 1, dtype=a.dtype, device=a.device)
        self.sum_a = torch.cat([zero, (w * grow.unsqueeze(1)).cumsum(-1)], dim=-1)  # A after 0, 1, ..., n arrivals
        self.sum_b = torch.cat([zero, (w * (grow * a).unsqueeze(1)).cumsum(-1)], dim=-1)

    def __call__(self, t: Tensor) -> Tensor:
        """u at times t [batch, outputs, points] -> [batch, outputs, points]."""
        batch, outputs, points = t.shape
        # how many a_n < t (an arrival at t itself adds (t - a) = 0 either way)
        arrived = torch.searchsorted(self.arrivals, t.reshape(batch, -1).contiguous()).view(batch, outputs, points)
        a, b = self.sum_a.gather(-1, arrived), self.sum_b.gather(-1, arrived)
        return torch.exp(1 - t / self.tau) / self.tau * (t * a - b)


def first_crossing(times: Tensor, u: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """The first point of `times` [..., points] where u >= threshold and the point before it (the same point if it
    is the first): the bracket of the first upward crossing."""
    first = (u >= threshold).to(torch.int8).argmax(dim=-1, keepdim=True)
    return times.gather(-1, (first - 1).clamp(min=0)).squeeze(-1), times.gather(-1, first).squeeze(-1)


def option_problem(options: dict, data: str | None = None, normalize: str | None = None) -> str | None:
    """What no single option's annotation can refuse, in one line (train.check_config calls it before anything is
    built): an initial-weight range that is not [low, high], or more inhibitory units than feed the output."""
    for key in ("hidden_init", "output_init", "inhibitory_init"):
        bounds = list(options.get(key) or [])
        if len(bounds) != 2 or bounds[0] > bounds[1]:
            return f"model.{key}={bounds}: give the uniform range as [low, high] with low <= high"
    hidden = list(options.get("hidden_sizes") or [])
    inhibitory = options.get("inhibitory_hidden", 0)
    if hidden and inhibitory > hidden[-1]:
        return (f"model.inhibitory_hidden={inhibitory} is more than the {hidden[-1]} hidden units that feed the output: "
                f"use model.inhibitory_hidden={hidden[-1]} or less")
    return None


class SRM(nn.Module):
    """Spike-response neurons in layers, each connection `synapses` delayed sub-synapses (module docstring)."""

    kind = SPIKE_TIMES
    option_problem = staticmethod(option_problem)  # train.check_option_combinations

    def __init__(
        self,
        input_shape: Sequence[int],
        output_dim: int,
        hidden_sizes: Sequence[PositiveInt] = (5,),
        synapses: PositiveInt = 16,
        first_delay: Positive = 1.0,
        delay_step: Positive = 1.0,
        tau: Positive = 7.0,
        threshold: Positive = 1.0,
        window: Positive = 40.0,
        grid_dt: Positive = 0.1,
        hidden_init: Sequence[float] = (-0.5, 1.0),
        output_init: Sequence[float] = (0.0, 1.0),
        inhibitory_hidden: NonNegativeInt = 1,
        inhibitory_init: Sequence[float] = (-0.5, 0.0),
        max_spikes: PositiveInt = 1,
        tau_refractory: Positive = 20.0,
    ):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"model=srm takes one spike time per input neuron (a vector); got examples of shape "
                             f"{tuple(input_shape)}")
        sizes = [input_shape[0], *hidden_sizes, output_dim]
        if inhibitory_hidden > sizes[-2]:
            raise ValueError(f"model.inhibitory_hidden={inhibitory_hidden} is more than the {sizes[-2]} units that feed the "
                             f"output")
        delays = first_delay + delay_step * torch.arange(synapses, dtype=torch.float64)
        self.layers = nn.ModuleList(SpikeResponseLayer(a, b, delays) for a, b in zip(sizes[:-1], sizes[1:]))
        self.tau, self.threshold, self.window, self.grid_dt = tau, threshold, window, grid_dt
        self.max_spikes, self.tau_refractory = max_spikes, tau_refractory
        self.init_weights(hidden_init, output_init, inhibitory_hidden, inhibitory_init)

    @torch.no_grad()
    def init_weights(self, hidden_init, output_init, inhibitory_hidden: int, inhibitory_init) -> None:
        """Uniform weights (Bohte's XOR, respikeprop's ranges): U(hidden_init) into every hidden layer, U(output_init)
        into the output, except from the last `inhibitory_hidden` units feeding it, U(inhibitory_init) (inhibitory)."""
        for layer in self.layers[:-1]:
            layer.weight.uniform_(*hidden_init)
        readout = self.layers[-1].weight
        readout.uniform_(*output_init)
        if inhibitory_hidden:
            readout[:, -inhibitory_hidden:].uniform_(*inhibitory_init)

    def grid(self, like: Tensor) -> Tensor:
        return torch.arange(0.0, self.window + self.grid_dt / 2, self.grid_dt, dtype=like.dtype, device=like.device)

    def refinements(self, dtype: torch.dtype) -> int:
        resolution = torch.finfo(dtype).eps * self.window
        return max(1, math.ceil(math.log(self.grid_dt / resolution) / math.log(POINTS)))

    def fractions(self, like: Tensor) -> Tensor:
        return torch.linspace(0, 1, POINTS + 1, dtype=like.dtype, device=like.device)

    def fire(self, layer: SpikeResponseLayer, input_times: Tensor) -> Tensor:
        """The first threshold crossing of each neuron of `layer` [batch, outputs] (inf: none within the window)."""
        membrane = layer.membrane(input_times, self.tau)
        batch, outputs = input_times.shape[0], layer.weight.shape[0]
        grid = self.grid(input_times).expand(batch, outputs, -1)
        u = membrane(grid)
        fired = (u >= self.threshold).any(dim=-1)
        low, high = first_crossing(grid, u, self.threshold)
        for _ in range(self.refinements(input_times.dtype)):  # each pass narrows the bracket [low, high] POINTS-fold
            points = torch.lerp(low.unsqueeze(-1), high.unsqueeze(-1), self.fractions(low))
            points[..., -1] = high  # exactly the point known to be at or above the threshold
            low, high = first_crossing(points, membrane(points), self.threshold)
        return torch.where(fired, high, torch.full_like(high, math.inf))

    def fire_repeatedly(self, layer: SpikeResponseLayer, input_times: Tensor) -> Tensor:
        """Up to max_spikes threshold crossings of each neuron, [batch, outputs, max_spikes] in order (inf: no more),
        each the first crossing after the last, with the refractory kernels of the earlier ones in u."""
        membrane = layer.membrane(input_times, self.tau)
        batch, outputs = input_times.shape[0], layer.weight.shape[0]
        grid = self.grid(input_times).expand(batch, outputs, -1)
        spikes = torch.full((batch, outputs, 0), math.inf, dtype=input_times.dtype, device=input_times.device)

        def u(t: Tensor) -> Tensor:  # the membrane with the refractory kernels of the spikes found so far
            own = t.unsqueeze(-1) - spikes.unsqueeze(-2)  # [batch, outputs, points, spikes so far]
            return membrane(t) + refractory_kernel(own, self.threshold, self.tau_refractory).sum(-1)

        last = torch.full((batch, outputs), -math.inf, dtype=input_times.dtype, device=input_times.device)
        for _ in range(self.max_spikes):
            # points at or before the last spike cannot cross: their u is set below the threshold
            values = torch.where(grid > last.unsqueeze(-1), u(grid), torch.full_like(grid, -math.inf))
            fired = (values >= self.threshold).any(dim=-1)
            low, high = first_crossing(grid, values, self.threshold)
            low = torch.maximum(low, last.clamp(min=0))
            for _ in range(self.refinements(input_times.dtype)):
                points = torch.lerp(low.unsqueeze(-1), high.unsqueeze(-1), self.fractions(low))
                points[..., -1] = high
                values = torch.where(points > last.unsqueeze(-1), u(points), torch.full_like(points, -math.inf))
                low, high = first_crossing(points, values, self.threshold)
            time = torch.where(fired, high, torch.full_like(high, math.inf))
            spikes = torch.cat([spikes, time.unsqueeze(-1)], dim=-1)
            last = torch.where(fired, time, torch.full_like(time, math.inf))  # a neuron that stopped stays stopped
        return spikes

    @torch.no_grad()
    def spike_times(self, x: Tensor) -> list[Tensor]:
        """The spike times of every layer, the input's first: [batch, units] each (max_spikes 1) or [batch, units,
        max_spikes] (the input's [batch, units, 1]), inf where a neuron is silent (or has no more spikes)."""
        if self.max_spikes == 1:
            times = [x]
            for layer in self.layers:
                times.append(self.fire(layer, times[-1]))
            return times
        times = [x.unsqueeze(-1)]
        for layer in self.layers:
            times.append(self.fire_repeatedly(layer, times[-1]))
        return times

    def readout(self, output_times: Tensor) -> Tensor:
        """The output's first spike times as the loss reads them ([batch, outputs], from [batch, outputs] or [batch,
        outputs, spikes]): a silent output at the window's end."""
        output_times = output_times[..., 0] if output_times.dim() == 3 else output_times
        return torch.where(torch.isfinite(output_times), output_times, torch.full_like(output_times, self.window))

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.spike_times(x)[-1])
