"""Every sweep (conf/sweep/*.yaml for Hydra, sweeps/wandb_specs/*.yaml for W&B) generates exactly the jobs
its spec lists, and every one of them composes into a valid config whose data, model and rule
instantiate. No training.

The oracle is the spec: the expected jobs are the cartesian product of the value lists written in the
yaml file (read here with a plain YAML loader), and each composed config must carry those values.
"""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import compose_config
from learnbench.catalog import comparable_rules, method_config
from learnbench.paths import CONFIG_DIR
from learnbench.rules import LearningRule

REPO = CONFIG_DIR.parent
WANDB_DIR = REPO / "sweeps" / "wandb_specs"
WANDB_COMMAND = ["${env}", "${interpreter}", "-m", "learnbench.train", "${args_no_hyphens}"]


def spec(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def uses_optuna(name: str) -> bool:
    return "override /hydra/sweeper: optuna" in (CONFIG_DIR / "sweep" / f"{name}.yaml").read_text()


HYDRA_SWEEPS = sorted(p.stem for p in (CONFIG_DIR / "sweep").glob("*.yaml"))
GRID_SWEEPS = [name for name in HYDRA_SWEEPS if not uses_optuna(name)]
OPTUNA_SWEEPS = [name for name in HYDRA_SWEEPS if uses_optuna(name)]
WANDB_SWEEPS = sorted(p.stem for p in WANDB_DIR.glob("*.yaml"))


def all_but_the_smallest_slow(names: list[str]) -> list:
    """Expanding and composing a whole sweep takes 7-17 s: murray_sine_rules (the smallest grid) runs in
    `make test`, every other sweep is marked slow (`make test-slow`)."""
    return [name if name == "murray_sine_rules" else pytest.param(name, marks=pytest.mark.slow) for name in names]


def test_the_standard_sweeps_exist():
    assert {"spiral_rules", "mnist_rules", "fashion_mnist_rules", "lr_grid_spiral"} <= set(GRID_SWEEPS)
    assert "optuna_lr_sigma" in OPTUNA_SWEEPS
    assert set(WANDB_SWEEPS) <= set(GRID_SWEEPS) and "spiral_rules" in WANDB_SWEEPS


@pytest.mark.parametrize(("name", "data"), [("spiral_rules", "spiral"), ("mnist_rules", "mnist"), ("fashion_mnist_rules", "fashion_mnist")])
def test_rule_comparisons_run_every_rule_on_their_dataset(name, data):
    """Every feed-forward rule in conf/method/ (the recurrent ones train model=rnn on sequences) x 3 seeds; on
    MNIST and Fashion-MNIST the S/1/1 model (784-256-256-10, LayerNorm)."""
    from hydra.utils import get_class

    configs = {p.stem: method_config(p.stem) for p in (CONFIG_DIR / "method").glob("*.yaml")}
    rules = sorted(name for name, cfg in configs.items()  # local-loss variants (l_bp, ...) are sweep=ren_table's, not here
                   if "feedforward" in get_class(cfg._target_).trains and cfg.get("local", "none") == "none")
    grid = hydra_grid(name)
    assert sorted(grid["method"]) == rules and grid["seed"] == ["0", "1", "2"]
    job = composed((f"sweep={name}", "method=bp", "seed=0"))
    assert job["choices"]["data"] == data
    if data != "spiral":
        assert job["config"]["model"]["hidden_sizes"] == [256, 256] and job["config"]["model"]["layer_norm"] is True


# ----------------------------------------------------------------------------- the specs' own combinatorics
def hydra_grid(name: str) -> dict[str, list[str]]:
    """key -> its values as written in conf/sweep/<name>.yaml (comma-separated strings; `${rules:<kind>}`
    resolved to the rule list, checked against conf/method/ in the comparison test)."""
    params = OmegaConf.load(CONFIG_DIR / "sweep" / f"{name}.yaml").hydra.sweeper.params
    return {key: [v.strip() for v in str(value).split(",")] for key, value in params.items()}


def wandb_grid(name: str) -> dict[str, list]:
    params = spec(WANDB_DIR / f"{name}.yaml")["parameters"]
    return {key: p["values"] if "values" in p else [p["value"]] for key, p in params.items()}


def product(grid: dict[str, list]) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def hydra_jobs(name: str) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of the sweep's params (its own parser and splitter)."""
    params = OmegaConf.load(CONFIG_DIR / "sweep" / f"{name}.yaml").hydra.sweeper.params
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def wandb_args(combination: dict) -> list[str]:
    """The key=value arguments a W&B agent passes for one combination (W&B's own formatting)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    return create_sweep_command_args({"args": {k: {"value": v} for k, v in combination.items()}})["args_no_hyphens"]


# ----------------------------------------------------------------------------- composing one job
@functools.lru_cache(maxsize=None)
def composed(overrides: tuple[str, ...]) -> dict:
    """One job's config, checked to instantiate; returned as a plain dict (paths dropped)."""
    cfg = compose_config([*overrides, "paths.data_dir=/nonexistent/datasets"])
    choices = dict(HydraConfig.get().runtime.choices)
    datamodule = instantiate(cfg.data)  # reads no file before setup()
    net = instantiate(cfg.model, input_shape=datamodule.input_shape, output_dim=datamodule.output_dim)
    rule = instantiate(cfg.method, **({"table_size": 2**12} if cfg.method.get("table_size") else {}))
    assert isinstance(rule, LearningRule)
    assert instantiate(cfg.optimizer)(params=net.parameters()).defaults["lr"] == cfg.optimizer.lr
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("paths")
    container["data"].pop("data_dir", None)
    return {"choices": {k: v for k, v in choices.items() if not k.startswith("hydra") and k != "sweep"}, "config": container}


def check_values(job: dict, combination: dict) -> None:
    """Each key=value of the combination is what the composed config holds (a group: its choice)."""
    for key, value in combination.items():
        if key in job["choices"]:
            assert job["choices"][key] == str(value), (key, value)
        else:
            node = job["config"]
            for part in key.split("."):
                node = node[part]
            expected = yaml.safe_load(value) if isinstance(value, str) else value
            assert node == expected, (key, node, expected)


# ----------------------------------------------------------------------------- Hydra sweeps
@pytest.mark.parametrize("name", all_but_the_smallest_slow(GRID_SWEEPS))
def test_hydra_sweep_expands_to_its_spec_and_every_job_composes(name):
    grid = hydra_grid(name)
    expected = product(grid)
    jobs = hydra_jobs(name)
    assert len(jobs) == len(expected) == math.prod(len(v) for v in grid.values())
    as_dicts = [dict(o.split("=", 1) for o in job) for job in jobs]
    assert sorted(map(sorted, (d.items() for d in as_dicts))) == sorted(map(sorted, (d.items() for d in expected)))
    for job, overrides in zip(as_dicts, jobs):
        check_values(composed(("sweep=" + name, *overrides)), job)


@pytest.mark.parametrize("name", GRID_SWEEPS)
def test_hydra_sweep_writes_to_a_fixed_directory(name, tmp_path):
    """The same sweep command always uses <log_dir>/sweeps/<name>, so running it again resumes."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=[f"sweep={name}", f"paths.log_dir={tmp_path}"], return_hydra_config=True)
    assert cfg.hydra.sweep.dir == f"{tmp_path}/sweeps/{name}"
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"


@pytest.mark.parametrize("name", OPTUNA_SWEEPS)
def test_optuna_sweep_bounds_compose(name):
    """An Optuna search space cannot be enumerated: both ends of every interval compose and instantiate."""
    parser = OverridesParser.create()
    params = OmegaConf.load(CONFIG_DIR / "sweep" / f"{name}.yaml").hydra.sweeper.params
    ends = {}
    for key, value in params.items():
        sweep = parser.parse_override(f"{key}={value}").value()
        assert "log" in sweep.tags, f"{key}: a scale parameter, searched on a log scale"
        ends[key] = [sweep.start, sweep.end]
    for method in [m for m in comparable_rules("feedforward") if "sigma" in method_config(m)]:  # the rules with a sigma
        for combination in product(ends):
            overrides = [f"sweep={name}", f"method={method}", *(f"{k}={v}" for k, v in combination.items())]
            check_values(composed(tuple(overrides)), combination)


# ----------------------------------------------------------------------------- W&B sweeps
def test_the_committed_wandb_specs_are_generated_from_the_hydra_sweeps():
    """Stale specs (a rule added, a sweep edited) fail here: regenerate with python -m learnbench.tools.wandb_specs."""
    from learnbench.tools.wandb_specs import SWEEPS, main

    assert set(SWEEPS) == set(WANDB_SWEEPS)
    assert main(["--check"]) == 0


@pytest.mark.parametrize("name", all_but_the_smallest_slow(WANDB_SWEEPS))
def test_wandb_sweep_expands_to_its_spec_and_matches_the_hydra_sweep(name):
    raw = spec(WANDB_DIR / f"{name}.yaml")
    # The metric is the experiment's optimized_metric (conf/train.yaml's val/acc unless the preset sets one).
    metric = {"murray_sine_rules": {"name": "val/loss", "goal": "minimize"}}.get(name, {"name": "val/acc", "goal": "maximize"})
    assert raw["method"] == "grid" and raw["metric"] == metric
    assert raw["command"] == WANDB_COMMAND, "the agent must call `python -m learnbench.train key=value ...`"
    # The W&B agent reads `program` even when the command does not use it: the module the command runs.
    assert raw["program"] == WANDB_COMMAND[WANDB_COMMAND.index("-m") + 1] == "learnbench.train"
    grid = wandb_grid(name)
    combinations = product(grid)
    assert len(combinations) == math.prod(len(v) for v in grid.values())
    wandb_configs = []
    for combination in combinations:
        args = wandb_args(combination)
        assert len(args) == len(combination)
        job = composed(tuple(args))
        check_values(job, combination)
        wandb_configs.append(job["config"])
    # The W&B spec and the Hydra sweep of the same name run the same experiments.
    hydra_configs = [composed(("sweep=" + name, *overrides))["config"] for overrides in hydra_jobs(name)]
    key = lambda c: yaml.safe_dump(c, sort_keys=True)  # noqa: E731
    assert sorted(map(key, wandb_configs)) == sorted(map(key, hydra_configs))


# ----------------------------------------------------------------------------- launchers
@pytest.mark.parametrize(
    ("launcher", "target", "expected"),
    [
        ("slurm_cpu", "SlurmLauncher", {"gpus_per_node": None, "tasks_per_node": 1, "partition": "part-x", "account": "acct-y"}),
        ("slurm_gpu", "SlurmLauncher", {"gpus_per_node": 1, "tasks_per_node": 1, "partition": "part-x"}),
        ("slurm_ddp", "SlurmLauncher", {"gpus_per_node": 3, "tasks_per_node": 3, "nodes": 1}),
        ("joblib", "JoblibLauncher", {}),
    ],
)
def test_launchers_compose_with_site_settings_from_the_config(launcher, target, expected, tmp_path):
    """Partition and account come from a `slurm:` node (conf/local/default.yaml), here given on the
    command line; slurm_ddp starts one task (rank) per device of the trainer."""
    GlobalHydra.instance().clear()
    overrides = [f"hydra/launcher={launcher}", "+slurm.partition=part-x", "+slurm.account=acct-y", "trainer=ddp", "trainer.devices=3"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher_cfg = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher_cfg["_target_"].endswith(target)
    for key, value in expected.items():
        assert launcher_cfg[key] == value, key
    if target == "SlurmLauncher":
        assert launcher_cfg["submitit_folder"].startswith(str(cfg.hydra.sweep.dir))


def test_slurm_settings_come_from_the_local_config(tmp_path):
    """conf/local.example.yaml, copied to conf/local/default.yaml as documented, sets the SLURM launchers'
    site fields (checked on a copy of conf/, so the checkout's conf/local stays untouched)."""
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    shutil.copy(CONFIG_DIR / "local.example.yaml", conf / "local" / "default.yaml")
    example = yaml.safe_load((CONFIG_DIR / "local.example.yaml").read_text())["slurm"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        cfg = compose("train", overrides=["hydra/launcher=slurm_gpu"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    for key in ("partition", "account", "qos", "constraint", "timeout_min", "mem_gb", "cpus_per_task", "array_parallelism", "additional_parameters", "setup"):
        assert launcher[key] == example[key], key
    assert launcher["gpus_per_node"] == 1


def test_the_readme_counts_the_jobs_each_sweep_makes():
    """sweeps/README.md said spiral_rules is 15 jobs; the rule catalogue had grown to 13 rules (39 jobs)."""
    import re

    rows = re.findall(r"^\| `(\w+)` \| (\d+) \|", (REPO / "sweeps" / "README.md").read_text(), flags=re.MULTILINE)
    counted = {name: int(jobs) for name, jobs in rows}
    assert set(counted) == set(GRID_SWEEPS), "every grid sweep has a row (the Optuna one counts trials)"
    assert counted == {name: len(hydra_jobs(name)) for name in GRID_SWEEPS}


@pytest.mark.parametrize("target", ["train", "sweep"])
def test_make_passes_data_dir_only_when_given(target):
    """The Makefile's DATA_DIR was set and never used."""
    import subprocess

    def command(*make_args: str) -> str:
        done = subprocess.run(["make", "-n", "-s", "-C", str(REPO), target, *make_args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "paths.data_dir=/data/sets seed=1" in command("DATA_DIR=/data/sets", "ARGS=seed=1")
    assert "paths.data_dir" not in command("ARGS=seed=1")


# ----------------------------------------------------------------------------- one budget for every rule
COMPARISON_SWEEPS = [name for name in GRID_SWEEPS if "method" in hydra_grid(name)]
# Folders of conf/tuned/ that hold pieces other configs include, not a rule's settings.
TUNED_HELPERS = {"model", "momentum", "cosine"}
TUNED_FILES = sorted(p for p in (CONFIG_DIR / "tuned").glob("*/*.yaml") if p.parent.name not in TUNED_HELPERS)


def budget(cfg) -> str:
    """What every rule of a comparison must share, read straight from the composed config: epochs, step and
    batch limits, batch size, the schedule (its function and shape options)."""
    schedule = OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler") else {}
    trainer = cfg.trainer
    return yaml.safe_dump({"max_epochs": trainer.max_epochs, "max_steps": trainer.get("max_steps", -1),
                           "limit_train_batches": trainer.get("limit_train_batches"), "batch_size": cfg.data.batch_size,
                           "schedule": schedule}, sort_keys=True)


@pytest.mark.parametrize("name", [n if n == "spiral_rules" else pytest.param(n, marks=pytest.mark.slow) for n in COMPARISON_SWEEPS])
def test_every_rule_of_a_comparison_sweep_trains_one_budget(name):
    """Each job of the sweep composed for each of its rules (seed 0): one budget per comparison. A config group swept
    beside `method` (ren_table's experiment) makes a comparison per value; a plain key's first value stands for the
    others (an lr grid point changes no budget)."""
    grid = hydra_grid(name)
    methods = grid.pop("method")
    grid.pop("seed", None)
    for others in product({k: v if "." not in k else v[:1] for k, v in grid.items()}):
        extra = [f"{k}={v}" for k, v in others.items()]
        budgets: dict[str, list[str]] = {}
        for method in methods:
            cfg = compose_config([f"sweep={name}", f"method={method}", "seed=0", *extra])
            budgets.setdefault(budget(cfg), []).append(method)
        assert len(budgets) == 1, f"sweep={name} {extra}: the rules train different budgets: {budgets}"


@pytest.mark.parametrize("path", TUNED_FILES, ids=[f"{p.parent.name}/{p.stem}" for p in TUNED_FILES])
def test_no_tuned_file_sets_a_budget(path):
    """A tuned file holds what its rule owns; the budget is the dataset's (conf/budget/) or the preset's. Read as plain
    YAML: no budget key, and no include into trainer, data or scheduler (conf/tuned/cosine is conf/budget/mnist.yaml's)."""
    raw = yaml.safe_load(path.read_text()) or {}
    for entry in raw.get("defaults", []):
        target = next(iter(entry)) if isinstance(entry, dict) else str(entry)
        assert not any(f"@{group}" in target for group in ("trainer", "data", "scheduler")), f"{path}: {entry}"
    for key in ("trainer.max_epochs", "trainer.max_steps", "trainer.limit_train_batches", "data.batch_size", "scheduler"):
        node = raw
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        assert node is None, f"{path.relative_to(CONFIG_DIR)} sets {key}: move it to conf/budget/<data>.yaml or the preset"
