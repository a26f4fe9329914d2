"""`python -m learnbench.verify <overrides>`: check a rule's gradient estimate against backprop's, and its determinism.

The same overrides as `python -m learnbench.train` (method=..., data=..., model=..., a rule of your own as
`method._target_=mypackage.MyRule`); the config is composed, checked and built the same way. On one training batch, at the
model's initial weights, in float64:

  gradient      N estimates of the rule (its noise re-seeded by step, as in training) against backprop's gradient g of the
                same batch loss: the cosine of their mean with g, the mean's relative bias ||mean - g|| / ||g||, and the
                spread of one estimate, sqrt(E||e - mean||^2) / ||g||. What the rule claims (LearningRule.claims) is
                tested: "exact" (every estimate equals g to 1e-8 of its scale), "unbiased" (the mean is as close to g
                as N draws allow: N ||mean - g||^2 / tr(Cov) below 4, its expectation being 1); a rule that claims
                neither (fa, pc, local losses: another direction by design) is reported, not judged.
  determinism   two models built from the seed, trained 3 steps each through the rule and the optimiser: bit-identical
                weights.

Exit status 1 if a check fails, 2 if the config is refused; one line per check; one thread (small problems).
Whole-batch rules on static data only (feed-forward models, model=snn on images); the rules of sequences (rflo,
eprop, rtrl, windows of bptt) are checked by tests/test_recurrent.py and tests/test_esn_traces.py, DDP ranks and
resumes by tests/test_ddp_rules.py and tests/test_resume.py.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from learnbench.paths import CONFIG_DIR
from learnbench.tasks import get_task
from learnbench.train import ConfigError, build_module, check_config, check_model_fits_data, check_time_fits, task_of

UNBIASED_LIMIT = 4.0  # N ||mean - g||^2 / tr(Cov) has expectation 1 for an unbiased rule; 4: a clear bias
EXACT_TOLERANCE = 1e-8


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


def estimates(module, x, y, loss_fn, draws: int) -> torch.Tensor:
    """[draws, P]: the rule's estimate at the same weights, its noise re-seeded for step k as the training loop does."""
    params = [p for p in module.model.parameters() if p.requires_grad]
    rows = []
    for k in range(draws):
        for p in params:
            p.grad = None
        module.rule.begin_step(k)
        module.rule.estimate_grads(module.model, x, y, loss_fn)
        rows.append(flat_grads(params))
    return torch.stack(rows)


def gradient_check(module, x, y, loss_fn, draws: int) -> Check:
    params = [p for p in module.model.parameters() if p.requires_grad]
    with torch.enable_grad():
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss_fn(module.model(x), y).mean(), params)])
    e = estimates(module, x, y, loss_fn, draws)
    mean = e.mean(dim=0)
    scale = g.norm().clamp_min(1e-30)
    cos = float(torch.nn.functional.cosine_similarity(mean, g, dim=0))
    bias = float((mean - g).norm() / scale)
    spread_sq = float(((e - mean) ** 2).sum(dim=1).mean())
    spread = spread_sq ** 0.5 / float(scale)
    figures = f"cos(mean, g) {cos:.4f}, relative bias {bias:.3g}, relative spread of one estimate {spread:.3g} ({draws} draws)"
    claims = module.rule.claims()
    if "exact" in claims:
        error = float((e - g).abs().max() / g.abs().max().clamp_min(1e-30))
        return Check("gradient (claims exact)", error < EXACT_TOLERANCE, f"largest error {error:.2g} of max|g|; {figures}")
    if "unbiased" in claims:
        if spread_sq == 0.0:
            return Check("gradient (claims unbiased)", bias < EXACT_TOLERANCE, f"deterministic estimate; {figures}")
        statistic = draws * float(((mean - g) ** 2).sum()) / (spread_sq * draws / (draws - 1))
        return Check("gradient (claims unbiased)", statistic < UNBIASED_LIMIT,
                     f"N ||mean - g||^2 / tr(Cov) = {statistic:.2f} (expectation 1; limit {UNBIASED_LIMIT:g}); {figures}")
    return Check("gradient (claims neither exact nor unbiased)", None, figures)


def determinism_check(cfg: DictConfig, x, y, loss_fn, steps: int = 3) -> Check:
    """Two modules built from the seed, `steps` steps each (rule, then the optimiser): bit-identical weights."""
    weights = []
    for _ in range(2):
        _, module = pieces(cfg)
        optimizer = module.configure_optimizers()
        optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        optimizer = optimizer[0] if isinstance(optimizer, (list, tuple)) else optimizer
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            module.rule.begin_step(step)
            module.rule.estimate_grads(module.model, x, y, loss_fn)
            optimizer.step()
        weights.append(torch.cat([p.detach().reshape(-1) for p in module.model.parameters()]))
    same = torch.equal(weights[0], weights[1])
    return Check("determinism", same, f"{steps} steps twice from seed {cfg.seed}: "
                 + ("bit-identical weights" if same else f"weights differ by up to {float((weights[0] - weights[1]).abs().max()):.3g}"))


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


def one_batch(cfg: DictConfig, datamodule):
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    return x.double(), (y.double() if y.is_floating_point() else y), get_task(task_of(cfg, datamodule)).loss


def verify(overrides: list[str], draws: int = 200) -> list[Check]:
    cfg = compose_run(overrides)
    check_config(cfg)
    datamodule, module = pieces(cfg)
    if get_task(task_of(cfg, datamodule)).sequential:
        raise ConfigError("learnbench.verify checks whole-batch rules on static data (feed-forward models, model=snn on "
                          "images); the rules of sequences are checked by tests/test_recurrent.py and tests/test_esn_traces.py")
    if len(module.rule.schedule(None)) != 1:  # ipc's per_step: the weights move between the calls of a batch
        raise ConfigError("learnbench.verify compares one estimate a batch with backprop's gradient, and this rule steps the "
                          "weights several times a batch (method=ipc: method.weight_updates=per_batch gives one); its own "
                          "tests: tests/test_predictive_coding.py")
    x, y, loss_fn = one_batch(cfg, datamodule)
    return [gradient_check(module, x, y, loss_fn, draws), determinism_check(cfg, x, y, loss_fn)]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    draws = 200
    for arg in [a for a in args if a.startswith("--draws=")]:
        draws = int(arg.split("=", 1)[1])
        args.remove(arg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small problems: a second thread only contends with whatever else runs
    try:
        checks = verify(args, draws)
    except ConfigError as error:
        print(f"learnbench.verify: {error}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    for check in checks:
        print(check.line())
    return 1 if any(c.passed is False for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
