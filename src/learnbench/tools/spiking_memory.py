"""Peak memory of a training step against the sequence length T, surrogate BPTT against e-prop:
`python -m learnbench.tools.spiking_memory [--plot docs/img/spiking/memory_vs_T.png]`.

The network of `experiment=evidence_accumulation` (100 recurrent units, 50 LIF + 50 ALIF, 40 inputs, 2 outputs,
its neuron options from the preset) on Bellec's cue task shortened to T steps (data/evidence.py; lengths below).
Each (method, T) takes a few training steps through training_loop.train_batch (Adam, the rule's own schedule);
the number is the largest, over those steps, of the step's peak memory above its start as torch's CPU allocator
reports it to torch.profiler (profile_memory: every tensor allocation and free, forward and backward, summed in
time order; temporaries inside a single operation aside): what the step allocates on top of the model, data and
optimiser state. The first step of each is not measured (lazy initialisation, the optimiser's state).
Memory, unlike time, does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.profiler import ProfilerActivity, profile

from learnbench.catalog import rule_from_config
from learnbench.data.evidence import evidence_accumulation
from learnbench.models import SNN
from learnbench.paths import CONFIG_DIR
from learnbench.tasks import get_task
from learnbench.tools.bench import BareHooks
from learnbench.training_loop import train_batch

#: T -> (cues, delay_ms, recall_ms) of the cue task, 150 ms slots, 100 ms cues: T = 150 cues + delay.
LENGTHS = {250: (1, 100, 100), 1000: (3, 550, 150), 2250: (7, 1200, 150)}


def peak_above_start(events) -> int:
    """The largest net allocation, in bytes, over a profiled stretch: each operation's own allocations minus frees
    (self_cpu_memory_usage) and the frees outside any operation ("[memory]" events), summed in time order."""
    changes = sorted((e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
                     for e in events)
    return max(itertools.accumulate((change for _, change in changes), initial=0))


def preset_model(steps: int) -> SNN:
    """experiment=evidence_accumulation's SNN (conf/model/snn.yaml with the preset's overrides), seed 0."""
    base = OmegaConf.load(CONFIG_DIR / "model" / "snn.yaml")
    preset = OmegaConf.load(CONFIG_DIR / "experiment" / "evidence_accumulation.yaml")
    options = OmegaConf.to_container(OmegaConf.merge(base, preset.model), resolve=False)
    options.pop("_target_")
    options["encoding_seed"] = 0
    torch.manual_seed(0)
    return SNN((steps, 40), 2, **options)


def cue_batch(steps: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the cue task T = `steps` long (LENGTHS; another T > 150: one cue, then the delay)."""
    cues, delay, recall = LENGTHS.get(steps, (1, steps - 150, min(150, steps - 150)))
    return evidence_accumulation(batch, cues, 150, 100, delay, recall, 10, 0.04, 0.3, torch.Generator().manual_seed(0))


def step_peak_mb(method: str, steps: int, batch: int, repeats: int) -> float:
    """The largest, over `repeats` training steps, of a step's peak memory in use above its start, in MiB."""
    model = preset_model(steps)
    x, y = cue_batch(steps, batch)
    rule = rule_from_config(method)
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    params = [*model.parameters(), *rule.extra_parameters()]
    hooks = BareHooks(rule, model, torch.optim.Adam(params, lr=5e-3))
    task = get_task("final_window_classification")
    train_batch(rule, model, x, y, task, hooks)  # lazy initialisation and the optimiser's state
    peaks = []
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiled:
            train_batch(rule, model, x, y, task, hooks)
        peaks.append(peak_above_start(profiled.events()) / 2**20)
    return max(peaks)


def measure(methods: list[str], lengths: list[int], batch: int, repeats: int) -> dict[str, dict[int, float]]:
    return {method: {steps: step_peak_mb(method, steps, batch, repeats) for steps in lengths} for method in methods}


def plot(result: dict[str, dict[int, float]], batch: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"bp": "surrogate BPTT (method=bp)", "eprop": "e-prop (method=eprop)"}
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for method, by_length in result.items():
        ax.plot(list(by_length), list(by_length.values()), "o-", label=labels.get(method, method))
    ax.set_xlabel("sequence length T (steps of 1 ms)")
    ax.set_ylabel("peak memory of a training step (MiB)")
    ax.set_title(f"Evidence accumulation, 100 LIF/ALIF units, batch {batch}", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m learnbench.tools.spiking_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["bp", "eprop"])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS), help="T, each > 150 (default: 250 1000 2250)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="measured steps per (method, T), after one unmeasured step")
    parser.add_argument("--plot", type=Path, default=None, help="also draw the curves into this PNG")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = measure(args.methods, args.lengths, args.batch, args.repeats)
    print(f"peak tensor memory of a training step above its start (MiB, torch.profiler's CPU allocator counts; "
          f"batch {args.batch}, max of {args.repeats} steps)")
    print("| method | " + " | ".join(f"T = {t}" for t in args.lengths) + " |")
    print("|---|" + "---:|" * len(args.lengths))
    for method, by_length in result.items():
        print(f"| {method} | " + " | ".join(f"{mb:.1f}" for mb in by_length.values()) + " |")
    if args.plot:
        plot(result, args.batch, args.plot)
    return result


if __name__ == "__main__":
    main()
