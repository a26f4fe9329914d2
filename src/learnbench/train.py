"""The Hydra app: `python -m learnbench.train [overrides]` (or `-m` for a multirun).

Reads top to bottom: check the config, build data -> model -> rule -> module -> trainer, fit,
test, write results.json. Every run writes results.json, also when it diverges or fails.
"""

from __future__ import annotations

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
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from learnbench import ddp_launch
from learnbench.callbacks import RunRecorder
from learnbench.config_validation import ConfigError, validate_config
from learnbench.tasks import CLASSIFICATION, CLASSIFICATION_OVER_TIME, RECONSTRUCTION, get_task
from learnbench.models import CNN, Autoencoder
from learnbench.module import LearningRuleModule
from learnbench.paths import CONFIG_DIR
from learnbench.resume import checkpoint_to_resume, finished_record
from learnbench.rules.local_losses import method_name
from learnbench.results import DIVERGED, FAILED, OK, git_revision, library_versions, now_iso, write_results
from learnbench.wandb_mode import choose_offline

log = logging.getLogger("learnbench")


def config_choices(cfg: DictConfig) -> dict[str, str]:
    """The chosen option of each config group (method=bp, data=spiral, ...)."""
    if HydraConfig.initialized():
        return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra")}
    return {}


def check_config(cfg: DictConfig) -> None:
    """Refuse impossible combinations before any data is loaded or any step is taken."""
    validate_config(cfg)  # every option's type and range (learnbench/options.py)
    trainer = cfg.trainer
    if trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer uses GPUs but this machine has no CUDA device: use trainer=cpu (or trainer=ddp_sim)")
    precision = str(trainer.get("precision", "32"))
    if "16-mixed" in precision and precision.startswith("16") and get_class(cfg.method._target_).writes_grads_by_hand:
        raise ConfigError(
            f"trainer.precision={precision} rescales gradients that this rule writes by hand: "
            f"use trainer.precision=32 or bf16-mixed for non-backprop rules"
        )
    if trainer.get("gradient_clip_val"):
        raise ConfigError("trainer.gradient_clip_val does not work with manual optimisation: use grad_clip_norm=<value>")
    if trainer.get("accumulate_grad_batches", 1) != 1:
        raise ConfigError("trainer.accumulate_grad_batches does not work with manual optimisation: raise data.batch_size")
    check_option_combinations(cfg)


def check_option_combinations(cfg: DictConfig) -> None:
    """What no single option's annotation can refuse: a model's options that contradict each other or the data
    (model=snn: tau_mem and beta both given; a rate or latency code on inputs not scaled to [0, 1]). The model
    class says (`option_problem`, models/snn.py); one line naming what fits."""
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


def build_loggers(cfg: DictConfig) -> list:
    logger_cfg = cfg.get("logger")
    if logger_cfg and logger_cfg.get("wandb") is not None and logger_cfg.wandb.get("offline") is None:
        offline = choose_offline()
        with open_dict(logger_cfg):
            logger_cfg.wandb.offline = offline
        if offline:
            log.info("W&B is offline (not logged in); sync later with: wandb sync %s/wandb/offline-run-*", cfg.paths.output_dir)
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
    if set(trains) == {"reservoir"} and not recurrent_model:
        raise ConfigError(
            f"method={method} fits the readout of a reservoir and model={model} has none: use model=esn (or model=rnn with "
            f"model.learn_input=false model.learn_recurrent=false) with {SEQUENCE_DATA}"
        )
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
    # A rate RNN is trained as a recurrent network or fitted as a reservoir; a spiking network by the rules that say so.
    kinds = {"recurrent", "reservoir"} if kind == "recurrent" else {kind}
    if recurrent_model and not kinds & set(trains):
        raise ConfigError(
            f"method={method} does not train {kind} models: on model={model} use one of {', '.join(comparable_rules(kind))}"
        )


SPLITS = ("train", "val", "test")


def check_washout(cfg: DictConfig, datamodule) -> None:
    """A washout (the first steps of every sequence, not fitted or scored) must leave steps in every split."""
    washout = cfg.model.get("washout") or 0
    if not washout:
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


def build(cfg: DictConfig):
    """Data, model, rule, training module and trainer, all from the config."""
    datamodule = instantiate(cfg.data)
    check_model_fits_data(cfg, datamodule)
    check_time_fits(cfg, datamodule)
    check_washout(cfg, datamodule)
    module = build_module(cfg, datamodule.input_shape, datamodule.output_dim, task_of(cfg, datamodule))
    recorder = RunRecorder()
    callbacks = instantiate_dict(cfg.get("callbacks"))
    if cfg.trainer.get("enable_progress_bar") is False:  # the switch wins over the default progress bar
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer = instantiate(cfg.trainer, logger=build_loggers(cfg), callbacks=[*callbacks, recorder])
    return datamodule, module, trainer, recorder


def base_record(cfg: DictConfig) -> dict:
    choices = config_choices(cfg)
    return {
        "method": method_name(choices.get("method"), cfg.method.get("local")),  # lg_fg_a for method=fg_a method.local=greedy too
        "data": choices.get("data"),
        "model": choices.get("model"),
        "optimizer": choices.get("optimizer"),
        "experiment": choices.get("experiment"),
        "tuned": tuned_files(choices),
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
    try:
        check_config(cfg)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule, module, trainer, recorder = build(cfg)
        record["parameters"] = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
        record["rule_parameters"] = sum(p.numel() for p in module.rule.extra_parameters())
        log_config(trainer, record)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        final = {}
        if module.diverged_at_step is None:
            final = {k: float(v) for k, v in trainer.test(module, datamodule=datamodule, verbose=False)[0].items()}
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
        raise
    finally:
        record["steps"] = trainer.global_step if trainer is not None else 0
        record["epochs"] = len(recorder.history) if recorder is not None else 0
        record["history"] = recorder.history if recorder is not None else []
        record["fit_time_s"] = recorder.fit_seconds if recorder is not None else None
        record["wall_time_s"] = time.perf_counter() - start
        if trainer is None or trainer.global_rank == 0:
            path = write_results(Path(cfg.paths.output_dir), record)
            announce(record, path)
        _finish_wandb(record)
    return record


def tuned_files(choices: dict[str, str]) -> list[str]:
    """The conf/tuned/ files that applied to this run (the model's size on the dataset, the rule on the
    dataset, then the rule in an experiment)."""
    names = [
        f"model/{choices['tuned/model@model']}" if choices.get("tuned/model@model") else None,
        choices.get("tuned"),
        choices.get("tuned@_global_"),
    ]
    # dict.fromkeys: an experiment named like its dataset (zipser_andersen) selects the same file twice.
    return [f"conf/tuned/{name}.yaml" for name in dict.fromkeys(names) if name and (CONFIG_DIR / "tuned" / f"{name}.yaml").is_file()]


def log_config(trainer, record: dict) -> None:
    """The resolved config and the group choices go to every logger (W&B's run config, CSV's hparams.yaml),
    so runs can be filtered by method, data, seed, lr, ... in the W&B UI."""
    choices = {k: record[k] for k in ("method", "data", "model", "optimizer", "experiment")}
    log.info("tuned settings: %s", ", ".join(record["tuned"]) or "none (the rule's and the data's defaults)")
    for logger in trainer.loggers:
        logger.log_hyperparams({**record["config"], "choices": choices, "tuned": record["tuned"], "parameters": record["parameters"]})


@rank_zero_only
def announce(record: dict, path: Path) -> None:
    final = record["metrics"]["final"]
    headline = " ".join(f"{k}={final[k]:.4f}" for k in ("test/acc", "test/mse", "test/rmse", "test/r2", "test/memory_capacity", "test/loss") if k in final and isinstance(final[k], float) and math.isfinite(final[k]))
    log.info("status=%s %s (%.1f s)", record["status"], headline, record["wall_time_s"])
    log.info("outputs: %s", path.parent)


def _finish_wandb(record: dict) -> None:
    """Record the outcome in the W&B run's summary (ok / diverged / failed, so failed runs can be
    filtered out), then close it even after an error, or the next multirun job logs into the same run."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.run.summary.update(
                {key: record.get(key) for key in ("status", "message", "steps", "epochs", "wall_time_s", "fit_time_s")}
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
def main(cfg: DictConfig) -> float | None:
    from learnbench.console import USER_ERRORS, quiet_known_noise, stop

    # Known harmless library messages are silenced, narrowly (learnbench/console.py). DDP ranks 1..N-1
    # re-run main(), so they install the same filters.
    quiet_known_noise()
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
    return record["metrics"]["best"].get(metric) if metric else None


if __name__ == "__main__":
    main()
