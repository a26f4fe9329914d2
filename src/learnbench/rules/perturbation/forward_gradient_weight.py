"""Forward gradient with weight tangents, FG-W (Baydin et al. 2022).

The exact directional derivative grad . v by forward-mode AD in one pass that carries the primal
and the tangent together; estimate g = (grad . v) v. With K directions the tangents are batched
while the primal stays unbatched, so the primal pass is computed once.

On a chain of blocks (learnbench.models.BlockChain) whose norms are LayerNorms, GroupNorms or have no
trainable parameters, the pass is the shared block walk (rules/local.py) with the weights' tangent added in
each linear map: per layer the tangent V z + v_b + W dz ([K, B, ...], the directions' W dz in one
matmul, nothing for the input's tangent, which is zero), and the norm's jvp written out with its
own parameters' tangents (d_weight xhat + d_bias: norm_jvp; Ren's S/1/1 LayerNorms, M/1/16's per-group
GroupNorm). torch.func.jvp (the general path, any other model, or a chain with another norm that learns:
BatchNorm) recomputes the primal, materialises that zero tangent and multiplies it through the first layer:
docs/speed.md has what the walk saves.

On a temporal model the pass is the model's own walk (model=rnn: models/rnn_sites.rnn_walk) with the weights' tangents V_rec, V_in, v_b,
V_out, v_bout (those that learn) added at u_t and y_t; the hidden state's tangent runs forward
beside the primal (dh_0 = 0). Through jvp the 100-step Python loop made a trial of Murray's task
(experiment=murray_sine) about 15x slower; written out it costs what fg_a's walk does.

On model=snn the walk (models/snn_sites.py) carries the tangents beside the network's time loop, and the spike's
tangent is the surrogate's: dS = psi(V - A) d(V - A) (Neuron.step_tangent, as SurrogateSpike.jvp). So d is the
surrogate gradient (what bp follows) dotted with v, exactly; the true derivative of the step is 0 almost
everywhere and would give no signal.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jvp, vmap
from torch.nn import functional as F

from learnbench.models.blocks import BlockChain
from learnbench.models.temporal import TemporalModel
from learnbench.rules.local import NORMS_WRITTEN_OUT, forward_trace, jvp_through, linear_tangent, loss_jvp, norm_jvp
from learnbench.rules.local_losses import Local, LocalLossesMixin, forward_gradient_weight_local
from learnbench.rules.perturbation.parameter_space import ParameterSpaceRule, batch_loss
from learnbench.rules.locality import signals, with_local_losses


class ForwardGradientWeight(LocalLossesMixin, ParameterSpaceRule):
    local_base = "fg_w"

    def __init__(self, local: Local = "none", **kwargs):
        """`local`: loss (l_fg_w) or greedy (lg_fg_w): directions on the hidden blocks only, each paired with
        its stage's (group's) local loss; readout and heads exact (rules/local_losses.py)."""
        super().__init__(**kwargs)
        self.local = local
        if local != "none" and self.comm == "scalars":
            raise ValueError(f"method.comm=scalars is not offered with method.local={local}: the readout's and the heads' "
                             f"exact gradients differ per rank and need the gradient all-reduce (use comm=grads)")

    def reads(self) -> frozenset[str]:
        """The directional derivative (a scalar) of a tangent pass through the network, which ends in the loss's
        derivative at the output, times its own weight tangent. The tangent pass runs through every unit's derivative
        (on model=snn the spike's surrogate, SurrogateSpike.jvp), the synapse's own post-synaptic unit's included."""
        base = signals("global_scalar", "own_noise", "perturbed_pass", "output_error", "post_derivative")
        return with_local_losses(base | signals("pre") if self.exact_readout else base, self.local)

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        # A model without a walk of its own goes through torch.func.jvp of its forward pass, inside which a rate code
        # cannot advance its draws' counter (a transform refuses to mutate the captured buffer: a traceback at step 1).
        if getattr(model, "draws_inputs", False) and not getattr(model, "has_sites", False):
            raise ValueError(f"method=fg_w differentiates {type(model).__name__}'s forward pass by jvp, and model.encoding=rate "
                             f"draws new input spikes inside it: use model.encoding=current or latency, or method=bp")

    def local_grads(self, model, x, y, loss_fn):
        return forward_gradient_weight_local(self, model, self.local_heads, x, y, loss_fn)

    @torch.no_grad()
    def directional_derivatives(self, model, params, tangents, x, y, loss_fn):
        if isinstance(model, BlockChain) and all(_walk_covers(b.norm) for b in model.blocks):
            return self._chain_jvp(model, params, tangents, x, y, loss_fn)
        if isinstance(model, TemporalModel) and model.has_sites and set(tangents) <= set(model.walk_parameters()):
            return self._temporal_jvp(model, params, tangents, x, y, loss_fn)

        def loss_and_output(p):
            output = functional_call(model, p, (x,))
            return batch_loss(loss_fn, output, y), output

        def along(tangent):
            return jvp(loss_and_output, (params,), (tangent,), has_aux=True)

        if self.directions == 1:
            loss, d, output = along({n: t[0] for n, t in tangents.items()})
            return loss, output, d.unsqueeze(0)
        loss, d, _ = vmap(along, out_dims=(None, 0, None))(tangents)
        return loss, None, d

    def _temporal_jvp(self, model, params, tangents, x, y, loss_fn):
        """The model's forward-mode pass written out (its `walk`, K directions batched, the primal once):
        torch.func.jvp pays its dual-tensor (and vmap) overhead on every op of the time loop."""
        _, output, d_output = model.walk(x, weight_tangents=tangents, params=params)
        losses, dlosses = loss_jvp(loss_fn, output, y, d_output)
        return losses.mean(), output, dlosses.mean(-1)

    def _chain_jvp(self, model, params, tangents, x, y, loss_fn):
        names = {id(p): n for n, p in model.named_parameters()}

        def linear_map(i, block, z):  # the rule's detached parameters, not the model's Parameters
            linear = block.linear
            weight = params.get(names[id(linear.weight)], linear.weight)
            bias = None if linear.bias is None else params.get(names[id(linear.bias)], linear.bias)
            if isinstance(linear, nn.Linear):
                return F.linear(z, weight, bias)
            return F.conv2d(z, weight, bias, linear.stride, linear.padding, linear.dilation, linear.groups)

        def block_linear_tangent(i, block, z, dz):  # W dz + V z + v_b
            linear = block.linear
            V, vb = tangents.get(names[id(linear.weight)]), None if linear.bias is None else tangents.get(names[id(linear.bias)])
            return linear_tangent(linear, z, dz, V, vb)

        def norm_tangent(i, block, h, dh):  # a LayerNorm's or GroupNorm's own parameters: + d_weight xhat + d_bias (norm_jvp)
            norm = block.norm
            dw, db = (None if q is None else tangents.get(names[id(q)]) for q in (getattr(norm, "weight", None), getattr(norm, "bias", None)))
            if dw is None and db is None:
                return jvp_through(norm, h, dh)
            return norm_jvp(norm, h, dh, dw, db)  # dh None: the linear part has no tangent (frozen, zero input tangent)

        traces, output, d_output = forward_trace(model, x, linear_map=linear_map, linear_tangent=block_linear_tangent, norm_tangent=norm_tangent)
        if self.exact_readout:
            self._readout_input = traces[-1].input  # the readout's exact gradient reads it (no second forward)
        losses, dlosses = loss_jvp(loss_fn, output, y, d_output)
        return losses.mean(), output, dlosses.mean(-1)


def _walk_covers(norm: nn.Module) -> bool:
    """The chain walk carries tangents of a LayerNorm's or GroupNorm's parameters (norm_jvp: Ren's S/1/1
    and M/1/16); any other norm with trainable parameters (BatchNorm) takes torch.func's general jvp."""
    return isinstance(norm, NORMS_WRITTEN_OUT) or not any(p.requires_grad for p in norm.parameters())
