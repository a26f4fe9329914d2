"""e-prop for rate units (Bellec et al. 2020, Nat. Commun. 11:3625).

dL/dW_ij ~ sum_t L_t,i e_t,ij: an eligibility trace from the unit's own dynamics, and a learning signal
L_t = dL/dy_t times a feedback matrix. For this leaky rate unit the only internal state is h, whose own
dynamics are the leak (1 - a); the path h_{t-1,i} -> phi -> W_rec -> h_t is the network's recurrence,
which e-prop leaves out. So the trace is RFLO's, e_t = (1 - a) e_{t-1} + a z_t, and the two rules differ
in the feedback (Bellec et al. note that RFLO is e-prop for such units):

    symmetric   L through W_out^T, the current readout (the default)
    random      a fixed random B from the seed (random e-prop: RFLO)
    adaptive    B learns: it gets W_out's own gradient (transposed) plus a decay, so B and W_out^T start
                apart and converge (Kolen-Pollack style); B is a rule parameter (optimised, all-reduced)

The readout's output is not filtered (no leaky readout), so e-prop's low-pass filtered trace is e itself.

On a spiking network (model.kind "spiking": model=snn with one recurrent layer of LIF / ALIF units) the same
rule, with the same feedback, takes the eligibility vectors of the spiking units and the readout's filter
(rules/recurrent/spiking_eprop.py). There a static example (the network encodes time itself) is one call.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from typing import Any

from learnbench.models.temporal import TemporalModel
from learnbench.options import NonNegative, Positive
from learnbench.rules.base import Call, LossFn, RuleOutput
from learnbench.rules.recurrent.recurrent_rule import UpdateEvery
from learnbench.rules.recurrent.rflo import RFLO
from learnbench.rules.recurrent.spiking_eprop import spiking_eprop_grads
from learnbench.rules.locality import signals


class EProp(RFLO):
    trains = ("recurrent", "spiking")
    takes_rate_penalty = True  # model=snn's firing-rate regulariser: its learning signal through the unfiltered traces

    def __init__(
        self,
        feedback: Literal["symmetric", "random", "adaptive"] = "symmetric",
        update_every: UpdateEvery = "sequence",
        feedback_scale: Positive = 1.0,
        feedback_decay: NonNegative = 0.0,
    ) -> None:
        super().__init__(update_every=update_every, feedback_scale=feedback_scale)
        self.feedback_kind = feedback
        self.feedback_decay = feedback_decay

    def reads(self) -> frozenset[str]:
        """Eligibility traces (pre, surrogate) times a learning signal: the output error through W_out^T (symmetric)
        or through B of its own (random, adaptive)."""
        path = "transported_weights" if self.feedback_kind == "symmetric" else "feedback_weights"
        return signals("pre", "post_derivative", "output_error", path)

    def check_model(self, model: nn.Module) -> None:
        if isinstance(model, TemporalModel) and model.kind == "spiking":
            problem = model.eprop_problem()
            if problem:
                raise ValueError(problem)
            return
        super().check_model(model)

    def schedule(self, steps: int | None) -> list[Call]:
        """A static example (a spiking network encodes its own steps) is one call; sequences as RFLO's."""
        return [Call()] if steps is None else super().schedule(steps)

    def estimate_grads(self, model: TemporalModel, x: Tensor, y: Tensor, loss_fn: LossFn, state: Any = None) -> RuleOutput:
        if model.kind != "spiking":
            return super().estimate_grads(model, x, y, loss_fn, state)
        # One optimiser step a sequence: each window is a whole sequence, nothing is carried out of it.
        carry = self.update_every != "sequence"
        out = spiking_eprop_grads(model, self.feedback_matrix(model), x, y, loss_fn, state, carry=carry)
        self.after_grads(model)
        return out

    def init_state(self, model: TemporalModel, generator: torch.Generator) -> None:
        if self.feedback_kind == "symmetric":
            return
        super().init_state(model, generator)
        if self.feedback_kind == "adaptive":  # learned: a Parameter, so the optimiser and DDP see it
            b = self.feedback
            del self.feedback
            self.feedback = nn.Parameter(b)

    def feedback_matrix(self, model: TemporalModel) -> Tensor:
        return model.readout_weight.detach() if self.feedback_kind == "symmetric" else self.feedback.detach()

    def after_grads(self, model: TemporalModel) -> None:
        if self.feedback_kind == "adaptive" and model.readout_weight.grad is not None:
            self.feedback.grad = model.readout_weight.grad + self.feedback_decay * self.feedback.detach()
