"""Epochs SpikeProp takes to learn XOR, over many random initialisations (experiment=spikeprop_xor).

    python -m learnbench.tools.spikeprop_convergence --seeds 100 --max-epochs 2000 --out spikeprop_xor.json [overrides...]

Each seed is one initialisation: the preset's config composed with `seed=<s>` (and any Hydra overrides given), the
model, rule and data built by learnbench.train's own functions, and every training batch taken by the suite's one
loop (learnbench.training_loop.train_batch) with bare hooks (the run's optimiser steps; no Lightning, logging or
checkpoints: a full `learnbench.train` run per seed costs several times more in Lightning's per-epoch machinery).
An epoch's error is the sum over its examples of 1/2 sum (t - t*)^2, each scored before its own update (Bohte's and
respikeprop's); a seed converges at the first epoch whose error is below --threshold (1 ms^2), counted from 1 (the
epochs trained, that one included; respikeprop prints the 0-based index, one less). Seeds that do not converge
within --max-epochs are failures; those whose output never fires at the start are counted apart (respikeprop's
reference draws such networks again; here they stay failures).

`--stack S` trains S seeds at a time as one block-diagonal network (learnbench/seeds.py, as `learnbench.train
seeds=[...]` stacks them): each seed built as above, then packed; each epoch's error is summed per seed from the
outputs the rule scored before its updates, and a seed's count is its first epoch below the threshold (training on
after it changes none of its earlier epochs). The stack trains until every seed has converged or the cap.
tests/test_spikeprop.py checks that it counts what one seed at a time counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from learnbench.paths import CONFIG_DIR
from learnbench.seeds import SeedGradMasks, SeedStackedTask, StackedBatches, gradient_masks, pack_state, stacked_block_diagonal
from learnbench.rules.base import trainable_parameters
from learnbench.tools.bench import BareHooks
from learnbench.training_loop import train_batch


def preset_config(seed: int, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name="train", overrides=["experiment=spikeprop_xor", f"seed={seed}", "logger=csv", *overrides])


def build(cfg):
    """Data, model, rule and task as learnbench.train builds them (its checks included)."""
    from learnbench.tasks import get_task
    from learnbench.train import check_config, check_time_fits

    check_config(cfg)
    L.seed_everything(cfg.seed, verbose=False)  # as train() does: the same initial weights as `learnbench.train seed=<s>`
    datamodule = instantiate(cfg.data)
    check_time_fits(cfg, datamodule)
    model = instantiate(cfg.model, input_shape=datamodule.input_shape, output_dim=datamodule.output_dim)
    rule = instantiate(cfg.method)
    rule.setup(model, seed=cfg.seed, rank=0, device=torch.device("cpu"))
    datamodule.setup("fit")
    return datamodule, model, rule, get_task(datamodule.task)


def epochs_to_converge(seed: int, max_epochs: int, threshold: float, overrides: list[str]) -> dict:
    cfg = preset_config(seed, overrides)
    datamodule, model, rule, task = build(cfg)
    x_all, y_all = datamodule.splits.train
    silent_at_start = bool((~torch.isfinite(model.spike_times(x_all)[-1])).any())
    optimizer = instantiate(cfg.optimizer)(params=trainable_parameters(model))
    hooks = BareHooks(rule, model, optimizer)
    batches = datamodule.train_dataloader()
    errors = []
    for epoch in range(max_epochs):
        batches.set_epoch(epoch)
        error = sum(float(train_batch(rule, model, x, y, task, hooks).loss) * len(x) for x, y in batches)
        errors.append(error)
        if error < threshold:
            return {"seed": seed, "epochs": epoch + 1, "silent_at_start": silent_at_start, "final_error": error}
    return {"seed": seed, "epochs": None, "silent_at_start": silent_at_start, "final_error": errors[-1]}


class MaskedHooks(BareHooks):
    """BareHooks for a block-diagonal stack: the cross-seed part of every update zeroed before the step."""

    def __init__(self, rule, model, optimizer, masks: SeedGradMasks):
        super().__init__(rule, model, optimizer)
        self.masks = masks

    def update(self) -> None:
        self.masks.restrict()
        super().update()


def stack_epochs_to_converge(seeds: list[int], max_epochs: int, threshold: float, overrides: list[str]) -> list[dict]:
    """epochs_to_converge of every seed of `seeds`, trained side by side as one block-diagonal network."""
    built = [build(preset_config(s, overrides)) for s in seeds]
    silent = [bool((~torch.isfinite(m.spike_times(dm.splits.train[0])[-1])).any()) for dm, m, _, _ in built]
    cfg = preset_config(seeds[0], overrides)
    model = stacked_block_diagonal([m for _, m, _, _ in built])
    rule = instantiate(cfg.method)
    rule.setup(model, seed=seeds[0], rank=0, device=torch.device("cpu"))
    rule_blocks = pack_state(rule, [r for _, _, r, _ in built])
    task = SeedStackedTask(built[0][3], seeds, built[0][0].output_dim)
    optimizer = instantiate(cfg.optimizer)(params=trainable_parameters(model))
    hooks = MaskedHooks(rule, model, optimizer, gradient_masks(model, rule, rule_blocks, len(seeds)))
    batches = StackedBatches([dm.train_dataloader() for dm, _, _, _ in built])
    converged: list[int | None] = [None] * len(seeds)
    error = torch.zeros(len(seeds))
    for epoch in range(max_epochs):
        batches.set_epoch(epoch)
        error = sum(task.per_seed_losses(train_batch(rule, model, x, y, task, hooks).output, y).sum(0) for x, y in batches)
        for i, e in enumerate(error.tolist()):
            if converged[i] is None and e < threshold:
                converged[i] = epoch + 1
        if all(c is not None for c in converged):
            break
    return [{"seed": s, "epochs": converged[i], "silent_at_start": silent[i], "final_error": None if converged[i] else float(error[i])}
            for i, s in enumerate(seeds)]


def summary(runs: list[dict], max_epochs: int) -> dict:
    converged = [r["epochs"] for r in runs if r["epochs"] is not None]
    return {
        "initialisations": len(runs), "converged": len(converged), "failures": len(runs) - len(converged),
        "failures_silent_at_start": sum(r["epochs"] is None and r["silent_at_start"] for r in runs),
        "max_epochs": max_epochs,
        "mean_epochs": statistics.fmean(converged) if converged else None,
        "median_epochs": statistics.median(converged) if converged else None,
        "min_epochs": min(converged, default=None), "max_epochs_converged": max(converged, default=None),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=100, help="initialisations: seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=2000, help="the cap: a seed not converged by then is a failure")
    parser.add_argument("--threshold", type=float, default=1.0, help="ms^2: converged when an epoch's error is below it")
    parser.add_argument("--out", type=Path, default=None, help="write every seed's result and the summary here (JSON)")
    parser.add_argument("--stack", type=int, default=1, help="seeds trained side by side as one network (1: one at a time)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the preset (e.g. method.min_slope=0)")
    args = parser.parse_args(argv)
    start, runs = time.perf_counter(), []
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    for first in range(0, len(seeds), args.stack):
        chunk = seeds[first:first + args.stack]
        if len(chunk) == 1:
            done = [epochs_to_converge(chunk[0], args.max_epochs, args.threshold, args.overrides)]
        else:
            done = stack_epochs_to_converge(chunk, args.max_epochs, args.threshold, args.overrides)
        runs.extend(done)
        for run in done:
            print(json.dumps(run), flush=True)
        if args.out is not None:  # after every seed: a stopped run keeps what it measured
            result = {"summary": summary(runs, args.max_epochs), "overrides": args.overrides, "runs": runs,
                      "wall_time_s": time.perf_counter() - start}
            args.out.write_text(json.dumps(result, indent=1))
    result = {"summary": summary(runs, args.max_epochs), "overrides": args.overrides, "wall_time_s": time.perf_counter() - start}
    print(json.dumps(result["summary"]))
    return result


if __name__ == "__main__":
    main()
