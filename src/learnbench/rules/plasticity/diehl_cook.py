"""Diehl & Cook 2015's learning (method=diehl_cook): STDP of the input -> excitatory weights in the `direct` update
mode, and the label assignment of the excitatory neurons as a `closed_form` readout.

STDP (the reference's eqs_stdp_ee, peter-u-diehl/stdp-mnist): nearest-spike traces that are set to 1 at their unit's
spike (pre: tau_pre 20 ms; post1: tau_post 20 ms; post2: tau_post2 40 ms), and

    at a pre spike:   W_ij -= nu_pre * post1_i                    (depression)
    at a post spike:  W_ij += nu_post * pre_j * post2_i(before)   (potentiation, scaled by the slow post trace read
                                                                   before this spike: Pfister & Gerstner's triplet term)

which is the STDP rule's nearest-pairing pair depression (A- = nu_pre) plus its triplet potentiation (A3+ = nu_post,
tau_y = tau_post2), computed here from the spike trains of the whole presentation (spike_timing.trace). W stays fixed
during a presentation (the reference changes it at every spike; one image moves a weight by at most a few nu_post).

Batches: the change is the SUM over the batch's examples (B presentations in a row would add their changes; the STDP
rule's mean would divide the learning rates by B), applied once per batch, then W is clipped to [0, w_max] and every
neuron's incoming weights are rescaled to sum to `normalize_to` (78: the reference's normalize_weights before every
image). With B = 1 this is the reference's order of updates (quiet examples shown again: models/diehl_cook.py, each showing's change added),
except that W changes after the image instead of at
each spike; with B > 1 the examples of a batch all see the batch's starting W (and theta: models/diehl_cook.py).

Under DDP the module averages p.grad over the ranks: the union batch's summed change divided by the number of ranks.

Label assignment (the reference's get_new_assignments, on the TRAINING responses: the reference assigned labels from
the responses to the set it scored): every training batch adds each neuron's spike count into a table R [classes,
neurons] and the examples into counts n [classes]; `solve` (before validation and test) gives neuron i the class
argmax_c R_ci / n_c, and none if it never spiked; the model predicts the class whose assigned neurons have the
highest mean spike count. With `assign_window` the table forgets as the reference's does (it assigned from the last
10 000 images' responses): R and n decay by exp(-B / assign_window) per batch, so the early, half-learned responses
count little.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from learnbench.models.temporal import TemporalModel
from learnbench.options import NonNegative, Positive
from learnbench.rules.base import CLOSED_FORM, DIRECT, LossFn, RuleOutput
from learnbench.rules.plasticity.spike_timing import before_this_step, trace
from learnbench.rules.plasticity.stdp import STDP, fix_the_rest

AssignOn = Literal["train", "val", "test"]


def assignment_problem(assign_on: str) -> str | None:
    if assign_on != "train":
        return (f"method.assign_on={assign_on} would label the neurons with the answers of the split they are scored on "
                f"(the reference code assigned on the test set): use method.assign_on=train")
    return None


def option_problem(options: dict, method: str = "diehl_cook", model_kind: str | None = None,
                   model_options: dict | None = None) -> str | None:
    """train.check_config asks it before anything is built (the constructor refuses the same)."""
    return assignment_problem(options.get("assign_on", "train"))


def assignments(responses: Tensor, counts: Tensor) -> Tensor:
    """Each neuron's class [neurons]: the class with its highest mean response (responses [classes, neurons] summed
    over examples, counts [classes]), -1 for a neuron that never responded (the reference keeps it unassigned)."""
    mean = responses / counts.clamp_min(1e-12).unsqueeze(1)
    best, label = mean.max(dim=0)
    return torch.where(best > 0, label, torch.full_like(label, -1))


def assignment_readout(labels: Tensor, classes: int) -> Tensor:
    """[classes, neurons]: row c holds 1 / n_c at the n_c neurons assigned to c (a class's mean spike count)."""
    onehot = F.one_hot(labels.clamp_min(0), classes).T.to(torch.float64) * (labels >= 0)
    return onehot / onehot.sum(dim=1, keepdim=True).clamp_min(1)


class DiehlCookSTDP(STDP):
    trains = ("competitive_spiking",)  # model=diehl_cook alone (models/diehl_cook.py)
    option_problem = staticmethod(option_problem)
    # The adaptive thresholds (the model's theta) rise with each rank's own images and the quiet-image re-showings draw
    # per rank: state outside the all-reduced update, which drifted apart on 2 processes (learnbench.verify's ranks check).
    one_process_only = ("method=diehl_cook's adaptive thresholds rise with each process's own images, outside the "
                        "all-reduced update, so {processes} processes would drift apart; run it on one (trainer=cpu)")

    def __init__(
        self,
        nu_pre: NonNegative = 1e-4,
        nu_post: NonNegative = 1e-2,
        tau_pre: Positive = 20.0,
        tau_post: Positive = 20.0,
        tau_post2: Positive = 40.0,
        w_max: Positive = 1.0,
        normalize_to: Positive = 78.0,
        assign_on: AssignOn = "train",
        assign_window: Positive | None = 10000.0,
    ) -> None:
        problem = assignment_problem(assign_on)
        if problem:
            raise ValueError(problem)
        super().__init__(tau_pre=tau_pre, tau_post=tau_post, a_plus=0.0, a_minus=nu_pre, bounds="additive", w_max=w_max,
                         pairing="nearest", a3_plus=nu_post, tau_y=tau_post2, normalize_to=normalize_to)
        self.nu_pre, self.nu_post, self.tau_post2 = nu_pre, nu_post, tau_post2
        self.assign_window = assign_window

    # ------------------------------------------------------------------ set-up
    def check_model(self, model: nn.Module) -> None:
        if getattr(model, "kind", None) != "competitive_spiking":
            raise ValueError(f"method=diehl_cook trains Diehl & Cook's network (model=diehl_cook); {type(model).__name__} is not it")

    def learned(self, model: TemporalModel) -> dict[str, str]:
        return {model.first_weight_name: DIRECT, "readout_weight": CLOSED_FORM}

    def init_state(self, model: TemporalModel, generator: torch.Generator) -> None:
        """The response table (float64 buffers, checkpointed); W clipped and normalised before the first image."""
        fix_the_rest(model, set(self.learned(model)))
        self.register_buffer("responses", torch.zeros(model.output_dim, model.neurons, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(model.output_dim, dtype=torch.float64))
        self.after_optimizer_step(model)

    # ------------------------------------------------------------------ every step
    def change(self, w: Tensor, pre: Tensor, post: Tensor, dt: float) -> Tensor:
        """dW [post, pre] from spike trains [batch, time, units]: nearest-spike traces, summed over the batch."""
        every_input = torch.arange(pre.shape[2], device=pre.device).expand(pre.shape[0], -1)
        return self.change_of_active(w, pre, every_input, post, dt)

    def change_of_active(self, w: Tensor, pre: Tensor, active: Tensor, post: Tensor, dt: float) -> Tensor:
        """`change` from the spikes of each example's active inputs (pre [batch, time, K] at inputs active [batch, K]):
        the per-example changes of those columns, added into W's shape (inputs that never spike change nothing)."""
        x = trace(pre, self.tau_pre, dt, "nearest")  # pre: set to 1 at a pre spike (the same step counts)
        post1_before = before_this_step(trace(post, self.tau_post, dt, "nearest"), self.tau_post, dt)
        post2_before = before_this_step(trace(post, self.tau_post2, dt, "nearest"), self.tau_post2, dt)
        potentiation = (post * post2_before).transpose(1, 2) @ x  # [batch, neurons, K]
        depression = post1_before.transpose(1, 2) @ pre
        per_example = self.nu_post * potentiation - self.nu_pre * depression
        dw = torch.zeros_like(w)
        return dw.index_add_(1, active.flatten(), per_example.transpose(0, 1).reshape(w.shape[0], -1))

    def estimate_grads(self, model: TemporalModel, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        """The STDP pass (W's change as p.grad = -dW), and the examples' spike counts into the response table."""
        with torch.no_grad():
            presentations, spikes = model.present(x)
            output = model.output_from(spikes)
            w = model.get_parameter(model.first_weight_name).detach()
            dw = sum(self.change_of_active(w, p.pre, p.active, p.spikes, float(model.dt)) for p in presentations)
            self.record_responses(spikes.sum(dim=1), y, x.shape[0])
        model.get_parameter(model.first_weight_name).grad = -dw
        model.readout_weight.grad = None
        first = presentations[0]
        metrics = {**self.activity_metrics(first.pre, [first.spikes], dw), "theta_mean": model.theta.mean(),
                   "quiet_first": (first.spikes.sum(dim=(1, 2)) < model.min_spikes).float().mean(),
                   "presentations": torch.tensor(sum(len(p.shown) for p in presentations) / len(x)),
                   "spikes_per_example": spikes.sum() / len(x)}
        return RuleOutput(loss=loss_fn(output, y).mean(), output=output, metrics=metrics)

    def record_responses(self, counts: Tensor, y: Tensor, batch: int) -> None:
        if self.assign_window is not None:
            forget = math.exp(-batch / self.assign_window)
            self.responses.mul_(forget)
            self.counts.mul_(forget)
        self.responses.index_add_(0, y, counts.to(torch.float64))
        self.counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))

    # ------------------------------------------------------------------ the closed-form readout
    def begin_epoch(self, model: nn.Module) -> None:
        """Without a window the table restarts every epoch; with one it forgets by itself (and a run resumed
        mid-epoch keeps what it had)."""
        if self.assign_window is None:
            self.responses.zero_()
            self.counts.zero_()

    def statistics(self) -> list[Tensor]:
        return [self.responses, self.counts]

    @torch.no_grad()
    def solve(self, model: TemporalModel, statistics: list[Tensor]) -> None:
        responses, counts = statistics
        if not bool(counts.sum() > 0):
            raise ValueError("method=diehl_cook has no training response to assign labels from: this epoch gave no batch")
        readout = assignment_readout(assignments(responses, counts), model.output_dim)
        model.readout_weight.copy_(readout.to(model.readout_weight.dtype))
