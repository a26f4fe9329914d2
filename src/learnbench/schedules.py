"""Learning-rate schedules, stepped once per optimiser step by the training module.

Each factory takes the optimiser, the run's total number of steps and the steps per epoch (the
module supplies both from the trainer), so a config can say "warm up for one epoch" without
knowing the dataset size.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    return int(round(warmup_epochs * steps_per_epoch))


def warmup_cosine(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0, min_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr` at the last step."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def warmup_linear(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 1.0) -> LambdaLR:
    """Linear warm-up, then linear decay to zero at the last step (Ren et al. 2023)."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return LambdaLR(optimizer, factor)


def exponential(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, decay_per_step: float = 1e-4) -> LambdaLR:
    """lr * exp(-decay_per_step * step) (Baydin et al. 2022)."""
    return LambdaLR(optimizer, lambda step: math.exp(-decay_per_step * step))


def step_decay(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1) -> LambdaLR:
    """lr * gamma^(number of milestones passed); milestones are fractions of the run (0.5: half-way),
    so the schedule scales with any epoch budget (the feedback-alignment literature's lr / 10 at 50 % and 75 %)."""
    boundaries = [int(round(m * total_steps)) for m in milestones]
    return LambdaLR(optimizer, lambda step: gamma ** sum(step >= b for b in boundaries))
