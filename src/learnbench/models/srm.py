"""A spike-response-model network whose neurons fire once, at exact times (Bohte, Kok & La Poutré 2002).

Every connection i -> j is `synapses` sub-synapses with delays d_k (1, 2, ..., 16 ms by default) and weights w_ijk.
A neuron's membrane, from the first spike t_i of each presynaptic neuron (times in ms):

    u_j(t) = sum_i sum_k w_ijk eps(t - t_i - d_k),     eps(s) = s / tau exp(1 - s / tau) for s > 0, else 0

and it fires once, at t_j, the first time u_j reaches the threshold (later crossings are ignored: SpikeProp's
one spike per neuron). A neuron that never reaches it within `window` ms is silent: t_j = inf, and it moves
nothing downstream.

How t_j is found: u_j on a grid of `grid_dt` ms over [0, window] brackets the first crossing (the first grid point
at or above the threshold and the one before it); bisection then narrows the bracket to float resolution (60
halvings of 0.1 ms reach 1e-19 ms), so t_j is exact to rounding, not to the grid. A crossing that rises above the
threshold and falls back between two grid points is missed (respikeprop's reference simulation, stepped at 0.1 ms,
misses it too).

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
BISECTIONS = 60


def epsilon(s: Tensor, tau: float) -> Tensor:
    """Bohte's spike-response kernel s / tau exp(1 - s / tau) for s > 0, else 0 (its peak: 1 at s = tau)."""
    positive = s.clamp(min=0) / tau
    return torch.where(s > 0, positive * torch.exp(1 - positive), torch.zeros_like(s))


def epsilon_slope(s: Tensor, tau: float) -> Tensor:
    """d eps / ds: (1 - s / tau) exp(1 - s / tau) / tau for s > 0, else 0."""
    positive = s.clamp(min=0) / tau
    return torch.where(s > 0, (1 - positive) * torch.exp(1 - positive) / tau, torch.zeros_like(s))


class SpikeResponseLayer(nn.Module):
    """The sub-synapses into one layer: weight [outputs, inputs, synapses], delays [synapses] (ms, a buffer)."""

    def __init__(self, inputs: int, outputs: int, delays: Tensor):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(outputs, inputs, len(delays)))
        self.register_buffer("delays", delays.clone())

    def arrivals(self, input_times: Tensor) -> Tensor:
        """When each presynaptic spike reaches each sub-synapse: [batch, inputs, synapses] (inf: silent)."""
        return input_times.unsqueeze(-1) + self.delays.to(input_times.dtype)

    def membrane(self, t: Tensor, arrivals: Tensor, tau: float) -> Tensor:
        """u_j(t) at times t [batch, outputs, points] -> [batch, outputs, points]."""
        s = t[:, :, None, None, :] - arrivals[:, None, :, :, None]  # [batch, outputs, inputs, synapses, points]
        return torch.einsum("oik,boikp->bop", self.weight.to(t.dtype), epsilon(s, tau))


class SRM(nn.Module):
    """Spike-response neurons in layers, each connection `synapses` delayed sub-synapses (module docstring)."""

    kind = SPIKE_TIMES

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
    ):
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(f"model=srm takes one spike time per input neuron (a vector); got examples of shape {tuple(input_shape)}")
        sizes = [input_shape[0], *hidden_sizes, output_dim]
        if inhibitory_hidden > sizes[-2]:
            raise ValueError(f"model.inhibitory_hidden={inhibitory_hidden} is more than the {sizes[-2]} units that feed the output")
        delays = first_delay + delay_step * torch.arange(synapses, dtype=torch.float64)
        self.layers = nn.ModuleList(SpikeResponseLayer(a, b, delays) for a, b in zip(sizes[:-1], sizes[1:]))
        self.tau, self.threshold, self.window, self.grid_dt = tau, threshold, window, grid_dt
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

    def fire(self, layer: SpikeResponseLayer, input_times: Tensor) -> Tensor:
        """The first threshold crossing of each neuron of `layer` [batch, outputs] (inf: none within the window)."""
        arrivals = layer.arrivals(input_times)
        batch, outputs = input_times.shape[0], layer.weight.shape[0]
        grid = self.grid(input_times)
        u = layer.membrane(grid.expand(batch, outputs, -1), arrivals, self.tau)
        above = u >= self.threshold
        fired = above.any(dim=-1)
        first = above.to(torch.int8).argmax(dim=-1)  # the first grid point at or above the threshold
        high = grid[first]
        low = grid[(first - 1).clamp(min=0)]
        for _ in range(BISECTIONS):  # invariant: u(low) < threshold <= u(high) (or low == high at t = 0)
            middle = (low + high) / 2
            up = layer.membrane(middle.unsqueeze(-1), arrivals, self.tau).squeeze(-1) >= self.threshold
            high, low = torch.where(up, middle, high), torch.where(up, low, middle)
        return torch.where(fired, high, torch.full_like(high, math.inf))

    @torch.no_grad()
    def spike_times(self, x: Tensor) -> list[Tensor]:
        """The spike times of every layer, the input's first: [batch, units] each, inf where a neuron is silent."""
        times = [x]
        for layer in self.layers:
            times.append(self.fire(layer, times[-1]))
        return times

    def readout(self, output_times: Tensor) -> Tensor:
        """The output's spike times as the loss reads them: a silent output at the window's end."""
        return torch.where(torch.isfinite(output_times), output_times, torch.full_like(output_times, self.window))

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.spike_times(x)[-1])
