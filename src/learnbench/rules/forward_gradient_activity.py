"""Forward gradient with activity tangents, FG-A (Ren et al. 2023).

Per-example tangents u_l on every pre-activation; one forward pass in forward-mode AD carries
them to the per-example losses, giving d_i = sum_l grad_{a_l} L_i . u_l,i exactly (no finite
difference). Then delta_l,i = d_i u_l,i / B and the weights follow by the local update. Tangents
on inactive ReLU units are zeroed (`mask_inactive`, Ren et al.'s default): those units cannot
change the loss, so their tangents add variance and no signal.

The primal and tangent travel together (torch.autograd.forward_ad dual tensors), and the same
pass records each block's primal input for the local update: one pass in all. With K > 1 the
batch is repeated K times, each copy with its own tangents.
"""

from __future__ import annotations

from torch.autograd import forward_ad as fwAD

from learnbench.rules.activity_space import ActivitySpaceRule, clip_, hooked, relu_mask


class ForwardGradientActivity(ActivitySpaceRule):
    def __init__(self, mask_inactive: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.mask_inactive = mask_inactive

    def site_errors(self, model, blocks, x, y, loss_fn):
        K, B = self.directions, x.shape[0]
        widths = [b.pre[0].out_features for b in blocks]
        u = self.sample_site_noise(K * B, widths, blocks[0].pre[0].weight.dtype)
        records: list = [None] * len(blocks)

        def record(i, z, h):
            records[i] = (fwAD.unpack_dual(z).primal, fwAD.unpack_dual(h).primal)

        def add_tangent(i, a, block):
            primal, tangent = fwAD.unpack_dual(a)
            mask = relu_mask(block, primal) if self.mask_inactive else None
            if mask is not None:
                u[i] = u[i] * mask
            return fwAD.make_dual(primal, u[i] if tangent is None else tangent + u[i])

        xs = x.repeat(K, *([1] * (x.dim() - 1)))
        ys = y.repeat(K, *([1] * (y.dim() - 1)))
        with fwAD.dual_level(), hooked(blocks, perturb=add_tangent, record=record):
            output_dual = model(xs)
            losses, d = fwAD.unpack_dual(loss_fn(output_dual, ys))
            output = fwAD.unpack_dual(output_dual).primal[:B]
        d = clip_(d.clone(), self.clip).unsqueeze(1)
        deltas = [d * n / (K * B) for n in u]
        return deltas, records, losses[:B].mean(), output
