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
results.json records it. One torch.autograd.Function, SurrogateSpike, takes the derivative from DERIVATIVES; `spike(x, ...)` applies it.
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


# Each works in place on its one fresh temporary (x itself is never written): the backward pass of every
# spike of every step calls it, and each extra temporary is an allocation there.
def fast_sigmoid(x: Tensor, scale: float, width: float) -> Tensor:
    return x.abs().mul_(scale).add_(1).square_().reciprocal_()


def arctan(x: Tensor, scale: float, width: float) -> Tensor:
    return x.mul(math.pi / 2 * scale).square_().add_(1).reciprocal_().mul_(scale / 2)


def piecewise_linear(x: Tensor, scale: float, width: float) -> Tensor:
    return x.abs().div_(-width).add_(1).clamp_(min=0).mul_(scale / width)


def straight_through(x: Tensor, scale: float | None, width: float) -> Tensor:
    return torch.ones_like(x)


#: dS/dx of each surrogate at x (the module docstring's table); `width` is piecewise_linear's threshold.
DERIVATIVES = {"fast_sigmoid": fast_sigmoid, "arctan": arctan, "piecewise_linear": piecewise_linear,
               "straight_through": straight_through}


class SurrogateSpike(torch.autograd.Function):
    """H(x) forward; backward, the incoming gradient times the surrogate's dS/dx at the saved x. Forward mode
    (`jvp`: torch.func.jvp, dual tensors) is the same substitution, dS = dS/dx(x) dx: so a forward gradient
    (method=fg_w, fg_a on model=snn) is the directional derivative of the surrogate's gradient, the one
    surrogate BPTT follows, not of the step function's (which is zero almost everywhere). Written in the
    setup_context form, with a generated vmap rule, so torch.func's transforms take it."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, surrogate: str, scale: float | None, width: float) -> Tensor:
        return heaviside(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, surrogate, scale, width = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        ctx.surrogate, ctx.scale, ctx.width = surrogate, scale, width

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return DERIVATIVES[ctx.surrogate](x, ctx.scale, ctx.width).mul_(grad), None, None, None

    @staticmethod
    def jvp(ctx, x_tangent: Tensor, *_) -> Tensor:
        (x,) = ctx.saved_tensors
        return x_tangent * DERIVATIVES[ctx.surrogate](x, ctx.scale, ctx.width)


def resolved_scale(surrogate: str, scale: float | None) -> float | None:
    """The scale a surrogate uses: the one given, else its reference value."""
    return DEFAULT_SCALES[surrogate] if scale is None else scale


def no_derivative_asked() -> bool:
    """True where nothing can ask for the spike's derivative: grad mode off, no torch.func transform (jvp, vmap,
    grad) and no forward-AD level open. There `spike` is H(x) alone: SurrogateSpike.apply binds its default
    arguments through inspect.signature at every call (torch 2.14, setup_context form), about 0.1 ms, a third of
    e-prop's estimate on the evidence-accumulation network, whose runs are all without grad. Where torch's private
    probes are missing, the answer is False (the Function, always right)."""
    try:
        return (not torch.is_grad_enabled()
                and torch._C._functorch.peek_interpreter_stack() is None
                and torch.autograd.forward_ad._current_level < 0)
    except AttributeError:
        return False


def spike(x: Tensor, surrogate: str, scale: float | None, threshold: float = 1.0) -> Tensor:
    """H(x) forward; the surrogate's derivative backward. `threshold`: the width of piecewise_linear."""
    if surrogate not in DERIVATIVES:
        raise ValueError(f"surrogate={surrogate!r} is not known; choose one of {', '.join(DEFAULT_SCALES)}")
    if no_derivative_asked():
        return heaviside(x)
    return SurrogateSpike.apply(x, surrogate, resolved_scale(surrogate, scale), threshold)


def surrogate_derivative(x: Tensor, surrogate: str, scale: float | None, threshold: float = 1.0) -> Tensor:
    """dS/dx as the backward pass of `spike` gives it (e-prop's pseudo-derivative psi): the same DERIVATIVES
    entry SurrogateSpike.backward calls, so a rule that uses it can never drift from what surrogate BPTT uses."""
    return DERIVATIVES[surrogate](x.detach(), resolved_scale(surrogate, scale), threshold)
