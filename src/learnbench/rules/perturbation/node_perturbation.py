"""Node perturbation.

Gaussian noise sigma v_l on the pre-activation of every layer, independent per example; the
per-example loss difference dL_i = L_i(perturbed) - baseline_i gives, for every layer at once,

    delta_l,i = (dL_i / sigma) v_l,i / B        (dL/da_l of the batch-mean loss)

and the weights follow by the local outer product (dL/sigma) v z^T, bias (dL/sigma) v. No
backward pass through the network. Everything runs as one walk over the blocks: noise enters
after the first linear layer, so that layer runs once on the B input rows; there the rows are
copied (the clean pass, when a baseline needs it, then the K noisy directions, or +v and -v
with `antithetic`) and every later layer sees all copies in one matmul.

On model=rnn (recurrent_sites.py) the noise sits on the input current u_t and the readout y_t at
every step, independent per unit and step; dL_i is the whole sequence's loss difference, the copies
run side by side through time, and delta_t,i = (dL_i / sigma) v_t,i / B.
On model=snn (models/snn_sites.py) the noise sits on every layer's membrane input current and the readout's,
per unit and step; the copies run side by side on the same input spikes. The spikes are a step function of
the membrane, so L(sigma) is piecewise constant per example: the estimate approaches the gradient of the
loss smoothed by the noise, not the surrogate's (which no perturbation rule needs).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from learnbench.options import Fraction, Positive
from learnbench.rules.base import clipped
from learnbench.rules.perturbation.activity_space import ActivitySpaceRule, parameter_dtype, repeat_rows
from learnbench.rules.running_baseline import RunningBaseline
from learnbench.rules.locality import signals

Baseline = Literal["clean", "none", "running"]


class NodePerturbation(ActivitySpaceRule):
    def __init__(self, sigma: Positive = 1e-3, baseline: Baseline = "clean", antithetic: bool = False, running_decay: Fraction = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.sigma, self.baseline, self.antithetic = sigma, baseline, antithetic
        self.running = RunningBaseline(running_decay)
        if self.exact_readout and baseline == "none" and not antithetic:
            raise ValueError("np: method.exact_readout=true needs the clean pass (the readout's exact error is taken "
                             "there): use method.baseline=clean or running, or method.antithetic=true.")

    def reads(self) -> frozenset[str]:
        """Loss values only (clean and perturbed): the scalar dL / sigma times its own noise times the input; with
        exact_readout the readout takes its exact gradient, which reads the output error."""
        base = signals("pre", "global_scalar", "own_noise", "perturbed_pass")
        return base | signals("output_error") if self.exact_readout else base

    def site_errors(self, model, x, y, loss_fn):
        B, K = x.shape[0], self.directions
        shapes = self.site_shapes(model, x)
        v = self.drop_readout_noise(self.sample_site_noise(K * B, shapes, parameter_dtype(model)))
        clean = self.antithetic or self.baseline != "none"
        noisy = [torch.cat([n, -n]) if self.antithetic else n for n in v]
        # What each site adds to its pre-activation, row by row: 0 on the clean copy, sigma v on the noisy ones.
        shifts = [torch.cat([torch.zeros_like(n[:B]), self.sigma * n]) if clean else self.sigma * n for n in noisy]
        copies = shifts[0].shape[0] // B
        traces, output = self.shifted_walk(model, x, shifts)
        losses = loss_fn(output, repeat_rows(y, copies))
        if clean:
            clean_losses, losses = losses[:B], losses[B:]
            output, traces = output[:B], [t.first_rows(B) for t in traces]
        if self.antithetic:
            dL = (losses[: K * B] - losses[K * B :]) / 2
        elif self.baseline == "clean":
            dL = losses - clean_losses.repeat(K)
        elif self.baseline == "running":
            dL = losses - self.running.update(clean_losses.mean())
        else:  # covariance form: no clean pass; the noisy rows carry the update
            dL, output = losses, None
        scale = clipped(dL / self.sigma, self.clip) / (K * B)
        deltas = [scale.view(-1, *[1] * (n.dim() - 1)) * n for n in v]
        if self.exact_readout:
            deltas[-1] = self.exact_readout_delta(model, traces[-1], y, loss_fn)
        return deltas, traces, (clean_losses if clean else losses).mean(), output
