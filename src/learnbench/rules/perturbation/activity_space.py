"""Shared by the activity-space estimators (node perturbation, activity forward gradient).

Both estimate delta_l = dL/da_l, the loss gradient at every block's pre-activation a_l, for each
example, then update every block locally from its own input (`learnbench.rules.local`). The
forward walk over the blocks is the one in rules/local.py; a subclass only says how it perturbs
the pre-activations and turns what it measures into deltas.

On a model that runs in time (TemporalModel, models/temporal.py) the sites and the walk are the model's
own (model=rnn: the input current u_t and the readout y_t at every time step, models/rnn_sites.py; model=snn:
every layer's membrane input current and the readout's, models/snn_sites.py), and
every weight learns from its input at its site summed over time (`temporal_local_update`); the rules'
estimators are the same code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from learnbench.models.temporal import TemporalModel
from learnbench.options import PositiveInt, Positive
from learnbench.rules.base import LearningRule, LossFn, RuleOutput
from learnbench.rules.local import Trace, chain_blocks, cross_entropy_gradient, fold_rows, forward_trace, is_cross_entropy, local_update
from learnbench.rules.noise import NoiseKind, NoiseSource, perturbation_claims


class ActivitySpaceRule(LearningRule):
    """Subclasses implement `site_errors`; the walk and the local update are shared."""

    # Temporal models: noise / tangents per unit and time step, one estimate per whole sequence (the model's walk).
    trains = ("feedforward", "recurrent", "spiking")
    #: The step scales the noise by the batch's loss difference (or directional derivative), one number for the
    #: whole model: in a seed stack, the sum over the seeds.
    stacks_seeds = "its step scales its noise by one loss difference for the whole model, which in a stack sums every seed's"
    plain_stacks_seeds = stacks_seeds

    def claims(self) -> frozenset[str]:
        return perturbation_claims(self)

    def __init__(self, directions: PositiveInt = 1, noise: NoiseKind = "gaussian", table_size: int = 0, clip: Positive | None = None,
                 exact_readout: bool = False):
        """`exact_readout`: the readout (last block) takes its exact gradient, the output error times its
        input, and carries no noise or tangent of its own, so the estimate's scalar is the hidden sites'
        alone (Ren et al.'s code does this for every perturbation rule: `global_classif_grad` on the last
        layer). Noise is still drawn for the readout and then dropped, so the hidden sites see the very
        draws of a run without the option."""
        super().__init__()
        self.directions = directions
        self.noise = NoiseSource(noise, table_size)
        self.clip = clip
        self.exact_readout = exact_readout

    def check_model(self, model: nn.Module) -> None:
        if isinstance(model, TemporalModel):
            if not model.has_sites:
                raise ValueError(f"{type(self).__name__} perturbs the sites a model declares (model=rnn: u_t and y_t); "
                                 f"{type(model).__name__} has none: train it with method=bp, wp or fg_w "
                                 f"(its readout alone: method=ridge or force)")
            if self.exact_readout:
                raise ValueError(f"{type(self).__name__}: method.exact_readout=true needs a chain model (mlp, cnn, "
                                 "autoencoder); on model=rnn and snn the readout is a site at every time step. "
                                 "Set method.exact_readout=false.")
            return
        chain_blocks(model, type(self).__name__)

    def drop_readout_noise(self, noise: list[Tensor]) -> list[Tensor]:
        """With `exact_readout`, the readout's noise replaced by zeros (a new tensor: the noise may be a
        view of the shared noise table, which must not be written)."""
        return [*noise[:-1], torch.zeros_like(noise[-1])] if self.exact_readout else noise

    def exact_readout_delta(self, model: nn.Module, trace: Trace, y: Tensor, loss_fn: LossFn) -> Tensor:
        """d(batch-mean loss)/d(readout pre-activation): the readout's exact local error, what its update
        needs; softmax - onehot written out for the task's cross entropy on a plain readout, else autograd
        on the last block's own output map (activation and pool)."""
        block = model.blocks[-1]
        a = trace.pre_activation
        if isinstance(block.activation, nn.Identity) and isinstance(block.pool, nn.Identity) and is_cross_entropy(loss_fn, a, y):
            return cross_entropy_gradient(a, y)[1].div_(a.shape[0])  # softmax - onehot, written out
        with torch.enable_grad():
            a = a.detach().requires_grad_()
            (delta,) = torch.autograd.grad(loss_fn(block.after_pre_activation(a), y).mean(), a)
        return delta

    def site_shapes(self, model: nn.Module, x: Tensor) -> list[tuple[int, ...]]:
        """Per-example shape of every perturbation site: each block's pre-activation, or a temporal model's sites."""
        return model.site_shapes(x) if isinstance(model, TemporalModel) else pre_activation_shapes(model, x)

    def shifted_walk(self, model: nn.Module, x: Tensor, shifts: list[Tensor]) -> tuple[list, Tensor]:
        """Run the model with shifts[i] [R, *shape_i] added at site i, R a multiple of the batch (its copies)."""
        if isinstance(model, TemporalModel):
            trace, output, _ = model.walk(x, shifts=shifts)
            return [trace], output
        B, copies = x.shape[0], shifts[0].shape[0] // x.shape[0]

        def perturb(i, block, a, da):
            return (repeat_rows(a, copies) if a.shape[0] == B else a) + shifts[i], da

        traces, output, _ = forward_trace(model, x, perturb=perturb)
        return traces, output

    def local_updates(self, model: nn.Module, traces: list, deltas: list[Tensor]) -> None:
        if isinstance(model, TemporalModel):
            temporal_local_update(model, traces[0], deltas)
            return
        for block, trace, delta in zip(model.blocks, traces, deltas):
            local_update(block, trace, delta)

    def sample_site_noise(self, rows: int, shapes: list[tuple[int, ...]], dtype: torch.dtype | None = None) -> list[Tensor]:
        """Independent noise for every example (row) and unit of every pre-activation: [rows, *shape_l] each."""
        sizes = [math.prod(s) for s in shapes]
        flat = self.noise.sample(rows * sum(sizes), 1, self.generator, dtype)[0].view(rows, sum(sizes))
        return [n.view(rows, *s) for n, s in zip(flat.split(sizes, dim=1), shapes)]

    def site_errors(self, model, x, y, loss_fn) -> tuple[list[Tensor], list[Trace], Tensor, Tensor | None]:
        """Return (delta_l per block, the traces they apply to, clean batch loss, clean output or None)."""
        raise NotImplementedError

    @torch.no_grad()
    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        deltas, traces, loss, output = self.site_errors(model, x, y, loss_fn)
        self.local_updates(model, traces, deltas)
        return RuleOutput(loss=loss.detach(), output=None if output is None else output.detach())


def temporal_local_update(model: TemporalModel, trace, deltas: list[Tensor]) -> None:
    """Every trained weight's gradient from the error at its site and its own input there, summed over
    time: dL/dW = sum_t delta_t z_t^T, a bias sum_t delta_t (model.site_inputs). The deltas may hold several
    stacked copies of the trace's rows (directions): summed onto them, and onto the batch's rows for an
    input that every copy shares (x)."""
    params = dict(model.named_parameters())
    for delta, inputs in zip(deltas, model.site_inputs(trace)):
        for name, z in inputs.items():
            p = params.get(name)
            if p is None or not p.requires_grad:
                continue
            if z is None:
                p.grad = delta.sum(dim=(0, 1))
            else:
                p.grad = torch.einsum("btn,btm->nm", fold_rows(delta, len(z)), z)


def pre_activation_shapes(model: nn.Module, x: Tensor) -> list[tuple[int, ...]]:
    """The per-example shape of every block's pre-activation (cached per input shape: a dry run otherwise)."""
    cache = model.__dict__.setdefault("_pre_activation_shapes", {})
    key = tuple(x.shape[1:])
    if key not in cache:
        traces, _, _ = forward_trace(model, x[:1])
        cache[key] = [tuple(t.pre_activation.shape[1:]) for t in traces]
    return cache[key]


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype noise is drawn in: the model's (a float64 model gets float64 noise)."""
    return next(model.parameters()).dtype


def repeat_rows(t: Tensor, copies: int) -> Tensor:
    """`copies` stacked copies of a batch along the rows."""
    return t.repeat(copies, *([1] * (t.dim() - 1)))
