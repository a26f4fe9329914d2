"""A run's training budget, and the check that the rules of a comparison share one.

The budget is what every rule of a comparison must get alike: the epochs (or the optimiser-step limit),
the batches per epoch, the batch size and the learning-rate schedule's shape (its function and options);
or, with `forward_equivalents: N`, the compute: each rule trains the steps that spend N forward-pass
equivalents of its model at its own measured cost per step (`steps_for_compute`), its epochs and schedule cut to them.
A rule's own settings (lr, momentum, sigma, directions, inference steps, ...) are not part of it and may
differ by rule. The budget of a dataset lives in conf/budget/<data>.yaml, a preset's in the preset; the
tuned files hold no budget (tests/test_sweeps.py checks every comparison sweep and every tuned file).

`BudgetCheck` (a Hydra callback, conf/hydra/default.yaml) composes each job of a multirun before any job
starts and logs a warning when jobs that differ only in `method` (and seed) would train different budgets:
a user's tuned file, a preset's per-rule file or the command line can still ask for that, and the table
(learnbench.tools.report) says so too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("learnbench")

# name in the budget -> dotted config key
BUDGET_KEYS = {
    "max_epochs": "trainer.max_epochs",
    "max_steps": "trainer.max_steps",
    "limit_train_batches": "trainer.limit_train_batches",
    "batch_size": "data.batch_size",
    "forward_equivalents": "forward_equivalents",
}
# Overrides that name the rule or the repetition, not the setting: jobs that differ only in these compare rules.
COMPARED = ("method", "seed")


def budget_of(cfg: DictConfig | Mapping) -> dict:
    """The budget in a run's config (a DictConfig, or the plain dict results.json keeps): BUDGET_KEYS and the
    schedule (the scheduler's config without `_partial_`; None for a constant lr)."""
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    budget = {name: OmegaConf.select(cfg, key, default=None) for name, key in BUDGET_KEYS.items()}
    scheduler = OmegaConf.select(cfg, "scheduler", default=None)
    schedule = OmegaConf.to_container(scheduler, resolve=True) if scheduler else {}
    schedule.pop("_partial_", None)
    budget["schedule"] = schedule or None
    return budget


def describe_schedule(schedule: Mapping | None) -> str:
    """'constant' or the schedule's function with its options: warmup_cosine(warmup_epochs=0, min_lr_ratio=0.0)."""
    if not schedule:
        return "constant"
    options = ", ".join(f"{k}={v}" for k, v in schedule.items() if not k.startswith("_"))
    return f"{str(schedule.get('_target_', '?')).rsplit('.', 1)[-1]}({options})"


def describe(budget: Mapping) -> str:
    """One line: '100 epochs, batch 100, lr schedule constant'; step and batch limits when set."""
    epochs = budget.get("max_epochs")
    parts = [f"{epochs} epoch{'' if epochs == 1 else 's'}"]
    if budget.get("forward_equivalents"):
        parts = [f"{budget['forward_equivalents']:.3g} forward-pass equivalents"]
    if (budget.get("max_steps") or -1) > 0:
        parts.append(f"{'' if budget.get('forward_equivalents') else 'at most '}{budget['max_steps']} steps")
    if budget.get("limit_train_batches") is not None:
        parts.append(f"{budget['limit_train_batches']} batches an epoch")
    parts.append(f"batch {budget.get('batch_size')}")
    parts.append(f"lr schedule {describe_schedule(budget.get('schedule'))}")
    return ", ".join(parts)


def unequal_budgets(jobs: Sequence[tuple[Sequence[str], Mapping]]) -> list[str]:
    """One message per comparison whose rules would train different budgets. `jobs`: (overrides, budget) per
    job. A comparison is the jobs that differ only in COMPARED (method, seed); another swept key
    (trainer.max_epochs=3,10, data=spiral,mnist) makes one comparison per value, each of which must hold one budget."""
    settings = [dict(o.split("=", 1) for o in overrides if "=" in o) for overrides, _ in jobs]
    swept = sorted({k for s in settings for k in s if len({t.get(k) for t in settings}) > 1} - set(COMPARED))
    comparisons: dict[tuple, dict[str, list[str]]] = {}
    for job, (_, budget) in zip(settings, jobs):
        method = job.get("method", "(the default method)")
        methods = comparisons.setdefault(tuple(job.get(k) for k in swept), {}).setdefault(describe(budget), [])
        if method not in methods:
            methods.append(method)
    messages = []
    for values, by_budget in comparisons.items():
        if len(by_budget) > 1:
            where = " ".join(f"{k}={v}" for k, v in zip(swept, values))
            lines = "; ".join(f"{', '.join(methods)}: {budget}" for budget, methods in by_budget.items())
            messages.append(f"unequal budgets between rules{f' at {where}' if where else ''}: {lines}")
    return messages


def sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """The overrides of every job Hydra's basic sweeper will launch (the sweep file's params, then the command
    line's), as it splits them; None for another sweeper (Optuna picks its jobs as it goes)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    params = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=True) if params else {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


class BudgetCheck(Callback):
    """At a multirun's start: compose each job (seeds aside: a seed changes no budget) and warn when the rules
    of a comparison would train different budgets. Composing costs about as much as Hydra's own check that
    every job composes (a fraction of a second a job)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            jobs = sweep_jobs(config)
            if jobs is None:
                return
            budgets = _budgets_of_jobs(config, jobs)
        except Exception as error:  # a job that does not compose fails next, in Hydra's own check, with its message
            log.warning("budget check skipped: %s: %s", type(error).__name__, error)
            return
        messages = unequal_budgets(budgets)
        for message in messages:
            log.warning("%s. A comparison should hold the budget equal (conf/budget/, or the preset); the "
                        "table will show each row's epochs and settings.", message)
        distinct = sorted({describe(b) for _, b in budgets})
        if len(distinct) == 1:
            log.info("one budget for every job: %s", distinct[0])
        elif not messages:
            log.info("one budget per comparison of rules (the jobs differ in a swept key): %s", "; ".join(distinct))


def _budgets_of_jobs(config: DictConfig, jobs: list[list[str]]) -> list[tuple[list[str], dict]]:
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    distinct = {tuple(o for o in job if o.split("=", 1)[0].lstrip("+~") != "seed"): None for job in jobs}
    return [(list(job), budget_of(loader.load_sweep_config(config, list(job)))) for job in distinct]


def steps_for_compute(forward_equivalents: float, per_batch: float, updates_per_batch: int, batches_per_epoch: int) -> dict:
    """The training a compute budget buys: whole batches of `per_batch` forward-pass equivalents each (what the rule's
    training batch costs, measured: learnbench.compute), at least one; the optimiser steps they take and the epochs
    that hold them (the last one cut short by max_steps)."""
    batches = max(1, int(forward_equivalents // per_batch))
    return {"batches": batches, "max_steps": batches * updates_per_batch, "max_epochs": -(-batches // max(1, batches_per_epoch))}
