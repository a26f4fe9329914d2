"""Speed benchmark: each rule's training-step time over backprop's, measured side by side.

    python -m learnbench.tools.bench [--hidden 1000 1000] [--batch 256] [--directions 16] [--json]
    python -m learnbench.tools.bench --profile [--threads 1]   # where each rule's step time goes (torch.profiler)
    python -m learnbench.tools.bench comm [...]   # DDP bytes per step and step time (learnbench.tools.bench_comm)

One model, one batch, one machine: every rule runs a full step (zero grads, estimate, optimiser
step) in round-robin order, many rounds, and the median is kept, so load from other processes
hits every rule alike. Also prints a forward pass in BP-step units, the per-direction cost at K
directions over K = 1, and (with --data-dir) a whole MNIST epoch through the suite's Lightning
loop over a minimal hand-written PyTorch loop on the same data and model.
Timings are for reading, never for pass/fail tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from learnbench.data.in_memory import per_example_loss
from learnbench.tools import bench_comm
from learnbench.tools.bench_setup import emit, make_mlp, make_rule, mlp_name, random_batch

RULES = ["bp", "wp", "np", "fg_w", "fg_a"]
# Variants worth seeing beside the defaults (name: (method, overrides)).
VARIANTS = {
    "np (no clean pass)": ("np", {"baseline": "none"}),
    "wp (fresh noise)": ("wp", {"table_size": 0}),
    "fg_w (fresh noise)": ("fg_w", {"table_size": 0}),
}


def make_step(rule, model, x, y, device) -> Callable[[], None]:
    loss_fn = partial(per_example_loss, "classification")
    rule.setup(model, seed=0, rank=0, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)  # tiny: the model barely moves

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        rule.estimate_grads(model, x, y, loss_fn)
        optimizer.step()

    return step


def time_round_robin(steps: dict[str, Callable[[], None]], rounds: int, warmup: int, device) -> dict[str, float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def model_and_batch(args, device) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The benchmark's MLP and one random batch, the same for every rule (seed 0)."""
    torch.manual_seed(0)
    model = make_mlp(args.hidden).to(device)
    return (model, *random_batch(args.batch, device))


def rule_ratios(args, device) -> dict:
    model, x, y = model_and_batch(args, device)
    steps = {name: make_step(make_rule(name), model, x, y, device) for name in RULES}
    steps.update({name: make_step(make_rule(m, **o), model, x, y, device) for name, (m, o) in VARIANTS.items()})
    with torch.no_grad():
        steps["forward only"] = lambda: model(x)
    k = args.directions
    for name in ("wp", "np", "fg_w", "fg_a"):
        steps[f"{name} K={k}"] = make_step(make_rule(name, directions=k), model, x, y, device)
    seconds = time_round_robin(steps, args.rounds, args.warmup, device)
    bp = seconds["bp"]
    rows = {name: {"ms": 1e3 * s, "over_bp": s / bp} for name, s in seconds.items()}
    for name in ("wp", "np", "fg_w", "fg_a"):
        rows[f"{name} K={k}"]["per_direction_over_k1"] = seconds[f"{name} K={k}"] / k / seconds[name]
    return rows


def profile_steps(args, device, steps_per_rule: int = 5, top: int = 8) -> dict:
    """Each rule's step under torch.profiler: the ops with the most self time, per step, by input shape."""
    from torch.profiler import ProfilerActivity, profile

    model, x, y = model_and_batch(args, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    result = {}
    for name in RULES + [f"{r} K={args.directions}" for r in RULES[1:]]:
        method, _, k = name.partition(" K=")
        step = make_step(make_rule(method, **({"directions": int(k)} if k else {})), model, x, y, device)
        for _ in range(args.warmup):
            step()
        with profile(activities=activities, record_shapes=True) as prof:
            for _ in range(steps_per_rule):
                step()
        events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        result[name] = {
            "self_ms_per_step": total / steps_per_rule / 1e3,
            "top": [
                {"op": e.key, "calls": e.count // steps_per_rule, "ms": e.self_cpu_time_total / steps_per_rule / 1e3,
                 "share": e.self_cpu_time_total / total, "shapes": str(e.input_shapes)}
                for e in events[:top]
            ],
        }
    return result


def print_profile(profiles: dict) -> None:
    for name, p in profiles.items():
        print(f"== {name}: {p['self_ms_per_step']:.2f} ms self CPU per step")
        for e in p["top"]:
            print(f"   {e['op']:28s} {e['calls']:2d}x {e['ms']:7.2f} ms {100 * e['share']:5.1f}%  {e['shapes'][:80]}")


def epoch_ratio(args, device) -> dict:
    """A whole MNIST epoch of BP: the suite's Lightning loop over a minimal hand-written loop."""
    import lightning as L

    from learnbench.data import VisionDataModule
    from learnbench.module import LearningRuleModule
    from learnbench.rules import Backprop

    dm = VisionDataModule("mnist", data_dir=args.data_dir, batch_size=args.epoch_batch, download=False)
    splits = dm.load_splits()
    x, y = (t.to(device) for t in splits.train)

    def hand_written() -> float:
        torch.manual_seed(0)
        model = make_mlp(args.epoch_hidden).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        start = time.perf_counter()
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x) - args.epoch_batch + 1, args.epoch_batch):
            idx = perm[i : i + args.epoch_batch]
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        return time.perf_counter() - start

    class EpochTimer(L.Callback):
        """The training epoch alone, as Lightning runs it (not the trainer's one-off setup)."""

        def on_train_epoch_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds = time.perf_counter() - self.start

    def suite() -> tuple[float, float]:
        torch.manual_seed(0)
        module = LearningRuleModule(make_mlp(args.epoch_hidden), Backprop(), partial(torch.optim.SGD, lr=0.1), num_classes=10)
        timer = EpochTimer()
        trainer = L.Trainer(
            accelerator=device.type, devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            callbacks=[timer],
        )
        dm.splits = None  # the fit includes loading the IDX files into tensors, once per run
        start = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        return timer.seconds, time.perf_counter() - start

    hand, ours, fits = [], [], []
    for _ in range(args.epoch_repeats):  # alternate, keep the best of each
        hand.append(hand_written())
        epoch, fit = suite()
        ours.append(epoch)
        fits.append(fit)
    return {
        "hand_written_s": min(hand), "suite_s": min(ours), "suite_over_hand_written": min(ours) / min(hand),
        "suite_fit_with_setup_s": min(fits), "fit_with_setup_over_hand_written": min(fits) / min(hand),
    }


def build_parser() -> argparse.ArgumentParser:
    """The step-time options at the top; other benchmarks as subcommands with their own options."""
    parser = argparse.ArgumentParser(prog="python -m learnbench.tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[1000, 1000])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--directions", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None, help="MNIST root (e.g. ../shared/datasets) for the epoch comparison")
    parser.add_argument("--epoch-hidden", type=int, nargs="+", default=[1000, 1000])
    parser.add_argument("--epoch-batch", type=int, default=256)
    parser.add_argument("--epoch-repeats", type=int, default=2)
    parser.add_argument("--epoch-only", action="store_true", help="only the MNIST epoch comparison (needs --data-dir)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--profile", action="store_true", help="instead: profile each rule's step (top ops per step)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    commands = parser.add_subparsers(dest="command", title="other benchmarks (each with its own options: <command> --help)")
    comm = commands.add_parser("comm", help="DDP: bytes all-reduced per step and step time, comm=grads vs scalars vs BP",
                               description=bench_comm.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_comm.add_arguments(comm)
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.command == "comm":
        return bench_comm.run(args)
    return step_times(args)


def step_times(args: argparse.Namespace) -> dict:
    """The default benchmark: step-time ratios (or, with --profile, the top ops of each rule's step)."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        return emit(profile_steps(args, device), args.json, print_profile)
    result = {
        "setting": {"model": mlp_name(args.hidden), "batch": args.batch, "device": str(device), "threads": torch.get_num_threads(),
                    "epoch_hidden": args.epoch_hidden, "epoch_batch": args.epoch_batch},
        "steps": {} if args.epoch_only else rule_ratios(args, device),
    }
    if args.data_dir:
        result["epoch"] = epoch_ratio(args, device)
    return emit(result, args.json, print_table)


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setting"]
    table = Table(title=f"Step time over backprop: {s['model']}, batch {s['batch']}, {s['device']} ({s['threads']} threads)")
    for column in ("step", "ms", "over BP", "per direction / K=1 step"):
        table.add_column(column, justify="right" if column != "step" else "left")
    for name, row in result["steps"].items():
        per = row.get("per_direction_over_k1")
        table.add_row(name, f"{row['ms']:.2f}", f"{row['over_bp']:.2f}", "" if per is None else f"{per:.2f}")
    console = Console()
    console.print(table)
    if "epoch" in result:
        e = result["epoch"]
        console.print(
            f"MNIST epoch (BP, {mlp_name(s['epoch_hidden'])}, batch {s['epoch_batch']}): training epoch in the suite "
            f"{e['suite_s']:.2f} s, hand-written loop {e['hand_written_s']:.2f} s, ratio {e['suite_over_hand_written']:.2f}; "
            f"the suite's whole fit with data loading and trainer setup {e['suite_fit_with_setup_s']:.2f} s "
            f"(ratio {e['fit_with_setup_over_hand_written']:.2f})"
        )


if __name__ == "__main__":
    main()
