"""Shared machinery of parameter-space estimators (weight perturbation, weight forward gradient).

Both draw K directions v_k over the whole parameter vector, measure a directional derivative
d_k ~ grad . v_k on the batch (a finite difference, or forward-mode AD), and estimate

    g = (1/K) sum_k d_k v_k,        E[g] = grad   for E[v v^T] = I.

A subclass only says how it gets d_k (`directional_derivatives`). Parameters are passed to the
model functionally (torch.func.functional_call), so the model's own Parameters are never touched
and K directions run as one vectorised (vmap) call.

Across DDP ranks (`comm`):
- `grads` (default): each rank draws its own directions (generator seeded with the rank) and the
  module all-reduces the full gradient, P floats; the step averages K * ranks directions.
- `scalars` (Salimans et al. 2017): every rank draws the SAME directions (generator seeded without
  the rank, so tables and offsets agree), measures its K derivatives d_r on its own shard, and only
  d is all-reduced, K floats. Every rank then rebuilds the identical g = (1/K) sum_k d_k v_k. Since
  the batch loss is a mean and shards are equal, mean_r d_r is d on the union batch (exactly, up to
  rounding: the finite difference and the jvp are both linear in the loss), so the step is the one
  a single process takes on the union batch with those directions.
  `clip` is applied to the averaged d, so it too matches that single process (whatever the number
  of ranks); in `grads` mode each rank necessarily clips its own d before the gradient all-reduce.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from typing import Literal

from learnbench.options import Positive, PositiveInt
from learnbench.rules.base import LearningRule, LossFn, RuleOutput, clipped
from learnbench.rules.local import chain_blocks
from learnbench.rules.noise import NoiseKind, NoiseSource, perturbation_claims

Comm = Literal["grads", "scalars"]


class ParameterSpaceRule(LearningRule):
    # Directions over the model's parameters work on any model: on model=rnn and snn a whole sequence per estimate.
    trains = ("feedforward", "recurrent", "spiking")
    #: The step scales the noise by the batch's loss difference (or directional derivative), one number for the
    #: whole model: in a seed stack, the sum over the seeds.
    stacks_seeds = "its step scales its noise by one loss difference for the whole model, which in a stack sums every seed's"
    plain_stacks_seeds = stacks_seeds

    def claims(self) -> frozenset[str]:
        return perturbation_claims(self)

    def __init__(self, directions: PositiveInt = 1, noise: NoiseKind = "gaussian", table_size: int = 0, clip: Positive | None = None, comm: Comm = "grads",
                 exact_readout: bool = False):
        """`exact_readout`: the readout's (last block's) parameters take their exact gradient and no direction
        of their own, so d is the hidden parameters' derivative alone (Ren et al.'s code: noise on the hidden
        layers, `global_classif_grad` on the last one). The directions are drawn whole and the readout's
        part zeroed, so the hidden parameters see the very draws of a run without the option. Chain models
        only; where the rule's walk does not keep the readout's input (wp, the general jvp path) it costs
        one more forward pass of the hidden blocks a step."""
        super().__init__()
        self.directions = directions
        self.noise = NoiseSource(noise, table_size)
        self.clip = clip
        self.comm = comm
        self.exact_readout = exact_readout
        if exact_readout and comm == "scalars":
            raise ValueError("method.exact_readout=true needs method.comm=grads: the readout's exact gradient differs per "
                             "rank and must be all-reduced, which comm=scalars does not do")
        # scalars: shared directions (one seed on every rank), and this rule synchronises d itself.
        self.noise_differs_per_rank = comm == "grads"
        self.grads_synchronised = comm == "scalars"

    def work_buffer(self, key: str, n: int, like: Tensor) -> Tensor:
        """A flat scratch vector of n numbers reused from step to step (not state: never saved)."""
        buffers = self.__dict__.setdefault("_work_buffers", {})
        buf = buffers.get(key)
        if buf is None or buf.numel() != n or buf.dtype != like.dtype or buf.device != like.device:
            buf = buffers[key] = torch.empty(n, dtype=like.dtype, device=like.device)
        return buf

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        if self.exact_readout:
            blocks = chain_blocks(model, f"{type(self).__name__} with method.exact_readout=true (set it to false)")
            if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for b in blocks[:-1] for m in b.modules()):
                raise ValueError("method.exact_readout=true with BatchNorm: the readout's input needs an extra forward "
                                 "pass, which would update the running statistics twice a step; set it to false")

    def readout_slices(self, model: nn.Module, named: dict[str, Tensor]) -> list[slice]:
        """Where the readout's parameters sit in the flat direction vector (the order of `named`)."""
        readout = {id(p) for p in model.blocks[-1].parameters()}  # a chain: check_model made sure
        slices, start = [], 0
        for p in named.values():
            if id(p) in readout:
                slices.append(slice(start, start + p.numel()))
            start += p.numel()
        return slices

    def set_exact_readout_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> None:
        """The readout's exact gradient, written into its .grad: autograd through the readout alone, from
        its input as the step's walk left it (`_readout_input`: fg_w's chain walk) or, on the other paths,
        from one more forward pass of the hidden blocks (no graph)."""
        blocks = list(model.blocks)
        readout = blocks[-1]
        z = self.__dict__.pop("_readout_input", None)
        if z is None:
            with torch.no_grad():
                z = x
                for block in blocks[:-1]:
                    z = block(z)
        params = [p for p in readout.parameters() if p.requires_grad]
        with torch.enable_grad():  # Block.prepare is idempotent: the walk's (already prepared) input reads the same
            grads = torch.autograd.grad(batch_loss(loss_fn, readout(z), y), params)
        for p, g in zip(params, grads):
            p.grad.copy_(g)  # into the flat gradient buffer that p.grad views

    def directional_derivatives(self, model, params: dict[str, Tensor], tangents: dict[str, Tensor], x, y, loss_fn) -> tuple[Tensor, Tensor | None, Tensor]:
        """Return (clean batch loss, clean output or None, d of shape [K])."""
        raise NotImplementedError

    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        params = {n: p.detach() for n, p in named.items()}
        sizes = [p.numel() for p in params.values()]
        like = next(iter(params.values()))
        # [K, P]; K > 1 table slices are stacked into a buffer kept across steps (tangents are views of it,
        # used within this step only)
        out = self.work_buffer("directions", self.directions * sum(sizes), like).view(self.directions, -1) if self.directions > 1 and self.noise.table_size else None
        v = self.noise.sample(sum(sizes), self.directions, self.generator, like.dtype, out=out)
        if self.exact_readout:  # a copy: v may be a view of the shared noise table
            v = v.clone()
            for part in self.readout_slices(model, named):
                v[:, part] = 0
        tangents = {n: t.view(self.directions, *p.shape) for (n, p), t in zip(params.items(), v.split(sizes, dim=1))}
        loss, output, d = self.directional_derivatives(model, params, tangents, x, y, loss_fn)
        if self.comm == "scalars":
            d = self.reduce_mean(d)  # K floats: the union batch's d, the same on every rank
        d = clipped(d, self.clip)
        # g = (1/K) sum_k d_k v_k: one pass over the directions (a scaled copy when K = 1), written
        # into one flat buffer kept across steps (a fresh 4P-byte allocation costs page faults on
        # every step, about 3x the multiply); p.grad are views of it, valid until the next step.
        flat_grad = self.work_buffer("flat_grad", sum(sizes), v)
        if self.directions == 1:
            torch.mul(v[0], d[0], out=flat_grad)
        else:
            torch.mm((d / self.directions).unsqueeze(0), v, out=flat_grad.unsqueeze(0))
        for p, g in zip(named.values(), flat_grad.split(sizes)):
            p.grad = g.view_as(p)
        if self.exact_readout:
            self.set_exact_readout_grads(model, x, y, loss_fn)
        return RuleOutput(loss=loss.detach(), output=None if output is None else output.detach())


def batch_loss(loss_fn: LossFn, output: Tensor, y: Tensor) -> Tensor:
    return loss_fn(output, y).mean()
