"""What a dataset asks of a model: the per-example loss and the evaluation metrics.

A datamodule names its task (`datamodule.task`, a key of `TASKS`); the module takes the loss and the
metrics from here, so a new kind of data (a regression with a decoded error in degrees, sequences
with a loss per time step) registers a `Task` instead of editing the module.

Every loss is per example, shape [batch]: rules that weight examples (perturbation baselines, DDP
shards) need the vector, and the module averages it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torchmetrics
from torch import Tensor
from torch.nn import functional as F

CLASSIFICATION = "classification"
RECONSTRUCTION = "reconstruction"

# (output, target) -> loss of each example, shape [batch]; the batch loss is its mean.
LossFn = Callable[[Tensor, Tensor], Tensor]


class Task:
    """Base: subclasses set `name` and implement `loss` and `metrics`; `update` feeds each metric."""

    name: str = ""
    #: Examples are sequences [batch, time, features]: the module cuts them into windows (SequenceTask).
    sequential: bool = False

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


class SequenceTask(Task):
    """Sequences [batch, time, ...]. The loss of a sequence is the mean over its steps of a per-step loss
    (or, for a per-sequence target, the loss of the last step). The training module cuts sequences
    into windows and asks `window_loss` for each: the window losses of a sequence sum to its loss, so
    gradients summed over windows are the sequence's gradient (docs/architecture.md, "Time")."""

    sequential = True
    #: Targets [batch, time, ...], one per step (else one per sequence, scored at the last step).
    per_step: bool = True

    def step_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The loss of every example at every step, [batch, time]."""
        raise NotImplementedError

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.step_loss(output, target).mean(dim=1)

    def window_target(self, target: Tensor, t0: int, t1: int) -> Tensor:
        return target[:, t0:t1] if self.per_step else target

    def window_loss(self, steps: int, t0: int, t1: int) -> LossFn:
        """The per-example loss of the window [t0, t1) of a sequence of `steps` steps, as its share of the
        sequence's loss: summed per-step losses / steps (a per-sequence target: zero before the last window)."""
        if not self.per_step:
            return self.loss if t1 == steps else _no_loss
        return functools.partial(_window_share, self, steps)


def _window_share(task: SequenceTask, steps: int, output: Tensor, target: Tensor) -> Tensor:
    return task.step_loss(output, target).sum(dim=1) / steps


def _no_loss(output: Tensor, target: Tensor) -> Tensor:
    """A window before the scored last step: no loss, but a graph (rules take gradients of it)."""
    return output.flatten(1).sum(dim=1) * 0


class SequenceRegression(SequenceTask):
    """Half the squared error at every step, summed over the outputs (Murray 2019's 0.5 MSE for one output)."""

    name = "sequence_regression"

    def step_loss(self, output, target):
        return 0.5 * (output - target).pow(2).sum(dim=-1)

    def metrics(self, num_outputs):
        return {"mse": torchmetrics.MeanSquaredError()}

    def update(self, metrics, output, target):
        metrics["mse"].update(output.flatten(), target.flatten())


class SequenceSoftClassification(SequenceTask):
    """Cross-entropy against a target distribution at every step (the add task's (p_t, 1 - p_t))."""

    name = "sequence_soft_classification"

    def step_loss(self, output, target):
        return -(target * F.log_softmax(output, dim=-1)).sum(dim=-1)


class SequenceClassification(SequenceTask):
    """One class per sequence, read from the output at the last step (sequential MNIST)."""

    name = "sequence_classification"
    per_step = False

    def loss(self, output, target):
        return F.cross_entropy(output[:, -1], target, reduction="none")

    def metrics(self, num_outputs):
        return {"acc": torchmetrics.classification.MulticlassAccuracy(num_classes=num_outputs, average="micro")}

    def update(self, metrics, output, target):
        metrics["acc"].update(output[:, -1], target)


class MaxOverTimeClassification(Task):
    """A static example classified by a model that runs in time (model=snn, output [batch, time, classes]):
    each output's maximum over time is its class score, the loss the NLL of their log-softmax (spytorch,
    Zenke & Vogels 2021); the prediction is the largest maximum."""

    name = "max_over_time_classification"

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output.amax(dim=1), target, reduction="none")

    def metrics(self, num_outputs: int) -> dict[str, torchmetrics.Metric]:
        return {"acc": torchmetrics.classification.MulticlassAccuracy(num_classes=num_outputs, average="micro")}

    def update(self, metrics, output, target):
        metrics["acc"].update(output.amax(dim=1), target)


class SumOverStepsClassification(Task):
    """A static example classified by a model that runs in time: the cross-entropy of the output (snnTorch: the
    output layer's membrane) at every step, summed over the steps (snnTorch's tutorial 5). The prediction is
    the largest mean output over the steps (the tutorial counts the output layer's spikes instead)."""

    name = "sum_over_steps_classification"

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        steps = output.shape[1]
        per_step = F.cross_entropy(output.flatten(0, 1), target.repeat_interleave(steps), reduction="none")
        return per_step.view(-1, steps).sum(dim=1)

    def metrics(self, num_outputs: int) -> dict[str, torchmetrics.Metric]:
        return {"acc": torchmetrics.classification.MulticlassAccuracy(num_classes=num_outputs, average="micro")}

    def update(self, metrics, output, target):
        metrics["acc"].update(output.mean(dim=1), target)


#: The loss over time (a model option, `model.loss_over_time`) -> the task of classifying static examples with it.
CLASSIFICATION_OVER_TIME = {"max_over_time": MaxOverTimeClassification.name, "sum_over_steps": SumOverStepsClassification.name}

TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make a task available by its name (call at import time of the module that defines it)."""
    TASKS[task.name] = task
    return task


register_task(Classification())
register_task(Reconstruction())
for _task in (SequenceRegression(), SequenceSoftClassification(), SequenceClassification(),
              MaxOverTimeClassification(), SumOverStepsClassification()):
    register_task(_task)


def get_task(name: str) -> Task:
    if name not in TASKS:
        import learnbench.data  # noqa: F401  (data modules register their own tasks at import, e.g. zipser_andersen)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: known tasks are {sorted(TASKS)}")
    return TASKS[name]


def per_example_loss(task: str, output: Tensor, target: Tensor) -> Tensor:
    """Loss of each example, shape [batch], for the task of that name (bind it with functools.partial)."""
    return get_task(task).loss(output, target)

