"""Temporal tasks for recurrent models: sequences [batch, time, features], generated from a seed.

    SineTrajectoryDataModule   Murray 2019's example: a tonic input, a fixed 3-harmonic target trajectory
    AddTaskDataModule          Marschall, Cho & Savin 2020's add task: remember two past bits
    SequentialMNISTDataModule  MNIST row by row (28 steps of 28 pixels), the class at the last step
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from learnbench.data.in_memory import InMemoryDataModule, Splits
from learnbench.data.vision import VisionDataModule
from learnbench.options import NonNegativeInt, PositiveInt


def sine_target(steps: int, period: float) -> Tensor:
    """sin(2 pi t / P) + 0.5 sin(4 pi t / P) + 0.25 sin(8 pi t / P) at t = 0 .. steps - 1, [steps, 1]."""
    t = torch.arange(steps, dtype=torch.float32)
    w = 2 * math.pi * t / period
    return (torch.sin(w) + 0.5 * torch.sin(2 * w) + 0.25 * torch.sin(4 * w)).unsqueeze(1)


class SineTrajectoryDataModule(InMemoryDataModule):
    """Every example is the same sequence: a constant input of 1 (Murray's tonic input; with a zero input
    and h_0 = 0 the network would stay at rest) and the target trajectory. One example per update and
    `train_sequences` updates per epoch reproduce Murray's trials."""

    task = "sequence_regression"
    output_dim = 1
    split_options = {"train": "data.train_sequences"}  # validation and test: the one trial

    def __init__(self, steps: PositiveInt = 100, period: float = 100.0, train_sequences: PositiveInt = 100, **batching):
        super().__init__(**batching)
        self.steps, self.period, self.train_sequences = steps, period, train_sequences
        self.input_shape = (steps, 1)

    def load_splits(self) -> Splits:
        def copies(n: int) -> tuple[Tensor, Tensor]:
            return torch.ones(n, self.steps, 1), sine_target(self.steps, self.period).expand(n, -1, -1).clone()

        return Splits(train=copies(self.train_sequences), val=copies(1), test=copies(1))


def add_task(sequences: int, steps: int, lag_1: int, lag_2: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """x_t ~ Bernoulli(0.5); target (p_t, 1 - p_t) with p_t = 0.5 + 0.5 x_{t-lag_1} - 0.25 x_{t-lag_2}
    (bits before the sequence's start count as 0). Inputs [n, steps, 1], targets [n, steps, 2]."""
    x = torch.bernoulli(torch.full((sequences, steps), 0.5), generator=generator)

    def lagged(lag: int) -> Tensor:
        return torch.nn.functional.pad(x, (lag, 0))[:, :steps]

    p = 0.5 + 0.5 * lagged(lag_1) - 0.25 * lagged(lag_2)
    return x.unsqueeze(-1), torch.stack([p, 1 - p], dim=-1)


class AddTaskDataModule(InMemoryDataModule):
    """The add task. Its cross-entropy milestones (Marschall et al. 2020, in a stationary stream):
    0.662 with no memory, 0.519 with x_{t-lag_1} remembered, 0.454 with both bits."""

    task = "sequence_soft_classification"
    output_dim = 2
    split_options = {"train": "data.train_sequences", "val": "data.val_sequences", "test": "data.test_sequences"}
    MILESTONES = {"no memory": 0.662, "lag_1 remembered": 0.519, "both remembered": 0.454}

    def __init__(
        self,
        steps: PositiveInt = 100,
        lag_1: PositiveInt = 5,
        lag_2: PositiveInt = 9,
        train_sequences: PositiveInt = 1000,
        val_sequences: PositiveInt = 100,
        test_sequences: PositiveInt = 100,
        data_seed: NonNegativeInt = 1234,
        **batching,
    ):
        super().__init__(**batching)
        self.steps, self.lags, self.data_seed = steps, (lag_1, lag_2), data_seed
        self.sizes = (train_sequences, val_sequences, test_sequences)
        self.input_shape = (steps, 1)

    def load_splits(self) -> Splits:
        # Each split from its own generator: the test size never changes the training set.
        return Splits(*(
            add_task(n, self.steps, *self.lags, torch.Generator().manual_seed(self.data_seed + i))
            for i, n in enumerate(self.sizes)
        ))


class SequentialMNISTDataModule(VisionDataModule):
    """MNIST (or Fashion-MNIST) read row by row: 28 steps of 28 pixels; the class is read at the last step."""

    input_shape = (28, 28)

    def __init__(self, **kwargs):
        super().__init__(reconstruction=False, **kwargs)
        self.task = "sequence_classification"

    def load_splits(self) -> Splits:
        splits = super().load_splits()
        return Splits(*((x.squeeze(1), y) for x, y in (splits.train, splits.val, splits.test)))
