"""Where perturbation directions come from: fresh draws, or slices of a noise table.

Drawing millions of Gaussian numbers every step costs about half a backprop step on a CPU, more
than the forward passes a perturbation rule needs. A noise table (Salimans et al. 2017) draws
one long vector once; each direction is a slice of it at a random offset. Every element of a
slice is an exact N(0, 1) (or +-1) draw, distinct elements are independent, so estimates stay
unbiased; directions of different steps may share elements at shifted positions, which is the
price of the speed. `table_size: 0` draws fresh noise every step instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from typing import Literal

GAUSSIAN, RADEMACHER = "gaussian", "rademacher"
NoiseKind = Literal["gaussian", "rademacher"]


def draw(kind: str, shape: tuple[int, ...], generator: torch.Generator, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """Noise in the model's dtype (None: torch's default dtype), so a float64 model gets float64 noise."""
    if kind == GAUSSIAN:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if kind == RADEMACHER:
        signs = torch.randint(0, 2, shape, generator=generator, device=device, dtype=dtype or torch.get_default_dtype())
        return signs.mul_(2).sub_(1)
    raise ValueError(f"noise={kind!r} is not known: choose {GAUSSIAN!r} or {RADEMACHER!r}")


class NoiseSource(nn.Module):
    """Samples `k` directions of length `n`, shape [k, n]."""

    def __init__(self, kind: str = GAUSSIAN, table_size: int = 0):
        super().__init__()
        draw(kind, (1,), torch.Generator(), torch.device("cpu"))  # fail now on an unknown kind
        self.kind = kind
        self.table_size = int(table_size)
        self.table_seed: int | None = None
        # Not saved in checkpoints: it is rebuilt from the seed (64 MB by default is too much to save).
        self.register_buffer("table", torch.empty(0), persistent=False)

    def _table_generator(self, generator: torch.Generator) -> torch.Generator:
        """The table depends on the rule's seed only (set by LearningRule.setup), not on the step:
        a run resumed from a checkpoint rebuilds the same table."""
        seed = self.table_seed if self.table_seed is not None else generator.initial_seed()
        return torch.Generator(device=generator.device).manual_seed(seed ^ 0x5EED7AB1E)

    def sample(self, n: int, k: int, generator: torch.Generator, dtype: torch.dtype | None = None, out: Tensor | None = None) -> Tensor:
        """`out` ([k, n], optional): where K > 1 table slices are stacked (a buffer the caller keeps across
        steps: K x 1.8M numbers are above glibc's mmap threshold, so a fresh stack is mapped and
        page-faulted in on every step); the same numbers either way. Fresh draws ignore it."""
        device = generator.device
        if self.table_size == 0:
            return draw(self.kind, (k, n), generator, device, dtype)
        if self.table.numel() and dtype is not None and self.table.dtype != dtype:
            self.table = torch.empty(0)  # the model changed dtype: redraw the table in the new one
        if self.table.numel() == 0:
            if self.table_size < n:
                raise ValueError(f"the noise table ({self.table_size} numbers) is shorter than one direction ({n}): raise method.table_size or set it to 0")
            self.table = draw(self.kind, (self.table_size,), self._table_generator(generator), device, dtype)
        offsets = torch.randint(0, self.table_size - n + 1, (k,), generator=generator, device=device).tolist()
        if k == 1:
            return self.table[offsets[0] : offsets[0] + n].unsqueeze(0)  # a view: no copy at all
        slices = [self.table[o : o + n] for o in offsets]
        if out is None or out.shape != (k, n) or out.dtype != self.table.dtype or out.device != self.table.device:
            return torch.stack(slices)
        return torch.stack(slices, out=out)


def perturbation_claims(rule: nn.Module) -> frozenset[str]:
    """What a perturbation rule's estimate is (LearningRule.claims): unbiased for the gradient, E[v v^T] = I, unless
    its directional derivatives are clipped or paired with local losses (another objective)."""
    return frozenset({"unbiased"}) if rule.clip is None and getattr(rule, "local", "none") == "none" else frozenset()
