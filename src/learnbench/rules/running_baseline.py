"""An exponential running mean of past batch losses: the baseline of the `running` variants of WP and NP."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningBaseline(nn.Module):
    """A buffer (saved in checkpoints); on DDP each rank keeps its own (its losses are its shard's)."""

    def __init__(self, decay: float):
        super().__init__()
        self.decay = decay
        self.register_buffer("mean", torch.tensor(float("nan")))

    def update(self, loss: Tensor) -> Tensor:
        """Return the baseline for this step (the mean of past losses; the loss itself on the first step), then fold the loss in."""
        reference = loss if torch.isnan(self.mean) else self.mean
        self.mean = self.decay * reference + (1 - self.decay) * loss
        return reference
