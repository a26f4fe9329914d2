"""The learning-rule interface.

A rule has one job: given the model and a batch, write `p.grad` for every trainable parameter,
with autograd's sign convention (the optimiser descends). It never steps the optimiser, never
all-reduces and never clips: `LearningRuleModule` does that identically for every rule, which
is what makes a comparison between rules fair. (One exception, `grads_synchronised`: a rule
that can synchronise something much smaller than the gradient does so itself, through the
`reduce_mean` the training loop hands it.)

Rules are nn.Modules so that their state (noise tables, feedback matrices, running baselines)
is made of buffers that move with the model and are saved in checkpoints. Their random numbers
come from a generator of their own, separate from the data order. Before every training step the
generator is re-seeded from (seed, rank where noise must differ per rank, step): the noise of a
step depends on nothing else, so a run resumed from a checkpoint, on any number of ranks, draws
exactly the noise an uninterrupted run would (no generator state to save, per rank, and restore).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from learnbench.rules.noise import NoiseSource

# (output, target) -> loss of each example, shape [batch]; the batch loss is its mean.
LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class RuleOutput:
    loss: Tensor  # the batch loss of the unperturbed network, detached (for logging and divergence)
    output: Tensor | None = None  # the unperturbed network's output, if the rule computed it


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def no_reduction(tensor: Tensor) -> Tensor:
    """`reduce_mean` on one process (a module-level function, not a lambda, so rules pickle for ddp_spawn)."""
    return tensor


class LearningRule(nn.Module):
    """Base class. Subclasses implement `estimate_grads`."""

    #: Different ranks must draw different noise for their own examples (activity-space rules);
    #: weight-space rules may share a seed across ranks. Used to seed the generator.
    noise_differs_per_rank: bool = True

    #: True when `estimate_grads` leaves the same p.grad on every rank, having all-reduced something
    #: smaller itself through `reduce_mean` (comm=scalars): the module then skips its gradient all-reduce.
    grads_synchronised: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.generator: torch.Generator | None = None
        # The mean of a tensor over ranks, set by the training loop (which counts the bytes it sends);
        # the identity on one process. Rules stay free of Lightning and of torch.distributed.
        self.reduce_mean: Callable[[Tensor], Tensor] = no_reduction

    def setup(self, model: nn.Module, seed: int, rank: int, device: torch.device) -> None:
        """Called once before training, on the training device."""
        self.noise_seed = 1_000_003 * (seed + 1) + (rank if self.noise_differs_per_rank else 0)
        self.generator = torch.Generator(device=device).manual_seed(self.noise_seed)
        for source in self.modules():  # noise tables: drawn from the seed alone
            if isinstance(source, NoiseSource):
                source.table_seed = self.noise_seed

    def begin_step(self, step: int) -> None:
        """Re-seed the generator for this training step (called by the training loop)."""
        self.generator.manual_seed(step_seed(self.noise_seed, step))

    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        raise NotImplementedError


def step_seed(noise_seed: int, step: int) -> int:
    """A well-mixed 63-bit seed from (noise_seed, step): neighbouring seeds or steps share no stream."""
    return int(np.random.SeedSequence([noise_seed, step]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))
