"""K-arm 2-D spiral classification, generated deterministically (no download).

Points are spread evenly along each arm's arc (angle ~ sqrt(u)), not evenly in angle: even
angles crowd the centre, where the arms overlap under noise and the Bayes limit drops below
0.96. With 1.5 turns and noise 0.2 the arms stay apart and a 5-nearest-neighbour classifier
reaches about 1.0 on the test split, so accuracy measures the learning rule, not the data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from learnbench.data.in_memory import InMemoryDataModule, Splits
from learnbench.tasks import CLASSIFICATION


def make_spiral(
    arms: int, points_per_arm: int, noise: float, turns: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """`arms * points_per_arm` points, exactly `points_per_arm` per class, in roughly [-1, 1]^2.

    Arm k at arc parameter s in [0, 1]: angle theta = 2 pi turns s, rotated by 2 pi k / arms,
    radius theta; Gaussian noise of std `noise` in those units; then scaled by the largest radius.
    """
    u = torch.rand(arms, points_per_arm, generator=generator)
    s = u.sqrt()  # arc length grows like the square of the angle: sqrt(u) makes it uniform
    theta = 2 * math.pi * turns * s
    offsets = 2 * math.pi * torch.arange(arms).unsqueeze(1) / arms
    radius = theta  # neighbouring arms lie 2 pi / arms apart in radius (pi for two arms)
    points = torch.stack([radius * torch.cos(theta + offsets), radius * torch.sin(theta + offsets)], dim=-1)
    points = points + noise * torch.randn(points.shape, generator=generator)
    scale = 2 * math.pi * turns  # the largest radius: brings the inputs into about [-1, 1]
    x = (points / scale).reshape(-1, 2)
    y = torch.arange(arms).repeat_interleave(points_per_arm)
    return x, y


class SpiralDataModule(InMemoryDataModule):
    input_shape = (2,)
    task = CLASSIFICATION
    split_options = {"train": "data.train_per_arm", "val": "data.val_per_arm", "test": "data.test_per_arm"}

    def __init__(
        self,
        arms: int = 2,
        train_per_arm: int = 1000,
        val_per_arm: int = 200,
        test_per_arm: int = 1000,
        noise: float = 0.2,
        turns: float = 1.5,
        data_seed: int = 1234,
        **batching,
    ):
        super().__init__(**batching)
        if arms < 2:
            raise ValueError(f"data.arms={arms}: a spiral needs at least 2 arms (classes)")
        self.arms, self.noise, self.turns, self.data_seed = arms, noise, turns, data_seed
        self.sizes = (train_per_arm, val_per_arm, test_per_arm)
        self.output_dim = arms

    def load_splits(self) -> Splits:
        # Each split from its own generator: changing the test size never changes the training set.
        return Splits(
            *(
                make_spiral(self.arms, n, self.noise, self.turns, torch.Generator().manual_seed(self.data_seed + i))
                for i, n in enumerate(self.sizes)
            )
        )
