"""Forward gradient with activity tangents, FG-A (Ren et al. 2023).

Per-example tangents u_l on every pre-activation; one forward pass in forward-mode AD carries
them to the per-example losses, giving d_i = sum_l grad_{a_l} L_i . u_l,i exactly (no finite
difference). Then delta_l,i = d_i u_l,i / B and the weights follow by the local update. Tangents
on inactive ReLU units are zeroed (`mask_inactive`, Ren et al.'s default): those units cannot
change the loss, so their tangents add variance and no signal.

The primal and tangent travel together (torch.autograd.forward_ad dual tensors), and the same
pass records each block's primal input for the local update: one pass in all.

On an MLP chain (learnbench.models.MLP, Autoencoder) the pass is written out block by block:
the primal is computed once and K directions' tangents travel beside it as [K, B, width], so a
tangent costs one matmul per layer after the first (the first layer's input has no tangent), the
local update runs on the B primal rows whatever K is, and no dual-tensor machinery is involved.
Other models built of Blocks take the hooked dual-tensor path, with the batch repeated K times.
"""

from __future__ import annotations

import torch
from torch.autograd import forward_ad as fwAD

from learnbench.rules.activity_space import ActivitySpaceRule, chain_of, clip_, hooked, jvp_through, loss_jvp, relu_mask


class ForwardGradientActivity(ActivitySpaceRule):
    def __init__(self, mask_inactive: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.mask_inactive = mask_inactive

    def site_errors(self, model, blocks, x, y, loss_fn):
        K, B = self.directions, x.shape[0]
        widths = [b.pre[0].out_features for b in blocks]
        u = self.sample_site_noise(K * B, widths, blocks[0].pre[0].weight.dtype)
        if chain_of(model) is not None:
            return self._chain_site_errors(blocks, x, y, loss_fn, [n.view(K, B, -1) for n in u])
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

    def _chain_site_errors(self, blocks, x, y, loss_fn, u):
        """One primal pass, the K directions' tangents [K, B, w] beside it (same noise rows as the hooked path)."""
        K, B = self.directions, x.shape[0]
        records, z, dz = [], x.flatten(1), None
        for i, block in enumerate(blocks):
            linear, rest = block.pre[0], block.pre[1:]
            h = linear(z)
            dh = None if dz is None else torch.nn.functional.linear(dz, linear.weight)  # [K*B rows] in one matmul
            records.append((z, h))
            a, da = jvp_through(rest, h, dh)
            mask = relu_mask(block, a) if self.mask_inactive else None
            if mask is not None:
                u[i] = u[i] * mask
            da = u[i] if da is None else da + u[i]
            z, dz = jvp_through(block.activation, a, da)
        output = z

        losses, d = loss_jvp(loss_fn, output, y, dz)  # [B], [K, B]
        d = clip_(d.clone(), self.clip).unsqueeze(-1)
        deltas = [(d * n).sum(0) / (K * B) for n in u]
        return deltas, records, losses.mean(), output
