"""Bengio et al.'s STDP-like rule (method=stdp_gradient): pre-synaptic activity times the temporal derivative of the
post-synaptic membrane, in the `direct` update mode on a spiking network's input weights W_1.

Bengio, Lee, Bornschein, Mesnard & Lin 2015 ("Towards biologically plausible deep learning") and Bengio, Mesnard,
Fischer, Zhang & Wu 2017 ("STDP-compatible approximation of back-propagation in an energy-based model"):

    dW_ij/dt  proportional to  rho_j(t) dV_i/dt                      (pre j, post i)

integrated over an example's `steps` steps of dt ms, on the grid (V_-1 = 0, the fresh state's membrane):

    dW_ij = lr * mean over the batch of  sum_t rho_j,t (V_i,t - V_i,t-1)            (the integral of rho dV/dt dt)

rho: the input spikes (`pre: spikes`) or their trace x_t (`pre: trace`, time constant tau_pre ms: a rate
estimate, spike_timing.trace); V: the first hidden layer's membrane before its own spike's reset (a spike's reset
shows as the next step's drop, models/neurons.py).

Why it approximates a gradient step (their argument; tests/test_stdp_gradient.py checks it against autograd): if
the membrane V_i = sum_j W_ij rho_j (+ whatever else drives it) moves down an objective J, dV/dt = -eta dJ/dV, then
rho_j dV_i/dt = -eta rho_j dJ/dV_i = -eta dJ/dW_ij. In their energy-based model the objective is the cost C
seen through a nudge: from the free fixed point, the nudged dynamics dV/dt = -eta (V - W rho + beta dC/dV) move V by
-eta beta dC/dV at the first step, so the rule's first step is exactly -eta beta dC(W rho)/dW, and later steps
approximately (V stays near W rho). On a network that is not driven by such dynamics (this rule on a plain LIF
layer, no nudge) it reads no task signal at all: docs/locality.md measures how far it then is from a gradient.

Everything else is method=stdp's (rules/plasticity/stdp.py): W_1 alone learns (the readout too with
`readout: gradient`), p.grad = -dW is applied by the module outside the optimiser, `w_max` clips W to
[-w_max, w_max] after the step (null: no clipping).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from learnbench.models.snn import run_layer
from learnbench.models.temporal import TemporalModel
from learnbench.options import NonNegative, Positive
from learnbench.rules.base import LossFn, RuleOutput
from learnbench.rules.locality import signals
from learnbench.rules.plasticity.spike_timing import trace
from learnbench.rules.plasticity.stdp import STDP, ReadoutMode, check_spiking, fix_the_rest

PreActivity = Literal["spikes", "trace"]


def membrane_change_correlation(rho: Tensor, membrane: Tensor, initial: Tensor | None = None) -> Tensor:
    """mean_b sum_t rho_b,t,j (V_b,t,i - V_b,t-1,i), [post, pre]: the rule's integral over a window of steps
    (rho, membrane: [batch, time, units]); V_b,-1 = `initial` [batch, post], the membrane before the window (None:
    zero, a fresh state)."""
    first = torch.zeros_like(membrane[:, :1]) if initial is None else initial[:, None]
    previous = torch.cat([first, membrane[:, :-1]], dim=1)
    return torch.einsum("bti,btj->ij", membrane - previous, rho) / rho.shape[0]


class STDPGradient(STDP):
    trains = ("spiking",)

    def __init__(
        self,
        lr: NonNegative = 1e-3,
        pre: PreActivity = "spikes",
        tau_pre: Positive = 20.0,
        w_max: Positive | None = None,
        readout: ReadoutMode = "fixed",
    ) -> None:
        super().__init__(tau_pre=tau_pre, readout=readout)
        self.lr, self.pre_activity, self.clip = lr, pre, w_max

    def reads(self) -> frozenset[str]:
        """The pre-synaptic activity and the post-synaptic membrane's time course; no task signal (readout=gradient:
        the readout's own gradient reads the output error)."""
        base = signals("pre", "post")
        return base | signals("output_error") if self.readout == "gradient" else base

    def check_model(self, model: nn.Module) -> None:
        check_spiking(model, "stdp_gradient")

    def init_state(self, model: TemporalModel, generator: torch.Generator) -> None:
        fix_the_rest(model, set(self.learned(model)))  # W_1 keeps its sign: no bounds

    def rho(self, pre: Tensor, dt: float) -> Tensor:
        return pre if self.pre_activity == "spikes" else trace(pre, self.tau_pre, dt)

    def estimate_grads(self, model: TemporalModel, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        """One pass on the encoded examples (the first layer's membranes kept), the readout's gradient (if it
        learns), then W_1's change written as p.grad = -dW."""
        pre, membrane, spikes, output = self.run_with_membrane(model, x)
        loss = loss_fn(output, y).mean()
        self.readout_grads(model, loss)
        w = model.get_parameter(model.first_weight_name)
        with torch.no_grad():
            dw = self.lr * membrane_change_correlation(self.rho(pre.to(w.dtype), float(model.dt)), membrane.to(w.dtype))
        w.grad = -dw
        return RuleOutput(loss=loss.detach(), output=output.detach(), metrics=self.activity_metrics(pre, spikes, dw))

    def run_with_membrane(self, model: TemporalModel, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
        """(input spikes, the first hidden layer's membranes, every hidden layer's spikes, output) of one pass."""
        with torch.no_grad():
            pre = model.encode(x)
            state = model.initial_state(len(pre))
            first_spikes, membrane, _ = run_layer(model.neuron, model.hidden[0](pre), state.hidden[0],
                                                  model.recurrent if len(model.hidden) == 1 else None)
            spikes = [first_spikes]
            for layer, layer_state in zip(model.hidden[1:], state.hidden[1:]):
                recurrent = model.recurrent if layer is model.hidden[-1] else None
                spikes.append(run_layer(model.neuron, layer(spikes[-1]), layer_state, recurrent)[0])
        with torch.set_grad_enabled(self.readout == "gradient"):
            output = model.output_from(spikes[-1])
        return pre, membrane, spikes, output

    def after_optimizer_step(self, model: nn.Module) -> None:
        if self.clip is not None:
            with torch.no_grad():
                model.get_parameter(model.first_weight_name).clamp_(-self.clip, self.clip)
