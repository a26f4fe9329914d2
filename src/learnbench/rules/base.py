"""The learning-rule interface.

A rule's one job: given the model and a batch, write `p.grad` for every trainable parameter,
with autograd's sign convention (the optimiser descends). It never steps the optimiser, never
all-reduces and never clips: `LearningRuleModule` does that identically for every rule, which
is what makes a comparison between rules fair. (One exception, `grads_synchronised`: a rule
that can synchronise something much smaller than the gradient does so itself, through the
`reduce_mean` the training loop hands it.)

The life of a rule, as the training module drives it (docs/architecture.md has the whole story):

    bind(model, seed)             once, when the module is built: check the model, draw rule state
                                  from the seed alone (feedback matrices: the same on every rank)
    setup(model, seed, rank, device)  once on the training device: the per-rank noise generator
    begin_epoch(model)            before each training epoch (a closed-form rule resets its statistics)
    every training batch, for each Call of schedule(steps) (the whole batch once, windows of a sequence,
    or several calls on the batch):
        begin_step(step)          re-seed the noise from (seed, rank where noise differs, step)
        estimate_grads(...)       write p.grad (model and rule parameters); return a RuleOutput
        after_optimizer_step(model)   after the shared update (mirroring, renormalising B)
    solve(model, statistics)      before every validation: a closed-form fit from the statistics summed over ranks
    end_epoch(model)              after each training epoch
    predict(model, x)             what evaluation scores (default: the model's forward pass)

Update modes (`update_modes`, per parameter): `gradient` (p.grad into the shared optimiser: every rule
so far), `direct` (p.grad holds minus the weight change, -dW, in the same sign convention; the module
all-reduces and clips it like a gradient and applies p -= p.grad itself, never through momentum or Adam:
STDP, RLS/FORCE) and `closed_form` (the rule writes no gradient; it accumulates sufficient statistics in
buffers, `statistics()`, which the module sums over ranks and hands to `solve` before validation: a
ridge readout).

Rules are nn.Modules: their state is buffers (fixed feedback matrices, running baselines) and,
for learned feedback (Kolen-Pollack), nn.Parameters. Both move with the model and are saved in
checkpoints; the parameters are optimised, all-reduced and clipped with the model's
(`extra_parameters`). Random numbers come from two places, never from the global stream: rule
state from a generator seeded by the run seed alone (so every rank draws the same B), and noise
from the rule's own generator, re-seeded before every step from (seed, rank, step), so a
resumed run on any number of ranks draws exactly the noise an uninterrupted one would.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from learnbench.rules.noise import NoiseSource
from learnbench.tasks import LossFn  # noqa: F401  (re-exported: the rules import it from here)


GRADIENT, DIRECT, CLOSED_FORM = "gradient", "direct", "closed_form"
UPDATE_MODES = (GRADIENT, DIRECT, CLOSED_FORM)


@dataclass(frozen=True)
class Call:
    """One call of `estimate_grads` within a training batch (`LearningRule.schedule`)."""

    t0: int | None = None  # the window [t0, t1) of a sequence; None: the whole batch
    t1: int | None = None
    update: bool = True  # an update after this call; False: its gradients are summed into the next call's


@dataclass
class RuleOutput:
    loss: Tensor  # the batch loss of the unperturbed network, detached (for logging and divergence)
    output: Tensor | None = None  # the unperturbed network's output, if the rule computed it
    metrics: dict[str, Tensor] = field(default_factory=dict)  # scalars logged as rule/<name> (per step, epoch means)
    state: Any = None  # what a recurrent rule carries into the next truncation window (docs/architecture.md)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def clipped(d: Tensor, clip: float | None) -> Tensor:
    """A perturbation rule's directional derivatives clamped to [-clip, clip] (`method.clip`; None: as they are)."""
    return d if clip is None else d.clamp(-clip, clip)


def no_reduction(tensor: Tensor) -> Tensor:
    """`reduce_mean` on one process (a module-level function, not a lambda, so rules pickle for ddp_spawn)."""
    return tensor


class LearningRule(nn.Module):
    """Base class. Subclasses implement `estimate_grads` and whichever hooks they need."""

    #: The kinds of model the rule trains; comparison sweeps run every rule of their kind (learnbench.catalog).
    trains: tuple[str, ...] = ("feedforward",)

    #: False only for backprop: its gradients come from autograd's backward (the fp16 loss scaler
    #: can unscale them); every other rule writes p.grad itself.
    writes_grads_by_hand: bool = True

    #: Different ranks must draw different noise for their own examples (activity-space rules);
    #: weight-space rules may share a seed across ranks. Used to seed the noise generator.
    noise_differs_per_rank: bool = True

    #: True when `estimate_grads` leaves the same p.grad on every rank, having all-reduced something
    #: smaller itself through `reduce_mean` (comm=scalars): the module then skips its gradient all-reduce.
    grads_synchronised: bool = False

    #: None, or why the rule cannot run over several processes (a sequential update such as RLS), as a refusal with
    #: `{processes}` in it: train.py refuses such a run at start.
    one_process_only: str | None = None

    #: True when a step of this rule on seeds packed side by side into one grouped model (seeds=[...]:
    #: learnbench/seeds.py) gives every seed exactly the step of its own run; else why not, said when a stack
    #: is refused. True only where tests/test_seeds.py compares the stack with separate runs.
    stacks_seeds: bool | str = "it is not among the rules compared with separate runs in tests/test_seeds.py"

    #: True for the rules that add a model's firing-rate penalty (model=snn's `rate_penalty`) to what they estimate.
    takes_rate_penalty: bool = False

    #: Optimiser steps per training batch. More than 1 for rules that update the weights online within
    #: a batch (incremental PC): the default `schedule` then calls `estimate_grads(..., state=)` that many
    #: times on the batch, each call's `RuleOutput.state` passed to the next, with an update after every call.
    updates_per_batch: int = 1

    def __init_subclass__(cls, **kwargs) -> None:
        """Every rule's constructor checks its arguments against their annotations (learnbench.options), so
        `ForwardGradientWeight(comm="vectors")` fails at once, with the message a config would get."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def checked_init(self, *args, **kwargs):
            from learnbench.config_validation import check_arguments

            bound = inspect.signature(init).bind(self, *args, **kwargs)
            check_arguments(init, {k: v for k, v in list(bound.arguments.items())[1:] if k != "kwargs"})
            init(self, *args, **kwargs)

        cls.__init__ = checked_init

    def __init__(self) -> None:
        super().__init__()
        self.generator: torch.Generator | None = None
        self._bound = False
        # The mean of a tensor over ranks, set by the training loop (which counts the bytes it sends);
        # the identity on one process. Rules stay free of Lightning and of torch.distributed.
        self.reduce_mean: Callable[[Tensor], Tensor] = no_reduction

    # ------------------------------------------------------------------ set-up
    def bind(self, model: nn.Module, seed: int) -> None:
        """Check that the rule can train this model, then build rule state from the seed alone.

        Called once when the training module is built, before a checkpoint is restored (so learned
        feedback parameters exist to be restored into, and to be handed to the optimiser)."""
        if self._bound:
            return
        if getattr(model, "rate_penalty", 0) and not self.takes_rate_penalty:
            raise ValueError(f"model.rate_penalty={model.rate_penalty}: {type(self).__name__} does not add the firing-rate penalty "
                             f"to its update; train with method=bp or eprop, or set model.rate_penalty=0")
        self.check_model(model)
        self.init_state(model, torch.Generator().manual_seed(state_seed(seed)))
        self._bound = True

    def check_model(self, model: nn.Module) -> None:
        """Raise a ValueError naming the layer or model this rule cannot train, and the models that work."""

    def init_state(self, model: nn.Module, generator: torch.Generator) -> None:
        """Draw rule state (feedback matrices, ...) from `generator`, seeded by the run seed alone (CPU)."""

    def setup(self, model: nn.Module, seed: int, rank: int, device: torch.device) -> None:
        """Called once before training, on the training device: the noise generator of this rank."""
        self.bind(model, seed)
        self.noise_seed = 1_000_003 * (seed + 1) + (rank if self.noise_differs_per_rank else 0)
        self.generator = torch.Generator(device=device).manual_seed(self.noise_seed)
        for source in self.modules():  # noise tables: drawn from the seed alone
            if isinstance(source, NoiseSource):
                source.table_seed = self.noise_seed

    def reads(self) -> frozenset[str] | None:
        """What the update reads, in the vocabulary of rules/locality.py (`signals(...)`), as the rule is configured:
        the locality profile (docs/locality.md). None: not declared (tests/test_locality.py fails for such a rule)."""
        return None

    def claims(self) -> frozenset[str]:
        """What the estimate is, as the rule is configured, for `python -m learnbench.verify` to test against backprop's
        gradient: "exact" (it is the gradient: bp) or "unbiased" (its expectation over the rule's noise is the gradient:
        the perturbation rules, up to O(sigma) for the finite differences); empty: another direction by design (fa, pc,
        local losses), reported, not judged."""
        return frozenset()

    def update_modes(self, model: nn.Module) -> dict[str, str]:
        """How each trainable parameter of the model learns, by name: GRADIENT, DIRECT or CLOSED_FORM (the
        module docstring above). A model may mix them (a reservoir's readout closed-form and its other weights
        fixed; an STDP layer direct and a supervised readout by gradient). Default: all by gradient."""
        return {name: GRADIENT for name, p in model.named_parameters() if p.requires_grad}

    def schedule(self, steps: int | None) -> list[Call]:
        """How the training loop takes a batch: the calls of `estimate_grads`, in order. `steps`: the
        sequence's length on sequence data, else None. Default: the whole batch, `updates_per_batch` times
        (once, or iPC's online updates); recurrent rules cut sequences into windows (rules/recurrent)."""
        return [Call()] * self.updates_per_batch

    # ------------------------------------------------------------------ every epoch
    def begin_epoch(self, model: nn.Module) -> None:
        """Before every training epoch (a closed-form rule zeroes its statistics here)."""

    def statistics(self) -> list[Tensor]:
        """A closed-form rule's sufficient statistics, accumulated over this epoch's batches on this rank
        (buffers, so they are checkpointed); the module sums copies over ranks for `solve`."""
        return []

    def solve(self, model: nn.Module, statistics: list[Tensor]) -> None:
        """The closed-form fit from `statistics()` summed over ranks: runs before every validation (so what
        is validated is the fitted model) and before the test."""

    # ------------------------------------------------------------------ every step
    def begin_step(self, step: int) -> None:
        """Re-seed the noise generator for this training step (called by the training loop)."""
        self.generator.manual_seed(step_seed(self.noise_seed, step))

    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        raise NotImplementedError

    def extra_parameters(self) -> list[nn.Parameter]:
        """The rule's own trainable parameters (learned feedback): stepped by the model's optimiser in a
        param group of their own, all-reduced, clipped and checkpointed with the model's."""
        return [p for p in self.parameters() if p.requires_grad]

    def after_optimizer_step(self, model: nn.Module) -> None:
        """Runs after every optimiser step (weight mirroring, renormalising feedback)."""

    def end_epoch(self, model: nn.Module) -> None:
        """Runs after every training epoch, after its validation (closed-form fits belong in `solve`, which runs before it)."""

    def diagnostics(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> dict[str, float]:
        """Comparisons that cost extra passes (feedback angles, ...): called every `diagnostics.every_n_steps`
        steps beside the gradient alignment, logged as rule/<name> like the per-step metrics."""
        return {}

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """What evaluation scores; rules whose prediction is not the forward pass (inference) override it."""
        return model(x)


def state_seed(seed: int) -> int:
    """The seed of rule state (feedback matrices): the run seed alone, mixed apart from the noise seeds."""
    return int(np.random.SeedSequence([seed, 0x5EED]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def step_seed(noise_seed: int, step: int) -> int:
    """A well-mixed 63-bit seed from (noise_seed, step): neighbouring seeds or steps share no stream."""
    return int(np.random.SeedSequence([noise_seed, step]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))
