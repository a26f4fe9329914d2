"""Reward-modulated STDP with an eligibility trace (method=rstdp): Izhikevich 2007, Florian 2007's MSTDPET.

The pair-based STDP terms of the input weights W_1 (pre: the input spikes, post: the first hidden layer's; the
maths of rules/plasticity/spike_timing.py, times in ms) do not change W at once: they accumulate, for every
example, into a per-synapse eligibility trace that decays with tau_e,

    e_ij,t = exp(-dt / tau_e) e_ij,t-1 + A+ x_j,t s_i,t - A- y'_i,t s_j,t        (e = 0 before the example)

and a reward R, one per example delivered at its last step, turns the trace into a weight change

    dW = lr * mean over the batch of (R - baseline) e_T

R: `reward: correct` gives +1 when the readout's prediction is right and -1 when it is wrong (the prediction is
the class whose loss is lowest: the task's own prediction for both losses over time), `reward: loss` gives minus
the example's loss. The baseline is a running mean of R (b <- d b + (1 - d) mean R, d = `baseline_decay`; the
batch mean taken over ranks, so every rank keeps the same baseline), a buffer: checkpointed. It is read before
this batch's rewards update it. Through the `direct` update mode as method=stdp (p.grad = -dW, applied by the
module without the optimiser); `w_max` clips W to [-w_max, w_max] after the step (null: no clipping). The readout
is fixed or (`readout: gradient`) trained by backprop on the loss, and the rest of the network is fixed.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from learnbench.models.temporal import TemporalModel
from learnbench.options import HalfOpenFraction, NonNegative, Positive
from learnbench.rules.base import LossFn
from learnbench.rules.plasticity.spike_timing import Pairing, before_this_step, trace
from learnbench.rules.plasticity.stdp import STDP, ReadoutMode, check_spiking, fix_the_rest
from learnbench.rules.locality import signals

Reward = Literal["correct", "loss"]


def with_class(y: Tensor, c: int) -> Tensor:
    """The targets with every example's class set to c: class indices [batch], or the (class, weight) pairs at every
    step of a sequence [batch, time, 2] (tasks.FinalWindowClassification), whose weights stay as they are."""
    if y.dim() == 1:
        return torch.full_like(y, c)
    relabelled = y.clone()
    relabelled[..., 0] = c
    return relabelled


def class_of(y: Tensor) -> Tensor:
    """Each example's class [batch] from targets as `with_class` takes them."""
    return y if y.dim() == 1 else y[:, -1, 0].long()


class RewardModulatedSTDP(STDP):
    trains = ("spiking",)

    def __init__(
        self,
        lr: NonNegative = 0.1,
        tau_e: Positive = 1000.0,
        tau_pre: Positive = 20.0,
        tau_post: Positive = 20.0,
        a_plus: NonNegative = 1.0,
        a_minus: NonNegative = 1.0,
        pairing: Pairing = "all_to_all",
        reward: Reward = "correct",
        baseline_decay: HalfOpenFraction = 0.9,
        w_max: Positive | None = None,
        readout: ReadoutMode = "fixed",
    ) -> None:
        super().__init__(tau_pre=tau_pre, tau_post=tau_post, a_plus=a_plus, a_minus=a_minus, pairing=pairing, readout=readout)
        self.lr, self.tau_e, self.reward_kind, self.baseline_decay, self.clip = lr, tau_e, reward, baseline_decay, w_max
        self.register_buffer("baseline", torch.zeros((), dtype=torch.float64))

    def reads(self) -> frozenset[str]:
        """Pre and post spike timing in an eligibility trace, gated by one reward per example against its baseline."""
        base = signals("pre", "post", "global_scalar")
        return base | signals("output_error") if self.readout == "gradient" else base

    def check_model(self, model: nn.Module) -> None:
        check_spiking(model, "rstdp")

    def init_state(self, model: TemporalModel, generator: torch.Generator) -> None:
        fix_the_rest(model, set(self.learned(model)))  # W_1 keeps its sign: no bounds at the start

    # ------------------------------------------------------------------ the maths
    def eligibility_change(self, pre: Tensor, post: Tensor, dt: float, weights: Tensor) -> Tensor:
        """sum_b weights_b e_b,T / batch, [post, pre]: each example's eligibility at its last step, weighed by
        `weights` [batch] (R - baseline), averaged over the batch; e_T = sum_t exp(-(T-1-t) dt / tau_e) (STDP at t)."""
        steps, batch = pre.shape[1], pre.shape[0]
        x = trace(pre, self.tau_pre, dt, self.pairing)
        y_before = before_this_step(trace(post, self.tau_post, dt, self.pairing), self.tau_post, dt)
        ages = torch.arange(steps - 1, -1, -1, dtype=pre.dtype, device=pre.device)
        kernel = torch.exp(-ages * dt / self.tau_e)  # how much of step t's STDP term is left at the last step
        scale = weights.to(pre.dtype)[:, None, None] * kernel[None, :, None]  # [batch, time, 1]
        potentiation = torch.einsum("bti,btj->ij", post * scale, x)
        depression = torch.einsum("bti,btj->ij", y_before * scale, pre)
        return (self.a_plus * potentiation - self.a_minus * depression) / batch

    def change_from_rewards(self, pre: Tensor, post: Tensor, dt: float, rewards: Tensor) -> Tensor:
        """dW = lr * mean_b (R_b - baseline) e_b,T, with the baseline as it stands (before this batch)."""
        return self.lr * self.eligibility_change(pre, post, dt, rewards - self.baseline.to(rewards.dtype))

    def rewards(self, output: Tensor, y: Tensor, loss_fn: LossFn) -> Tensor:
        """R per example: +1 correct / -1 wrong (the class of lowest loss is the prediction), or minus the loss."""
        if self.reward_kind == "loss":
            return -loss_fn(output, y).detach()
        classes = output.shape[-1]
        losses = torch.stack([loss_fn(output, with_class(y, c)) for c in range(classes)], dim=1)
        return torch.where(losses.argmin(dim=1) == class_of(y), 1.0, -1.0).to(output.dtype)

    # ------------------------------------------------------------------ every step
    def weight_change(self, w: Tensor, pre: Tensor, post: Tensor, dt: float, output: Tensor, y: Tensor,
                      loss_fn: LossFn) -> tuple[Tensor, dict[str, Tensor]]:
        """dW from the rewards against the baseline, which then moves towards this batch's mean reward (all-reduced:
        the same baseline on every rank)."""
        rewards = self.rewards(output, y, loss_fn)
        dw = self.change_from_rewards(pre, post, dt, rewards)
        mean_reward = self.reduce_mean(rewards.mean().to(torch.float64))
        baseline_before = self.baseline.clone()
        self.baseline.mul_(self.baseline_decay).add_((1 - self.baseline_decay) * mean_reward)
        return dw, {"reward": rewards.mean(), "baseline": baseline_before}

    def after_optimizer_step(self, model: nn.Module) -> None:
        if self.clip is not None:
            with torch.no_grad():
                model.get_parameter(model.first_weight_name).clamp_(-self.clip, self.clip)

