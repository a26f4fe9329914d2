"""The Hydra app: `python -m learnbench.train [overrides]` (or `-m` for a multirun).

Reads top to bottom: check the config, build data -> model -> rule -> module -> trainer, fit,
test, write results.json. Every run writes results.json, also when it diverges or fails.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from learnbench import ddp_launch
from learnbench.budget import budget_of, describe, steps_for_compute
from learnbench.compute import measure_step, ratio
from learnbench.callbacks import ComputeMeter, RankSync, ResourceMeter, RunRecorder
from learnbench.checkpoints import check_fits
from learnbench.config_validation import ConfigError, validate_config
from learnbench.tasks import CLASSIFICATION, CLASSIFICATION_OVER_TIME, RECONSTRUCTION, get_task
from learnbench.models import CNN, Autoencoder
from learnbench.module import LearningRuleModule
from learnbench.paths import CONFIG_DIR
from learnbench.resume import CSVLogger as ResumableCSVLogger
from learnbench.resume import checkpoint_to_resume, finished_record, logged_step_to_resume_from
from learnbench.rules.local_losses import method_name
from learnbench.seeds import SEED_FOLDER, build_stack, seed_list, write_seed_records
from learnbench.results import DIVERGED, FAILED, OK, git_revision, library_versions, now_iso, write_results
from learnbench.wandb_mode import offline_reason, quiet_by_default

log = logging.getLogger("learnbench")


def config_choices(cfg: DictConfig) -> dict[str, str]:
    """The chosen option of each config group (method=bp, data=spiral, ...)."""
    if HydraConfig.initialized():
        return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}
    return {}


def check_config(cfg: DictConfig) -> None:
    """Refuse impossible combinations before any data is loaded or any step is taken."""
    from learnbench.config_validation import REPLACED_OPTIONS

    validate_config(cfg)  # every option's type and range (learnbench/options.py)
    trainer = cfg.trainer
    if trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer uses GPUs but this machine has no CUDA device: use trainer=cpu (or trainer=ddp_sim)")
    check_precision(cfg)
    for dotted, (off, text) in REPLACED_OPTIONS.items():
        if OmegaConf.select(cfg, dotted, default=None) not in off:
            raise ConfigError(f"{dotted} {text}")
    if trainer.get("max_epochs") == -1 and trainer.get("max_steps", -1) == -1:
        raise ConfigError(
            "trainer.max_epochs=-1 with no trainer.max_steps would train until killed: "
            "set trainer.max_epochs to a number of epochs (or trainer.max_steps to a number of steps)"
        )
    check_checkpoint_path(cfg.get("ckpt_path"))
    check_option_combinations(cfg)
    budget = cfg.get("forward_equivalents")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        raise ConfigError(f"forward_equivalents={budget}: expected a number > 0 (forward-pass equivalents of training, "
                          f"e.g. 6e5), or null for the epochs")


# fp16 (AMP's loss scaling, or fp16 weights) breaks gradients written by hand (design note 4).
FP16_PRECISIONS = {"16", "16-mixed", "16-true"}
BF16_MIXED_PRECISIONS = {"bf16", "bf16-mixed"}


def rules_without_bf16_autocast() -> tuple[type, ...]:
    """Rules whose hand-written gradients come out in bf16 under bf16-mixed autocast, which torch refuses to
    store in float32 weights' .grad (a RuntimeError inside the rule, at the first step). Measured on every
    rule and model kind; tests/test_bad_input.py::test_bf16_mixed_runs_exactly_the_rules_not_listed keeps
    this list true."""
    from learnbench.rules import (
        RFLO, RTRL, STDP, ForwardGradientActivity, ForwardGradientWeight, NodePerturbation, PredictiveCoding, RewardModulatedSTDP,
    )

    return (NodePerturbation, ForwardGradientActivity, ForwardGradientWeight, PredictiveCoding, RTRL, RFLO, STDP, RewardModulatedSTDP)


def check_precision(cfg: DictConfig) -> None:
    """fp16 for rules that write gradients by hand, bf16-mixed for the rules that fail under its autocast."""
    precision = str(cfg.trainer.get("precision", "32"))
    rule = get_class(cfg.method._target_)
    method = config_choices(cfg).get("method", cfg.method._target_)
    bf16_works = not issubclass(rule, rules_without_bf16_autocast())
    if precision in FP16_PRECISIONS and rule.writes_grads_by_hand:
        alternatives = "trainer.precision=32" + (" or bf16-mixed" if bf16_works else "")
        raise ConfigError(
            f"trainer.precision={precision}: fp16 rescales or rounds the gradients that method={method} writes by hand: "
            f"use {alternatives}"
        )
    if precision in BF16_MIXED_PRECISIONS and not bf16_works:
        raise ConfigError(
            f"trainer.precision={precision}: method={method} computes its gradients in bf16 under autocast, which "
            f"cannot be stored in its float32 weights: use trainer.precision=32"
        )


def check_checkpoint_path(ckpt_path: str | None) -> None:
    """A checkpoint to resume from must be a file (Lightning would fail with a traceback after setting up)."""
    if not ckpt_path:
        return
    path = Path(ckpt_path)
    if path.is_dir():
        raise ConfigError(f"ckpt_path={ckpt_path} is a folder: name the checkpoint file, e.g. ckpt_path={path / 'last.ckpt'}")
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path}: no such file (a run's checkpoint is <run dir>/checkpoints/last.ckpt)"
        )


def check_option_combinations(cfg: DictConfig) -> None:
    """What no single option's annotation can refuse: a model's options that contradict each other or the data
    (model=snn: tau_mem and beta both given; a rate or latency code on inputs not scaled to [0, 1]), or a rule's
    options that contradict each other or the model's (method=stdp: triplet with nearest pairing; an STDP rule on a
    current code). The model class and the rule class say (`option_problem`, models/snn.py, rules/plasticity/stdp.py);
    one line naming what fits."""
    rule_problem_of = getattr(get_class(cfg.method._target_), "option_problem", None)  # the STDP rules
    if rule_problem_of is not None:
        problem = rule_problem_of(OmegaConf.to_container(cfg.method, resolve=True), config_choices(cfg).get("method", "stdp"),
                                  getattr(get_class(cfg.model._target_), "kind", None),
                                  OmegaConf.to_container(cfg.model, resolve=True))
        if problem:
            raise ConfigError(problem)
    problem_of = getattr(get_class(cfg.model._target_), "option_problem", None)
    if problem_of is None:
        return
    data = config_choices(cfg).get("data", cfg.data._target_)
    problem = problem_of(OmegaConf.to_container(cfg.model, resolve=True), data=data, normalize=cfg.data.get("normalize"))
    if problem:
        raise ConfigError(problem)


def instantiate_dict(section: DictConfig | None, **kwargs) -> list:
    """Instantiate every `_target_` entry of a dict-of-configs group (callbacks, logger); skip nulls."""
    if not section:
        return []
    return [instantiate(entry, **kwargs) for entry in section.values() if entry is not None and "_target_" in entry]


def wandb_mode_note(cfg: DictConfig) -> str | None:
    """The log line that says where W&B writes this run and why (None: no W&B, or online: its URL is logged
    once the run exists). Read before build_loggers settles `logger.wandb.offline`."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg is None:
        return None
    configured = wandb_cfg.get("offline")
    reason = "logger.wandb.offline=true" if configured else None if configured is False else offline_reason()
    if reason is None:
        return None
    if reason == "WANDB_MODE=disabled":
        return "W&B is disabled (WANDB_MODE=disabled): nothing is logged to W&B"
    return f"W&B is offline ({reason}); sync later with: wandb sync {cfg.paths.output_dir}/wandb/offline-run-*"


def build_loggers(cfg: DictConfig) -> list:
    logger_cfg = cfg.get("logger")
    if logger_cfg and logger_cfg.get("wandb") is not None and logger_cfg.wandb.get("offline") is None:
        with open_dict(logger_cfg):
            logger_cfg.wandb.offline = offline_reason() is not None
    return instantiate_dict(logger_cfg)


def check_model_fits_data(cfg: DictConfig, datamodule) -> None:
    """An autoencoder needs a reconstruction target (its sizes alone cannot tell: the 2-D, 2-class spiral
    fits them); a convolutional model needs images."""
    model_class = get_class(cfg.model._target_)
    choices = config_choices(cfg)
    if issubclass(model_class, CNN) and len(datamodule.input_shape) != 3:
        raise ConfigError(
            f"model={choices.get('model', model_class.__name__)} is convolutional and needs image data (channels, height, "
            f"width), but data={choices.get('data', cfg.data._target_)} gives examples of shape {tuple(datamodule.input_shape)}: "
            f"use data=mnist or data=fashion_mnist, or model=mlp"
        )
    if issubclass(model_class, Autoencoder) and datamodule.task != RECONSTRUCTION:
        raise ConfigError(
            f"model={choices.get('model', 'autoencoder')} reconstructs its input but data={choices.get('data', cfg.data._target_)} "
            f"is a {datamodule.task} task: "
            f"use a reconstruction dataset such as data=mnist_autoencoder, or model=mlp for classification"
        )


SEQUENCE_DATA = "data=sine_trajectory, add_task, sequential_mnist, mackey_glass, narma10, lorenz or memory_capacity"


def model_time_axis(cfg: DictConfig) -> str | None:
    """The model's time axis for its config: a class's `time_axis`, or `time_axis_of(options)` where the options
    decide it (model=snn: encoding none takes the data's steps); None: feed-forward."""
    model_class = get_class(cfg.model._target_)
    if hasattr(model_class, "time_axis_of"):
        return model_class.time_axis_of(cfg.model)
    return getattr(model_class, "time_axis", None)


def check_time_fits(cfg: DictConfig, datamodule) -> None:
    """Who owns time, read from one declaration each: the task's `sequential` (the data gives time steps) and
    the model's `time_axis` (models/temporal.py: "data", it runs over the data's steps; "model", it makes its
    own steps from a static example; none: feed-forward). Sequence data needs a model that runs over it, such
    a model needs sequences, a model with its own time axis takes static examples, a recurrent rule
    (bptt, rtrl, rflo, eprop) trains only a model that runs in time, and a model in time only takes the rules
    that list its `kind` (recurrent, spiking) in `trains`; each refusal names what fits."""
    from learnbench.catalog import comparable_rules

    choices = config_choices(cfg)
    data, model = choices.get("data", cfg.data._target_), choices.get("model", cfg.model._target_)
    method = choices.get("method", cfg.method._target_)
    time_axis = model_time_axis(cfg)
    kind = getattr(get_class(cfg.model._target_), "kind", None)  # recurrent or spiking (models/temporal.py)
    recurrent_model = time_axis is not None
    trains = get_class(cfg.method._target_).trains
    if check_spike_times_fit(kind, trains, method, model, data, datamodule.task):
        return  # model=srm with spikeprop: static spike times in and out, no time steps to check
    sequential = get_task(datamodule.task).sequential
    if time_axis == "model" and sequential:
        spiking = " (or model.encoding=none: the SNN then runs over the data's steps)" if kind == "spiking" else ""
        raise ConfigError(f"model={model} makes its own time steps from a static example, but data={data} is already a "
                          f"sequence task: use an image or vector dataset (data=mnist, fashion_mnist, spiral){spiking}")
    if kind == "spiking" and time_axis == "data" and not sequential:
        raise ConfigError(f"model={model} with model.encoding=none runs over the data's time steps, but data={data} gives "
                          f"static examples: use sequence data (data=evidence_accumulation) or an encoding (current, rate, latency)")
    if time_axis == "model":
        recurrent_model = sequential = True  # static data in, time inside: the checks below are for a model in time
    if set(trains) == {"competitive_spiking"} and kind != "competitive_spiking":  # method=diehl_cook: its own network
        raise ConfigError(f"method={method} trains Diehl & Cook's network only: use model=diehl_cook on data=mnist or "
                          f"fashion_mnist with data.normalize=unit (experiment=diehl_cook_mnist)")
    if set(trains) == {"reservoir"} and not recurrent_model:
        raise ConfigError(
            f"method={method} fits the readout of a reservoir and model={model} has none: use model=esn (or model=rnn with "
            f"model.learn_input=false model.learn_recurrent=false) with {SEQUENCE_DATA}"
        )
    if "spiking" in trains and "feedforward" not in trains and not recurrent_model:
        raise ConfigError(f"method={method} learns from spike timing and trains only spiking networks: use model=snn "
                          f"(with model.encoding=rate or latency) on data=mnist, fashion_mnist or spiral")
    if "feedforward" not in trains and not recurrent_model:
        raise ConfigError(
            f"method={method} is a recurrent learning rule and model={model} is feed-forward: use model=rnn with "
            f"{SEQUENCE_DATA}, or on model={model} one of the feed-forward rules ({', '.join(comparable_rules('feedforward'))})"
        )
    if sequential and not recurrent_model:
        raise ConfigError(
            f"data={data} is a sequence task ([batch, time, features]) and model={model} is feed-forward: use model=rnn "
            f"(with method={', '.join(comparable_rules('recurrent'))}) or model=esn (with method=ridge, bp or bptt)"
        )
    if recurrent_model and not sequential:
        raise ConfigError(f"model={model} is recurrent and needs sequence data ({SEQUENCE_DATA}); data={data} is not one")
    if set(trains) == {"reservoir"} and sequential and not getattr(get_task(datamodule.task), "per_step", True):
        raise ConfigError(
            f"method={method} fits a target at every time step and data={data} gives one per sequence: use a per-step "
            f"sequence task (data=mackey_glass, narma10, lorenz, memory_capacity, sine_trajectory or add_task)"
        )
    if set(trains) == {"reservoir"} and not getattr(get_task(datamodule.task), "fittable_targets", True):
        raise ConfigError(
            f"method={method} fits a least-squares target at every time step, and data={data} scores one class per sequence "
            f"by cross-entropy over its last steps (targets are (class, weight) pairs): train the readout with method=bp or "
            f"bptt, or use a per-step regression task (data=mackey_glass, narma10, lorenz, memory_capacity)"
        )
    # A rate RNN is trained as a recurrent network or fitted as a reservoir; a spiking network by the rules that say so,
    # a spiking reservoir (model=lsm, `is_reservoir`) by those and by the closed-form readouts.
    reservoir = kind == "recurrent" or getattr(get_class(cfg.model._target_), "is_reservoir", False)
    kinds = {kind, "reservoir"} if reservoir else {kind}
    if recurrent_model and not kinds & set(trains):
        raise ConfigError(
            f"method={method} does not train {kind} models: on model={model} use one of {', '.join(comparable_rules(kind))}"
        )


def check_spike_times_fit(kind: str | None, trains: tuple[str, ...], method: str, model: str, data: str, task: str) -> bool:
    """model=srm (kind spike_times: neurons that fire once, at exact times) is trained only by the rules that list
    that kind (spikeprop), those rules train only it, and it reads spike times (data=spike_xor); one line each.
    True when the model is one of spike times (and fits)."""
    from learnbench.catalog import comparable_rules
    from learnbench.models.srm import SPIKE_TIMES
    from learnbench.tasks import SpikeTimeRegression

    if kind == SPIKE_TIMES and SPIKE_TIMES not in trains:
        raise ConfigError(f"method={method} does not train model={model} (spiking neurons that fire once, at exact times): "
                          f"use method={', '.join(comparable_rules(SPIKE_TIMES))}")
    if kind != SPIKE_TIMES and SPIKE_TIMES in trains:
        raise ConfigError(f"method={method} differentiates exact spike times and trains only model=srm (spiking neurons that "
                          f"fire once; model={model} has no spike times): use model=srm with data=spike_xor")
    if kind == SPIKE_TIMES and task != SpikeTimeRegression.name:
        raise ConfigError(f"model={model} maps input spike times to output spike times, but data={data} is a {task} task: "
                          f"use data=spike_xor")
    return kind == SPIKE_TIMES


SPLITS = ("train", "val", "test")


def check_washout(cfg: DictConfig, datamodule) -> None:
    """A washout (the first steps of every sequence, not fitted or scored) must leave steps in every split."""
    washout = cfg.model.get("washout") or 0
    if not washout:
        return
    if model_time_axis(cfg) == "model":  # the model's own steps from a static example (model=lsm on MNIST)
        if washout >= cfg.model.steps:
            raise ConfigError(f"model.washout={washout} leaves nothing to fit or score of model.steps={cfg.model.steps}: "
                              f"use model.washout<{cfg.model.steps} (or more model.steps)")
        return
    steps = getattr(datamodule, "split_steps", None) or (datamodule.input_shape[0],)
    shortest = min(range(len(steps)), key=steps.__getitem__)
    if washout >= steps[shortest]:
        data = config_choices(cfg).get("data", cfg.data._target_)
        longer = f"data.{SPLITS[shortest]}_steps" if hasattr(datamodule, "split_steps") else "longer sequences"
        raise ConfigError(f"model.washout={washout} leaves nothing to fit or score: data={data}'s {SPLITS[shortest]} "
                          f"sequences have {steps[shortest]} steps; use model.washout<{steps[shortest]} (or {longer})")


def task_of(cfg: DictConfig, datamodule) -> str:
    """The task the module trains: the data's own; for a model that classifies static examples in time
    (time_axis "model": model=snn, outputs [batch, time, classes]), classification with the loss over time
    that the model's config names (`model.loss_over_time`, tasks.CLASSIFICATION_OVER_TIME)."""
    if model_time_axis(cfg) != "model":
        return datamodule.task
    if datamodule.task != CLASSIFICATION:
        choices = config_choices(cfg)
        raise ConfigError(
            f"model={choices.get('model', cfg.model._target_)} classifies static examples in time, but "
            f"data={choices.get('data', cfg.data._target_)} is a {datamodule.task} task: use data=mnist, fashion_mnist or spiral"
        )
    return CLASSIFICATION_OVER_TIME[cfg.model.loss_over_time]


def build_module(cfg: DictConfig, input_shape, output_dim: int, task: str) -> LearningRuleModule:
    """Model, rule and the training module from the config and the data's shapes (also what
    learnbench.checkpoints.load_module rebuilds a checkpoint from)."""
    model = instantiate(cfg.model, input_shape=input_shape, output_dim=output_dim)
    rule = instantiate(cfg.method)
    try:  # the rule's check_model: a model it cannot train is a config error, said in one line
        rule.bind(model, cfg.seed)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    module = LearningRuleModule(
        model=model,
        rule=rule,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        task=task,
        num_classes=output_dim,
        seed=cfg.seed,
        grad_clip_norm=cfg.get("grad_clip_norm"),
        bias_lr_scale=cfg.get("bias_lr_scale", 1.0),
        allreduce_grads=cfg.get("allreduce_grads", True),
        diagnostics_every_n_steps=cfg.get("diagnostics", {}).get("every_n_steps", 0) or 0,
    )
    # Saved in every checkpoint (hyper_parameters): enough to rebuild the module without Hydra.
    module.save_hyperparameters({
        "config": OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False),
        "input_shape": list(input_shape), "output_dim": output_dim, "task": task,
        # Which job wrote a checkpoint: a re-run resumes only from its own (learnbench.resume).
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
    })
    return module


def data_name(cfg: DictConfig) -> str:
    return f"data={config_choices(cfg).get('data', cfg.data._target_)}"


def expected_processes(trainer_cfg: DictConfig) -> int | None:
    """The number of processes the trainer will run, when the config says it plainly (devices as a count or
    a list, times num_nodes; more than one device means DDP); None when Lightning decides ("auto", -1)."""
    devices, nodes = trainer_cfg.get("devices", "auto"), trainer_cfg.get("num_nodes", 1) or 1
    if isinstance(devices, bool) or not isinstance(nodes, int):
        return None
    if isinstance(devices, int) and devices > 0:
        return devices * nodes
    if isinstance(devices, ListConfig | list) and devices:
        return len(devices) * nodes
    return None


def check_rule_fits_processes(rule, processes: int) -> None:
    """A sequential rule (method=force's RLS: rules/base.py, one_process_only) runs on one process only."""
    if processes > 1 and rule.one_process_only:
        raise ConfigError(rule.one_process_only.format(processes=processes))


def build(cfg: DictConfig, extra_callbacks: list | None = None):
    """Data, model, rule, training module and trainer, all from the config (plus the app's own callbacks)."""
    datamodule = instantiate(cfg.data)
    check_model_fits_data(cfg, datamodule)
    check_time_fits(cfg, datamodule)
    # The model and rule first (a task or a model the rule cannot take is refused before any data is read), then
    # the checks that read the data's splits, before the trainer exists, so a refusal is the only line printed.
    module = build_module(cfg, datamodule.input_shape, datamodule.output_dim, task_of(cfg, datamodule))
    processes = expected_processes(cfg.trainer)
    if processes is not None:
        check_rule_fits_processes(module.rule, processes)
        datamodule.check_splits_fit(processes, data_name(cfg))
    check_washout(cfg, datamodule)
    trainer, recorder = build_trainer(cfg, extra_callbacks)
    return datamodule, module, trainer, recorder


def build_trainer(cfg: DictConfig, extra_callbacks: list | None = None):
    """The trainer (its loggers and callbacks, the run recorder among them) and the recorder."""
    recorder = RunRecorder()
    callbacks = instantiate_dict(cfg.get("callbacks"))
    if cfg.trainer.get("enable_progress_bar") is False:  # the switch wins over the default progress bar
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer = instantiate(cfg.trainer, logger=build_loggers(cfg), callbacks=[*callbacks, recorder, *(extra_callbacks or [])])
    return trainer, recorder


def base_record(cfg: DictConfig) -> dict:
    choices = config_choices(cfg)
    return {
        "method": method_name(choices.get("method"), cfg.method.get("local")),  # lg_fg_a for method=fg_a method.local=greedy too
        "data": choices.get("data"),
        "model": choices.get("model"),
        "optimizer": choices.get("optimizer"),
        "experiment": choices.get("experiment"),
        "tuned": tuned_files(choices, cfg),
        "budget": budget_of(cfg),  # epochs, batch size, schedule: what every rule of a comparison must share
        "seed": cfg.seed,
        "status": None,
        "message": None,
        "metrics": {"final": {}, "best": {}},
        "started": now_iso(),
        "output_dir": str(Path(cfg.paths.output_dir).resolve()),
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "config": OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False),
        "versions": library_versions(),
        "git": git_revision(),
    }


def train(cfg: DictConfig) -> dict:
    """Run one experiment; return the record written to results.json."""
    start = time.perf_counter()
    record = base_record(cfg)
    trainer = recorder = module = None
    meter = ResourceMeter()  # before build: the peak memory counts the data and the model
    compute = ComputeMeter()  # FLOPs and forward-pass equivalents, training and evaluation apart
    ranks = RankSync()  # on several processes: whether the ranks ended training bit-identical
    try:
        check_config(cfg)
        wandb_note = wandb_mode_note(cfg)
        if seed_list(cfg):  # many seeds in one process (learnbench/seeds.py): each seed built as its own run, then stacked
            datamodule, module, trainer, recorder = build_stack(cfg, [meter, compute, ranks])
        else:
            L.seed_everything(cfg.seed, workers=True, verbose=False)
            datamodule, module, trainer, recorder = build(cfg, extra_callbacks=[meter, compute, ranks])
        prepare_fit(cfg, datamodule, module, trainer, record)
        log_config(trainer, record, wandb_note)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        final = {}
        if module.diverged_at_step is None:
            tested = trainer.test(module, datamodule=datamodule, verbose=False)
            # trainer.limit_test_batches=0 tests nothing: the run ends with its validation metrics alone
            final = {k: float(v) for k, v in tested[0].items()} if tested else {}
            if not tested:
                log.info("no test: trainer.limit_test_batches=0 (results.json has the validation metrics only)")
            final.update(module.reported_test)
            record["status"] = OK
        else:
            record["status"], record["message"] = DIVERGED, module.divergence_message
            log.warning("Run diverged: %s", module.divergence_message)
        last_epoch = recorder.history[-1] if recorder.history else {}
        record["metrics"]["final"] = {**{k: v for k, v in last_epoch.items() if "/" in k}, **final}
        record["metrics"]["final"].update(module.diagnostic_means())
        record["metrics"]["best"] = {**recorder.best, **{k: v for k, v in final.items()}}
    except Exception as error:
        record["status"], record["message"] = FAILED, f"{type(error).__name__}: {error}"
        # Refused before any step (a bad option, a missing data file): its message is the one line shown, and
        # reports leave the run out (learnbench.tools.report counts such runs).
        record["refused"] = is_user_error(error) and (trainer is None or trainer.global_step == 0)
        raise
    finally:
        record["steps"] = trainer.global_step if trainer is not None else 0
        record["epochs"] = len(recorder.history) if recorder is not None else 0
        record["history"] = recorder.history if recorder is not None else []
        record["fit_time_s"] = recorder.fit_seconds if recorder is not None else None
        record["wall_time_s"] = time.perf_counter() - start
        record["resources"] = meter.summary()  # CPU seconds per phase, peak memory (ResourceMeter)
        record["compute"] = compute.summary()  # FLOPs, forward-pass equivalents (ComputeMeter, learnbench/compute.py)
        record["ranks"] = ranks.result  # null on one process (RankSync)
        if trainer is None or trainer.global_rank == 0:
            if seed_list(cfg):
                record["seed_stack"] = {"seeds": seed_list(cfg), "seed_dirs": [SEED_FOLDER.format(seed=s) for s in seed_list(cfg)]}
            path = write_results(Path(cfg.paths.output_dir), record)
            if seed_list(cfg) and not record.get("refused"):
                for seed_path in write_seed_records(record, cfg):
                    announce(json.loads(seed_path.read_text()), seed_path)
            elif not record.get("refused"):
                announce(record, path)
        _finish_wandb(record)
    return record


def prepare_fit(cfg: DictConfig, datamodule, module: LearningRuleModule, trainer, record: dict) -> None:
    """The checks that need the data or the built module, then what results.json says of the run before it starts."""
    # A batch larger than the training split, or a split the processes cannot share, is refused before fit
    # rather than as 0 steps with status ok (or a stall in the metrics' all-gather). Already checked in build()
    # when the number of processes could be read from the config; checked again with the trainer's own count.
    check_rule_fits_processes(module.rule, trainer.world_size)
    datamodule.check_splits_fit(trainer.world_size, data_name(cfg))
    record["resumed_from"] = None
    if cfg.get("ckpt_path"):  # a checkpoint of another model would fail inside fit, with a traceback
        checkpoint = check_fits(cfg.ckpt_path, module, OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
        record["resumed_from"] = {"checkpoint": str(Path(cfg.ckpt_path).resolve()), "epoch": checkpoint.get("epoch"),
                                  "step": checkpoint.get("global_step")}  # where it was saved (epoch counts from 0)
        for logger in trainer.loggers:  # csv/metrics.csv keeps the rows the stopped run logged before the checkpoint
            if isinstance(logger, ResumableCSVLogger):
                logger.resume_before(logged_step_to_resume_from(checkpoint))
    apply_compute_budget(cfg, datamodule, module, trainer, record)
    record["precision"] = str(trainer.precision)  # what ran: 16 on a CPU runs as bf16-mixed
    # A recurrent seed stack counts its seeds' blocks, not the zeros between them (learnbench/seeds.py).
    record["parameters"] = getattr(module.model, "counted_parameters", None) or sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    record["rule_parameters"] = sum(p.numel() for p in module.rule.extra_parameters())


def apply_compute_budget(cfg: DictConfig, datamodule, module: LearningRuleModule, trainer, record: dict) -> None:
    """`forward_equivalents: N`: the rule's training batch is measured (learnbench.compute, on copies, on the first
    training batch) and the run trains the whole batches that spend N forward-pass equivalents over all processes
    (trainer max_steps and max_epochs replaced; a schedule spans those steps). results.json's budget says both."""
    budget = cfg.get("forward_equivalents")
    if budget is None:
        return
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    x, y = next(iter(loader))
    step = measure_step(module.rule, module.model, x, y, module.task)
    per_example = ratio(step["train_step_flops"], step["forward_flops"])
    if not per_example:
        raise ConfigError(f"forward_equivalents={budget}: the model's forward pass counts no FLOPs here, so a budget in "
                          f"forward-pass equivalents cannot be spent: give trainer.max_steps or trainer.max_epochs instead")
    per_batch = per_example * step["batch"] * trainer.world_size  # every process trains a batch a step
    batches_per_epoch = len(loader) // trainer.world_size
    limit = cfg.trainer.get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches_per_epoch = min(batches_per_epoch, limit)
    elif isinstance(limit, float):
        batches_per_epoch = int(batches_per_epoch * limit)
    plan = steps_for_compute(budget, per_batch, module._optimizer_steps_per_batch(datamodule), batches_per_epoch)
    trainer.fit_loop.epoch_loop.max_steps = plan["max_steps"]
    trainer.fit_loop.max_epochs = plan["max_epochs"]
    record["budget"].update(max_steps=plan["max_steps"], max_epochs=plan["max_epochs"],
                            forward_equivalents_per_batch=per_batch)


def is_user_error(error: Exception) -> bool:
    """An error whose message says what the user should change (no traceback is shown for it)."""
    from learnbench.console import USER_ERRORS

    return isinstance(error, (ConfigError, *USER_ERRORS))


def tuned_files(choices: dict[str, str], cfg: DictConfig | None = None) -> list[str]:
    """The conf/tuned/ files that applied to this run (the model's size on the dataset, the rule on the
    dataset and the pieces it includes, e.g. momentum/sgd/0.9 and cosine/None/none, then the rule in an
    experiment). Given the run's config, a file none of whose values is still in it (every one overridden later: a
    dataset's lr under a preset's per-rule file, or on the command line) is left out: it did not change the run."""
    loaded = loaded_tuned_files(choices)
    return loaded if cfg is None else [path for path in loaded if any(in_effect(cfg, path))]


def in_effect(cfg: DictConfig, path: str):
    """For each value a tuned file sets (its package: _global_ or the folder's), whether the run's config holds it."""
    folder = path.removeprefix("conf/tuned/").split("/", 1)[0]
    package = {"model": "model", "momentum": "optimizer", "cosine": "scheduler"}.get(folder, "")  # the defaults list's @
    values = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR.parent / path), resolve=False)
    values.pop("defaults", None)

    def leaves(node, prefix):
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                yield from leaves(value, dotted)
            else:
                yield dotted, value

    for key, value in leaves(values, package):
        yield OmegaConf.select(cfg, key, throw_on_missing=False) == value


def loaded_tuned_files(choices: dict[str, str]) -> list[str]:
    """Every conf/tuned/ file the defaults list loaded, in order (tuned_files keeps those still in effect)."""
    included = sorted(  # `optional /tuned/<folder>@<package>: ...` in a tuned file: choices 'tuned/<folder>@<package>'
        f"{key.split('@', 1)[0].removeprefix('tuned/')}/{value}"
        for key, value in choices.items() if key.startswith("tuned/") and key != "tuned/model@model" and value
    )
    names = [
        f"model/{choices['tuned/model@model']}" if choices.get("tuned/model@model") else None,
        choices.get("tuned"),
        *included,
        choices.get("tuned@_global_"),
    ]
    # dict.fromkeys: an experiment named like its dataset (zipser_andersen) selects the same file twice.
    return [f"conf/tuned/{name}.yaml" for name in dict.fromkeys(names) if name and (CONFIG_DIR / "tuned" / f"{name}.yaml").is_file()]


def log_config(trainer, record: dict, wandb_note: str | None = None) -> None:
    """The resolved config and the group choices go to every logger (W&B's run config, CSV's hparams.yaml),
    so runs can be filtered by method, data, seed, lr, ... in the W&B UI. The log says where W&B writes
    (W&B's own banner is silenced: wandb_mode.quiet_by_default)."""
    choices = {k: record[k] for k in ("method", "data", "model", "optimizer", "experiment")}
    log.info("tuned settings: %s", ", ".join(record["tuned"]) or "none (the rule's and the data's defaults)")
    log.info("budget: %s", describe(record["budget"]))
    if wandb_note:
        log.info("%s", wandb_note)
    for logger in trainer.loggers:
        logger.log_hyperparams({**record["config"], "choices": choices, "tuned": record["tuned"], "parameters": record["parameters"]})
        if isinstance(logger, WandbLogger) and trainer.global_rank == 0:
            url = getattr(logger.experiment, "url", None)
            if isinstance(url, str) and url:  # online (an offline run has no URL)
                log.info("W&B run: %s", url)


@rank_zero_only
def announce(record: dict, path: Path) -> None:
    final = record["metrics"]["final"]
    headline = " ".join(f"{k}={final[k]:.4f}" for k in ("test/acc", "test/mse", "test/rmse", "test/r2", "test/memory_capacity", "test/loss") if k in final and isinstance(final[k], float) and math.isfinite(final[k]))
    seed = f"seed {record['seed']} of the stack: " if record.get("seed_stack", {}).get("stack_dir") else ""
    log.info("%sstatus=%s %s (%.1f s)", seed, record["status"], headline, record["wall_time_s"])
    log.info("outputs: %s", path.parent)


def _finish_wandb(record: dict) -> None:
    """Record the outcome in the W&B run's summary (ok / diverged / failed, so failed runs can be
    filtered out), then close it even after an error, or the next multirun job logs into the same run."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.run.summary.update(
                {key: record.get(key) for key in ("status", "message", "steps", "epochs", "wall_time_s", "fit_time_s", "resources", "compute")}
            )
            wandb.finish(exit_code=0 if record["status"] == OK else 1)
    except Exception as error:  # never let logging hide the run's own outcome
        log.warning("wandb.finish failed: %s", error)


def resume_from_checkpoint_left_behind(cfg: DictConfig, overrides: list[str] | None) -> None:
    """A stopped run of this job left a checkpoint in its output directory: continue from it
    (unless ckpt_path names another checkpoint)."""
    if cfg.get("ckpt_path"):
        return
    checkpoint = checkpoint_to_resume(cfg.paths.output_dir, overrides)
    if checkpoint is not None:
        log.info("resuming from %s (this job was stopped part-way)", checkpoint)
        with open_dict(cfg):
            cfg.ckpt_path = str(checkpoint)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_app(cfg: DictConfig) -> float | None:
    from learnbench.console import USER_ERRORS, app_started, expect_own_checkpoints, quiet_known_noise, stop

    app_started()  # from here on Hydra reports errors as usual (learnbench.console.run_app)
    quiet_by_default()  # W&B's banner and summary (WANDB_SILENT, unless the user set it)
    # Known harmless library messages are silenced, narrowly (learnbench/console.py). DDP ranks 1..N-1
    # re-run the app, so they install the same filters.
    quiet_known_noise()
    expect_own_checkpoints(cfg.paths.output_dir)  # a resumed run's checkpoint folder is not empty, by design
    # A re-run sweep skips jobs that already finished in their (fixed) output directory.
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None
    record = finished_record(cfg.paths.output_dir, overrides)
    if record is not None:
        log.info("skipping: already finished (%s/results.json, status ok)", cfg.paths.output_dir)
    else:
        resume_from_checkpoint_left_behind(cfg, overrides)
        try:
            with ddp_launch.job_scope():
                record = train(cfg)  # writes results.json (status failed) also when it raises
        except USER_ERRORS as error:
            # A bad option or a missing/damaged data file: its message, no traceback; exit status 2
            # (in a multirun only this job fails and the sweep goes on).
            stop(error, log)
    # Returned to Hydra (and its sweepers, e.g. Optuna): the metric named by `optimized_metric`.
    metric = cfg.get("optimized_metric")
    if metric and seed_list(cfg):  # a stack: the mean over its seeds of each one's best
        values = [record["metrics"]["best"].get(f"{metric}@{s}") for s in seed_list(cfg)]
        return sum(values) / len(values) if None not in values else None
    return record["metrics"]["best"].get(metric) if metric else None


def main() -> None:
    """`python -m learnbench.train [overrides]` and the `learnbench-train` script: the Hydra app, with the
    user errors Hydra meets before it starts (an unknown key without `+`, a run folder that cannot be made)
    shown as one line (learnbench.console.run_app)."""
    from learnbench.console import run_app

    run_app(hydra_app)


if __name__ == "__main__":
    main()
