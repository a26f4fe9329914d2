"""Node perturbation.

Gaussian noise sigma v_l on the pre-activation of every layer, independent per example; the
per-example loss difference dL_i = L_i(perturbed) - baseline_i gives, for every layer at once,

    delta_l,i = (dL_i / sigma) v_l,i / B        (dL/da_l of the batch-mean loss)

and the weights follow by the local outer product (dL/sigma) v z^T, bias (dL/sigma) v. No
backward pass through the network. The K directions run as one forward of K*B rows; the clean
pass (baseline `clean`) is shared by all of them. `antithetic` uses +v and -v instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from learnbench.rules.activity_space import ActivitySpaceRule, clip_, hooked

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
        output = loss_i = None
        if clean_needed:
            with hooked(blocks, record=record):
                output = model(x)
            loss_i = loss_fn(output, y)
        v = self.sample_site_noise(K * B, widths, blocks[0].pre[0].weight.dtype)
        if self.antithetic:
            both = [torch.cat([n, -n]) for n in v]
            losses = self._noisy_pass(model, blocks, x, y, loss_fn, both)
            dL = (losses[: K * B] - losses[K * B :]) / 2
        else:
            losses = self._noisy_pass(model, blocks, x, y, loss_fn, v, record=None if clean_needed else record)
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
            loss = losses.mean()
        return deltas, records, loss, output
