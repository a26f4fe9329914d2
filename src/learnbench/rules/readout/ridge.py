"""A closed-form ridge-regression readout (reservoir computing: Jaeger 2001's echo state networks).

The model's hidden weights stay fixed (a reservoir); its readout y_t = W_out r_t + b_out is fitted in
closed form over every training step's states r_t (model.readout_input) and targets y_t, as reservoirpy's
Ridge node (0.4) fits it: the bias is not regularised; states and targets are centred on their means,

    W_out = Yc Xc^T (Xc Xc^T + lambda I)^{-1},   b_out = mean(y) - W_out mean(r)

(without a readout bias: W_out = Y X^T (X X^T + lambda I)^{-1} on the raw states). The steps of the model's
washout (`model.washout`: its transient from the initial state) are left out. A model with output feedback
(`model.output_feedback`) is run with the targets fed back in place of its own outputs (teacher forcing).

Through the `closed_form` update mode (rules/base.py): each batch adds [r; 1][r; 1]^T and y [r; 1]^T into
float64 buffers (checkpointed; they hold the sums and the count the centring needs), the training module sums
them over ranks (a sum: a mean over ranks would scale lambda) and calls `solve` before every validation, so what
is validated is the fitted readout. One pass over the training data fits it; more epochs refit the same
statistics. Class targets are fitted as one-hot vectors; a model that makes its own steps from a static example
(`time_axis` "model": model=lsm on MNIST) is fitted to the example's class at every step after the washout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learnbench.models.temporal import TemporalModel
from learnbench.options import NonNegative
from learnbench.rules.base import CLOSED_FORM, LearningRule, LossFn, RuleOutput
from learnbench.rules.locality import signals
from learnbench.rules.readout.reservoir import check_reservoir, per_step_targets, readout_has_bias
from learnbench.rules.readout.reservoir import features as readout_features


class Ridge(LearningRule):
    trains = ("reservoir",)  # its own kind: the comparison sweeps over trained recurrent weights leave it out
    stacks_seeds = True  # a seed stack (model.seed_blocks) is solved block by block: each seed's own fit
    noise_differs_per_rank = False  # no noise

    def __init__(self, ridge: NonNegative = 1e-6) -> None:
        super().__init__()
        self.ridge = ridge

    def reads(self) -> frozenset[str]:
        """The readout's inputs and the targets (X^T X, Y^T X), solved in closed form."""
        return signals("pre", "target")

    def check_model(self, model: nn.Module) -> None:
        check_reservoir(model, "ridge")

    def init_state(self, model: TemporalModel, generator: torch.Generator) -> None:
        features = model.readout_weight.shape[1] + (1 if readout_has_bias(model) else 0)
        self.register_buffer("xx", torch.zeros(features, features, dtype=torch.float64))
        self.register_buffer("yx", torch.zeros(model.readout_weight.shape[0], features, dtype=torch.float64))

    def update_modes(self, model: nn.Module) -> dict[str, str]:
        return {name: CLOSED_FORM for name in model.trained_parameters("readout")}

    def begin_epoch(self, model: nn.Module) -> None:
        self.xx.zero_()
        self.yx.zero_()

    def statistics(self) -> list[Tensor]:
        return [self.xx, self.yx]

    @torch.no_grad()
    def estimate_grads(self, model: TemporalModel, x: Tensor, y: Tensor, loss_fn: LossFn) -> RuleOutput:
        n_out = model.readout_weight.shape[0]
        targets = per_step_targets(model, x, y, "ridge", static_ok=True)
        static = model.time_axis == "model"  # a static example run for the model's own steps (model=lsm on MNIST)
        # With output feedback the states are the teacher-forced ones: the target fed back, not the readout's output.
        hs = model.run(x, teacher=targets) if model.output_feedback else model.run(x)
        if static:  # the example's class is the target at every step
            targets = targets.unsqueeze(1).expand(-1, hs.shape[1], -1)
        output = model.readout(hs)
        washout = model.washout
        features = readout_features(model, hs[:, washout:])
        targets = targets[:, washout:].reshape(-1, n_out).to(torch.float64)
        for i, (out, feat, _) in enumerate(seed_block_indices(model, n_out, features.shape[1])):  # one, or each seed's
            block = gram(features[:, feat])
            if i and readout_has_bias(model):  # the count n (the constant's own entry) is every seed's: added once
                block[-1, -1] = 0
            self.xx[cross(feat, feat)] += block
            self.yx[cross(out, feat)] += targets[:, out].T @ features[:, feat]
        return RuleOutput(loss=loss_fn(output, y).mean(), output=output)

    @torch.no_grad()
    def solve(self, model: TemporalModel, statistics: list[Tensor]) -> None:
        xx, yx = statistics
        if not bool(xx.abs().sum() > 0):
            raise ValueError("method=ridge has no training step to fit: every step fell inside model.washout, or this "
                             "epoch gave no batch")
        params = list(model.trained_parameters("readout").values())
        bias = len(params) == 2
        for out, feat, units in seed_block_indices(model, len(yx), len(xx)):
            w, b = self.fit(xx[cross(feat, feat)], yx[cross(out, feat)], bias)
            params[0][out] = 0.0  # a stack's weights from other seeds' units stay zero
            params[0][cross(out, units)] = w.to(params[0].dtype)
            if b is not None:
                params[1][out] = b.to(params[1].dtype)

    def fit(self, xx: Tensor, yx: Tensor, bias: bool) -> tuple[Tensor, Tensor | None]:
        """(W_out, b_out or None) from [r; 1][r; 1]^T and y [r; 1]^T (or r r^T and y r^T without a bias)."""
        if bias:  # centred: [r; 1] [r; 1]^T holds sum r r^T, sum r and the count n
            n = xx[-1, -1]
            mean_r, mean_y = xx[:-1, -1] / n, yx[:, -1] / n
            xx = xx[:-1, :-1] - n * torch.outer(mean_r, mean_r)
            yx = yx[:, :-1] - n * torch.outer(mean_y, mean_r)
        regularised = xx + self.ridge * torch.eye(len(xx), dtype=xx.dtype, device=xx.device)
        w = solve_symmetric(regularised, yx.T).T  # W^T = (X X^T + lambda I)^{-1} X Y^T
        return w, (mean_y - w @ mean_r) if bias else None


Index = slice | Tensor


def seed_block_indices(model: TemporalModel, outputs: int, features: int) -> list[tuple[Index, Index, Index]]:
    """(output rows, feature columns, readout weight columns) of each independent fit. One fit: the whole statistics, as
    slices (views: the [steps, features] states are not copied on the way to the gram). A stack of seeds
    (`model.seed_blocks`, learnbench/seeds.py): each seed's outputs and units, and the constant feature (the last
    column) with a bias, as index tensors; each seed's statistics are summed and solved alone, as in its own run (the
    same products, and S N^2 work, not S^2 N^2)."""
    blocks = getattr(model, "seed_blocks", 1)
    if blocks == 1:
        return [(slice(None), slice(None), slice(None))]
    bias = readout_has_bias(model)
    units = (features - bias) // blocks
    rows = outputs // blocks
    indices = []
    for s in range(blocks):
        own = torch.arange(s * units, (s + 1) * units)
        feat = torch.cat([own, torch.tensor([features - 1])]) if bias else own
        indices.append((torch.arange(s * rows, (s + 1) * rows), feat, own))
    return indices


def cross(rows: Index, cols: Index) -> tuple[Index, Index]:
    """The index of the block rows x cols of a matrix: index tensors as an outer product, slices as they are."""
    return (rows[:, None], cols) if isinstance(rows, Tensor) else (rows, cols)


def gram(features: Tensor) -> Tensor:
    """X^T X of the rows [n, features]. On the CPU through numpy, whose matmul calls BLAS's syrk for a.T @ a (one
    triangle: half the multiply-adds; 2.3x faster than torch's gemm at 10,000 x 1001, docs/speed.md); torch has no
    syrk. Elsewhere (a GPU) torch's matmul."""
    if features.device.type != "cpu":
        return features.T @ features
    rows = features.numpy()
    return torch.from_numpy(rows.T @ rows)


def solve_symmetric(a: Tensor, b: Tensor) -> Tensor:
    """a^{-1} b for a symmetric a: by Cholesky where a is positive definite (X X^T + lambda I with lambda > 0, or
    full-rank states: half LU's work, as reservoirpy's scipy.linalg.solve(assume_a="sym") saves it with LDL^T), by LU
    where it is not (lambda = 0 on rank-deficient states)."""
    factor, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(b, factor)
    return torch.linalg.solve(a, b)
