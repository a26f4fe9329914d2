"""What a dataset asks of a model: the per-example loss and the evaluation metrics.

A datamodule names its task (`datamodule.task`, a key of `TASKS`); the module takes the loss and the
metrics from here, so a new kind of data (a regression with a decoded error in degrees, sequences
with a loss per time step) registers a `Task` instead of editing the module.

Every loss is per example, shape [batch]: rules that weight examples (perturbation baselines, DDP
shards) need the vector, and the module averages it.
"""

from __future__ import annotations

from collections.abc import Callable

import torchmetrics
from torch import Tensor
from torch.nn import functional as F

CLASSIFICATION = "classification"
RECONSTRUCTION = "reconstruction"


class Task:
    """Base: subclasses set `name` and implement `loss` and `metrics`; `update` feeds each metric."""

    name: str = ""

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def metrics(self, num_outputs: int) -> dict[str, torchmetrics.Metric]:
        """The metrics besides the loss, by the name they are logged under (`val/<name>`, `test/<name>`,
        `train/<name>`). Directions (higher or lower is better) are read from the name by
        learnbench.metric_direction: add a new name there."""
        return {}

    def update(self, metrics: dict[str, torchmetrics.Metric], output: Tensor, target: Tensor) -> None:
        for metric in metrics.values():
            metric.update(output, target)


class Classification(Task):
    name = CLASSIFICATION

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target, reduction="none")

    def metrics(self, num_outputs: int) -> dict[str, torchmetrics.Metric]:
        return {"acc": torchmetrics.classification.MulticlassAccuracy(num_classes=num_outputs, average="micro")}


class Reconstruction(Task):
    """Squared error per example, averaged over its pixels (the target is the input, flattened)."""

    name = RECONSTRUCTION

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return (output - target.flatten(1)).pow(2).flatten(1).mean(dim=1)

    def metrics(self, num_outputs: int) -> dict[str, torchmetrics.Metric]:
        return {"mse": torchmetrics.MeanSquaredError()}

    def update(self, metrics, output, target):
        metrics["mse"].update(output, target.flatten(1))


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make a task available by its name (call at import time of the module that defines it)."""
    TASKS[task.name] = task
    return task


register_task(Classification())
register_task(Reconstruction())


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: known tasks are {sorted(TASKS)}")
    return TASKS[name]


def per_example_loss(task: str, output: Tensor, target: Tensor) -> Tensor:
    """Loss of each example, shape [batch], for the task of that name (bind it with functools.partial)."""
    return get_task(task).loss(output, target)


LossFn = Callable[[Tensor, Tensor], Tensor]
