"""Scores of a regression over a whole split (the series tasks of data/series.py), from sums kept in float64.

    rmse              sqrt(mean (y - y_hat)^2)                      over every scored step and output
    mae               mean |y - y_hat|                              the same values (FORCE's training and testing error)
    nrmse             rmse / std(y)                                 std over the same values (population)
    r2                1 - sum (y - y_hat)^2 / sum (y - mean y)^2    the same values, one pooled mean
    memory_capacity   sum over outputs k of corr(y_k, y_hat_k)^2    Jaeger 2002: output k recalls u_{t-k}

The first three are reservoirpy.observables' rmse, nrmse (with norm_value = std(y)) and rsquare, pooled over the
outputs as they are (tests/test_reservoir.py checks them against it); nrmse^2 = 1 - r2. The sums are states
reduced by summation, so the scores are the split's however it is batched or sharded over ranks.
"""

from __future__ import annotations

import torch
import torchmetrics
from torch import Tensor

_F64 = torch.float64


class _PooledSums(torchmetrics.Metric):
    """n, sum (y - y_hat)^2, sum y and sum y^2 over every value of [..., outputs] predictions and targets."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("count", "squared_error", "target_sum", "target_squares"):
            self.add_state(name, default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")

    def update(self, output: Tensor, target: Tensor) -> None:
        output, target = output.detach().to(_F64), target.detach().to(_F64)
        self.count += target.numel()
        self.squared_error += (output - target).pow(2).sum()
        self.target_sum += target.sum()
        self.target_squares += target.pow(2).sum()

    def _mse_and_variance(self) -> tuple[Tensor, Tensor]:
        mean = self.target_sum / self.count
        return self.squared_error / self.count, (self.target_squares / self.count - mean**2).clamp_min(0)


class RootMeanSquaredError(_PooledSums):
    def compute(self) -> Tensor:
        return self._mse_and_variance()[0].sqrt()


class NormalisedRootMeanSquaredError(_PooledSums):
    def compute(self) -> Tensor:
        mse, variance = self._mse_and_variance()
        return (mse / variance).sqrt()


class RSquared(_PooledSums):
    def compute(self) -> Tensor:
        mse, variance = self._mse_and_variance()
        return 1 - mse / variance


class MeanAbsoluteError(torchmetrics.Metric):
    """mean |y - y_hat| over every value (Sussillo & Abbott's MAE: sum(abs(zt - ft)) / steps for one output)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("count", "absolute_error"):
            self.add_state(name, default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")

    def update(self, output: Tensor, target: Tensor) -> None:
        self.count += target.numel()
        self.absolute_error += (output.detach().to(_F64) - target.detach().to(_F64)).abs().sum()

    def compute(self) -> Tensor:
        return self.absolute_error / self.count


class MemoryCapacity(torchmetrics.Metric):
    """sum_k corr(y_k, y_hat_k)^2 over the outputs [..., K] (Jaeger 2002's memory capacity when output k is
    trained to recall the input k steps back): per output, n and the sums of y, y_hat, y^2, y_hat^2, y y_hat."""

    full_state_update = False

    def __init__(self, num_outputs: int) -> None:
        super().__init__()
        self.add_state("count", default=torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        for name in ("y", "p", "yy", "pp", "yp"):
            self.add_state(name, default=torch.zeros(num_outputs, dtype=_F64), dist_reduce_fx="sum")

    def update(self, output: Tensor, target: Tensor) -> None:
        p = output.detach().to(_F64).reshape(-1, output.shape[-1])
        y = target.detach().to(_F64).reshape(-1, target.shape[-1])
        self.count += len(y)
        self.y += y.sum(0)
        self.p += p.sum(0)
        self.yy += (y * y).sum(0)
        self.pp += (p * p).sum(0)
        self.yp += (y * p).sum(0)

    def compute(self) -> Tensor:
        n = self.count
        covariance = self.yp / n - (self.y / n) * (self.p / n)
        variances = (self.yy / n - (self.y / n) ** 2) * (self.pp / n - (self.p / n) ** 2)
        # a constant output (an unfitted zero readout) recalls nothing: 0, not 0 / 0
        return torch.where(variances > 0, covariance**2 / variances.clamp_min(1e-300), 0.0).sum()
