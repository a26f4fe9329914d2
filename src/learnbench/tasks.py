"""What a dataset asks of a model: the per-example loss and the evaluation metrics.

A datamodule names its task (`datamodule.task`, a key of `TASKS`); the module takes the loss and the
metrics from here, so a new kind of data (a regression with a decoded error in degrees, sequences
with a loss per time step) registers a `Task` instead of editing the module.

Every loss is per example, shape [batch]: rules that weight examples (perturbation baselines, DDP
shards) need the vector, and the module averages it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Literal

import torchmetrics
from torch import Tensor
from torch.nn import functional as F

from learnbench import regression_metrics

CLASSIFICATION = "classification"
RECONSTRUCTION = "reconstruction"
SIGMOID_CLASSIFICATION = "classification_sigmoid"

# (output, target) -> loss of each example, shape [batch]; the batch loss is its mean.
LossFn = Callable[[Tensor, Tensor], Tensor]

#: What a task's `loss` is, for rules that write a known loss's derivative out instead of asking autograd.
#: cross_entropy: F.cross_entropy(output, target, reduction="none"), logits [B, C] against class indices
#: [B] (or class probabilities, which the rules check for). other: anything else (autograd).
LossKind = Literal["cross_entropy", "other"]
CROSS_ENTROPY: LossKind = "cross_entropy"
OTHER_LOSS: LossKind = "other"


class Task:
    """Base: subclasses set `name` and implement `loss` and `metrics`; `update` feeds each metric."""

    name: str = ""
    #: Examples are sequences [batch, time, features]: the module cuts them into windows (SequenceTask).
    sequential: bool = False
    #: What `loss` is (LossKind); read through `loss_kind(loss_fn)`.
    loss_kind: LossKind = OTHER_LOSS

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A subclass that redefines `loss` has a loss of its own: it never inherits its parent's kind.
        if "loss" in vars(cls) and "loss_kind" not in vars(cls):
            cls.loss_kind = OTHER_LOSS

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
    loss_kind = CROSS_ENTROPY

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target, reduction="none")

    def metrics(self, num_outputs: int) -> dict[str, torchmetrics.Metric]:
        return {"acc": torchmetrics.classification.MulticlassAccuracy(num_classes=num_outputs, average="micro")}


class SigmoidClassification(Classification):
    """One sigmoid per class, each a binary cross entropy against the one-hot target, summed over the classes
    (Akrout et al.'s `SigmoidCrossEntropyLoss`, fcnn/FCNN_BP.py); the predicted class is still the largest
    output. The output is the logit: its derivative is sigmoid(output) - onehot, their `delta_cost`."""

    name = SIGMOID_CLASSIFICATION

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        onehot = F.one_hot(target, output.shape[-1]).to(output.dtype)
        return F.binary_cross_entropy_with_logits(output, onehot, reduction="none").sum(dim=-1)


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
    gradients summed over windows are the sequence's gradient (docs/architecture.md, "Time").

    `washout`: the first steps of every sequence (a reservoir's transient from its initial state) are left out
    of the loss and the metrics: the loss is the mean over the steps after it. The registered tasks have none;
    the training module takes a copy with the model's (`with_washout(model.washout)`)."""

    sequential = True
    #: Targets [batch, time, ...], one per step (else one per sequence, scored at the last step).
    per_step: bool = True
    #: The per-step targets are values to fit (a least-squares readout, method=ridge or force, can regress them).
    fittable_targets: bool = True
    washout: int = 0

    def with_washout(self, washout: int) -> "SequenceTask":
        """A copy of this task that scores only the steps from `washout` on (a per-sequence target is read at
        the last step anyway: washout changes nothing there)."""
        task = copy.copy(self)
        task.washout = washout if self.per_step else 0
        return task

    def scored(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """The steps after the washout of outputs and targets [batch, time, ...]."""
        if not self.washout:
            return output, target
        return output[:, self.washout:], target[:, self.washout:]

    def step_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The loss of every example at every step, [batch, time]."""
        raise NotImplementedError

    def update(self, metrics: dict[str, torchmetrics.Metric], output: Tensor, target: Tensor) -> None:
        super().update(metrics, *self.scored(output, target))

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self.step_loss(*self.scored(output, target)).mean(dim=1)

    def window_target(self, target: Tensor, t0: int, t1: int) -> Tensor:
        return target[:, t0:t1] if self.per_step else target

    def window_loss(self, steps: int, t0: int, t1: int) -> LossFn:
        """The per-example loss of the window [t0, t1) of a sequence of `steps` steps, as its share of the
        sequence's loss: summed per-step losses after the washout / (steps - washout) (a per-sequence target:
        zero before the last window)."""
        if not self.per_step:
            return self.loss if t1 == steps else _no_loss
        return functools.partial(_window_share, self, steps, t0)


def _window_share(task: SequenceTask, steps: int, t0: int, output: Tensor, target: Tensor) -> Tensor:
    losses = task.step_loss(output, target)
    skip = min(max(task.washout - t0, 0), losses.shape[1])  # the window's steps inside the washout
    return losses[:, skip:].sum(dim=1) / (steps - task.washout)


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
        output, target = self.scored(output, target)
        metrics["mse"].update(output.flatten(), target.flatten())


class SeriesRegression(SequenceRegression):
    """A sequence regression scored as a time series is (reservoir computing: data/series.py): besides the MSE,
    RMSE, NRMSE (by the target's std), R^2 and the mean absolute error over every scored step and output of the split
    (learnbench/regression_metrics.py)."""

    name = "series_regression"

    def metrics(self, num_outputs):
        return {"mse": torchmetrics.MeanSquaredError(), "rmse": regression_metrics.RootMeanSquaredError(),
                "nrmse": regression_metrics.NormalisedRootMeanSquaredError(), "r2": regression_metrics.RSquared(),
                "mae": regression_metrics.MeanAbsoluteError()}

    def update(self, metrics, output, target):
        output, target = self.scored(output, target)
        metrics["mse"].update(output.flatten(), target.flatten())
        for name in ("rmse", "nrmse", "r2", "mae"):
            metrics[name].update(output, target)


class MemoryCapacityTask(SequenceRegression):
    """Jaeger's (2002) memory capacity: output k recalls the input k steps back; the score is the sum over k of
    the squared correlations between outputs and targets over the split's scored steps."""

    name = "memory_capacity"

    def metrics(self, num_outputs):
        return {"mse": torchmetrics.MeanSquaredError(), "memory_capacity": regression_metrics.MemoryCapacity(num_outputs)}

    def update(self, metrics, output, target):
        output, target = self.scored(output, target)
        metrics["mse"].update(output.flatten(), target.flatten())
        metrics["memory_capacity"].update(output, target)


class SequenceSoftClassification(SequenceTask):
    """Cross-entropy against a target distribution at every step (the add task's (p_t, 1 - p_t))."""

    name = "sequence_soft_classification"

    def step_loss(self, output, target):
        return -(target * F.log_softmax(output, dim=-1)).sum(dim=-1)


class SequenceClassification(SequenceTask):
    """One class per sequence, read from the output at the last step (sequential MNIST)."""

    name = "sequence_classification"
    per_step = False
    loss_kind = OTHER_LOSS  # cross entropy of the last step's output, not of the output [B, T, C] it is given

    def loss(self, output, target):
        return F.cross_entropy(output[:, -1], target, reduction="none")

    def metrics(self, num_outputs):
        return {"acc": torchmetrics.classification.MulticlassAccuracy(num_classes=num_outputs, average="micro")}

    def update(self, metrics, output, target):
        metrics["acc"].update(output[:, -1], target)


class FinalWindowClassification(SequenceTask):
    """One class per sequence, scored over a final window of steps (Bellec et al. 2020's evidence accumulation:
    the cross-entropy at every step of the recall window, averaged over it). Targets [batch, time, 2] hold
    (class, weight) at every step, the weight 1 / (the window's length) inside the window and 0 before it: so the
    data choose the window, a window of the sequence scores its own steps, and the windows' losses sum to the
    sequence's. The prediction: the class of the largest output averaged over the scored steps."""

    name = "final_window_classification"
    fittable_targets = False  # (class, weight) pairs: a least-squares fit would regress the class index

    def step_loss(self, output, target):
        classes, weights = target[..., 0].long(), target[..., 1]
        per_step = F.cross_entropy(output.flatten(0, 1), classes.flatten(), reduction="none").view(classes.shape)
        return per_step * weights

    def loss(self, output, target):
        return self.step_loss(*self.scored(output, target)).sum(dim=1)

    def window_loss(self, steps, t0, t1):
        return self.loss  # the weights already say each step's share (the washout: scored() inside loss)

    def metrics(self, num_outputs):
        return {"acc": torchmetrics.classification.MulticlassAccuracy(num_classes=num_outputs, average="micro")}

    def update(self, metrics, output, target):
        output, target = self.scored(output, target)
        mean_output = (output * target[..., 1:]).sum(dim=1)  # weights sum to 1 over the window
        metrics["acc"].update(mean_output, target[:, -1, 0].long())


class OverTimeTask(Task):
    """A static example classified in time (outputs [batch, steps, classes]). `washout`: the model's first steps (a
    reservoir's transient, model=lsm) are left out of the loss and the metrics (a copy: `with_washout`)."""

    washout: int = 0

    def with_washout(self, washout: int) -> "OverTimeTask":
        task = copy.copy(self)
        task.washout = washout
        return task

    def scored(self, output: Tensor) -> Tensor:
        return output[:, self.washout:]


class MaxOverTimeClassification(OverTimeTask):
    """A static example classified by a model that runs in time (model=snn, output [batch, time, classes]):
    each output's maximum over time is its class score, the loss the NLL of their log-softmax (spytorch,
    Zenke & Vogels 2021); the prediction is the largest maximum."""

    name = "max_over_time_classification"

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(self.scored(output).amax(dim=1), target, reduction="none")

    def metrics(self, num_outputs: int) -> dict[str, torchmetrics.Metric]:
        return {"acc": torchmetrics.classification.MulticlassAccuracy(num_classes=num_outputs, average="micro")}

    def update(self, metrics, output, target):
        metrics["acc"].update(self.scored(output).amax(dim=1), target)


class SumOverStepsClassification(OverTimeTask):
    """A static example classified by a model that runs in time: the cross-entropy of the output (snnTorch: the
    output layer's membrane) at every step, summed over the steps (snnTorch's tutorial 5). The prediction is
    the largest mean output over the steps (the tutorial counts the output layer's spikes instead)."""

    name = "sum_over_steps_classification"

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        output = self.scored(output)
        steps = output.shape[1]
        per_step = F.cross_entropy(output.flatten(0, 1), target.repeat_interleave(steps), reduction="none")
        return per_step.view(-1, steps).sum(dim=1)

    def metrics(self, num_outputs: int) -> dict[str, torchmetrics.Metric]:
        return {"acc": torchmetrics.classification.MulticlassAccuracy(num_classes=num_outputs, average="micro")}

    def update(self, metrics, output, target):
        metrics["acc"].update(self.scored(output).mean(dim=1), target)


class SpikeTimeRegression(Task):
    """Output spike times against target times (model=srm, data=spike_xor): half the squared error summed over the
    outputs, in ms^2 (Bohte et al. 2002's E = 1/2 sum_j (t_j - t*_j)^2). `sse` sums that over every example of
    the split or epoch (train/sse: the epoch's error, each example scored before its own update when the batch is
    one example: SpikeProp's convergence criterion, sse < 1 ms^2 on XOR)."""

    name = "spike_time_regression"

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return 0.5 * (output - target).pow(2).sum(dim=-1)

    def metrics(self, num_outputs: int) -> dict[str, torchmetrics.Metric]:
        return {"sse": torchmetrics.SumMetric()}

    def update(self, metrics, output, target):
        metrics["sse"].update(self.loss(output, target))


#: The loss over time (a model option, `model.loss_over_time`) -> the task of classifying static examples with it.
CLASSIFICATION_OVER_TIME = {"max_over_time": MaxOverTimeClassification.name, "sum_over_steps": SumOverStepsClassification.name}

TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make a task available by its name (call at import time of the module that defines it)."""
    TASKS[task.name] = task
    return task


register_task(Classification())
register_task(SigmoidClassification())
register_task(Reconstruction())
for _task in (SequenceRegression(), SeriesRegression(), MemoryCapacityTask(), SequenceSoftClassification(),
              SequenceClassification(), FinalWindowClassification(), MaxOverTimeClassification(), SumOverStepsClassification(),
              SpikeTimeRegression()):
    register_task(_task)


def get_task(name: "str | Task") -> Task:
    """The task of that name (a Task given is returned as it is: a seed stack's, learnbench/seeds.py)."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        import learnbench.data  # noqa: F401  (data modules register their own tasks at import, e.g. zipser_andersen)
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: known tasks are {sorted(TASKS)}")
    return TASKS[name]


def per_example_loss(task: str, output: Tensor, target: Tensor) -> Tensor:
    """Loss of each example, shape [batch], for the task of that name (bind it with functools.partial)."""
    return get_task(task).loss(output, target)


def loss_kind(loss_fn: LossFn) -> LossKind:
    """The kind of a loss function a rule receives: its task's `loss_kind` when it is a task's whole loss (the
    bound `task.loss` the training module passes, or per_example_loss bound to a task's name); "other" for
    anything else, a sequence window's share of its task's loss (SequenceTask.window_loss) included."""
    task = getattr(loss_fn, "__self__", None)
    if isinstance(task, Task) and loss_fn.__func__ is type(task).loss:
        return task.loss_kind
    if isinstance(loss_fn, functools.partial) and loss_fn.func is per_example_loss and len(loss_fn.args) == 1 and not loss_fn.keywords:
        return get_task(loss_fn.args[0]).loss_kind
    return OTHER_LOSS
