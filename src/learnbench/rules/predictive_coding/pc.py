"""Predictive coding: inference learning on value nodes, then a local weight update.

Every hidden layer holds value nodes (the block outputs, see energy.py); the energy

    E = sum_l ||node_l - f(W_l node_{l-1})||^2 / 2 + E_top(output, target)

is lowered over the nodes by `inference_steps` (T) steps of size `inference_lr` (with optional
`inference_momentum`, as pcx's SGD on the nodes), starting from the feed-forward pass; then every
block's weights take the gradient of E with the nodes fixed, which is local: block l's own error
eps_l = node_l - mu_l times f'(a_l) and the node below (`local_update`). The nodes are plain
tensors under no_grad, never Parameters, so the weight optimiser never sees them and the T steps
build no autograd graph. Per-example energies: each example's nodes step on its own energy, the
weight gradient is the batch mean (so it is on the scale of backprop's gradient of the mean loss,
and two DDP ranks' mean is the union batch's).

The variants share that loop and differ in two switches, which is why they are options of one
rule rather than four files: whether the predictions follow the nodes, and at which inference
step each layer's weight update is read.

- `standard` (Whittington & Bogacz 2017): predictions follow the nodes; weights read after step T.
  As the output's weight beta shrinks the update tends to backprop's gradient (below).
- `fpa`, the fixed prediction assumption (Millidge, Tschantz & Buckley 2020): predictions, their
  Jacobians and the activities below stay at their feed-forward values; the errors then relax to
  backprop's deltas exactly (with step 1 after L-1 steps; geometrically for any step in (0, 2)).
- `zil`, zero-divergence inference learning (Song et al. 2020): standard dynamics with step 1 from
  the feed-forward state; layer l (counted from the top, 0-based) reads its update at inference
  step l, when its error equals backprop's delta and nothing below it has moved yet. Runs exactly
  L-1 steps (its schedule is fixed by the depth); needs inference_lr=1, no momentum, T >= L-1.
- `ipc`, incremental PC (Salvatori et al. 2024): the weight gradient is taken at every inference
  step (states 0 .. T-1). `weight_updates` says what is done with it:
  - `per_step` (method=ipc's default, as pcx; the constructor's is per_batch): the weights move after
    every inference step. The rule does one inference step per `estimate_grads` call and carries the
    value nodes (and their velocity) in `RuleOutput.state`; it sets `updates_per_batch = T`, so the
    training module calls it T times per batch and steps the optimiser (all-reduce, clipping, AdamW's
    moments) after each call, as it does for online recurrent updates. Each step's nodes and weight
    gradient are taken at the same point (x_t, W_t), then both move: pcx (liukidar/pcx v0.6.1,
    examples/s4_1_discriminative_mode/MLP/mnist/iPC_SE.py, `train_on_batch`) takes one
    `value_and_grad` over the value nodes and the weights, then `optim_h.step` (SGD with momentum)
    and `optim_w.step` (AdamW), T times; nothing after the last node update. The block predictions
    are recomputed from the moved weights at every step, the first block's included.
    The learning-rate schedule steps once per batch: pcx's optax schedule counts weight updates but
    scales its horizons by T (warm-up 0.1 x batches x epochs x T, decay batches x epochs x T), so
    its curve over training is ours, sampled at every update instead of every batch. `align/*`
    compares the sum of the T estimates with backprop at the batch's starting weights.
  - `per_batch`: the T gradients are summed into the batch's one optimiser step (the weights do not
    move during inference): iPC to first order in the weight learning rate with plain SGD (Adam
    sees one update, not T). With T = 1 the two are the same update.

Models: any BlockChain (model=mlp, autoencoder with the reconstruction target clamped at the top,
lenet, cnn); dense blocks take a hand-written path, convolutions, LayerNorm and pooling local
autograd within one block (Z-IL = backprop and per_step iPC = its written-out loop on LeNet are
tested; pc and ipc train LeNet on Fashion-MNIST, ipc slowly with T = 8 and a small inference step:
the lower blocks' errors arrive only after several steps). Other models are refused at start,
naming the models that work.

The output's weight beta (`output_weight`, pcx's beta, the output precision of Whittington & Bogacz
2017) multiplies E_top; the weight update is divided by it. As beta -> 0 the nodes move by O(beta),
the top error keeps its feed-forward value and the hidden errors tend to beta times backprop's
deltas, so the update tends to backprop's gradient (gap O(beta)). Shrinking the output error by
moving the targets closer does not do this: the equilibrium is linear in a small error, so the
error reaching each layer is a fixed linear map of backprop's (tests/test_predictive_coding.py
measures both).

Evaluation (`predict`) is the feed-forward pass: with no target clamped, the feed-forward values
make every error zero, which is the energy's minimum (E = 0), so inference would not move them;
inference at test time gives the same output, so there is no option for it.

Stability: inference is gradient descent on E; the constructor refuses a step that no network can
take (>= 2 (1 + momentum)), and `bind` warns when the step exceeds a bound derived from the weights
under which inference is guaranteed stable near the start (energy.stable_step_bound). The weights
grow in training and the bound with them shrinks: rule/energy_last above rule/energy_first shows it.

Metrics (rule/<name>, per step): energy_first (E at the feed-forward start: the batch's top energy),
energy_last (E after the last inference step), output_loss (the top energy there, without beta).
Under ipc `per_step` they are logged once per batch: energy_last is E at the last nodes x_T with the
weights of the last step W_{T-1} (the final weight update is not evaluated).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from torch import Tensor, nn

from learnbench.options import HalfOpenFraction, Interval, Positive, PositiveInt
from learnbench.rules.base import LearningRule, LossFn, RuleOutput
from learnbench.rules.local import Trace, chain_blocks, local_update
from learnbench.rules.predictive_coding.energy import TopEnergy, predict, pull_back, stable_step_bound
from learnbench.rules.locality import signals

Variant = Literal["standard", "fpa", "zil", "ipc"]
WeightUpdates = Literal["per_batch", "per_step"]


class InferenceStabilityWarning(UserWarning):
    """The inference step size may make the value nodes oscillate or diverge."""


@dataclass
class Inference:
    """What one batch's inference leaves: the energy after each step (t = 0 .. steps; in training, where only
    the first and the last are logged, those two), the top energy at the last step, the feed-forward output
    and its per-example loss, the final nodes."""

    energies: list[Tensor] = field(default_factory=list)
    output_energy: Tensor | None = None
    output: Tensor | None = None
    loss: Tensor | None = None
    nodes: list[Tensor] = field(default_factory=list)


@dataclass
class IncrementalState:
    """What ipc `per_step` carries from one inference step (one optimiser step) to the next within a batch."""

    t: int  # the inference steps done so far
    nodes: list[Tensor]
    velocity: list[Tensor] | None
    energy_first: Tensor


class PredictiveCoding(LearningRule):
    def __init__(
        self,
        variant: Variant = "standard",
        inference_steps: PositiveInt = 20,
        inference_lr: Positive = 0.1,
        inference_momentum: HalfOpenFraction = 0.0,
        output_loss: Literal["task", "se"] = "task",
        output_weight: Annotated[float, Interval(gt=0, le=1)] = 1.0,
        weight_updates: WeightUpdates = "per_batch",
    ):
        super().__init__()
        limit = 2 * (1 + inference_momentum)
        if inference_lr >= limit:
            raise ValueError(
                f"method.inference_lr={inference_lr} cannot converge: the energy's curvature along every value node is "
                f"at least 1 (its own error), so gradient descent with momentum {inference_momentum} needs a step "
                f"< 2 (1 + momentum) = {limit:g}; try inference_lr=0.1"
            )
        if variant == "zil" and (inference_lr != 1 or inference_momentum != 0):
            raise ValueError(
                f"method.variant=zil is exact only with inference_lr=1 and inference_momentum=0 (Song et al. 2020), "
                f"got {inference_lr} and {inference_momentum}; use variant=standard for other steps"
            )
        if weight_updates == "per_step" and variant != "ipc":
            raise ValueError(
                f"method.weight_updates=per_step moves the weights at every inference step, which is incremental PC: "
                f"use it with variant=ipc (method=ipc), not variant={variant} (its weights are read once per batch)"
            )
        self.variant, self.steps, self.step_size = variant, inference_steps, inference_lr
        self.weight_updates = weight_updates
        # The training module steps the optimiser after each of this many estimate_grads calls per batch.
        self.updates_per_batch = inference_steps if weight_updates == "per_step" else 1
        self.momentum, self.output_loss, self.output_weight = inference_momentum, output_loss, output_weight

    # ------------------------------------------------------------------ set-up
    @property
    def stacks_seeds(self) -> bool | str:
        # The energies are sums of per-unit terms; the top one is the task's loss, in a stack each seed's summed.
        return True if self.output_loss == "task" else "output_loss=se one-hot encodes the target over every output, all seeds' at once"

    def reads(self) -> frozenset[str]:
        """Prediction errors after an inference phase; the value nodes are driven by W^T e from the layer above."""
        return signals("pre", "post_derivative", "output_error", "transported_weights", "inference_phase")

    def check_model(self, model: nn.Module) -> None:
        blocks = chain_blocks(model, f"method=pc (variant {self.variant})")
        if self.variant == "zil" and self.steps < len(blocks) - 1:
            raise ValueError(
                f"method.variant=zil needs inference_steps >= {len(blocks) - 1} on this {len(blocks)}-block model "
                f"(the error reaches the first block after that many steps), got {self.steps}"
            )
        if self.variant in ("standard", "ipc"):
            self.warn_if_unstable(blocks)

    def warn_if_unstable(self, blocks) -> None:
        safe, _ = stable_step_bound(blocks, self.momentum)
        if self.step_size > safe:
            warnings.warn(
                f"method.inference_lr={self.step_size} exceeds {safe:.3g}, the step under which inference is "
                f"guaranteed stable for these initial weights (2 (1 + momentum) / (1 + max_l max|f'| ||W_l||)^2); "
                f"the value nodes may oscillate or diverge (watch rule/energy_last against rule/energy_first)",
                InferenceStabilityWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ the training step
    def begin_step(self, step: int) -> None:
        """Nothing to re-seed: inference and the weight update are deterministic (no random draws)."""

    def estimate_grads(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, state: Any = None) -> RuleOutput:
        for p in model.parameters():
            p.grad = None
        if self.weight_updates == "per_step":
            return self.incremental_step(model, x, y, loss_fn, state)
        result = self.infer(model, x, y, loss_fn, learn=True, every_energy=False)
        metrics = {"energy_first": result.energies[0], "energy_last": result.energies[-1], "output_loss": result.output_energy}
        return RuleOutput(loss=result.loss.mean(), output=result.output, metrics=metrics)

    @torch.no_grad()
    def infer(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, learn: bool = False,
              every_energy: bool = True) -> Inference:
        """Run inference on one batch; with `learn`, write the variant's weight gradients on the way. The energy
        after every step, or (every_energy=False, what training logs) after the first and the last only."""
        blocks, top = list(model.blocks), TopEnergy(y, loss_fn, self.output_loss)
        traces = feed_forward(blocks, x)
        nodes = [t.output for t in traces[:-1]]  # the feed-forward initialisation
        velocity = [torch.zeros_like(n) for n in nodes] if self.momentum else None
        steps = len(blocks) - 1 if self.variant == "zil" else self.steps
        # The clean loss of the feed-forward output, always the task's (logging, divergence, train/acc).
        result = Inference(output=traces[-1].output.clone(), loss=loss_fn(traces[-1].output, y), nodes=nodes)
        for t in range(steps + 1):
            read = self.blocks_read_at(t, steps, len(blocks)) if learn else []
            summarise = every_energy or t in (0, steps)
            e, output_energy, nodes, traces = self.relax(blocks, x, top, traces, nodes, velocity, read, move=t < steps,
                                                         summarise=summarise)
            if summarise:
                result.energies.append(e)
                result.output_energy = output_energy
        result.nodes = nodes
        return result

    @torch.no_grad()
    def incremental_step(self, model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, state: IncrementalState | None) -> RuleOutput:
        """ipc `per_step`: one inference step at (x_t, W_t), writing dE/dW there; the module then steps the
        weights. state=None starts the batch from the feed-forward pass; the nodes travel in `state`."""
        blocks, top = list(model.blocks), TopEnergy(y, loss_fn, self.output_loss)
        if state is None:
            traces = feed_forward(blocks, x)
            nodes = [t.output for t in traces[:-1]]
            velocity = [torch.zeros_like(n) for n in nodes] if self.momentum else None
            state = IncrementalState(0, nodes, velocity, energy_first=torch.zeros(()))
        else:  # the weights moved since the last step: every prediction, the first block's too, is recomputed
            traces = [predict(b, below) for b, below in zip(blocks, [x, *state.nodes])]
        output = traces[-1].output.clone() if state.t == 0 else None
        loss = loss_fn(output, y).mean() if output is not None else torch.zeros((), dtype=x.dtype, device=x.device)
        # The moved nodes' predictions are needed here only on the last step (energy_last): the next call
        # predicts anew from the moved weights.
        last = state.t + 1 == self.steps
        e, _, nodes, traces = self.relax(blocks, x, top, traces, state.nodes, state.velocity,
                                         read=range(len(blocks)), move=True, retrace=last, summarise=state.t == 0)
        if state.t == 0:
            state.energy_first = e
        state = IncrementalState(state.t + 1, nodes, state.velocity, state.energy_first)
        metrics = {}
        if last:  # the batch's last step: the energy at x_T (weights W_{T-1}), logged once per batch
            e_last, output_energy, _, _ = self.relax(blocks, x, top, traces, nodes, None, read=(), move=False)
            metrics = {"energy_first": state.energy_first, "energy_last": e_last, "output_loss": output_energy}
        return RuleOutput(loss=loss, output=output, metrics=metrics, state=state)

    def relax(self, blocks, x, top: TopEnergy, traces, nodes, velocity, read, move: bool, retrace: bool = True,
              summarise: bool = True):
        """One inference step at the given nodes and traces: the energy (batch mean) and the top energy without
        beta (None unless `summarise`), the weight gradients of the blocks in `read` (added to p.grad), and, with
        `move`, the nodes after one (heavy-ball) descent step with their traces (recomputed if `retrace`).
        Returns (E, E_top / beta, nodes, traces)."""
        beta = self.output_weight
        errors = [node - trace.output for node, trace in zip(nodes, traces)]
        e_top, g_top = top(traces[-1].output)
        if beta != 1:
            e_top, g_top = e_top * beta, g_top * beta
        cotangents, below = [-e for e in errors] + [g_top], [x, *nodes]
        # Block k's pull-back: its delta (for its update) and the error it sends to node k-1 (for inference).
        pulled = [pull_back(b, below[k], traces[k], cotangents[k], need_below=k > 0 and move)
                  if (k > 0 and move) or k in read else (None, None) for k, b in enumerate(blocks)]
        for k in read:  # dE/dW_k, the batch mean; divided by beta: on backprop's scale (pcx's `mul=1/beta`)
            add_local_update(blocks[k], traces[k], pulled[k][0] / (len(x) * beta))
        summary = (energy(errors, e_top), e_top.mean() / beta) if summarise else (None, None)
        if not move:
            return *summary, nodes, traces
        moved = []
        for k in range(len(nodes)):  # dE/dnode_k: its own error, and the error it causes above
            grad = errors[k] + pulled[k + 1][1]
            if velocity is not None:
                grad = velocity[k].mul_(self.momentum).add_(grad)
            moved.append(nodes[k] - self.step_size * grad)
        if self.variant != "fpa" and retrace:  # FPA keeps the feed-forward predictions
            traces = [traces[0], *(predict(b, n) for b, n in zip(blocks[1:], moved))]
        return *summary, moved, traces

    def blocks_read_at(self, t: int, steps: int, n_blocks: int) -> list[int]:
        """The blocks whose weight gradient this variant takes at inference step t (of 0 .. steps)."""
        if self.variant == "zil":
            return [n_blocks - 1 - t]  # its error arrived at step t, and nothing below it has moved yet
        if self.variant == "ipc":
            return list(range(n_blocks)) if t < steps else []  # the states before each node update, summed
        return list(range(n_blocks)) if t == steps else []  # standard, fpa: after the last step

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """The feed-forward pass: without a clamped target it is the energy's minimum (module docstring)."""
        return model(x)


def feed_forward(blocks, x: Tensor) -> list[Trace]:
    traces, below = [], x
    for block in blocks:
        traces.append(predict(block, below))
        below = traces[-1].output
    return traces


def energy(errors: list[Tensor], e_top: Tensor) -> Tensor:
    """The batch mean of the per-example energy sum_l ||eps_l||^2 / 2 + E_top."""
    total = e_top.clone()
    for e in errors:
        total += 0.5 * e.pow(2).flatten(1).sum(1)
    return total.mean()


def add_local_update(block, trace: Trace, delta: Tensor) -> None:
    """local_update's gradients added to what the block's parameters already hold (iPC sums its steps)."""
    params = list(block.parameters())
    held = [p.grad for p in params]
    if all(g is None for g in held):  # the first (or only) read of this batch: nothing to add to
        local_update(block, trace, delta)
        return
    for p in params:
        p.grad = None
    local_update(block, trace, delta)
    for p, g in zip(params, held):
        if g is not None and p.grad is not None:
            p.grad += g
