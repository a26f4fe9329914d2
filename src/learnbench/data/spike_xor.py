"""SpikeProp's XOR in spike times (Bohte, Kok & La Poutré 2002, section 3.1), generated in memory.

Each input bit is one spike: 0 ms for one value, `late` ms (6) for the other, plus a bias neuron that always
fires at 0 ms. The target is the output's spike time: `same` ms (16) when the two inputs spike together, `different`
ms (10) when they do not. The four patterns are the training set; validation and test score the same four (XOR has
no other examples). Times in ms; the task is spike_time_regression (tasks.py: 1/2 sum (t - t*)^2).
"""

from __future__ import annotations

import torch

from learnbench.data.in_memory import InMemoryDataModule, Splits
from learnbench.options import NonNegative, Positive, PositiveInt
from learnbench.tasks import SpikeTimeRegression


def spike_xor_patterns(late: float = 6.0, same: float = 16.0, different: float = 10.0,
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [4, 3] (input 1, input 2, bias) and target output times [4, 1], in ms."""
    bits = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    inputs = torch.cat([bits * late, torch.zeros(4, 1)], dim=1).to(dtype)
    targets = torch.where(bits[:, 0] == bits[:, 1], same, different).to(dtype).unsqueeze(1)
    return inputs, targets


class SpikeXORDataModule(InMemoryDataModule):
    input_shape = (3,)
    output_dim = 1
    task = SpikeTimeRegression.name

    def __init__(self, late: NonNegative = 6.0, same: Positive = 16.0, different: Positive = 10.0, repeats: PositiveInt = 1,
                 **batching):
        """`repeats`: the four patterns this many times in one training epoch (1: Bohte's epoch of four)."""
        super().__init__(**batching)
        self.late, self.same, self.different, self.repeats = late, same, different, repeats

    def load_splits(self) -> Splits:
        x, y = spike_xor_patterns(self.late, self.same, self.different)
        return Splits((x.repeat(self.repeats, 1), y.repeat(self.repeats, 1)), (x, y), (x, y))
