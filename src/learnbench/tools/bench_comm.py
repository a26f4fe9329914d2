"""DDP communication benchmark: bytes all-reduced per step and step time, comm=grads vs comm=scalars vs BP.

    python -m learnbench.tools.bench comm [--hidden 1000 1000] [--batch 256] [--directions 16] [--world 2] [--json]

`--world` CPU processes (gloo) train the suite's LearningRuleModule through Lightning's `ddp`
strategy, each on its own batch of `--batch` random MNIST-shaped examples. The bytes are the ones
the module actually passed to its all-reduce (`LearningRuleModule.allreduce_bytes`, incremented in
its one all-reduce path), divided by the steps taken: measured, not computed from the model size.
Not counted, because identical for every rule: the one-number divergence check each step.
"all-reduce alone": the median time of a bare gloo all-reduce of that many bytes in the same
processes (after the fits), i.e. the communication part of the step without the compute noise.

Every configuration is fitted `--passes` times in turn (the same processes, the same process
group), `--warmup` untimed steps then `--steps` timed ones per pass; the median step time of rank 0
is kept. Step time = Lightning's on_train_batch_start -> on_train_batch_end (the rule's estimate,
the all-reduce, the optimiser step, logging). Timings are for reading, never for pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import torch

from learnbench.tools.bench_setup import emit, make_mlp, make_rule, mlp_name, random_batch

# name: (method, overrides); "{k}" is replaced by --directions.
CONFIGS = {
    "bp": ("bp", {}),
    "wp grads": ("wp", {"comm": "grads"}),
    "wp scalars": ("wp", {"comm": "scalars"}),
    "fg_w grads": ("fg_w", {"comm": "grads"}),
    "fg_w scalars": ("fg_w", {"comm": "scalars"}),
    "wp K={k} grads": ("wp", {"comm": "grads", "directions": "{k}"}),
    "wp K={k} scalars": ("wp", {"comm": "scalars", "directions": "{k}"}),
}


class FixedBatches:
    """`n` times the same (x, y): no data-loading cost in the step time."""

    def __init__(self, x, y, n: int):
        self.x, self.y, self.n = x, y, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.x, self.y


def _step_timer():
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self.start)

    return StepTimer()


def configs(directions: int) -> dict[str, tuple[str, dict]]:
    out = {}
    for name, (method, overrides) in CONFIGS.items():
        overrides = {k: (directions if v == "{k}" else v) for k, v in overrides.items()}
        out[name.format(k=directions)] = (method, overrides)
    return out


def _worker(rank: int, world: int, port: int, args: dict, out_file: str) -> None:
    """One DDP process: fit every configuration `passes` times, rank 0 writes the measurements."""
    import lightning as L

    from learnbench.module import LearningRuleModule

    # Launched "externally" (LOCAL_RANK set): Lightning runs strategy="ddp" in this process.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), NODE_RANK="0")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    generator = torch.Generator().manual_seed(rank)  # each rank its own examples
    x, y = random_batch(args["batch"], generator=generator)

    modules = {}
    for name, (method, overrides) in configs(args["directions"]).items():
        torch.manual_seed(0)
        modules[name] = LearningRuleModule(
            make_mlp(args["hidden"]), make_rule(method, **overrides),
            optimizer=partial(torch.optim.SGD, lr=1e-6), num_classes=10,  # tiny lr: the model barely moves
        )
    results = {name: {"times": [], "bytes": 0, "steps": 0} for name in modules}
    per_fit = args["warmup"] + args["steps"]
    for _ in range(args["passes"]):
        for name, module in modules.items():
            timer, before = _step_timer(), module.allreduce_bytes
            trainer = L.Trainer(
                accelerator="cpu", devices=world, strategy="ddp", max_steps=per_fit, max_epochs=1, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer],
            )
            trainer.fit(module, train_dataloaders=FixedBatches(x, y, per_fit))
            results[name]["times"] += timer.times[args["warmup"]:]
            results[name]["bytes"] += module.allreduce_bytes - before
            results[name]["steps"] += trainer.global_step
    # The collective alone, without the compute around it: a gloo all-reduce of each measured size.
    for r in results.values():
        per_step = r["bytes"] // max(1, r["steps"])
        r["collective_times"] = _time_all_reduce(per_step, args["passes"] * args["steps"]) if per_step else []
    if rank == 0:
        Path(out_file).write_text(json.dumps(results))
    # Leave together: a rank that exits while the other still talks to it aborts the other.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _time_all_reduce(n_bytes: int, repeats: int) -> list[float]:
    tensor = torch.zeros(n_bytes // 4)  # float32, as in the training runs
    times = []
    for _ in range(repeats):
        torch.distributed.barrier()
        start = time.perf_counter()
        torch.distributed.all_reduce(tensor)
        times.append(time.perf_counter() - start)
    return times


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(args: argparse.Namespace) -> dict:
    import torch.multiprocessing as mp

    params = sum(p.numel() for p in make_mlp(args.hidden).parameters())
    with tempfile.TemporaryDirectory() as tmp:
        out_file = str(Path(tmp) / "rank0.json")
        mp.spawn(_worker, args=(args.world, free_port(), vars(args), out_file), nprocs=args.world, join=True)
        raw = json.loads(Path(out_file).read_text())
    bp = statistics.median(raw["bp"]["times"])
    rows = {}
    for name, r in raw.items():
        seconds = statistics.median(r["times"])
        rows[name] = {
            "bytes_per_step": r["bytes"] / r["steps"],
            "ms": 1e3 * seconds,
            "over_bp": seconds / bp,
            "timed_steps": len(r["times"]),
            "all_reduce_ms": 1e3 * statistics.median(r["collective_times"]) if r["collective_times"] else 0.0,
        }
    setting = {
        "model": mlp_name(args.hidden), "parameters": params, "batch_per_process": args.batch,
        "processes": args.world, "backend": "gloo", "threads_per_process": max(1, (os.cpu_count() or 1) // args.world),
    }
    return {"setting": setting, "steps": rows}


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setting"]
    table = Table(title=(f"DDP all-reduce per step: {s['model']} ({s['parameters']:,} parameters), batch {s['batch_per_process']} "
                         f"per process, {s['processes']} CPU processes ({s['backend']}, {s['threads_per_process']} thread each)"))
    for column in ("rule", "bytes / step", "step ms (median)", "over BP", "all-reduce alone ms", "timed steps"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for name, row in result["steps"].items():
        table.add_row(name, f"{row['bytes_per_step']:,.0f}", f"{row['ms']:.1f}", f"{row['over_bp']:.2f}",
                      f"{row['all_reduce_ms']:.2f}", str(row["timed_steps"]))
    Console(width=140).print(table)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options, on the `comm` subcommand of learnbench.tools.bench."""
    parser.add_argument("--hidden", type=int, nargs="+", default=[1000, 1000])
    parser.add_argument("--batch", type=int, default=256, help="examples per process")
    parser.add_argument("--directions", type=int, default=16, help="K of the extra wp rows")
    parser.add_argument("--world", type=int, default=2, help="CPU processes")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per pass")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per pass")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> dict:
    return emit(measure(args), args.json, print_table)
