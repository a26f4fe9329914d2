"""SpikeProp (Bohte, Kok & La Poutré 2002): the exact gradient of the loss through the spike times of model=srm.

Each neuron fires once, at t_j, where its membrane u_j crosses the threshold upwards. Near t_j the crossing moves
with the weights by the implicit function theorem (Bohte's eqs. 10-13):

    dt_j / dw_ijk = -(du_j / dw_ijk) / (du_j / dt) = -eps(t_j - t_i - d_k) / u_j'(t_j)
    dt_j / dt_i   = -(du_j / dt_i) / (du_j / dt)   = sum_k w_ijk eps'(t_j - t_i - d_k) / u_j'(t_j)

with u_j'(t_j) = sum_ik w_ijk eps'(t_j - t_i - d_k). The error dE/dt of the output (the loss's own derivative)
goes back layer by layer as delta_i = sum_j delta_j dt_j / dt_i, and p.grad = sum_j delta_j dt_j / dw (update mode
gradient: the run's optimiser steps it; Bohte's rule is plain SGD at lr 0.01, one example a step).

A silent neuron (no crossing within the window) has no spike time to move: its delta is 0 and its weights get no
gradient (the loss is flat there); a silent input neuron adds nothing to u_j. `min_slope` floors u_j'(t_j), as
respikeprop does (0.1, after Booij & Nguyen 2005's "discontinuity" remark): a crossing that barely grazes the
threshold has u_j' near 0 and a gradient that explodes; with the floor the gradient is exact only where
u_j'(t_j) >= min_slope (0: never floored, Bohte's rule as written).

Several spikes per neuron (model.max_spikes > 1: Booij & Nguyen 2005). Each spike t_j^f is again a crossing that moves
by the implicit function theorem, dt_j^f = -(du_j(t_j^f)) / u_j'(t_j^f), but u_j now depends on every spike of every
presynaptic neuron and, through the refractory kernel, on the neuron's own earlier spikes, which moved too (Booij &
Nguyen's eqs. 10-15, a recursion over the earlier spikes). Here that chain is left to autograd: each spike is written
as t = t_found - (u(t_found) - threshold) / u'(t_found), with u built from the weights and the spike times below and
before it (themselves written the same way) and u' held fixed (floored at min_slope): its value is t_found, and its
derivative is exactly the theorem's. The loss reads the output's first spike.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learnbench.models.srm import SPIKE_TIMES, epsilon, epsilon_slope, refractory_kernel, refractory_slope
from learnbench.options import NonNegative
from learnbench.rules.base import LearningRule, LossFn, RuleOutput
from learnbench.rules.locality import signals


class SpikeProp(LearningRule):
    trains = (SPIKE_TIMES,)
    noise_differs_per_rank = False  # draws no noise
    #: On a block-diagonal stack of seeds (learnbench/seeds.py) a neuron's membrane, slope and delta read only its own
    #: seed's inputs (the others' weights are zeros); the cross-seed part of the weight gradient is masked off.
    stacks_seeds = True

    def __init__(self, min_slope: NonNegative = 0.1):
        super().__init__()
        self.min_slope = min_slope

    def reads(self) -> frozenset[str]:
        """The kernel of each pre-synaptic spike at the post-synaptic spike time (pre and post), the membrane's slope
        there (post_derivative), the spike-time error, carried to hidden units through the output weights."""
        return signals("pre", "post", "post_derivative", "output_error", "transported_weights")

    def check_model(self, model: nn.Module) -> None:
        if getattr(model, "kind", None) != SPIKE_TIMES:
            raise ValueError(f"method=spikeprop differentiates exact spike times and trains only model=srm (spike-response "
                             f"neurons that fire once); {type(model).__name__} has none: use model=srm with data=spike_xor")

    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        if getattr(model, "max_spikes", 1) > 1:
            return self.several_spikes_grads(model, x, y, loss_fn)
        times = model.spike_times(x)
        output = model.readout(times[-1]).requires_grad_()
        loss = loss_fn(output, y).mean()
        (error,) = torch.autograd.grad(loss, output)  # dE/dt of each output spike (the task's loss, whatever it is)
        delta = torch.where(torch.isfinite(times[-1]), error, torch.zeros_like(error))
        for index in reversed(range(len(model.layers))):
            layer = model.layers[index]
            weight_grad, delta = self.layer_grads(layer, times[index], times[index + 1], delta, model.tau)
            layer.weight.grad = weight_grad.to(layer.weight.dtype)
        return RuleOutput(loss=loss.detach(), output=output.detach())

    def layer_grads(self, layer, input_times: Tensor, output_times: Tensor, delta: Tensor, tau: float) -> tuple[Tensor, Tensor]:
        """dE/dW of one layer and dE/dt of its input neurons, from dE/dt of its output neurons (`delta`, 0 where silent)."""
        fired = torch.isfinite(output_times)
        t_out = torch.where(fired, output_times, torch.zeros_like(output_times))  # silent: any finite time (delta is 0)
        s = t_out[:, :, None, None] - layer.arrivals(input_times)[:, None]  # [batch, outputs, inputs, synapses]
        weight = layer.weight.detach().to(s.dtype)
        slope_terms = weight * epsilon_slope(s, tau)  # w_ijk eps'(t_j - t_i - d_k)
        slope = slope_terms.sum(dim=(-1, -2)).clamp(min=self.min_slope) if self.min_slope else slope_terms.sum(dim=(-1, -2))
        scale = torch.where(fired, delta / slope, torch.zeros_like(delta))  # delta_j / u_j'(t_j)
        weight_grad = -torch.einsum("bo,boik->oik", scale, epsilon(s, tau))
        input_delta = torch.einsum("bo,boik->bi", scale, slope_terms)
        input_delta = torch.where(torch.isfinite(input_times), input_delta, torch.zeros_like(input_delta))
        return weight_grad, input_delta

    def several_spikes_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        """Booij & Nguyen's gradient (module docstring): every spike re-written so that autograd carries dt through
        the implicit function theorem at each, from the output's first spike back to every weight."""
        found = [t if t.dim() == 3 else t.unsqueeze(-1) for t in model.spike_times(x)]  # where every spike is (no grad)
        with torch.enable_grad():
            times = found[0]  # the input's spike times: constants
            for layer, spikes in zip(model.layers, found[1:]):
                times = self.moving_spikes(model, layer, times, spikes)
            output = model.readout(times)
            loss = loss_fn(output, y).mean()
            weights = [layer.weight for layer in model.layers]
            for layer, grad in zip(model.layers, torch.autograd.grad(loss, weights)):
                layer.weight.grad = grad
        return RuleOutput(loss=loss.detach(), output=output.detach())

    def moving_spikes(self, model: nn.Module, layer, input_times: Tensor, found: Tensor) -> Tensor:
        """The spikes `found` [batch, outputs, spikes] of `layer`, each t_found - (u - threshold) / u' with u from the
        weights, the input spikes [batch, inputs, spikes in] and the neuron's own earlier spikes (all with their
        graphs); u' held fixed, floored at min_slope. Value: `found`; silent: inf, no gradient."""
        fired = torch.isfinite(found)
        at = torch.where(fired, found, torch.zeros_like(found))  # silent: any finite time (masked at the end)
        s = at[:, :, :, None, None, None] - layer.arrivals(input_times)[:, None, None]  # [batch, out, spikes, in, spikes in, syn]
        weight = layer.weight.to(s.dtype)[None, :, None, :, None, :]
        from_inputs = (weight * epsilon(s, model.tau)).sum(dim=(-1, -2, -3))  # [batch, outputs, spikes]
        slope_inputs = (weight.detach() * epsilon_slope(s.detach(), model.tau)).sum(dim=(-1, -2, -3))
        moved = []
        for f in range(found.shape[-1]):
            u, slope = from_inputs[..., f], slope_inputs[..., f]
            if f:
                earlier = torch.stack(moved, dim=-1)  # this neuron's own earlier spikes, moving too
                u = u + refractory_kernel(at[..., f, None] - earlier, model.threshold, model.tau_refractory).sum(-1)
                slope = slope + refractory_slope(at[..., f, None] - at[..., :f], model.threshold, model.tau_refractory).sum(-1)
            slope = slope.clamp(min=self.min_slope) if self.min_slope else slope
            slope = torch.where(fired[..., f], slope, torch.ones_like(slope))  # no 0 / 0 where silent, even masked
            moved.append(torch.where(fired[..., f], at[..., f] - (u - model.threshold) / slope.detach(), found[..., f]))
        return torch.stack(moved, dim=-1)
