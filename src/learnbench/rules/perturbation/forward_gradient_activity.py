"""Forward gradient with activity tangents, FG-A (Ren et al. 2023).

Per-example tangents u_l on every pre-activation; one forward pass in forward-mode AD carries
them to the per-example losses, giving d_i = sum_l grad_{a_l} L_i . u_l,i exactly (no finite
difference). Then delta_l,i = d_i u_l,i / B and the weights follow by the local update. Tangents
on inactive ReLU units are zeroed (`mask_inactive`, Ren et al.'s default): those units cannot
change the loss, so their tangents add variance and no signal.

The walk computes the primal once and carries the K directions' tangents beside it as
[K, B, ...]: a tangent costs one matmul per layer after the first (the input has no tangent),
and the local update runs on the B primal rows whatever K is.

On a temporal model (model=rnn: models/rnn_sites.py) the tangents sit on the input current u_t and the readout y_t at
every step and run forward through the recurrence beside the primal: d_i = sum_t grad_{u_t} L_i . v_t,i
+ grad_{y_t} L_i . w_t,i exactly. The RNN's units are tanh or linear: `mask_inactive` has no ReLU to act on.
On model=snn (models/snn_sites.py) the tangents sit on every layer's membrane input current and the readout's,
and pass through the spikes by the surrogate's forward-mode rule: d_i is the surrogate gradient dotted with them.
"""

from __future__ import annotations

import torch

from learnbench.models.temporal import TemporalModel
from learnbench.rules.base import clipped
from learnbench.rules.local import forward_trace, loss_jvp, relu_mask
from learnbench.rules.local_losses import Local, LocalLossesMixin, forward_gradient_activity_local
from learnbench.rules.perturbation.activity_space import ActivitySpaceRule, parameter_dtype
from learnbench.rules.locality import signals, with_local_losses


class ForwardGradientActivity(LocalLossesMixin, ActivitySpaceRule):
    local_base = "fg_a"

    def __init__(self, mask_inactive: bool = True, local: Local = "none", **kwargs):
        """`local`: loss (l_fg_a) or greedy (lg_fg_a): tangents paired with their stage's (group's) local
        loss; readout and heads exact (rules/local_losses.py), so `exact_readout` changes nothing there."""
        super().__init__(**kwargs)
        self.mask_inactive = mask_inactive
        self.local = local

    def reads(self) -> frozenset[str]:
        """The directional derivative of an activity tangent carried to the loss, times the tangent and the input;
        mask_inactive zeroes tangents on inactive ReLU units (the unit's derivative)."""
        base = signals("pre", "global_scalar", "own_noise", "perturbed_pass", "output_error")
        return with_local_losses(base | signals("post_derivative") if self.mask_inactive else base, self.local)

    def local_grads(self, model, x, y, loss_fn):
        return forward_gradient_activity_local(self, model, self.local_heads, x, y, loss_fn)

    def site_errors(self, model, x, y, loss_fn):
        K, B = self.directions, x.shape[0]
        shapes = self.site_shapes(model, x)
        noise = self.drop_readout_noise(self.sample_site_noise(K * B, shapes, parameter_dtype(model)))
        u = [n.view(K, B, *s) for n, s in zip(noise, shapes)]
        if isinstance(model, TemporalModel):
            trace, output, d_output = model.walk(x, tangents=u)
            traces = [trace]
        else:

            def add_tangent(i, block, a, da):
                mask = relu_mask(block, a) if self.mask_inactive else None
                if mask is not None:
                    u[i] = u[i] * mask
                return a, u[i] if da is None else da + u[i]

            traces, output, d_output = forward_trace(model, x, perturb=add_tangent)
        losses, d = loss_jvp(loss_fn, output, y, d_output)  # [B], [K, B]
        d = clipped(d, self.clip)
        deltas = [(d.view(K, B, *[1] * len(s)) * n).sum(0) / (K * B) for n, s in zip(u, shapes)]
        if self.exact_readout:
            deltas[-1] = self.exact_readout_delta(model, traces[-1], y, loss_fn)
        return deltas, traces, losses.mean(), output
