"""Weight perturbation (Jabri & Flower 1992).

Perturb every parameter at once, theta + sigma v, and difference the batch loss:
    d = (L(theta + sigma v) - baseline) / sigma,   g = d v.
Baselines: `clean` L(theta) (one extra forward, shared by all K directions), `antithetic`
pairs (L(theta + sigma v) - L(theta - sigma v)) / (2 sigma), `running` an exponential mean of
past clean losses, or `none` (the original covariance form, E[L v] = E[(L - L0) v]: unbiased, with
a much higher variance).

K > 1 directions on a chain of dense blocks (MLP, autoencoder) use linearity in the first layer:
(W + sigma V_k) x = W x + sigma V_k x, the clean W x computed once (it is the clean pass's) and the
K products V_k x as one batched matmul; the later layers, whose inputs differ per direction, run
batched [K, B, ...] on W + sigma V_k built in a buffer kept across steps. Any other model (or K = 1)
takes functional_call (vmapped over the directions): the same losses, to rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from learnbench.models.blocks import BlockChain
from learnbench.options import Fraction, Positive
from learnbench.rules.perturbation.node_perturbation import Baseline
from learnbench.rules.perturbation.parameter_space import ParameterSpaceRule, batch_loss
from learnbench.rules.running_baseline import RunningBaseline
from learnbench.rules.locality import signals


class WeightPerturbation(ParameterSpaceRule):
    def __init__(self, sigma: Positive = 1e-3, baseline: Baseline = "clean", antithetic: bool = False, running_decay: Fraction = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.sigma, self.baseline, self.antithetic = sigma, baseline, antithetic
        self.running = RunningBaseline(running_decay)

    def reads(self) -> frozenset[str]:
        """Loss values only: dL / sigma times its own weight noise (no activity at all); exact_readout: the readout's
        exact gradient reads its input and the output error."""
        base = signals("global_scalar", "own_noise", "perturbed_pass")
        return base | signals("pre", "output_error") if self.exact_readout else base

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        if getattr(model, "draws_inputs", False):  # models/temporal.py: a rate-coded SNN or LSM
            others = "method=np, fg_w or fg_a (one walk on one draw)" if getattr(model, "has_sites", False) else "method=bp"
            raise ValueError("method=wp differences the losses of separate forward passes, and model.encoding=rate draws new "
                             f"input spikes in each, so the difference would measure the draw: use model.encoding=latency or "
                             f"current, or {others}")

    def _perturbed_losses(self, model, params, tangents, x, y, loss_fn, sign: float) -> Tensor:
        def loss_at(tangent):
            shifted = {n: torch.add(p, tangent[n], alpha=sign * self.sigma) for n, p in params.items()}
            return batch_loss(loss_fn, functional_call(model, shifted, (x,)), y)

        if self.directions == 1:  # theta + sign sigma v into a buffer kept across steps (no fresh 4P bytes)
            flat = self.work_buffer("shifted", sum(p.numel() for p in params.values()), next(iter(params.values())))
            shifted, start = {}, 0
            for n, p in params.items():
                shifted[n] = torch.add(p, tangents[n][0], alpha=sign * self.sigma, out=flat[start : start + p.numel()].view_as(p))
                start += p.numel()
            return batch_loss(loss_fn, functional_call(model, shifted, (x,)), y).unsqueeze(0)
        return vmap(loss_at)(tangents)

    def _chain_losses(self, model, params, tangents, x, y, loss_fn, signs, clean: bool):
        """(clean loss, clean output, [the K perturbed losses per sign]) on a chain of dense blocks, by
        linearity: the first layer's (W + s V_k) x + b + s v_k is W x + b (the clean pass's) plus s (V_k x + v_k),
        the K products V_k x one batched matmul, shared by both signs; the later layers run per direction,
        batched [K, B, ...], on W + s V_k built in a buffer kept across steps. The same K perturbed losses
        as K functional_calls at theta + s v_k (to rounding), none of the K shifted copies of the first layer."""
        K, names = self.directions, {id(p): n for n, p in model.named_parameters()}

        def get(q, table):
            return None if q is None else table.get(names[id(q)])

        z, zs = x, None  # zs: per sign, the directions' input [K, B, ...]; None while all share z
        for i, block in enumerate(model.blocks):
            linear, norm = block.linear, block.norm
            W, b = (q if q is None else params.get(names[id(q)], q) for q in (linear.weight, linear.bias))
            V, vb = get(linear.weight, tangents), get(linear.bias, tangents)
            dw, db = get(getattr(norm, "weight", None), tangents), get(getattr(norm, "bias", None), tangents)
            hs = None
            if zs is None:  # the input is the same for every direction
                z = block.prepare(z)
                h = F.linear(z, W, b)
                if V is not None or vb is not None:
                    dh = torch.matmul(z, V.mT) if V is not None else None  # [K, B, out]: V_k x for every k at once
                    if vb is not None:
                        dh = vb.unsqueeze(1).expand(K, *h.shape) if dh is None else dh.add_(vb.unsqueeze(1))
                    hs = [torch.add(h, dh, alpha=sign * self.sigma) for sign in signs[:-1]]
                    # the last sign in place (dh is this step's own temporary unless it is v_b expanded)
                    hs.append(dh.mul_(signs[-1] * self.sigma).add_(h) if V is not None else torch.add(h, dh, alpha=signs[-1] * self.sigma))
                elif dw is not None or db is not None:  # only the norm's parameters move: [1, B, ...], broadcast below
                    hs = [h.unsqueeze(0) for _ in signs]
            else:
                h = F.linear(block.prepare(z), W, b) if clean else None
                hs = []
                for sign, zk in zip(signs, zs):
                    zk = zk.flatten(2)
                    Wk = W if V is None else torch.add(W, V, alpha=sign * self.sigma, out=self.work_buffer(f"wp_shift.{i}", V.numel(), V).view_as(V))
                    bk = b if vb is None else torch.add(b, vb, alpha=sign * self.sigma)
                    hk = torch.matmul(zk, Wk.mT) if Wk.dim() == 3 else F.linear(zk, Wk)
                    hs.append(hk if bk is None else hk.add_(bk.unsqueeze(1) if bk.dim() == 2 else bk))
            if h is not None:
                h = block.after_pre_activation(norm(h))
            if hs is not None:
                zs = [_activate(block, self._shifted_norm(norm, hk, dw, db, sign)) for sign, hk in zip(signs, hs)]
            z = h
        if zs is None:  # no parameter moved (nothing has a tangent): every direction is the clean pass
            zs = [z.expand(K, *z.shape) for _ in signs]
        losses = [torch.stack([batch_loss(loss_fn, o, y) for o in outs]) for outs in zs]
        return (None if z is None else batch_loss(loss_fn, z, y)), z, losses

    def _shifted_norm(self, norm, h, dw, db, sign):
        """norm(h) [K, B, ...] with its own parameters shifted per direction (a LayerNorm: weight + s dw_k, bias + s db_k)."""
        if dw is None and db is None:
            return norm(h)
        weight = norm.weight if dw is None else torch.add(norm.weight, dw, alpha=sign * self.sigma)
        bias = norm.bias if db is None else torch.add(norm.bias, db, alpha=sign * self.sigma)
        shape = norm.normalized_shape
        a = F.layer_norm(h, shape, None, None, norm.eps)
        lead = [1] * (h.dim() - 1 - len(shape))  # [K or 1, 1 (rows), ..., *normalized_shape]
        if weight is not None:
            a = a * weight.view(-1, *lead, *shape)
        if bias is not None:
            a = a + bias.view(-1, *lead, *shape)
        return a

    @torch.no_grad()
    def directional_derivatives(self, model, params, tangents, x, y, loss_fn):
        signs = (1.0, -1.0) if self.antithetic else (1.0,)
        need_clean = self.antithetic or self.baseline != "none"
        if self.directions > 1 and batched_walk_applies(model):
            loss, output, perturbed = self._chain_losses(model, params, tangents, x, y, loss_fn, signs, need_clean)
            plus = perturbed[0]
            if self.antithetic:
                return loss, output, (plus - perturbed[1]) / (2 * self.sigma)
        else:
            plus = self._perturbed_losses(model, params, tangents, x, y, loss_fn, +1.0)
            output = loss = None
            if need_clean:
                output = model(x)
                loss = batch_loss(loss_fn, output, y)
            if self.antithetic:
                minus = self._perturbed_losses(model, params, tangents, x, y, loss_fn, -1.0)
                return loss, output, (plus - minus) / (2 * self.sigma)
        if self.baseline == "clean":
            return loss, output, (plus - loss) / self.sigma
        if self.baseline == "running":
            return loss, output, (plus - self.running.update(loss)) / self.sigma
        return plus.mean(), None, plus / self.sigma


def batched_walk_applies(model) -> bool:
    """Whether WeightPerturbation._chain_losses covers the model: a BlockChain (its forward is its blocks)
    of dense blocks (nn.Linear, no pooling) whose norms are LayerNorms or nothing, every trainable
    parameter inside the blocks. Anything else takes vmap over functional_call."""
    if not isinstance(model, BlockChain):
        return False
    blocks = list(model.blocks)
    covered = {id(p) for b in blocks for p in b.parameters()}
    return (
        all(isinstance(b.linear, nn.Linear) and isinstance(b.norm, (nn.Identity, nn.LayerNorm)) and isinstance(b.pool, nn.Identity) for b in blocks)
        and all(id(p) in covered for p in model.parameters() if p.requires_grad)
    )


def _activate(block, a: Tensor) -> Tensor:
    """The block's activation (and pool) on the directions' pre-activations, a ReLU in place (a is the walk's own temporary)."""
    if isinstance(block.activation, nn.ReLU) and isinstance(block.pool, nn.Identity):
        return a.relu_()
    return block.after_pre_activation(a)
