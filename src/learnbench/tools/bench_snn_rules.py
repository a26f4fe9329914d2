"""CPU seconds (and wall seconds) per `estimate_grads` call of each rule on a preset (default experiment=spytorch_fashion_mnist), one
thread, on the first batches of the training split: a first look at what a run will cost, before running it.

    python -m learnbench.tools.bench_snn_rules bp fa dfa np fg_a fg_w wp stdp rstdp [-- override ...]

CPU seconds (time.process_time, one thread) are what to compare on a loaded machine: the wall time there is
mostly waiting for a core. A rule the preset's model cannot take is printed with its one-line refusal. Not a benchmark of the whole
step (no optimiser, no all-reduce): the estimate is what differs between rules.
"""

from __future__ import annotations

import sys
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from learnbench.paths import CONFIG_DIR


def config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def seconds_per_step(method: str, overrides: list[str], steps: int = 4) -> list[tuple[float, float]] | str:
    """(CPU seconds, wall seconds) of each call, or the refusal."""
    from learnbench.train import build_module, check_config, task_of

    cfg = config([f"method={method}", *overrides])
    try:
        check_config(cfg)
        datamodule = instantiate(cfg.data)
        module = build_module(cfg, datamodule.input_shape, datamodule.output_dim, task_of(cfg, datamodule))
    except Exception as error:  # a refusal: its one line is the answer
        return f"refused: {error}"
    x, y = datamodule.load_splits().train
    batch = cfg.data.batch_size
    rule, model = module.rule, module.model
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    times = []
    for step in range(steps):
        xb, yb = x[batch * step: batch * (step + 1)], y[batch * step: batch * (step + 1)]
        cpu, wall = time.process_time(), time.perf_counter()
        rule.begin_step(step)
        for p in model.parameters():
            p.grad = None
        rule.estimate_grads(model, xb, yb, module.loss_fn)
        times.append((time.process_time() - cpu, time.perf_counter() - wall))
    return times


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    methods, overrides = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    if not any(o.startswith("experiment=") for o in overrides):
        overrides = ["experiment=spytorch_fashion_mnist", *overrides]
    for method in methods:
        times = seconds_per_step(method, overrides)
        if isinstance(times, str):
            print(f"{method}: {times}", flush=True)
        else:  # the first call warms up (allocations, the noise table): the mean of the others
            cpu, wall = (sum(t[i] for t in times[1:]) / len(times[1:]) for i in (0, 1))
            print(f"{method}: {cpu:.3f} CPU s/step, {wall:.3f} wall s/step (first call {times[0][0]:.3f} CPU s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
