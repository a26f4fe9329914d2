"""Node perturbation.

Gaussian noise sigma v_l on the pre-activation of every layer, independent per example; the
per-example loss difference dL_i = L_i(perturbed) - baseline_i gives, for every layer at once,

    delta_l,i = (dL_i / sigma) v_l,i / B        (dL/da_l of the batch-mean loss)

and the weights follow by the local outer product (dL/sigma) v z^T, bias (dL/sigma) v. No
backward pass through the network. The K directions run as one forward of K*B rows; the clean
pass (baseline `clean`) is shared by all of them. `antithetic` uses +v and -v instead.

On an MLP chain (learnbench.models.MLP, Autoencoder) the passes are written out block by block:
noise enters after the first Linear, so the noisy pass starts from the clean pass's first-layer
pre-activation (one matmul of the input layer saved), and the first layer's local update sums
the directions onto the B input rows. Other models built of Blocks take the hooked path.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from learnbench.rules.activity_space import ActivitySpaceRule, chain_of, clip_, hooked

BASELINES = ("clean", "none", "running")


class NodePerturbation(ActivitySpaceRule):
    def __init__(self, sigma: float = 1e-3, baseline: str = "clean", antithetic: bool = False, running_decay: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        if baseline not in BASELINES:
            raise ValueError(f"method.baseline={baseline!r}: choose one of {BASELINES}")
        self.sigma, self.baseline, self.antithetic, self.running_decay = sigma, baseline, antithetic, running_decay
        self.register_buffer("running_loss", torch.tensor(float("nan")))

    def _noisy_pass(self, model, blocks, x, y, loss_fn, noise: list[Tensor], record=None) -> Tensor:
        """Per-example losses with sigma * noise added at every site; x is repeated to noise's rows."""
        reps = noise[0].shape[0] // x.shape[0]
        with hooked(blocks, perturb=lambda i, a, b: a + self.sigma * noise[i], record=record):
            output = model(x.repeat(reps, *([1] * (x.dim() - 1))))
        return loss_fn(output, y.repeat(reps, *([1] * (y.dim() - 1))))

    def site_errors(self, model, blocks, x, y, loss_fn):
        B, K = x.shape[0], self.directions
        widths = [b.pre[0].out_features for b in blocks]
        records: list = [None] * len(blocks)

        def record(i, z, h):
            records[i] = (z, h)

        clean_needed = self.antithetic or self.baseline != "none"
        chain = chain_of(model) is not None
        output = loss_i = None
        if chain:  # the first block's Linear and what follows it up to the site, shared by every pass
            z0 = x.flatten(1)
            h0 = blocks[0].pre[0](z0)
            a0 = blocks[0].pre[1:](h0)
            records[0] = (z0, h0)
        if clean_needed:
            if chain:
                output = self._chain_pass(blocks, blocks[0].activation(a0), record)
            else:
                with hooked(blocks, record=record):
                    output = model(x)
            loss_i = loss_fn(output, y)
        v = self.sample_site_noise(K * B, widths, blocks[0].pre[0].weight.dtype)
        noisy_pass = partial(self._chain_noisy_pass, blocks, a0, y, loss_fn) if chain else partial(self._noisy_pass, model, blocks, x, y, loss_fn)
        if self.antithetic:
            both = [torch.cat([n, -n]) for n in v]
            losses = noisy_pass(both)
            dL = (losses[: K * B] - losses[K * B :]) / 2
        else:
            losses = noisy_pass(v, record=None if clean_needed else record)
            if self.baseline == "clean":
                dL = losses - loss_i.repeat(K)
            elif self.baseline == "running":
                reference = loss_i.mean() if torch.isnan(self.running_loss) else self.running_loss
                self.running_loss = self.running_decay * reference + (1 - self.running_decay) * loss_i.mean()
                dL = losses - reference
            else:  # covariance form: the noisy pass's own rows carry the update
                dL = losses
        scale = clip_(dL / self.sigma, self.clip).unsqueeze(1)
        if clean_needed:  # average the K directions onto the clean pass's B rows
            scale = scale / (K * B)
            deltas = [scale * n if K == 1 else (scale * n).view(K, B, -1).sum(0) for n in v]
            loss = loss_i.mean()
        else:
            deltas = [scale * n / (K * B) for n in v]
            if chain and K > 1:  # the first block's input is x itself (B rows): sum the directions onto it
                deltas[0] = deltas[0].view(K, B, -1).sum(0)
            loss = losses.mean()
        return deltas, records, loss, output

    @staticmethod
    def _chain_pass(blocks, z, record=None, perturb=None) -> Tensor:
        """Blocks 1.. of an MLP chain from the first block's output z (rows in any leading shape)."""
        for i, block in enumerate(blocks[1:], 1):
            h = block.pre[0](z)
            if record is not None:
                record(i, z, h)
            a = block.pre[1:](h)
            z = block.activation(a if perturb is None else perturb(i, a))
        return z

    def _chain_noisy_pass(self, blocks, a0, y, loss_fn, noise: list[Tensor], record=None) -> Tensor:
        """_noisy_pass on an MLP chain, from the shared first-layer pre-activation a0 [B, w]."""
        B = a0.shape[0]
        R = noise[0].shape[0] // B
        z = blocks[0].activation((a0 + self.sigma * noise[0].view(R, B, -1)).view(R * B, -1))
        output = self._chain_pass(blocks, z, record, perturb=lambda i, a: a + self.sigma * noise[i])
        return loss_fn(output, y.repeat(R, *([1] * (y.dim() - 1))))
