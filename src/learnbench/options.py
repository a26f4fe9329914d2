"""Constrained option types: what a config key accepts, written where the key is used.

A class or function that a config instantiates (`_target_`) annotates its parameters with these,
and `learnbench.config_validation` checks every key of the config against the annotations before
any data is loaded or any step is taken (with pydantic), e.g.

    class NodePerturbation(ActivitySpaceRule):
        def __init__(self, sigma: Positive = 1e-3, directions: PositiveInt = 1,
                     noise: Literal["gaussian", "rademacher"] = "gaussian", clip: Positive | None = None): ...

A bad value then fails at once with the key, the value and what it accepts:
    method.sigma=-1: expected a number > 0 (set on the command line)

Plain `int`, `float`, `bool`, `str`, `Literal[...]`, `X | None`, `Sequence[int]` work as well;
these aliases add the range. Any `annotated_types` constraint (Gt, Ge, Lt, Le, Interval, MinLen, ...)
is understood, also in annotations written in place (`Annotated[int, Ge(2)]`).
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Gt, Interval, Le, Lt, MinLen

__all__ = [
    "AtLeast",
    "Fraction",
    "Ge",
    "Gt",
    "HalfOpenFraction",
    "Interval",
    "Le",
    "Lt",
    "MinLen",
    "NonNegative",
    "NonNegativeInt",
    "OpenFraction",
    "PositiveFraction",
    "Positive",
    "PositiveInt",
    "Seed",
]

# Numbers (an int is accepted where a float is asked for; a string never is).
Positive = Annotated[float, Gt(0)]  # learning rates, sigma, eps, clipping thresholds
NonNegative = Annotated[float, Ge(0)]  # weight decay, noise levels, warm-up lengths
Fraction = Annotated[float, Interval(ge=0, le=1)]  # [0, 1]: ratios, probabilities
OpenFraction = Annotated[float, Interval(gt=0, lt=1)]  # (0, 1)
HalfOpenFraction = Annotated[float, Interval(ge=0, lt=1)]  # [0, 1): momenta, decay rates (1 never forgets)
PositiveFraction = Annotated[float, Interval(gt=0, le=1)]  # (0, 1]: leak rates, connectivities

# Integers (a float such as 2.0 is refused: the code would get a float where it counts).
PositiveInt = Annotated[int, Ge(1)]  # sizes, counts, directions
NonNegativeInt = Annotated[int, Ge(0)]  # "0: off" switches, table sizes
Seed = Annotated[int, Interval(ge=0, le=2**32 - 1)]  # what Lightning's seed_everything accepts


def AtLeast(n: int) -> object:  # noqa: N802 (reads like a type: `arms: AtLeast(2)`)
    """An integer >= n, e.g. `arms: AtLeast(2)`."""
    return Annotated[int, Ge(n)]
