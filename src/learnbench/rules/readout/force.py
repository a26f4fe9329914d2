"""FORCE learning (Sussillo & Abbott 2009): recursive least squares on a reservoir's readout, online, while the
network runs on its own output.

The readout y_t = W_out r_t (+ b_out) learns inside the training sequence: every `update_every` (k) steps, at the
last step t of each window of k steps (Sussillo's `mod(ti, learn_every) == 0`), with r the readout's input there
(augmented by a 1 when the readout has a bias: the bias is one more weight, regularised like the others):

    k_t = P r,   c = 1 / (1 + r^T P r),   P <- P - c k_t k_t^T        (P_0 = I / alpha)
    e = W_out r - f_t                     the error of the weights before the update (the a-priori error)
    dW = -c e k_t^T = -e (P_new r)^T

With P_0 = I / alpha, the weights after updates at the states r_1 .. r_n are the ridge solution
W = F R^T (R R^T + alpha I)^{-1} over those states (tests/test_force.py): RLS is ridge computed online, one state at a
time, with lambda = alpha and, with a bias, the bias regularised too (method=ridge leaves its bias unregularised: the
two agree on a readout without bias). FORCE's difference is where the states come from: with output feedback
(model.feedback=true) the network runs on its own output, fed back through fixed W_fb, during training and testing;
the output it feeds back is the one before the update (Sussillo's z), and what the training metrics score.

Update mode `direct` (rules/base.py): the rule writes p.grad = -dW; the module applies p -= p.grad itself, never
through the optimiser (no momentum, no Adam, no weight decay; `grad_clip_norm`, if set, clips dW like any direct change,
and RLS is then no longer exact: the presets leave it off). P is a float64 buffer (checkpointed), from I / alpha at
the start of the run and carried across batches and epochs (RLS over everything seen). The training loop takes the
sequence in windows of k steps (`schedule`), the reservoir's state carried from one window into the next. A batch of
several sequences is taken one sequence after the other at each update (exact sequential RLS over its rows).

Evaluation (`evaluate_from`): FORCE tests the trained network by letting it run on from where training left it
(Sussillo's script: the same simulation, learning off); `training_end` starts every evaluation sequence from the state
the last training sequence ended in (data=force_pattern's val and test splits begin at the time training ended), and
`initial_state` from the model's initial state, as method=ridge does. (With several training sequences a batch, every
evaluation sequence starts from where the last of them ended; independent sequences call for `initial_state`.)

Sequential: one sample after another, with the weights each update leaves. Over several processes the samples of
different ranks would have to be taken in one order by every rank (P and W_out are not sums over ranks), so the rule
refuses DDP (`one_process_only`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from learnbench.models.temporal import TemporalModel
from learnbench.options import Positive, PositiveInt
from learnbench.rules.base import DIRECT, Call, LearningRule, LossFn, RuleOutput
from learnbench.rules.locality import signals
from learnbench.rules.readout.reservoir import check_reservoir, per_step_targets, readout_has_bias
from learnbench.state import detach, map_tensors, select

EvaluateFrom = Literal["training_end", "initial_state"]


def rls_step(p: Tensor, w: Tensor, r: Tensor, target: Tensor) -> Tensor:
    """One RLS update at input r [features] towards target [outputs]: P updated in place (a rank-one BLAS update: at
    N = 1000, p - c k k^T with its three temporary N x N matrices costs 15 times as long), dW returned for the
    weights w [outputs, features]."""
    k = p @ r
    c = 1.0 / (1.0 + r @ k)
    p.addr_(c * k, k, alpha=-1.0)
    error = w @ r - target  # a priori: the weights before this update
    return -torch.outer(error, c * k)


def rls_windows(steps: int | None, every: int) -> list[Call]:
    """Windows of `every` steps, an update after each (the last one may be shorter: no update inside it)."""
    if steps is None:
        return [Call()]
    return [Call(t0, min(t0 + every, steps)) for t0 in range(0, steps, every)]


class FORCE(LearningRule):
    trains = ("reservoir",)  # a fixed reservoir's readout, as ridge
    stacks_seeds = "its RLS step divides by 1 + r^T P r, one number for every seed of a stack"
    noise_differs_per_rank = False  # no noise
    one_process_only = ("method=force is recursive least squares, one sample after another: its P and readout cannot be "
                        "shared over {processes} processes; run it on one (trainer=cpu or trainer=gpu)")

    def __init__(self, alpha: Positive = 1.0, update_every: PositiveInt = 2,
                 evaluate_from: EvaluateFrom = "training_end") -> None:
        super().__init__()
        self.alpha, self.update_every, self.evaluate_from = alpha, update_every, evaluate_from
        self.step_in_sequence = 0  # steps of the current training sequence taken so far (the washout is not learned)
        # The model's state where the last training sequence ended (evaluation). Not checkpointed: a module loaded from
        # a checkpoint without training evaluates from the initial state.
        self.training_end: Any = None

    # ------------------------------------------------------------------ set-up
    def reads(self) -> frozenset[str]:
        """The reservoir's rates (and P, a running statistic of them) times the output's error vector."""
        return signals("pre", "output_error")

    def check_model(self, model: nn.Module) -> None:
        check_reservoir(model, "force")
        if getattr(model, "time_axis", None) == "model":  # a static example run for the model's own steps (model=lsm on MNIST)
            raise ValueError("method=force fits a target at every time step of a sequence, and this model makes its own steps "
                             "from a static example with one class: fit its readout with method=ridge, or run it on a "
                             "per-step task (data=mackey_glass with model.encoding=none)")

    def init_state(self, model: TemporalModel, generator: torch.Generator) -> None:
        features = model.readout_weight.shape[1] + (1 if readout_has_bias(model) else 0)
        self.register_buffer("inverse_correlation", torch.eye(features, dtype=torch.float64) / self.alpha)

    def update_modes(self, model: nn.Module) -> dict[str, str]:
        return {name: DIRECT for name in model.trained_parameters("readout")}

    def schedule(self, steps: int | None) -> list[Call]:
        return rls_windows(steps, self.update_every)

    def begin_step(self, step: int) -> None:
        """No noise to re-seed."""

    # ------------------------------------------------------------------ every window
    @torch.no_grad()
    def estimate_grads(self, model: TemporalModel, x: Tensor, y: Tensor, loss_fn: LossFn, state: Any = None) -> RuleOutput:
        """Run the window on the model's own output (feedback) from the carried state; if it ends on a multiple of
        update_every steps into its sequence, after the washout, write p.grad = -dW of the RLS update at its last step
        (the schedule's windows end there, but for a last shorter one)."""
        if state is None:  # a new sequence
            self.step_in_sequence = 0
            state = model.initial_state(len(x))
        targets = per_step_targets(model, x, y, "force")
        output, end = model(x, state, return_state=True)
        self.step_in_sequence += x.shape[1]
        if self.step_in_sequence % self.update_every == 0 and self.step_in_sequence > model.washout:
            self.write_change(model, model.readout_input(model.readout_state(end)), targets[:, -1])
        self.training_end = detach(end)
        return RuleOutput(loss=loss_fn(output, y).mean(), output=output, state=end)

    def write_change(self, model: TemporalModel, r: Tensor, target: Tensor) -> None:
        """p.grad = -dW for the readout: sequential RLS over the batch's rows, each error taken with the weights the
        rows before it left (P updated in place)."""
        params = list(model.trained_parameters("readout").values())
        w = torch.cat([params[0], params[1][:, None]], dim=1) if len(params) == 2 else params[0]
        w = w.to(torch.float64)
        r = r.to(torch.float64)
        if len(params) == 2:
            r = torch.cat([r, r.new_ones(len(r), 1)], dim=1)
        change = torch.zeros_like(w)
        for row, goal in zip(r, target.to(torch.float64)):
            change += rls_step(self.inverse_correlation, w + change, row, goal)
        params[0].grad = -change[:, :params[0].shape[1]].to(params[0].dtype)
        if len(params) == 2:
            params[1].grad = -change[:, -1].to(params[1].dtype)

    # ------------------------------------------------------------------ evaluation
    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """From the state training ended in (FORCE's test: the network runs on), or the initial state."""
        if self.evaluate_from == "initial_state" or self.training_end is None:
            return model(x)
        last = select(self.training_end, slice(-1, None))  # the last training sequence's end, for every sequence
        return model(x, map_tensors(lambda t: t.expand(len(x), *t.shape[1:]).clone(), last))
