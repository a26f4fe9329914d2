"""Shared machinery of parameter-space estimators (weight perturbation, weight forward gradient).

Both draw K directions v_k over the whole parameter vector, measure a directional derivative
d_k ~ grad . v_k on the batch (a finite difference, or forward-mode AD), and estimate

    g = (1/K) sum_k d_k v_k,        E[g] = grad   for E[v v^T] = I.

A subclass only says how it gets d_k (`directional_derivatives`). Parameters are passed to the
model functionally (torch.func.functional_call), so the model's own Parameters are never touched
and K directions run as one vectorised (vmap) call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learnbench.rules.base import LearningRule, LossFn, RuleOutput
from learnbench.rules.noise import NoiseSource


class ParameterSpaceRule(LearningRule):
    # A shared seed across ranks would let ranks exchange scalars only; with per-rank seeds each
    # rank's estimate is independent and the all-reduce averages K * ranks directions.
    noise_differs_per_rank = True

    def __init__(self, directions: int = 1, noise: str = "gaussian", table_size: int = 0, clip: float | None = None):
        super().__init__()
        if directions < 1:
            raise ValueError(f"method.directions={directions}: needs at least one direction")
        self.directions = directions
        self.noise = NoiseSource(noise, table_size)
        self.clip = clip

    def directional_derivatives(self, model, params: dict[str, Tensor], tangents: dict[str, Tensor], x, y, loss_fn) -> tuple[Tensor, Tensor | None, Tensor]:
        """Return (clean batch loss, clean output or None, d of shape [K])."""
        raise NotImplementedError

    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        params = {n: p.detach() for n, p in named.items()}
        sizes = [p.numel() for p in params.values()]
        v = self.noise.sample(sum(sizes), self.directions, self.generator, next(iter(params.values())).dtype)  # [K, P]
        tangents = {n: t.view(self.directions, *p.shape) for (n, p), t in zip(params.items(), v.split(sizes, dim=1))}
        loss, output, d = self.directional_derivatives(model, params, tangents, x, y, loss_fn)
        if self.clip is not None:
            d = d.clamp(-self.clip, self.clip)
        # g = (1/K) sum_k d_k v_k: one pass over the directions (a scaled copy when K = 1).
        flat_grad = v[0] * d[0] if self.directions == 1 else (d / self.directions) @ v
        for p, g in zip(named.values(), flat_grad.split(sizes)):
            p.grad = g.view_as(p)
        return RuleOutput(loss=loss.detach(), output=None if output is None else output.detach())


def batch_loss(loss_fn: LossFn, output: Tensor, y: Tensor) -> Tensor:
    return loss_fn(output, y).mean()
