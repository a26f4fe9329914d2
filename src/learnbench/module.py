"""One LightningModule that trains a model with any learning rule.

Each training batch, identically for every rule, for each call of the rule's schedule (the whole
batch once; windows of a sequence; several calls on the batch):
    zero grads -> rule writes p.grad -> [summed over calls until an update] -> all-reduce grads across
    ranks -> optional clipping -> optimiser step (gradient mode) / p -= p.grad (direct mode)
then scheduler step -> metrics. Closed-form parameters are solved from statistics summed over ranks
before every validation (rules/base.py has the update modes).
Manual optimisation is what lets a rule write gradients itself; it also means Lightning does not
clip, accumulate or step schedulers for us, and DDP does not average hand-written gradients
(only `manual_backward` arms its reducer): the all-reduce below is what keeps ranks in sync.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torchmetrics
from torch import Tensor, nn

from learnbench.models.blocks import Block
from learnbench.rules.base import CLOSED_FORM, DIRECT, GRADIENT, UPDATE_MODES, LearningRule, no_reduction, trainable_parameters
from learnbench.tasks import CLASSIFICATION, get_task
from learnbench.training_loop import train_batch


def split_metrics(task: str, num_outputs: int) -> nn.ModuleDict:
    """The metrics of one evaluation split: the loss plus the task's own (accuracy, MSE, ...)."""
    return nn.ModuleDict({"loss": torchmetrics.MeanMetric(), **get_task(task).metrics(num_outputs)})


def params_by_mode(model: nn.Module, rule: LearningRule) -> dict[str, list[nn.Parameter]]:
    """The model's trainable parameters grouped by the rule's update mode for each (in named_parameters order)."""
    modes = rule.update_modes(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unknown = {m for m in modes.values() if m not in UPDATE_MODES} | ({n for n, _ in named} ^ set(modes))
    if unknown:
        raise ValueError(f"{type(rule).__name__}.update_modes must give one of {UPDATE_MODES} for each trainable parameter; "
                         f"wrong or missing: {sorted(map(str, unknown))}")
    return {mode: [p for n, p in named if modes[n] == mode] for mode in UPDATE_MODES}


@torch.no_grad()
def apply_direct_updates(params: list[nn.Parameter]) -> None:
    """Direct-mode parameters move by exactly -p.grad (no momentum, no Adam scaling); the gradient is then cleared so
    the optimiser, stepping next, skips them."""
    for p in params:
        if p.grad is not None:
            p.sub_(p.grad)
            p.grad = None


class GradMasks(nn.Module):
    """Parameters with a mask each, multiplied into their gradients before every step (`restrict`), so the masked
    entries of whatever a rule estimates never move them: zeros stay zeros under SGD, momentum, weight decay and Adam
    (a zero gradient of a zero weight). The masks are buffers: they follow the module to its device."""

    def __init__(self, masked: list[tuple[nn.Parameter, Tensor]]):
        super().__init__()
        self.params = [p for p, _ in masked]
        for i, (_, mask) in enumerate(masked):
            self.register_buffer(f"mask{i}", mask, persistent=False)

    def restrict(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is not None:
                p.grad.mul_(getattr(self, f"mask{i}"))


class LearningRuleModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        rule: LearningRule,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        task: str = CLASSIFICATION,
        num_classes: int = 2,
        seed: int = 0,
        grad_clip_norm: float | None = None,
        allreduce_grads: bool = True,
        diagnostics_every_n_steps: int = 0,
        bias_lr_scale: float = 1.0,
    ):
        super().__init__()
        self.model = model
        self.rule = rule
        # Rule state from the seed alone, now: learned feedback must exist before the optimiser is
        # built and before a checkpoint is restored into it.
        rule.bind(model, seed)
        self.params_by_mode = params_by_mode(model, rule)
        self._closed_form_pending = False  # training batches since the last closed-form fit
        self.batches_trained = 0  # training batches so far (checkpointed): the logging cadence
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.task = get_task(task)
        if getattr(model, "washout", 0):  # a reservoir's transient: left out of the loss and the metrics
            self.task = self.task.with_washout(model.washout)
        self.loss_fn = self.task.loss
        self.seed = seed
        self.grad_clip_norm = grad_clip_norm
        self.bias_lr_scale = bias_lr_scale
        self.allreduce_grads = allreduce_grads
        self.allreduce_bytes = 0  # bytes this rank has passed to `_all_reduce_mean` (gradients, or a rule's d)
        self.diagnostics_every_n_steps = diagnostics_every_n_steps
        # align/* and rule/* diagnostics: (sum, count) over the whole run and over this epoch (for the
        # history). Sums of tensors, so a rule's per-step metrics cost no device sync.
        self.run_diagnostics: dict[str, list] = {}
        self.epoch_diagnostics: dict[str, list] = {}
        self.automatic_optimization = False
        self.diverged_at_step: int | None = None
        self.divergence_message: str | None = None
        self._first_batch_of_epoch = True
        self._reported: dict[str, float] = {}  # this epoch's validation values of `reported_by_module` metrics
        self.reported_test: dict[str, float] = {}
        self.train_loss = torchmetrics.MeanMetric()
        # The task's metrics on the training batches too (train/acc, ...), accumulated over the epoch.
        self.train_metrics = nn.ModuleDict(self.task.metrics(num_classes))
        self.eval_metrics = nn.ModuleDict({"val": split_metrics(task, num_classes), "test": split_metrics(task, num_classes)})
        # Set by learnbench.seeds for a recurrent stack: the masks that keep its block-diagonal weights' updates apart.
        self.seed_grad_masks = None
        # Weights the model holds at zero (model.grad_masks: model=snn's W_rec diagonal with autapses=false), built once.
        named = dict(model.named_parameters())
        masks = model.grad_masks() if hasattr(model, "grad_masks") else {}
        self.model_grad_masks = GradMasks([(named[name], mask) for name, mask in masks.items()]) if masks else None

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.rule.generator is None:
            self.rule.setup(self.model, seed=self.seed, rank=self.global_rank, device=self.device)
        # A rule that synchronises less than the gradient (comm=scalars) all-reduces through us, so
        # every byte is counted in `_all_reduce_mean`; allreduce_grads=false turns that off too.
        self.rule.reduce_mean = self._all_reduce_mean if self.allreduce_grads else no_reduction

    def trained_parameters(self) -> list[nn.Parameter]:
        """Everything the optimiser steps: the model's parameters, then the rule's own (learned feedback)."""
        return [*trainable_parameters(self.model), *self.rule.extra_parameters()]

    def configure_optimizers(self):
        # Direct and closed-form parameters sit in a group of their own with lr 0 and no gradient when the
        # optimiser steps (the module applies or solves them): untouched by it, they still let it count steps.
        groups = self._model_groups()
        if self.rule.extra_parameters():
            groups.append({"params": self.rule.extra_parameters(), "name": "rule"})
        by_rule = self.params_by_mode[DIRECT] + self.params_by_mode[CLOSED_FORM]
        if by_rule:
            groups.append({"params": by_rule, "name": "by_rule", "lr": 0.0, "weight_decay": 0.0})
        optimizer = self.optimizer_factory(params=[g for g in groups if g["params"]])
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        per_batch = self._optimizer_steps_per_batch()
        if self.trainer.max_steps > 0 and per_batch > 1:
            # The scheduler steps once per batch, and max_steps counts optimiser steps (T a batch for iPC per_step,
            # one per online update of a sequence).
            total = min(total, -(-self.trainer.max_steps // per_batch))
        per_epoch = max(1, total // max(1, self.trainer.max_epochs)) if self.trainer.max_epochs and self.trainer.max_epochs > 0 else total
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=total, steps_per_epoch=per_epoch)
        # Stepped by hand every training step (manual optimisation): "interval" is documentation.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _model_groups(self) -> list[dict]:
        """The model's gradient-stepped parameters: one group, or with bias_lr_scale != 1 the biases apart at
        lr x bias_lr_scale (Akrout et al.'s code steps biases with lr / batch on the batch mean: scale 1 / batch)."""
        params = self.params_by_mode[GRADIENT]
        if self.bias_lr_scale == 1.0:
            return [{"params": params, "name": "model"}]
        bias_ids = {id(p) for name, p in self.model.named_parameters() if name.endswith("bias")}
        lr = self.optimizer_factory.keywords["lr"] * self.bias_lr_scale
        return [
            {"params": [p for p in params if id(p) not in bias_ids], "name": "model"},
            {"params": [p for p in params if id(p) in bias_ids], "name": "model_biases", "lr": lr},
        ]

    def _optimizer_steps_per_batch(self, datamodule=None) -> int:
        """Optimiser steps a training batch takes: the updates in the rule's schedule (iPC's online updates;
        a recurrent rule's `update_every: k` on a training sequence, whose length the data declares). `datamodule`:
        before fit (the trainer's is read otherwise)."""
        datamodule = datamodule if datamodule is not None else getattr(self.trainer, "datamodule", None)
        steps = datamodule.input_shape[0] if self.task.sequential and datamodule is not None else None
        return sum(call.update for call in self.rule.schedule(steps))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """The one training loop (learnbench/training_loop.py; the bench times the same function), then the
        scheduler's step, once per batch, and the batch's training metrics."""
        x, y = batch
        align = bool(self.diagnostics_every_n_steps) and self.global_step % self.diagnostics_every_n_steps == 0
        taken = train_batch(self.rule, self.model, x, y, self.task, self, align)
        if taken is None:  # diverged: the run stops
            self.batches_trained += 1
            return
        self._closed_form_pending = True
        self._step_scheduler()
        self.batches_trained += 1
        self._log_train(taken.loss, taken.output, y, len(x))

    # ------------------------------------------------------------------ the loop's hooks (training_loop.LoopHooks)
    def zero_grad_all(self) -> None:
        self.optimizers().zero_grad(set_to_none=True)

    def update(self) -> None:
        self._update(self.optimizers())

    def diverged(self, loss: Tensor) -> bool:
        return self._diverged(loss)

    def backprop_grads(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        return self._backprop_grads(x, y)

    def log_alignment(self, x: Tensor, y: Tensor, true: tuple[Tensor, ...]) -> None:
        self._log_alignment(x, y, true)

    def log_rule_metrics(self, metrics: dict[str, Tensor], batch_size: int) -> None:
        self._log_rule_metrics(metrics, batch_size)

    def _update(self, optimizer) -> None:
        """All-reduce, clip, the update and the rule's after-step hook (p.grad holds the estimate): the optimiser
        steps the gradient-mode parameters; a direct-mode parameter moves by exactly -p.grad, no momentum, no
        Adam scaling, no weight decay (its gradient is cleared before the optimiser steps, which then skips it)."""
        if self.seed_grad_masks is not None:  # a recurrent seed stack: no update crosses between its seeds
            self.seed_grad_masks.restrict()
        if self.model_grad_masks is not None:  # weights the model holds at zero stay zero, whatever the rule
            self.model_grad_masks.restrict()
        if self.allreduce_grads and not self.rule.grads_synchronised:
            self._allreduce_grads()
        if self.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.trained_parameters(), self.grad_clip_norm)
        apply_direct_updates(self.params_by_mode[DIRECT])
        optimizer.step()
        self.rule.after_optimizer_step(self.model)

    def _step_scheduler(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def _fit_closed_form(self) -> None:
        """The closed-form parameters, solved from the rule's statistics summed over ranks (a sum, not a mean:
        a mean would scale ridge's lambda by the number of ranks); the rule's buffers keep this rank's own
        sums, so a second fit in the same epoch (validation mid-epoch, then its end) counts nothing twice."""
        if not self.params_by_mode[CLOSED_FORM] or not self._closed_form_pending:
            return
        self._closed_form_pending = False
        self.rule.solve(self.model, [self._all_reduce_sum(s.clone()) for s in self.rule.statistics()])

    def _diverged(self, loss: Tensor) -> bool:
        """A non-finite loss on any rank stops the run on every rank, before a bad step is taken."""
        bad = not bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            self.diverged_at_step = self.global_step
            self.divergence_message = (
                f"the training loss became {loss.item()} at step {self.global_step}: the run diverged and was "
                f"stopped. Lower optimizer.lr (or the rule's sigma), or clip with grad_clip_norm=1.0."
            )
            self.trainer.should_stop = True
        return bad

    def _allreduce_grads(self) -> None:
        """Average every gradient across ranks in one flat collective (a no-op on one process)."""
        if self.trainer.world_size == 1:
            return
        params = [p for p in self.trained_parameters() if p.grad is not None]
        if not params:  # a closed-form rule writes no gradient
            return
        flat = self._all_reduce_mean(torch.cat([p.grad.reshape(-1) for p in params]))
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p.grad))

    def _all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """The sum over ranks (closed-form statistics), counted with the rest of the traffic."""
        if self.trainer.world_size == 1:
            return tensor
        self.allreduce_bytes += tensor.numel() * tensor.element_size()
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    def _all_reduce_mean(self, tensor: Tensor) -> Tensor:
        """The mean over ranks; the one place gradient/scalar traffic goes through, and is counted."""
        if self.trainer.world_size == 1:
            return tensor
        self.allreduce_bytes += tensor.numel() * tensor.element_size()
        return self.trainer.strategy.reduce(tensor, reduce_op="mean")

    def _backprop_grads(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        """Backprop's gradient of the objective the rules estimate, for the model's trainable parameters (in
        named_parameters order): the batch loss, plus model=snn's firing-rate penalty where it has one (bp and
        e-prop add it to their estimates: leaving it out here would misalign bp itself)."""
        with torch.enable_grad():
            params = [p for p in self.model.parameters() if p.requires_grad]
            if getattr(self.model, "rate_penalty", 0):
                output, penalty, _ = self.model.penalized(x)
            else:
                output, penalty = self.model(x), 0.0
            return torch.autograd.grad(self.loss_fn(output, y).mean() + penalty, params)

    def _log_alignment(self, x: Tensor, y: Tensor, true: tuple[Tensor, ...] | None = None) -> None:
        """Compare the rule's estimate (this rank, before the gradient all-reduce; a comm=scalars rule has
        already averaged its d over ranks) with backprop on this rank's batch."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        true = self._backprop_grads(x, y) if true is None else true  # online updates: taken before the first one
        layer_of = self._layer_names()
        layers: dict[str, tuple[list[Tensor], list[Tensor]]] = {"all": ([], [])}
        for (name, p), g in zip(named, true):
            for key in ("all", layer_of.get(name, name.rsplit(".", 1)[0])):
                est, ref = layers.setdefault(key, ([], []))
                est.append(p.grad.reshape(-1))
                ref.append(g.reshape(-1))
        values = {}
        for key, (est, ref) in layers.items():
            est, ref = torch.cat(est), torch.cat(ref)
            values[f"align/cos/{key}"] = float(torch.nn.functional.cosine_similarity(est, ref, dim=0))
            if key == "all":
                values["align/norm_ratio/all"] = float(est.norm() / ref.norm().clamp_min(1e-30))
        values.update({f"rule/{k}": v for k, v in self.rule.diagnostics(self.model, x, y, self.loss_fn).items()})
        for key, value in values.items():
            self._accumulate(key, value)
            self.log(key, value, on_step=True, on_epoch=False, batch_size=len(x))

    def _layer_names(self) -> dict[str, str]:
        """Parameter name -> the block it belongs to (`blocks.0.linear.weight` -> `blocks.0`), for per-layer diagnostics."""
        if not hasattr(self, "_layer_of"):
            self._layer_of = {
                f"{block_name}.{name}": block_name
                for block_name, block in self.model.named_modules() if isinstance(block, Block)
                for name, _ in block.named_parameters()
            }
        return self._layer_of

    def _log_rule_metrics(self, metrics: dict[str, Tensor], batch_size: int) -> None:
        """A rule's own per-step scalars: rule/<name> per logged step, epoch and run means in results.json."""
        for name, value in metrics.items():
            self._accumulate(f"rule/{name}", value.detach())
            if self._should_log_step():
                self.log(f"rule/{name}", value, on_step=True, on_epoch=False, batch_size=batch_size)

    def _accumulate(self, key: str, value) -> None:
        for sums in (self.run_diagnostics, self.epoch_diagnostics):
            entry = sums.setdefault(key, [0.0, 0])
            entry[0] += value
            entry[1] += 1

    def pop_epoch_diagnostics(self) -> dict[str, float]:
        """This epoch's mean of each align/* and rule/* diagnostic (for the per-epoch history); starts the next epoch."""
        means = {k: float(total / n) for k, (total, n) in self.epoch_diagnostics.items()}
        self.epoch_diagnostics = {}
        return means

    def diagnostic_means(self) -> dict[str, float]:
        """Run means of the diagnostics (empty when there were none)."""
        return {k: float(total / n) for k, (total, n) in self.run_diagnostics.items()}

    # The diagnostics' run sums go into checkpoints, so a resumed run reports the whole run's means.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["run_diagnostics"] = {k: [float(total), n] for k, (total, n) in self.run_diagnostics.items()}
        checkpoint["batches_trained"] = self.batches_trained

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.run_diagnostics = {k: list(v) for k, v in checkpoint.get("run_diagnostics", {}).items()}
        self.batches_trained = checkpoint.get("batches_trained", 0)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, **kwargs):
        """Lightning's convention, `LearningRuleModule.load_from_checkpoint(path)`. The constructor takes built
        objects (model, rule, optimiser factory), not the hyper-parameters Lightning would pass it, so the
        module is rebuilt from the run config saved in the checkpoint (learnbench.checkpoints.load_module)."""
        from learnbench.checkpoints import load_module

        if hparams_file is not None or kwargs:
            raise TypeError(
                "LearningRuleModule.load_from_checkpoint rebuilds the module from the config saved in the checkpoint; "
                f"it takes no hparams_file or overrides (got {', '.join(['hparams_file'] * (hparams_file is not None) + list(kwargs))})"
            )
        return load_module(checkpoint_path, map_location=map_location, strict=strict is not False)

    def on_train_epoch_start(self) -> None:
        self._first_batch_of_epoch = True
        self.rule.begin_epoch(self.model)

    # A closed-form fit is in place before anything is evaluated: Lightning validates an epoch before its
    # on_train_epoch_end, so the fit runs at the start of validation (and of the test, and at the epoch's
    # end when no validation ran).
    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._fit_closed_form()

    def on_test_epoch_start(self) -> None:
        self._fit_closed_form()

    # Metrics that report many values at once (a seed stack's, learnbench/seeds.py: `reported_by_module`) bypass
    # Lightning's self.log, which costs ~1 ms a key: read and reset here once an epoch, sent to the loggers, and
    # handed to the run recorder (pop_epoch_reported) and to the test's results (reported_test).
    def on_validation_epoch_end(self) -> None:
        values = self._report(self.eval_metrics["val"], "val")
        if not self.trainer.sanity_checking:
            self._reported.update(values)

    def on_test_epoch_end(self) -> None:
        self.reported_test = self._report(self.eval_metrics["test"], "test")

    def _report(self, metrics: nn.ModuleDict, split: str) -> dict[str, float]:
        values = {}
        for metric in metrics.values():
            if getattr(metric, "reported_by_module", False):
                if metric.update_count:
                    values.update({f"{split}/{k}": v for k, v in metric.compute().items()})
                metric.reset()
        if values and not self.trainer.sanity_checking:
            for logger in self.loggers:
                logger.log_metrics(values, step=self.global_step)
        return values

    def pop_epoch_reported(self) -> dict[str, float]:
        """This epoch's values of the metrics read here rather than logged through Lightning (training, validation)."""
        values = {**self._report(self.train_metrics, "train"), **self._reported}
        self._reported = {}
        return values

    def on_train_epoch_end(self) -> None:
        self._fit_closed_form()
        self.rule.end_epoch(self.model)

    def _should_log_step(self) -> bool:
        """Whether Lightning sends this batch's on_step values to the loggers: every trainer.log_every_n_steps
        training batches (Lightning counts batches, not optimiser steps, and logs at a stop too). A self.log
        call costs ~0.8 ms of Lightning bookkeeping, so per-step values are logged only then. Our own batch
        count (checkpointed) instead of Lightning's private one;
        tests/test_training.py::test_step_values_reach_the_logger_at_lightnings_cadence checks the cadence."""
        every = self.trainer.log_every_n_steps
        return bool(every) and ((self.batches_trained + 1) % every == 0 or self.trainer.should_stop)

    def _log_train(self, loss: Tensor, output: Tensor | None, y: Tensor, batch_size: int) -> None:
        self.train_loss.update(loss, weight=batch_size)
        if output is not None:
            self.task.update(self.train_metrics, output, y)
        # The epoch metrics are torchmetrics objects that accumulate by themselves: registering them
        # with self.log once per epoch is enough (Lightning computes and resets them at the epoch's
        # end). Registering them every step cost ~0.5 ms a step in Lightning's bookkeeping.
        if self._first_batch_of_epoch:
            self._first_batch_of_epoch = False
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size)
            for name, metric in self.train_metrics.items():
                if getattr(metric, "reported_by_module", False):  # read once an epoch instead (pop_epoch_reported)
                    continue
                self.log(f"train/{name}", metric, on_step=False, on_epoch=True, batch_size=batch_size)
        if not self._should_log_step():
            return
        self.log("train/batch_loss", loss, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False, batch_size=batch_size)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, split: str, batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        output = self.rule.predict(self.model, x)
        metrics = self.eval_metrics[split]
        metrics["loss"].update(self.loss_fn(output, y).mean(), weight=len(x))
        self.task.update({k: m for k, m in metrics.items() if k != "loss"}, output, y)
        for name, metric in metrics.items():
            if getattr(metric, "reported_by_module", False):
                continue
            self.log(f"{split}/{name}", metric, on_step=False, on_epoch=True, prog_bar=(split == "val" and "@" not in name), batch_size=len(x))

    def validation_step(self, batch, batch_idx):
        self._evaluate("val", batch)

    def test_step(self, batch, batch_idx):
        self._evaluate("test", batch)

