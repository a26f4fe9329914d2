"""Sign symmetry (Liao, Leibo & Poggio 2016; Moskovitz, Litwin-Kumar & Abbott 2018).

The backward pass uses a matrix with the signs of the current W_l and magnitudes that carry no
information about W (the variant names are biotorch's):

- `usf`, uniform sign-concordant feedback: B = sign(W) (unit magnitudes);
- `brsf`, batchwise random-magnitude sign-concordant feedback: B = sign(W) |R|, R ~ N(0, 1) drawn
  afresh every step (from the step's seed, the same on every rank);
- `frsf`, fixed random-magnitude sign-concordant feedback: B = sign(W) |R| with R drawn once.

(brsf and frsf take the sign through copysign: where W is exactly 0 the feedback is +|R|, not 0.)

`scale` multiplies B. Unit magnitudes are much larger than W's ~1/sqrt(fan_in) (Liao et al. train
with batch normalisation): on LeNet the unscaled backward pass overflows within a few steps.
`match_weight_scale: true` multiplies each layer's B by the mean |W| of that layer, so the error
keeps backprop's scale (on weights of magnitude c, usf is then exactly backprop).
"""

from __future__ import annotations

from typing import Literal

import torch

from learnbench.options import Positive
from learnbench.rules.feedback.feedback_path import FeedbackMatrices, FeedbackRule
from learnbench.rules.locality import signals

Variant = Literal["usf", "brsf", "frsf"]


class SignSymmetry(FeedbackRule):
    #: brsf's magnitudes must be the same on every rank (they are feedback, not per-example noise).
    noise_differs_per_rank = False

    def __init__(self, variant: Variant = "usf", scale: Positive = 1.0, match_weight_scale: bool = False):
        super().__init__()
        self.variant, self.scale, self.match_weight_scale = variant, scale, match_weight_scale
        self.magnitudes = FeedbackMatrices()  # frsf: |R| per block, fixed
        self._step_magnitudes: dict[int, torch.Tensor] = {}  # brsf: this step's B per block (buffers kept across steps)
        self._step_feedback_ready: set[int] = set()

    @property
    def stacks_seeds(self) -> bool | str:
        if self.variant == "brsf":
            return "brsf draws B's magnitudes every step from one generator: a stack's seeds would not get their own runs' draws"
        if self.match_weight_scale:
            return "match_weight_scale scales B by the mean |W| of a whole layer, every seed's weights in it"
        return True

    def reads(self) -> frozenset[str]:
        """B = sign(W) (usf, brsf) or random magnitudes with W's signs (frsf): the forward weights' signs are transported."""
        return signals("pre", "post_derivative", "output_error", "transported_weights")

    def init_state(self, model, generator):
        if self.variant == "frsf":
            for i, block in enumerate(model.blocks):
                w = block.linear.weight
                if i > 0:
                    self.magnitudes.add(i, torch.randn(w.shape, generator=generator, dtype=torch.float32).abs().to(w.dtype))  # float32 draw: the same B in any dtype

    def begin_step(self, step):
        super().begin_step(step)
        self._step_feedback_ready = set()

    def feedback_for(self, i, block):
        weight = block.linear.weight.detach()
        if self.variant == "brsf":
            return self._batchwise_feedback(i, weight)
        feedback = torch.sign(weight) if self.variant == "usf" else torch.copysign(self.magnitudes[i], weight)
        return self._scaled(feedback, weight)

    def _scaled(self, feedback, weight):
        """B times `scale` (and W's mean magnitude with match_weight_scale), in place: `feedback` is a
        fresh tensor or brsf's own buffer."""
        if self.match_weight_scale:
            return feedback.mul_(self.scale * weight.abs().mean())
        return feedback if self.scale == 1.0 else feedback.mul_(self.scale)

    def _batchwise_feedback(self, i, weight):
        """brsf: sign(W) |R| with R drawn once per step (shared by the training pass and the diagnostics),
        written into a buffer kept across steps: drawing ~1M normals is the cost that remains
        (docs/speed.md). copysign(R, W) = |R| sign(W), with +|R| where W is exactly 0."""
        buffer = self._step_magnitudes.get(i)
        if i in self._step_feedback_ready:
            return buffer
        if buffer is None or buffer.shape != weight.shape or buffer.dtype != weight.dtype or buffer.device != weight.device:
            buffer = self._step_magnitudes[i] = torch.empty_like(weight)
        buffer.normal_(generator=self.generator)
        torch.copysign(buffer, weight, out=buffer)
        self._step_feedback_ready.add(i)
        return self._scaled(buffer, weight)
