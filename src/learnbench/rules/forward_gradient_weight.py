"""Forward gradient with weight tangents, FG-W (Baydin et al. 2022).

The exact directional derivative grad . v by forward-mode AD (torch.func.jvp) in one pass that
carries the primal and the tangent together; estimate g = (grad . v) v. With K directions the
tangents are vmapped while the primal stays unbatched, so the primal pass is computed once.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, jvp, vmap

from learnbench.rules.parameter_space import ParameterSpaceRule, batch_loss


class ForwardGradientWeight(ParameterSpaceRule):
    @torch.no_grad()
    def directional_derivatives(self, model, params, tangents, x, y, loss_fn):
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
