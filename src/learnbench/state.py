"""State that lives in time: a model's (a rate unit's h; a LIF layer's membrane, current, adaptation,
refractory count) and a rule's (eligibility traces, RTRL's influence matrix, iPC's value nodes).

A state is a small dataclass of tensors (nested states, dicts and lists of tensors allowed; other
fields, such as a step count, are kept as they are). Three operations serve every rule and the
training loop's truncation windows:

    detach(state)          cut the graph at a window's start (nothing flows back across it)
    select(state, index)   the same rows of every tensor (a sub-batch, one example)
    model.initial_state(batch)   the reset: a fresh state for every batch

State is created per batch and passed explicitly; it is never kept in a registry of instances
(snnTorch's registry once reset unrelated networks; spikingjelly users who forget `reset_net` get
gradients that leak across batches). Nothing outlives a batch unless a window carries it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from torch import Tensor

S = TypeVar("S")


def map_tensors(fn: Callable[[Tensor], Tensor], state: S) -> S:
    """`state` with fn applied to every tensor in it (dataclass fields, dict values, list and tuple items)."""
    if isinstance(state, Tensor):
        return fn(state)
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        changed = {f.name: map_tensors(fn, getattr(state, f.name)) for f in dataclasses.fields(state) if f.init}
        return dataclasses.replace(state, **changed)
    if isinstance(state, dict):
        return {key: map_tensors(fn, value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(map_tensors(fn, value) for value in state)
    return state


def detach(state: S) -> S:
    return map_tensors(Tensor.detach, state)


def select(state: S, index: Any) -> S:
    """The rows `index` (an int, slice or index tensor over the batch) of every tensor in the state."""
    return map_tensors(lambda t: t[index], state)


@dataclasses.dataclass
class State:
    """Base of named state structures: `state.detach()`, `state.select(index)`."""

    def detach(self):
        return detach(self)

    def select(self, index: Any):
        return select(self, index)
