"""Forward gradient with weight tangents, FG-W (Baydin et al. 2022).

The exact directional derivative grad . v by forward-mode AD in one pass that carries the primal
and the tangent together; estimate g = (grad . v) v. With K directions the tangents are batched
while the primal stays unbatched, so the primal pass is computed once.

On an MLP chain (learnbench.models.MLP, Autoencoder) whose trainable parameters are all in the
Linear layers, the pass is written out block by block: per layer the primal W z + b and the
tangent V z + v_b + W dz ([K, B, out], the directions' W dz in one matmul), nothing for the
input's tangent (zero). torch.func.jvp (the general path, any model) materialises that zero
tangent and multiplies it through the first layer: one wasted input-layer matmul per step.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, jvp, vmap
from torch.nn import functional as F

from learnbench.rules.activity_space import chain_of, jvp_through, loss_jvp
from learnbench.rules.parameter_space import ParameterSpaceRule, batch_loss


class ForwardGradientWeight(ParameterSpaceRule):
    @torch.no_grad()
    def directional_derivatives(self, model, params, tangents, x, y, loss_fn):
        blocks = chain_of(model)
        if blocks is not None and all(not any(p.requires_grad for p in b.pre[1:].parameters()) for b in blocks):
            return self._chain_jvp(model, blocks, params, tangents, x, y, loss_fn)

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

    def _chain_jvp(self, model, blocks, params, tangents, x, y, loss_fn):
        names = {id(p): n for n, p in model.named_parameters()}

        def value_and_tangent(p):  # (the parameter, its tangent [K, ...] or None when frozen)
            if p is None:
                return None, None
            n = names[id(p)]
            return params.get(n, p.detach()), tangents.get(n)

        z, dz = x.flatten(1), None  # dz: [K, B, width]
        for block in blocks:
            linear = block.pre[0]
            (W, V), (b, vb) = value_and_tangent(linear.weight), value_and_tangent(linear.bias)
            h = F.linear(z, W, b)
            dh = None if dz is None else F.linear(dz, W)
            if V is not None:
                dh = torch.matmul(z, V.mT) if dh is None else dh.baddbmm_(z.expand(V.shape[0], *z.shape), V.mT)
            if vb is not None:
                dh = vb.unsqueeze(1).expand(vb.shape[0], *h.shape) if dh is None else dh.add_(vb.unsqueeze(1))
            a, da = jvp_through(block.pre[1:], h, dh)
            z, dz = jvp_through(block.activation, a, da)
        output = z
        losses, dlosses = loss_jvp(loss_fn, output, y, dz)
        return losses.mean(), output, dlosses.mean(-1)
