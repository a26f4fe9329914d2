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

from learnbench.rules.parameter_space import ParameterSpaceRule, batch_loss

BASELINES = ("clean", "none", "running")


class WeightPerturbation(ParameterSpaceRule):
    def __init__(self, sigma: float = 1e-3, baseline: str = "clean", antithetic: bool = False, running_decay: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        if baseline not in BASELINES:
            raise ValueError(f"method.baseline={baseline!r}: choose one of {BASELINES}")
        self.sigma, self.baseline, self.antithetic, self.running_decay = sigma, baseline, antithetic, running_decay
        self.register_buffer("running_loss", torch.tensor(float("nan")))

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
            reference = loss if torch.isnan(self.running_loss) else self.running_loss
            self.running_loss = self.running_decay * reference + (1 - self.running_decay) * loss
            return loss, output, (plus - reference) / self.sigma
        return plus.mean(), None, plus / self.sigma
