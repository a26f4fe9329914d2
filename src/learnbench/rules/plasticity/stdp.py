"""Spike-timing-dependent plasticity of a spiking network's input weights (method=stdp), in the `direct` update mode.

The rule learns W_1, the weights from the input to the first spiking layer (`model.first_weight_name`), without
any loss: every batch it encodes the examples once (`model.encode`: a rate code draws new spikes per call), runs
the network on those same input spikes (`model.hidden_spikes`) and changes W_1 by pair-based STDP (or the
triplet rule) between the input spikes (pre) and the first hidden layer's spikes (post), a mean over the batch
(rules/plasticity/spike_timing.py has the maths and its units: tau_* and the model's dt in ms):

    dW = A+ sum_t x_t s_post,t - A- sum_t y'_t s_pre,t   (+ the triplet terms)   additive
    dW = A+ (w_max - W) (...) - A- W (...)                                         multiplicative (soft bounds)

It writes p.grad = -dW: the module all-reduces it (the mean over ranks: the union batch's mean) and applies
W -= p.grad itself, never through the optimiser (no momentum, no Adam scaling, no weight decay; design note 17).
After the step (`after_optimizer_step`) additive bounds clip W to [0, w_max] and, with `normalize_to`, every
hidden neuron's incoming weights are rescaled to that sum (Diehl & Cook 2015 keep 78 for 784 inputs).

The rest of the network stays fixed (the rule sets requires_grad=False on every other parameter when it is
bound), except the readout with `readout: gradient`: trained by backprop through the readout alone (the hidden
spikes are inputs to it) on the model's loss, by the run's optimiser. The loss and output reported are those of
the same pass, on the same input spikes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from learnbench.models.temporal import TemporalModel
from learnbench.options import NonNegative, Positive
from learnbench.rules.base import DIRECT, GRADIENT, LearningRule, LossFn, RuleOutput
from learnbench.rules.plasticity.spike_timing import (
    Bounds, Pairing, STDPTimes, pair_correlations, triplet_correlations, weight_change,
)
from learnbench.rules.locality import signals

ReadoutMode = Literal["fixed", "gradient"]


def current_code_problem(method: str) -> str:
    return (f"method={method} pairs input spikes with hidden spikes, but model.encoding=current feeds the "
            f"example itself as a current: use model.encoding=rate or model.encoding=latency")


def option_problem(options: dict, method: str = "stdp", model_kind: str | None = None,
                   model_options: dict | None = None) -> str | None:
    """What is wrong with a combination of the rule's options (`options`: its config) or with the model's
    (`model_kind`, `model_options`: a spiking model's config), in one line; None if nothing. train.check_config
    asks it before anything is built; the constructor and check_model refuse the same."""
    if options.get("triplet") and options.get("pairing", "all_to_all") != "all_to_all":
        return f"method={method} with triplet=true is Pfister & Gerstner's all-to-all model: set method.pairing=all_to_all"
    if model_kind == "spiking" and (model_options or {}).get("encoding", "current") == "current":
        return current_code_problem(method)
    return None


def check_spiking(model: nn.Module, method: str) -> None:
    """Refuse, in one line, a model the STDP rules cannot read: not spiking, or an input that is not spikes."""
    if not isinstance(model, TemporalModel) or getattr(model, "kind", None) != "spiking":
        raise ValueError(f"method={method} learns from spike timing and trains only spiking networks (model=snn); "
                         f"{type(model).__name__} is not one")
    if getattr(model, "first_weight_name", None) is None:  # model=lsm: a fixed spiking reservoir
        raise ValueError(f"method={method} learns the input weights of a spiking network (model=snn); {type(model).__name__} "
                         f"has none that learn (model=lsm is a fixed reservoir: use method=ridge or bp on its readout)")
    if getattr(model, "encoding", None) == "current":
        raise ValueError(current_code_problem(method))


def readout_names(model: TemporalModel) -> list[str]:
    return list(model.parameter_groups()["readout"])


def fix_the_rest(model: TemporalModel, learned: set[str]) -> None:
    """requires_grad=False on every parameter the rule does not learn (the network around the plastic layer is fixed)."""
    for name, p in model.named_parameters():
        if name not in learned:
            p.requires_grad_(False)


class STDP(LearningRule):
    trains = ("spiking",)
    noise_differs_per_rank = False  # draws nothing (a rate code's spikes come from the model's own generator)
    option_problem = staticmethod(option_problem)  # train.check_config asks it about combinations of options

    def __init__(
        self,
        tau_pre: Positive = 20.0,
        tau_post: Positive = 20.0,
        a_plus: NonNegative = 1e-3,
        a_minus: NonNegative = 1e-3,
        bounds: Bounds = "additive",
        w_max: Positive = 1.0,
        pairing: Pairing = "all_to_all",
        triplet: bool = False,
        a3_plus: NonNegative = 0.0,
        a3_minus: NonNegative = 0.0,
        tau_x: Positive = 101.0,
        tau_y: Positive = 125.0,
        normalize_to: Positive | None = None,
        readout: ReadoutMode = "fixed",
    ) -> None:
        super().__init__()
        problem = option_problem(dict(triplet=triplet, pairing=pairing))
        if problem:
            raise ValueError(problem)
        self.tau_pre, self.tau_post, self.tau_x, self.tau_y = tau_pre, tau_post, tau_x, tau_y
        self.a_plus, self.a_minus, self.a3_plus, self.a3_minus = a_plus, a_minus, a3_plus, a3_minus
        self.bounds, self.w_max, self.pairing, self.triplet = bounds, w_max, pairing, triplet
        self.normalize_to, self.readout = normalize_to, readout

    # ------------------------------------------------------------------ set-up
    def reads(self) -> frozenset[str]:
        """Pre and post spike timing alone (multiplicative bounds: and the synapse's own weight); readout=gradient adds
        the readout's own gradient (the output error)."""
        base = signals("pre", "post") | (signals("own_weight") if self.bounds == "multiplicative" else frozenset())
        return base | signals("output_error") if self.readout == "gradient" else base

    def check_model(self, model: nn.Module) -> None:
        check_spiking(model, "stdp")

    def learned(self, model: TemporalModel) -> dict[str, str]:
        modes = {model.first_weight_name: DIRECT}
        if self.readout == "gradient":
            modes.update({name: GRADIENT for name in readout_names(model)})
        return modes

    def init_state(self, model: TemporalModel, generator: torch.Generator) -> None:
        """The rest of the network fixed; W_1 clipped into the bounds [0, w_max] from the start (an initialisation
        with negative weights would otherwise leave them outside soft bounds)."""
        fix_the_rest(model, set(self.learned(model)))
        with torch.no_grad():
            model.get_parameter(model.first_weight_name).clamp_(0.0, self.w_max)

    def update_modes(self, model: nn.Module) -> dict[str, str]:
        return {name: mode for name, mode in self.learned(model).items() if model.get_parameter(name).requires_grad}

    # ------------------------------------------------------------------ every step
    def begin_step(self, step: int) -> None:
        """No noise of its own to re-seed."""

    def change(self, w: Tensor, pre: Tensor, post: Tensor, dt: float) -> Tensor:
        """dW [post, pre] from spike trains [batch, time, units] (means over the batch), before any clipping."""
        times = STDPTimes(self.tau_pre, self.tau_post, dt, self.tau_x, self.tau_y)
        potentiation, depression = pair_correlations(pre, post, times, self.pairing)
        dw = weight_change(w, potentiation, depression, self.a_plus, self.a_minus, self.bounds, self.w_max)
        if self.triplet:
            potentiation, depression = triplet_correlations(pre, post, times)
            dw = dw + weight_change(w, potentiation, depression, self.a3_plus, self.a3_minus, self.bounds, self.w_max)
        return dw

    def run(self, model: TemporalModel, x: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """(input spikes, hidden spikes per layer, output) of one pass: the examples encoded once; the hidden layers
        without a graph, the readout with one when it learns by gradient."""
        with torch.no_grad():
            pre = model.encode(x)
            spikes = model.hidden_spikes(pre)
        with torch.set_grad_enabled(self.readout == "gradient"):
            output = model.output_from(spikes[-1])
        return pre, spikes, output

    def estimate_grads(self, model: TemporalModel, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        """One pass on the encoded examples, the readout's gradient (if it learns), then W_1's change from the
        same spikes, written as p.grad = -dW (the direct update mode)."""
        pre, spikes, output = self.run(model, x)
        loss = loss_fn(output, y).mean()
        self.readout_grads(model, loss)
        w = model.get_parameter(model.first_weight_name)
        with torch.no_grad():
            dw, metrics = self.weight_change(w, pre.to(w.dtype), spikes[0].to(w.dtype), float(model.dt), output.detach(), y, loss_fn)
        w.grad = -dw
        return RuleOutput(loss=loss.detach(), output=output.detach(), metrics={**self.activity_metrics(pre, spikes, dw), **metrics})

    def weight_change(self, w: Tensor, pre: Tensor, post: Tensor, dt: float, output: Tensor, y: Tensor,
                      loss_fn: LossFn) -> tuple[Tensor, dict[str, Tensor]]:
        """dW from the pre and first-layer post spikes, and the rule's own metrics (none: plain STDP reads no task signal)."""
        return self.change(w.detach(), pre, post, dt), {}

    def readout_grads(self, model: TemporalModel, loss: Tensor) -> None:
        if self.readout != "gradient":
            return
        params = [model.get_parameter(name) for name in readout_names(model)]
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g

    @staticmethod
    def activity_metrics(pre: Tensor, spikes: list[Tensor], dw: Tensor) -> dict[str, Tensor]:
        """Spikes per input and per hidden unit per step, and the size of the change (logged as rule/<name>)."""
        return {"pre_rate": pre.mean(), "post_rate": spikes[0].mean(), "dw_abs": dw.abs().mean()}

    def after_optimizer_step(self, model: nn.Module) -> None:
        """Additive bounds: W clipped to [0, w_max]; then the per-neuron normalisation to `normalize_to`."""
        w = model.get_parameter(model.first_weight_name)
        with torch.no_grad():
            if self.bounds == "additive":
                w.clamp_(0.0, self.w_max)
            if self.normalize_to is not None:
                w.mul_(self.normalize_to / w.sum(dim=1, keepdim=True).clamp_min(1e-12))
