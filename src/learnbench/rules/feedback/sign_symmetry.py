"""Sign symmetry (Liao, Leibo & Poggio 2016; Moskovitz, Litwin-Kumar & Abbott 2018).

The backward pass uses a matrix with the signs of the current W_l and magnitudes that carry no
information about W (the variant names are biotorch's):

- `usf`, uniform sign-concordant feedback: B = sign(W) (unit magnitudes);
- `brsf`, batchwise random-magnitude sign-concordant feedback: B = sign(W) |R|, R ~ N(0, 1) drawn
  afresh every step (from the step's seed, the same on every rank);
- `frsf`, fixed random-magnitude sign-concordant feedback: B = sign(W) |R| with R drawn once.

`scale` multiplies B (unit magnitudes are much larger than W's ~1/sqrt(fan_in); Liao et al. train
with batch normalisation; the tuned files set the learning rate accordingly).
"""

from __future__ import annotations

from typing import Literal

import torch

from learnbench.options import Positive
from learnbench.rules.feedback.feedback_path import FeedbackMatrices, FeedbackRule

Variant = Literal["usf", "brsf", "frsf"]


class SignSymmetry(FeedbackRule):
    #: brsf's magnitudes must be the same on every rank (they are feedback, not per-example noise).
    noise_differs_per_rank = False

    def __init__(self, variant: Variant = "usf", scale: Positive = 1.0):
        super().__init__()
        self.variant, self.scale = variant, scale
        self.magnitudes = FeedbackMatrices()  # frsf: |R| per block, fixed
        self._step_magnitudes: dict[int, torch.Tensor] = {}  # brsf: this step's |R| per block

    def init_state(self, model, generator):
        if self.variant == "frsf":
            for i, block in enumerate(model.blocks):
                w = block.linear.weight
                if i > 0:
                    self.magnitudes.add(i, torch.randn(w.shape, generator=generator).abs().to(w.dtype))  # float32 draw: the same B in any dtype

    def begin_step(self, step):
        super().begin_step(step)
        self._step_magnitudes = {}

    def feedback_for(self, i, block):
        sign = torch.sign(block.linear.weight.detach())
        if self.variant == "usf":
            return self.scale * sign
        if self.variant == "frsf":
            return self.scale * sign * self.magnitudes[i]
        if i not in self._step_magnitudes:  # brsf: this step's draw, shared by the training pass and the diagnostics
            self._step_magnitudes[i] = torch.randn(sign.shape, generator=self.generator, device=sign.device, dtype=sign.dtype).abs()
        return self.scale * sign * self._step_magnitudes[i]
