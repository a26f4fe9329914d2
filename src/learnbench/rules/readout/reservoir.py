"""What the readout rules of a fixed reservoir share (ridge, force): the model they accept and its per-step targets."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from learnbench.models.temporal import TemporalModel


def check_reservoir(model: nn.Module, method: str) -> None:
    """Refuse, in one line, a model whose readout the rule cannot fit: not a model in time, hidden weights that would
    stay untrained while marked trainable, or a readout that does not learn."""
    if not isinstance(model, TemporalModel):
        raise ValueError(f"method={method} fits the readout of a reservoir, a model that runs in time (model=esn or lsm, or model=rnn "
                         f"with model.learn_input=false model.learn_recurrent=false); {type(model).__name__} has none")
    learning = sorted({*model.trained_parameters("input"), *model.trained_parameters("recurrent")})
    if learning:
        raise ValueError(f"method={method} fits only the readout, but {', '.join(learning)} would stay untrained "
                         f"while marked trainable: set model.learn_input=false model.learn_recurrent=false")
    if not model.trained_parameters("readout"):
        raise ValueError(f"method={method} fits the readout, but the model's readout does not learn: set model.learn_output=true")


def readout_has_bias(model: TemporalModel) -> bool:
    return len(model.trained_parameters("readout")) == 2


def per_step_targets(model: TemporalModel, x: Tensor, y: Tensor, method: str, static_ok: bool = False) -> Tensor:
    """The target at every step, [batch, time, outputs] (class targets as one-hot vectors); refused if the task gives
    one target per sequence. With `static_ok`, a static example run for the model's own steps (time_axis "model":
    model=lsm on MNIST) keeps its one target [batch, outputs], which the caller holds at every step."""
    n_out = model.readout_weight.shape[0]
    targets = y if y.is_floating_point() else F.one_hot(y, n_out).to(x.dtype)
    if static_ok and model.time_axis == "model":
        return targets
    if targets.shape[:2] != x.shape[:2]:
        raise ValueError(f"method={method} fits a target at every time step; this task gives targets of shape "
                         f"{tuple(y.shape)} for sequences of shape {tuple(x.shape)}: use a per-step task (data=mackey_glass)")
    return targets


def features(model: TemporalModel, hs: Tensor) -> Tensor:
    """The readout's inputs at every step, [examples * steps, features (+ 1 for the bias)], float64."""
    r = model.readout_input(hs).reshape(-1, hs.shape[-1]).to(torch.float64)
    return torch.cat([r, r.new_ones(len(r), 1)], dim=1) if readout_has_bias(model) else r
