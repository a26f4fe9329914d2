"""Weight perturbation (Jabri & Flower 1992).

Perturb every parameter at once, theta + sigma v, and difference the batch loss:
    d = (L(theta + sigma v) - baseline) / sigma,   g = d v.
Baselines: `clean` L(theta) (one extra forward, shared by all K directions), `antithetic`
pairs (L(theta + sigma v) - L(theta - sigma v)) / (2 sigma), `running` an exponential mean of
past clean losses, or `none` (the original covariance form, E[L v] = E[(L - L0) v]: unbiased, with
a much higher variance).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from learnbench.options import Fraction, Positive
from learnbench.rules.perturbation.node_perturbation import Baseline
from learnbench.rules.perturbation.parameter_space import ParameterSpaceRule, batch_loss
from learnbench.rules.running_baseline import RunningBaseline


class WeightPerturbation(ParameterSpaceRule):
    def __init__(self, sigma: Positive = 1e-3, baseline: Baseline = "clean", antithetic: bool = False, running_decay: Fraction = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.sigma, self.baseline, self.antithetic = sigma, baseline, antithetic
        self.running = RunningBaseline(running_decay)

    def _perturbed_losses(self, model, params, tangents, x, y, loss_fn, sign: float) -> Tensor:
        def loss_at(tangent):
            shifted = {n: torch.add(p, tangent[n], alpha=sign * self.sigma) for n, p in params.items()}
            return batch_loss(loss_fn, functional_call(model, shifted, (x,)), y)

        if self.directions == 1:  # theta + sign sigma v into a buffer kept across steps (no fresh 4P bytes)
            flat = self.work_buffer("shifted", sum(p.numel() for p in params.values()), next(iter(params.values())))
            shifted, start = {}, 0
            for n, p in params.items():
                shifted[n] = torch.add(p, tangents[n][0], alpha=sign * self.sigma, out=flat[start : start + p.numel()].view_as(p))
                start += p.numel()
            return batch_loss(loss_fn, functional_call(model, shifted, (x,)), y).unsqueeze(0)
        return vmap(loss_at)(tangents)

    @torch.no_grad()
    def directional_derivatives(self, model, params, tangents, x, y, loss_fn):
        plus = self._perturbed_losses(model, params, tangents, x, y, loss_fn, +1.0)
        output = loss = None
        if self.antithetic or self.baseline != "none":
            output = model(x)
            loss = batch_loss(loss_fn, output, y)
        if self.antithetic:
            minus = self._perturbed_losses(model, params, tangents, x, y, loss_fn, -1.0)
            return loss, output, (plus - minus) / (2 * self.sigma)
        if self.baseline == "clean":
            return loss, output, (plus - loss) / self.sigma
        if self.baseline == "running":
            return loss, output, (plus - self.running.update(loss)) / self.sigma
        return plus.mean(), None, plus / self.sigma
