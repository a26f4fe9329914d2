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
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learnbench.models.srm import SPIKE_TIMES, epsilon, epsilon_slope
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
