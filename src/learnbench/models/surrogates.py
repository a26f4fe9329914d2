"""Surrogate derivatives of the spike: the forward pass is always the Heaviside step, only the backward differs.

x is the membrane minus the (possibly adaptive) threshold; the spike is S = H(x) = 1 if x > 0 else 0
(H(0) = 0, as snnTorch, spytorch, norse and Bellec et al.'s code). Backward, dS/dx is replaced by

    fast_sigmoid       1 / (scale |x| + 1)^2                   SuperSpike (Zenke & Ganguli 2018): spytorch's scale 100,
                                                               snnTorch's fast_sigmoid slope 25 (the default here)
    arctan             (scale / 2) / (1 + (pi/2 scale x)^2)    snnTorch's atan (Fang et al. 2021), alpha 2
    piecewise_linear   (scale / thr) max(0, 1 - |x| / thr)     Bellec et al. 2020's pseudo-derivative, gamma 0.3;
                                                               thr is the base threshold (with thr = 1: 0.3 max(0, 1 - |x|))
    straight_through   1                                       the straight-through estimator (Bengio et al. 2013)

The scale is a hyper-parameter that moves results a lot (design note 15): it is a model option of its
own (`model.surrogate_scale`, null: the reference value in DEFAULT_SCALES), so sweeps can vary it and
results.json records it. Each surrogate is a torch.autograd.Function; `spike(x, ...)` picks one.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Surrogate = Literal["fast_sigmoid", "arctan", "piecewise_linear", "straight_through"]

#: The scale each surrogate gets when none is given (the references above); straight_through has none.
DEFAULT_SCALES: dict[str, float | None] = {"fast_sigmoid": 25.0, "arctan": 2.0, "piecewise_linear": 0.3, "straight_through": None}


def heaviside(x: Tensor) -> Tensor:
    return (x > 0).to(x.dtype)


class FastSigmoidSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.scale = scale
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad / (ctx.scale * x.abs() + 1) ** 2, None


class ArctanSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.scale = scale
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * (ctx.scale / 2) / (1 + (math.pi / 2 * ctx.scale * x) ** 2), None


class PiecewiseLinearSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float, width: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.scale, ctx.width = scale, width
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * (ctx.scale / ctx.width) * (1 - x.abs() / ctx.width).clamp(min=0), None, None


class StraightThroughSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad


def resolved_scale(surrogate: str, scale: float | None) -> float | None:
    """The scale a surrogate uses: the one given, else its reference value."""
    return DEFAULT_SCALES[surrogate] if scale is None else scale


def spike(x: Tensor, surrogate: str, scale: float | None, threshold: float = 1.0) -> Tensor:
    """H(x) forward; the surrogate's derivative backward. `threshold`: the width of piecewise_linear."""
    scale = resolved_scale(surrogate, scale)
    if surrogate == "fast_sigmoid":
        return FastSigmoidSpike.apply(x, scale)
    if surrogate == "arctan":
        return ArctanSpike.apply(x, scale)
    if surrogate == "piecewise_linear":
        return PiecewiseLinearSpike.apply(x, scale, threshold)
    if surrogate == "straight_through":
        return StraightThroughSpike.apply(x)
    raise ValueError(f"surrogate={surrogate!r} is not known; choose one of {', '.join(DEFAULT_SCALES)}")


def surrogate_derivative(x: Tensor, surrogate: str, scale: float | None, threshold: float = 1.0) -> Tensor:
    """dS/dx as the backward pass of `spike` gives it (e-prop's pseudo-derivative psi): taken from the
    autograd Function itself, so a rule that uses it can never drift from what surrogate BPTT uses."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (derivative,) = torch.autograd.grad(spike(x, surrogate, scale, threshold).sum(), x)
    return derivative
