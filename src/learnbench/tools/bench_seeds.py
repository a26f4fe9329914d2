"""Ten seeds in one process (`seeds=[0..9]`, learnbench/seeds.py) against one seed, side by side, per rule.

    python -m learnbench.tools.bench_seeds                     # every rule that stacks, the spiral at its budget
    python -m learnbench.tools.bench_seeds bp fa -- trainer.max_epochs=10 data=zipser_andersen
    python -m learnbench.tools.bench_seeds bptt rflo eprop rtrl -- experiment=murray_sine trainer.max_epochs=5

For each rule, one thread, in this process, alternately: the fit of `seed=0` alone, then the fit of the stack
`seeds=[0,...,9]`, `--repeats` times; the median of each. Printed as a markdown table: fit CPU seconds (time.process_time,
what to compare on a loaded machine) and wall seconds, the stack over one seed, and the stack over ten separate runs
(10 x one seed). The rules that cannot stack are listed with why (LearningRule.stacks_seeds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import open_dict

from learnbench.paths import CONFIG_DIR

#: The feed-forward rules of the spiral's comparison, in its table's order.
SPIRAL_RULES = ["bp", "fa", "kp", "usf", "frsf", "brsf", "dfa", "pc", "ipc", "np", "wp", "fg_a", "fg_w"]


def fit_seconds(overrides: list[str], out: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run's fit."""
    from learnbench.train import train
    from learnbench.verify import compose_run

    cfg = compose_run([*overrides, "+trainer.enable_progress_bar=false", "+trainer.enable_checkpointing=false", "callbacks=none"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    record = train(cfg)
    if record["status"] != "ok":
        raise RuntimeError(f"{overrides}: {record['status']} {record['message']}")
    return record["history"][-1]["cpu_time"], record["fit_time_s"]


def refusal(method: str, overrides: list[str]) -> str | None:
    """Why the rule cannot stack, or None."""
    from hydra.utils import instantiate

    from learnbench.verify import compose_run

    cfg = compose_run([f"method={method}", *overrides])
    stacks = instantiate(cfg.method).stacks_seeds
    return None if stacks is True else stacks


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", default=SPIRAL_RULES)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    args, overrides = parser.parse_known_args(argv[: argv.index("--")] if "--" in argv else argv)
    overrides = [*overrides, *(argv[argv.index("--") + 1:] if "--" in argv else [])]
    torch.set_num_threads(1)
    stack = f"seeds=[{','.join(map(str, range(args.seeds)))}]"
    print(f"{args.seeds} seeds stacked against one seed; overrides: {' '.join(overrides) or '(none)'}; configs: {CONFIG_DIR}")
    print("| rule | one seed: CPU s (wall s) | stack: CPU s (wall s) | stack / one seed | stack / separate runs |")
    print("|---|---|---|---|---|")
    cannot = []
    for method in args.methods:
        why = refusal(method, overrides)
        if why is not None:
            cannot.append(f"- {method}: {why}")
            continue
        one, many = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeats):
                one.append(fit_seconds([f"method={method}", "seed=0", *overrides], Path(tmp) / f"one{r}"))
                many.append(fit_seconds([f"method={method}", stack, *overrides], Path(tmp) / f"stack{r}"))
        c1, w1 = statistics.median(t[0] for t in one), statistics.median(t[1] for t in one)
        cs, ws = statistics.median(t[0] for t in many), statistics.median(t[1] for t in many)
        print(f"| {method} | {c1:.1f} ({w1:.1f}) | {cs:.1f} ({ws:.1f}) | {cs / c1:.2f} | {cs / (args.seeds * c1):.2f} |", flush=True)
    if cannot:
        print("\nNot stacked (LearningRule.stacks_seeds):")
        print("\n".join(cannot))


if __name__ == "__main__":
    main(sys.argv[1:])
