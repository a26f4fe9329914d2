"""`python -m learnbench.verify <overrides>`: check a rule against backprop's gradient, and its training for
determinism, rank synchrony and resumes.

The same overrides as `python -m learnbench.train` (method=..., data=..., model=..., a rule of your own as
`method._target_=mypackage.MyRule`); the config is composed, checked and built the same way. The checks
(`--checks=gradient,determinism,ranks,resume`; all by default):

  gradient      On one training batch, at the model's initial weights, in float64: N estimates of the rule (its noise
                re-seeded by step, as in training; a sequence's windows summed, their state carried, the weights held)
                against backprop's gradient g of the same batch loss: the cosine of their mean with g, the mean's
                relative bias ||mean - g|| / ||g||, and the spread of one estimate, sqrt(E||e - mean||^2) / ||g||. What
                the rule claims (LearningRule.claims) is tested: "exact" (every estimate equals g to 1e-8 of its
                scale: bp, full bptt, rtrl), "unbiased" (the mean is as close to g as N draws allow: N ||mean - g||^2 /
                tr(Cov) below 4, its expectation being 1); a rule that claims neither (fa, pc, e-prop, local losses:
                another direction by design) is reported, not judged.
  determinism   two models built from the seed, trained 3 batches each through the training loop (the rule's schedule,
                then the optimiser): bit-identical weights.
  ranks         a short run on two processes (trainer=ddp_sim): every tensor of the model's and the rule's state
                bit-identical on both ranks at the end (results.json `ranks`, learnbench.callbacks.RankSync).
  resume        a short run (3 epochs of up to 3 batches) killed with SIGKILL at its third epoch's start and run again (it resumes
                from its checkpoint) against the same run uninterrupted: bit-identical final checkpoints and metrics.
  seeds         for a rule that claims to stack seeds (LearningRule.stacks_seeds; `seeds=[...]`, learnbench/seeds.py): the
                short run as a stack of two seeds against each seed's own run: every final and per-epoch metric equal to
                float32 rounding (rel 2e-5). A rule that does not claim it is reported with its reason.

The three last ones run `python -m learnbench.train` in subprocesses (about 10-20 s each). Exit status 1 if a check
fails, 2 if the config is refused; one line per check; one thread.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from learnbench.paths import CONFIG_DIR
from learnbench.callbacks import tensor_digest
from learnbench.module import apply_direct_updates
from learnbench.rules.base import CLOSED_FORM, DIRECT, GRADIENT, trainable_parameters
from learnbench.train import ConfigError, build_module, check_config, check_model_fits_data, check_time_fits, task_of
from learnbench.training_loop import OfflineHooks, train_batch

UNBIASED_LIMIT = 4.0  # N ||mean - g||^2 / tr(Cov) has expectation 1 for an unbiased rule; 4: a clear bias
EXACT_TOLERANCE = 1e-8
CHECKS = ("gradient", "determinism", "ranks", "resume", "seeds")
# The short run of the ranks and resume checks: 3 epochs of 3 batches, one validation and one test batch, no progress
# bar, CSV only (++: whatever a preset set).
SHORT_RUN = ["++trainer.max_epochs=3", "++trainer.max_steps=-1", "++trainer.limit_train_batches=3", "++trainer.limit_val_batches=1",
             "++trainer.limit_test_batches=1", "++trainer.num_sanity_val_steps=0", "++trainer.enable_progress_bar=false", "logger=csv"]


@dataclass
class Check:
    name: str
    passed: bool | None  # None: reported, not judged (the rule claims nothing to test)
    detail: str

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "INFO"}[self.passed]
        return f"{mark}  {self.name}: {self.detail}"


def compose_run(overrides: list[str]) -> DictConfig:
    """The config `python -m learnbench.train <overrides>` would run, without loggers (nothing is logged here)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=[*overrides, "logger=csv", "~logger"], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def flat_grads(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in params])


class HeldWeights(OfflineHooks):
    """The training loop's hooks (training_loop.LoopHooks) for the gradient check: every update's gradients are summed,
    nothing is stepped, so a schedule of several calls (a sequence's windows) gives the sum of its estimates at one set
    of weights."""

    def __init__(self, params: list[torch.nn.Parameter], step: int):
        self.params, self.global_step, self.total = params, step, None

    def zero_grad_all(self) -> None:
        for p in self.params:
            p.grad = None

    def update(self) -> None:
        grads = flat_grads(self.params)
        self.total = grads if self.total is None else self.total + grads


class Stepping(HeldWeights):
    """The training loop's hooks for the determinism check: the update as LearningRuleModule makes it on one process
    (direct-mode parameters moved by -p.grad, the optimiser for the rest, the rule's after-step hook)."""

    def __init__(self, module, optimizer):
        super().__init__([], 0)
        self.module, self.optimizer = module, optimizer

    def zero_grad_all(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def update(self) -> None:
        apply_direct_updates(self.module.params_by_mode[DIRECT])
        self.optimizer.step()
        self.module.rule.after_optimizer_step(self.module.model)
        self.global_step += 1

    def fit_closed_form(self) -> None:
        if self.module.params_by_mode[CLOSED_FORM]:
            self.module.rule.solve(self.module.model, [s.clone() for s in self.module.rule.statistics()])


def estimates(module, x, y, draws: int) -> torch.Tensor:
    """[draws, P]: the rule's estimate for the batch at the same weights, its noise re-seeded for step k as the training
    loop does (the sum over the calls of its schedule)."""
    params = trainable_parameters(module.model)
    rows = []
    for k in range(draws):
        hooks = HeldWeights(params, k)
        train_batch(module.rule, module.model, x, y, module.task, hooks)
        rows.append(hooks.total)
    return torch.stack(rows)


def gradient_check(module, x, y, draws: int) -> Check:
    params = trainable_parameters(module.model)
    try:
        with torch.enable_grad():
            g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(module.task.loss(module.model(x), y).mean(), params)])
    except RuntimeError as error:  # spike times (model=srm): the forward pass is not differentiable by autograd
        return Check("gradient", None, f"not compared: autograd cannot differentiate {type(module.model).__name__}'s forward "
                     f"pass ({str(error).splitlines()[0]}); the rule's own tests check it (float64 finite differences)")
    e = estimates(module, x, y, draws)
    modes = set(module.rule.update_modes(module.model).values()) - {GRADIENT}
    if modes:  # STDP, RLS (-dW), a ridge fit (no gradient at all): compared for the record, never judged
        cos = float(torch.nn.functional.cosine_similarity(e.mean(dim=0), g, dim=0))
        return Check("gradient", None, f"not a gradient estimate ({', '.join(sorted(modes))} update): cos(mean -dW, g) "
                     f"{cos:.4f} ({draws} draws)")
    return judge(e, g, module.rule.claims())


def judge(e: torch.Tensor, g: torch.Tensor, claims: frozenset[str]) -> Check:
    """What N estimates e [N, P] say against the gradient g [P], and the claim tested (tests/test_rules.py calls it too).

    "exact": every estimate equals g to 1e-8 of max|g|. "unbiased": the squared error of the mean against what N draws
    allow, N ||mean - g||^2 / tr(Cov) < 4 (expectation 1; the sum over P coordinates concentrates), and the scale: the
    estimates' mean projection on g's direction within 4 standard errors of ||g|| (a wrongly scaled estimator with
    large noise can pass the first)."""
    draws = len(e)
    mean = e.mean(dim=0)
    scale = g.norm().clamp_min(1e-30)
    cos = float(torch.nn.functional.cosine_similarity(mean, g, dim=0))
    bias = float((mean - g).norm() / scale)
    spread_sq = float(((e - mean) ** 2).sum(dim=1).mean())
    spread = spread_sq ** 0.5 / float(scale)
    figures = f"cos(mean, g) {cos:.4f}, relative bias {bias:.3g}, relative spread of one estimate {spread:.3g} ({draws} draws)"
    if "exact" in claims:
        error = float((e - g).abs().max() / g.abs().max().clamp_min(1e-30))
        return Check("gradient (claims exact)", error < EXACT_TOLERANCE, f"largest error {error:.2g} of max|g|; {figures}")
    if "unbiased" in claims:
        if spread_sq == 0.0:
            return Check("gradient (claims unbiased)", bias < EXACT_TOLERANCE, f"deterministic estimate; {figures}")
        statistic = draws * float(((mean - g) ** 2).sum()) / (spread_sq * draws / (draws - 1))
        along = e @ (g / scale)
        standard_errors = float((along.mean() - scale).abs() / (along.std() / draws ** 0.5).clamp_min(1e-30))
        passed = statistic < UNBIASED_LIMIT and standard_errors < UNBIASED_LIMIT
        return Check("gradient (claims unbiased)", passed,
                     f"N ||mean - g||^2 / tr(Cov) = {statistic:.2f} (expectation 1; limit {UNBIASED_LIMIT:g}), mean projection on "
                     f"g {standard_errors:.2f} standard errors from ||g|| (limit {UNBIASED_LIMIT:g}); {figures}")
    return Check("gradient (claims neither exact nor unbiased)", None, figures)


def determinism_check(cfg: DictConfig, x, y, batches: int = 3) -> Check:
    """Two modules built from the seed, `batches` training batches each through the training loop: bit-identical weights."""
    weights = []
    for _ in range(2):
        _, module = pieces(cfg)
        module.scheduler_factory = None  # 3 batches at the initial lr (a schedule needs the trainer's step count)
        optimizer = module.configure_optimizers()
        hooks = Stepping(module, optimizer)
        module.rule.begin_epoch(module.model)
        for _ in range(batches):
            train_batch(module.rule, module.model, x, y, module.task, hooks)
        hooks.fit_closed_form()
        weights.append(torch.cat([p.detach().reshape(-1) for p in module.model.parameters()]))
    same = torch.equal(weights[0], weights[1])
    return Check("determinism", same, f"{batches} batches twice from seed {cfg.seed}: "
                 + ("bit-identical weights" if same else f"weights differ by up to {float((weights[0] - weights[1]).abs().max()):.3g}"))


def train_process(args: list[str], run_dir: Path, killed_at: tuple[int, int] | None = None) -> subprocess.CompletedProcess:
    """`python -m learnbench.train <args>` in `run_dir`, with this process's import path (a user's rule resolves
    there as here), one thread, W&B off. `killed_at` (epoch, batch): SIGKILL at that training batch's start."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "learnbench.train"]
    if killed_at is not None:
        command = [sys.executable, "-c", f"from learnbench.verify import train_killed_at; train_killed_at{killed_at}"]
    return subprocess.run([*command, *args, f"hydra.run.dir={run_dir}"], env=env, capture_output=True, text=True, timeout=900)


class KillAt(L.Callback):
    """SIGKILL (no clean-up of any kind) at the start of training batch `batch` of epoch `epoch`."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


def train_killed_at(epoch: int, batch: int) -> None:
    """`python -m learnbench.train` (its arguments from sys.argv), killed at a training batch: the resume check's
    stopped run. The callback is added here, not by an override, so the run's overrides are those of the run that
    resumes it (a checkpoint resumes only the job of the same overrides)."""
    import learnbench.train as training

    build = training.build
    training.build = lambda cfg, extra_callbacks=None: build(cfg, extra_callbacks=[*(extra_callbacks or []), KillAt(epoch, batch)])
    sys.argv = ["learnbench.train", *sys.argv[1:]]
    training.main()


def failure_line(result: subprocess.CompletedProcess) -> str:
    """The last line the run printed, without the log record's time and level."""
    lines = [line for line in (result.stderr + result.stdout).strip().splitlines() if line.strip()]
    if not lines:
        return f"exit status {result.returncode}"
    return lines[-1].split("] - ", 1)[1] if lines[-1].startswith("[") and "] - " in lines[-1] else lines[-1]


def ranks_check(overrides: list[str], module) -> Check:
    if module.rule.one_process_only:
        return Check("ranks", None, "not run: " + module.rule.one_process_only.format(processes=2))
    with tempfile.TemporaryDirectory(prefix="learnbench-verify-") as tmp:
        result = train_process([*overrides, *SHORT_RUN, "trainer=ddp_sim"], Path(tmp) / "ddp")
        if result.returncode == 2:  # refused at start: a split smaller than the processes, ...
            return Check("ranks", None, f"not run: {failure_line(result)}")
        if result.returncode != 0:
            return Check("ranks", False, f"the 2-process run failed: {failure_line(result)}")
        ranks = json.loads((Path(tmp) / "ddp" / "results.json").read_text()).get("ranks") or {}
    if ranks.get("in_sync"):
        return Check("ranks", True, f"2 processes, {ranks['step']} steps: every tensor of the model and the rule bit-identical")
    differ = ranks.get("differ", [])
    return Check("ranks", False, f"2 processes, {ranks.get('step')} steps: rank 1 differs from rank 0 in "
                 + ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else ""))


def checkpoint_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def resume_check(overrides: list[str]) -> Check:
    args = [*overrides, *SHORT_RUN]
    with tempfile.TemporaryDirectory(prefix="learnbench-verify-") as tmp:
        whole, stopped = Path(tmp) / "whole", Path(tmp) / "stopped"
        result = train_process(args, whole)
        if result.returncode != 0:
            return Check("resume", False, f"the uninterrupted run failed: {failure_line(result)}")
        killed = train_process(args, stopped, killed_at=(2, 0))
        if killed.returncode != -signal.SIGKILL:
            return Check("resume", False, f"the run to be killed ended by itself ({failure_line(killed)})")
        result = train_process(args, stopped)
        if result.returncode != 0:
            return Check("resume", False, f"the resumed run failed: {failure_line(result)}")
        records = [json.loads((d / "results.json").read_text()) for d in (whole, stopped)]
        if not records[1].get("resumed_from"):
            return Check("resume", False, "the second run did not resume from the killed run's checkpoint")
        states = [checkpoint_state(d) for d in (whole, stopped)]
    differ = sorted(k for k in states[0].keys() | states[1].keys()
                    if k not in states[0] or k not in states[1] or tensor_digest(states[0][k]) != tensor_digest(states[1][k]))
    metrics = [r["metrics"]["final"] for r in records]
    if differ or metrics[0] != metrics[1]:
        what = ", ".join(differ[:6]) if differ else "the final metrics"
        return Check("resume", False, f"killed at the start of epoch 3 of 3 and resumed: differs from the uninterrupted run in {what}")
    return Check("resume", True, f"killed at the start of epoch 3 of 3 and resumed from epoch 2's checkpoint: final weights, rule state "
                 f"and metrics bit-identical to the uninterrupted run ({records[0]['steps']} steps)")


#: How close a stacked seed's metrics must be to its own run's: float32 rounding (a grouped product sums in another
#: order than a dense layer), which over a short run stays ~1e-7 relative.
SEED_STACK_TOLERANCE = 2e-5


def seed_records_differ(stacked: dict, alone: dict, rel: float = SEED_STACK_TOLERANCE) -> list[str]:
    """Where a stacked seed's results.json differs from its own run's: final metrics and every epoch's (a rule's rule/*
    diagnostics are the whole stack's, left out of a seed's record). Empty: the same run."""
    def own(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if "/" in k and not k.startswith("rule/")}

    if len(stacked["history"]) != len(alone["history"]):
        return [f"{len(stacked['history'])} epochs against {len(alone['history'])}"]
    pairs = [("final", stacked["metrics"]["final"], alone["metrics"]["final"])]
    pairs += [(f"epoch {e['epoch']}", e, a) for e, a in zip(stacked["history"], alone["history"])]
    found = []
    for where, a, b in pairs:
        a, b = own(a), own(b)
        if a.keys() != b.keys():
            found.append(f"{where}: {', '.join(sorted(a.keys() ^ b.keys()))} on one side only")
        found += [f"{where} {k}: {a[k]:.7g} stacked, {b[k]:.7g} alone" for k in sorted(a.keys() & b.keys())
                  if not math.isclose(a[k], b[k], rel_tol=rel, abs_tol=1e-6)]
    return found


def seeds_check(overrides: list[str], module, seed: int) -> Check:
    if module.rule.stacks_seeds is not True:
        return Check("seeds", None, f"not run: the rule does not stack seeds: {module.rule.stacks_seeds}")
    seeds = [seed, seed + 1]
    own = [o for o in overrides if not o.lstrip("+").startswith("seed=")]
    with tempfile.TemporaryDirectory(prefix="learnbench-verify-") as tmp:
        result = train_process([*own, *SHORT_RUN, f"seeds=[{seeds[0]},{seeds[1]}]"], Path(tmp) / "stack")
        if result.returncode == 2:  # refused at start: a model or a setting a stack cannot take
            return Check("seeds", None, f"not run: {failure_line(result)}")
        if result.returncode != 0:
            return Check("seeds", False, f"the stack of seeds {seeds} failed: {failure_line(result)}")
        found = []
        for s in seeds:
            result = train_process([*own, *SHORT_RUN, f"seed={s}"], Path(tmp) / f"seed{s}")
            if result.returncode != 0:
                return Check("seeds", False, f"seed {s}'s own run failed: {failure_line(result)}")
            stacked, alone = (json.loads((Path(tmp) / d / "results.json").read_text()) for d in (f"stack/seed_{s}", f"seed{s}"))
            found += [f"seed {s} {line}" for line in seed_records_differ(stacked, alone)]
    if found:
        return Check("seeds", False, f"a stack of seeds {seeds} against their own runs: " + "; ".join(found[:4])
                     + (f" and {len(found) - 4} more" if len(found) > 4 else ""))
    return Check("seeds", True, f"a stack of seeds {seeds}, {len(stacked['history'])} epochs: every final and per-epoch metric "
                 f"of each equal to its own run's (rel {SEED_STACK_TOLERANCE:g})")


def pieces(cfg: DictConfig):
    """The datamodule and the training module as `python -m learnbench.train` builds them (its checks included), without
    a trainer; the module in float64, its rule set up on the CPU (rank 0), the model drawn from the seed."""
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    check_model_fits_data(cfg, datamodule)
    check_time_fits(cfg, datamodule)
    module = build_module(cfg, datamodule.input_shape, datamodule.output_dim, task_of(cfg, datamodule)).double()
    module.rule.setup(module.model, seed=cfg.seed, rank=0, device=torch.device("cpu"))
    return datamodule, module


def one_batch(datamodule):
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    return x.double(), (y.double() if y.is_floating_point() else y)


def verify(overrides: list[str], draws: int = 200, checks: tuple[str, ...] = CHECKS) -> list[Check]:
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ConfigError(f"--checks: {', '.join(unknown)} unknown; choose from {', '.join(CHECKS)}")
    cfg = compose_run(overrides)
    check_config(cfg)
    datamodule, module = pieces(cfg)
    x, y = one_batch(datamodule)
    results = []
    if "gradient" in checks:
        results.append(gradient_check(module, x, y, draws))
    if "determinism" in checks:
        results.append(determinism_check(cfg, x, y))
    if "ranks" in checks:
        results.append(ranks_check(overrides, module))
    if "resume" in checks:
        results.append(resume_check(overrides))
    if "seeds" in checks:
        results.append(seeds_check(overrides, module, cfg.seed))
    return results


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    draws, checks = 200, CHECKS
    for arg in [a for a in args if a.startswith("--")]:
        name, _, value = arg[2:].partition("=")
        if name == "draws":
            draws = int(value)
        elif name == "checks":
            checks = tuple(c for c in value.split(",") if c)
        else:
            print(f"learnbench.verify: {arg} is not an option: --draws=N, --checks={','.join(CHECKS)}", file=sys.stderr)
            return 2
        args.remove(arg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small problems: a second thread only contends with whatever else runs
    try:
        results = verify(args, draws, checks)
    except ConfigError as error:
        print(f"learnbench.verify: {error}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    for check in results:
        print(check.line())
    return 1 if any(c.passed is False for c in results) else 0


if __name__ == "__main__":
    sys.exit(main())
