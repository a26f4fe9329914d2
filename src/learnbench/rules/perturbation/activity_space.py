"""Shared by the activity-space estimators (node perturbation, activity forward gradient).

Both estimate delta_l = dL/da_l, the loss gradient at every block's pre-activation a_l, for each
example, then update every block locally from its own input (`learnbench.rules.local`). The
forward walk over the blocks is the one in rules/local.py; a subclass only says how it perturbs
the pre-activations and turns what it measures into deltas.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from learnbench.options import PositiveInt, Positive
from learnbench.rules.base import LearningRule, LossFn, RuleOutput
from learnbench.rules.local import Trace, chain_blocks, forward_trace, local_update
from learnbench.rules.noise import NoiseKind, NoiseSource


class ActivitySpaceRule(LearningRule):
    """Subclasses implement `site_errors`; the walk and the local update are shared."""

    def __init__(self, directions: PositiveInt = 1, noise: NoiseKind = "gaussian", table_size: int = 0, clip: Positive | None = None):
        super().__init__()
        self.directions = directions
        self.noise = NoiseSource(noise, table_size)
        self.clip = clip

    def check_model(self, model: nn.Module) -> None:
        chain_blocks(model, type(self).__name__)

    def sample_site_noise(self, rows: int, shapes: list[tuple[int, ...]], dtype: torch.dtype | None = None) -> list[Tensor]:
        """Independent noise for every example (row) and unit of every pre-activation: [rows, *shape_l] each."""
        sizes = [math.prod(s) for s in shapes]
        flat = self.noise.sample(rows * sum(sizes), 1, self.generator, dtype)[0].view(rows, sum(sizes))
        return [n.view(rows, *s) for n, s in zip(flat.split(sizes, dim=1), shapes)]

    def site_errors(self, model, x, y, loss_fn) -> tuple[list[Tensor], list[Trace], Tensor, Tensor | None]:
        """Return (delta_l per block, the traces they apply to, clean batch loss, clean output or None)."""
        raise NotImplementedError

    @torch.no_grad()
    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        deltas, traces, loss, output = self.site_errors(model, x, y, loss_fn)
        for block, trace, delta in zip(model.blocks, traces, deltas):
            local_update(block, trace, delta)
        return RuleOutput(loss=loss.detach(), output=None if output is None else output.detach())


def pre_activation_shapes(model: nn.Module, x: Tensor) -> list[tuple[int, ...]]:
    """The per-example shape of every block's pre-activation (cached per input shape: a dry run otherwise)."""
    cache = model.__dict__.setdefault("_pre_activation_shapes", {})
    key = tuple(x.shape[1:])
    if key not in cache:
        traces, _, _ = forward_trace(model, x[:1])
        cache[key] = [tuple(t.pre_activation.shape[1:]) for t in traces]
    return cache[key]


def repeat_rows(t: Tensor, copies: int) -> Tensor:
    """`copies` stacked copies of a batch along the rows."""
    return t.repeat(copies, *([1] * (t.dim() - 1)))
