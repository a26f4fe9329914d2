"""Speed benchmark: each rule's training-step time over backprop's, measured side by side.

    python -m learnbench.tools.bench [--model mlp] [--hidden 1000 1000] [--batch 256] [--directions 16] [--json]
    python -m learnbench.tools.bench --model lenet [--batch 64]   # LeNet-5 on 1x28x28 images
    python -m learnbench.tools.bench --profile [--threads 1] [--rules bp fa]   # where each rule's step time goes (torch.profiler)
    python -m learnbench.tools.bench comm [...]   # DDP bytes per step and step time (learnbench.tools.bench_comm)

One model, one batch, one machine: every rule that trains feed-forward models (the list of
learnbench.catalog.comparable_rules, which the comparison sweeps run) does a full training step as
the training module does it (zero grads, begin_step, estimate, optimiser step over the model's and
the rule's own parameters, after_optimizer_step). Each row runs in a process of its own (the same
seed-0 model and batch in each), and the rows take turns, round-robin, many rounds; the median is
kept, so load from other processes hits every rule alike. glibc is told to keep freed memory
mapped (`--malloc keep`): a bare loop of identical steps otherwise page-faults its temporaries
back in every step, by an amount that depends on each process's allocation history, which the
training loop does not (docs/speed.md). The 90 % interval of each ratio is a bootstrap over the
rounds; load that drifts between runs is not in it, so compare two runs.

Also prints a forward pass in BP-step units, the per-direction cost at K directions over K = 1,
the minor page faults of a step (median), and (with --data-dir) a whole MNIST epoch through the
suite's Lightning loop over a minimal hand-written PyTorch loop on the same data and model.
`--clock cpu` times the process's CPU time instead of elapsed time: on a loaded machine, other
processes' time slices then stay out of it.
Timings are for reading, never for pass/fail tests.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from learnbench.catalog import comparable_rules
from learnbench.tasks import get_task
from learnbench.training_loop import OfflineHooks, train_batch
from learnbench.paths import CONFIG_DIR
from learnbench.rules.base import trainable_parameters
from learnbench.tools import bench_comm
from learnbench.tools.bench_setup import (
    DEFAULT_BATCH, emit, has_directions, make_mlp, make_model, make_rule, mlp_name, model_input_shape, model_name, random_batch,
)

# wall: elapsed time (what a run takes); cpu: this process's CPU time, which time slices given to
# other processes do not inflate (with --threads 1 on a CPU, the step's own work; CUDA: use wall).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}

# Variants worth seeing beside the defaults (name: (method, overrides)), shown when their method is timed.
VARIANTS = {
    "np (no clean pass)": ("np", {"baseline": "none"}),
    "wp (fresh noise)": ("wp", {"table_size": 0}),
    "fg_w (fresh noise)": ("fg_w", {"table_size": 0}),
    # Predictive coding at T = 5 beside the default T = 20 (cost model: (2T + 1) / 3 BP steps, docs/speed.md).
    "pc (T=5)": ("pc", {"inference_steps": 5}),
}


def rule_names(args) -> list[str]:
    """bp (the denominator) first, then --rules or every rule that trains feed-forward models."""
    names = args.rules or comparable_rules("feedforward")
    known = sorted(p.stem for p in (CONFIG_DIR / "method").glob("*.yaml"))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--rules {' '.join(unknown)}: no such method in {CONFIG_DIR / 'method'}; choose from {' '.join(known)}")
    return ["bp", *dict.fromkeys(n for n in names if n != "bp")]


class BareHooks(OfflineHooks):
    """The training loop's hooks without Lightning: an SGD step and the rule's after-step hook, no
    logging, all-reduce or clipping (learnbench.training_loop.LoopHooks)."""

    def __init__(self, rule, model, optimizer):
        self.rule, self.model, self.optimizer, self.global_step = rule, model, optimizer, 0

    def zero_grad_all(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def update(self) -> None:
        self.optimizer.step()
        self.rule.after_optimizer_step(self.model)
        self.global_step += 1  # per-step noise seed; brsf draws its magnitudes afresh after it


def make_step(rule, model, x, y, device) -> Callable[[], None]:
    """One training batch through learnbench.training_loop.train_batch, the loop LearningRuleModule runs
    (with bare hooks: no logging, all-reduce or clipping)."""
    rule.setup(model, seed=0, rank=0, device=device)
    rule.to(device)  # feedback matrices and other rule state
    groups = [{"params": trainable_parameters(model)}]
    if rule.extra_parameters():  # learned feedback (Kolen-Pollack): stepped beside the model
        groups.append({"params": rule.extra_parameters()})
    hooks = BareHooks(rule, model, torch.optim.SGD(groups, lr=1e-6))  # tiny lr: the model barely moves
    task = get_task("classification")
    return partial(train_batch, rule, model, x, y, task, hooks)


def page_faults() -> int:
    """Minor page faults of this process so far (0 where getrusage is missing). A step that faults
    thousands of pages is paying the kernel for fresh memory: large temporaries allocated and freed
    every step that the allocator hands back to the OS in between."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's largest on 64-bit


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory mapped (no trimming of the heap top; mmap only above 32 MB),
    so steady-state steps stop page-faulting their temporaries back in. By default glibc's thresholds
    move with the allocation history, so whether a given process faults ~1000 pages every step
    or none is partly luck, and that luck swamps 5 % differences. False where glibc is not found."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1
    return mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok


def time_round_robin(steps: dict[str, Callable[[], None]], rounds: int, warmup: int, device,
                     clock: Callable[[], float] = time.perf_counter) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Seconds and minor page faults of every step in every round (round r of a step is entry r of its lists)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    faults: dict[str, list[int]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync()
            faults_before, start = page_faults(), clock()
            step()
            sync()
            times[name].append(clock() - start)
            faults[name].append(page_faults() - faults_before)
    return times, faults


def ratio_interval(times: list[float], bp: list[float], resamples: int = 1000, level: float = 0.9) -> tuple[float, float]:
    """A bootstrap interval of median(times) / median(bp): whole rounds resampled (pairs kept), seeded.

    It says how much the ratio moves with which rounds happened to be disturbed, within this run;
    it does not cover drift between runs (load that changes over minutes), so run twice."""
    t, b = np.asarray(times), np.asarray(bp)
    idx = np.random.default_rng(0).integers(0, len(t), size=(resamples, len(t)))
    ratios = np.median(t[idx], axis=1) / np.median(b[idx], axis=1)
    lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def model_and_batch(args, device) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The benchmark's model and one random batch, the same for every rule (seed 0)."""
    torch.manual_seed(0)
    model = make_model(args.model, args.hidden, args.layer_norm, args.local_heads).to(device)
    return (model, *random_batch(args.batch, device, input_shape=model_input_shape(args.model)))


def direction_rules(names: list[str], k: int) -> list[str]:
    """The rules timed again at K directions (those with a `directions` option; none when K < 2)."""
    return [n for n in names if has_directions(n)] if k > 1 else []


# A step to time: (method, overrides) of a rule, or None for the forward pass alone.
StepSpec = tuple[str, dict] | None


def step_specs(args) -> dict[str, StepSpec]:
    """Every row of the table, in order: the rules, the variants, the forward pass, the rules at K directions."""
    names = rule_names(args)
    specs: dict[str, StepSpec] = {name: (name, {}) for name in names}
    if not args.no_variants:
        specs.update({name: (m, o) for name, (m, o) in VARIANTS.items() if m in names})
    specs["forward only"] = None
    k = args.directions
    specs.update({f"{name} K={k}": (name, {"directions": k}) for name in direction_rules(names, k)})
    return specs


def build_step(spec: StepSpec, model, x, y, device) -> Callable[[], None]:
    if spec is not None:
        method, overrides = spec
        return make_step(make_rule(method, **overrides), model, x, y, device)

    def forward_only() -> None:
        with torch.no_grad():
            model(x)

    return forward_only


def time_in_one_process(specs: dict[str, StepSpec], args, device):
    """Every step on one shared model in this process (their allocations share one heap)."""
    model, x, y = model_and_batch(args, device)
    steps = {name: build_step(spec, model, x, y, device) for name, spec in specs.items()}
    return time_round_robin(steps, args.rounds, args.warmup, device, CLOCKS[args.clock])


def step_worker(conn, args, spec: StepSpec) -> None:
    """One row's process: build the model (seed 0: the same in every process) and the step, then time
    one step each time the parent says so and send back (seconds, page faults); None ends it."""
    try:
        if args.malloc == "keep":
            keep_freed_memory()
        if args.threads:
            torch.set_num_threads(args.threads)
        device = torch.device(args.device)
        model, x, y = model_and_batch(args, device)
        step = build_step(spec, model, x, y, device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        clock = CLOCKS[args.clock]
        conn.send("ready")
        while conn.recv() is not None:
            sync()
            faults_before, start = page_faults(), clock()
            step()
            sync()
            conn.send((clock() - start, page_faults() - faults_before))
    except Exception:  # noqa: BLE001 - the parent re-raises it with the row's name
        import traceback

        conn.send(("error", traceback.format_exc()))


def time_in_processes(specs: dict[str, StepSpec], args):
    """Each row in a process of its own, as a training run has it (its allocations alone in its heap),
    still round-robin: the parent starts one step at a time and waits for it, so load from other
    processes hits every row alike. Forked from a fresh forkserver that has imported torch (never from
    this process, which may have started OpenMP threads already)."""
    import importlib
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["learnbench.tools.bench"])
    else:  # Windows
        ctx = multiprocessing.get_context("spawn")
    # The module by its name, not __main__, so the worker pickles as a reference the children can import.
    worker = importlib.import_module("learnbench.tools.bench").step_worker
    workers = {}

    def receive(name, conn):
        message = conn.recv()
        if isinstance(message, tuple) and message[0] == "error":
            raise RuntimeError(f"the {name!r} step failed in its process:\n{message[1]}")
        return message

    try:
        for name, spec in specs.items():
            conn, child_conn = ctx.Pipe()
            process = ctx.Process(target=worker, args=(child_conn, args, spec), daemon=True)
            process.start()
            child_conn.close()
            workers[name] = (process, conn)
        for name, (_, conn) in workers.items():
            receive(name, conn)  # "ready": model and step built
        times = {name: [] for name in specs}
        faults = {name: [] for name in specs}
        for round_ in range(args.warmup + args.rounds):
            for name, (_, conn) in workers.items():
                conn.send(True)
                seconds, step_faults = receive(name, conn)
                if round_ >= args.warmup:
                    times[name].append(seconds)
                    faults[name].append(step_faults)
        return times, faults
    finally:
        for process, conn in workers.values():
            try:
                conn.send(None)
            except OSError:
                pass
        for process, _ in workers.values():
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()


def rule_ratios(args, device) -> dict:
    specs = step_specs(args)
    if args.processes == "one":
        times, faults = time_in_one_process(specs, args, device)
    else:
        times, faults = time_in_processes(specs, args)
    seconds = {name: statistics.median(t) for name, t in times.items()}
    bp = seconds["bp"]
    rows = {name: {"ms": 1e3 * s, "over_bp": s / bp, "over_bp_90": ratio_interval(times[name], times["bp"]),
                   "page_faults": statistics.median(faults[name])}
            for name, s in seconds.items()}
    for name, spec in specs.items():
        if spec is not None and "directions" in spec[1]:
            k = spec[1]["directions"]
            rows[name]["per_direction_over_k1"] = seconds[name] / k / seconds[spec[0]]
    return rows


def profile_steps(args, device) -> dict:
    """Each rule's step under torch.profiler: the ops with the most self time, per step, by input shape."""
    from torch.profiler import ProfilerActivity, profile

    model, x, y = model_and_batch(args, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    names = rule_names(args)
    by_shape = args.profile_by == "shape"
    steps_per_rule = args.profile_steps
    result = {}
    for name in names + [f"{r} K={args.directions}" for r in direction_rules(names, args.directions)]:
        method, _, k = name.partition(" K=")
        step = make_step(make_rule(method, **({"directions": int(k)} if k else {})), model, x, y, device)
        for _ in range(args.warmup):
            step()
        with profile(activities=activities, record_shapes=by_shape) as prof:
            for _ in range(steps_per_rule):
                step()
        events = sorted(prof.key_averages(group_by_input_shape=by_shape), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        result[name] = {
            "self_ms_per_step": total / steps_per_rule / 1e3,
            "top": [
                {"op": e.key, "calls": e.count / steps_per_rule, "ms": e.self_cpu_time_total / steps_per_rule / 1e3,
                 "share": e.self_cpu_time_total / total, "shapes": str(e.input_shapes) if by_shape else ""}
                for e in events[:args.top]
            ],
        }
    return result


def print_profile(profiles: dict) -> None:
    for name, p in profiles.items():
        print(f"== {name}: {p['self_ms_per_step']:.2f} ms self CPU per step")
        for e in p["top"]:
            print(f"   {e['op']:34s} {e['calls']:4.1f}x {e['ms']:7.2f} ms {100 * e['share']:5.1f}%  {e['shapes'][:80]}")


def epoch_ratio(args, device) -> dict:
    """A whole MNIST epoch of BP: the suite's Lightning loop over a minimal hand-written loop."""
    from learnbench.data import VisionDataModule
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

    def suite() -> tuple[float, float]:
        return suite_epoch(Backprop(), args.epoch_hidden, False, dm, device)

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


def suite_epoch(rule, hidden: list[int], layer_norm: bool, dm, device, local_heads: str = "every") -> tuple[float, float]:
    """One MNIST training epoch of `rule` through the suite's Lightning loop (no validation, no logger):
    (the training epoch's seconds, the whole fit's seconds with data loading and the trainer's setup)."""
    import lightning as L

    from learnbench.module import LearningRuleModule

    class EpochTimer(L.Callback):
        """The training epoch alone, as Lightning runs it (not the trainer's one-off setup)."""

        def on_train_epoch_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds = time.perf_counter() - self.start

    torch.manual_seed(0)
    module = LearningRuleModule(make_mlp(hidden, layer_norm, local_heads), rule, partial(torch.optim.SGD, lr=0.01), num_classes=10)
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


def rule_epochs(args, device) -> dict:
    """Every --rule-epochs rule's MNIST training epoch over BP's, on the same model and batch, rules
    alternating (BP first in each repeat) and the best of --epoch-repeats kept for each: on a small
    network (Ren et al.'s S/1/1: --epoch-hidden 256 256 --layer-norm --epoch-batch 100) the per-step
    work outside the matrix products is what separates the rules, and this measures it as a run pays it."""
    from learnbench.data import VisionDataModule

    # A run's training split (the default 5 000 images held out for validation, which is not run here).
    dm = VisionDataModule("mnist", data_dir=args.data_dir, batch_size=args.epoch_batch, download=False)
    names = ["bp", *dict.fromkeys(n for n in args.rule_epochs if n != "bp")]
    best = {n: float("inf") for n in names}
    for _ in range(args.epoch_repeats):
        for name in names:
            best[name] = min(best[name], suite_epoch(make_rule(name), args.epoch_hidden, args.layer_norm, dm, device, args.local_heads)[0])
    return {n: {"epoch_s": t, "over_bp": t / best["bp"]} for n, t in best.items()}


def build_parser() -> argparse.ArgumentParser:
    """The step-time options at the top; other benchmarks as subcommands with their own options."""
    parser = argparse.ArgumentParser(prog="python -m learnbench.tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(DEFAULT_BATCH), default="mlp",
                        help="mlp: MLP 784-<hidden>-10; lenet: LeNet-5 on 1x28x28 images (default: mlp)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[1000, 1000], help="the MLP's hidden sizes (default: 1000 1000)")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch size (default: " + ", ".join(f"{m} {b}" for m, b in DEFAULT_BATCH.items()) + ")")
    parser.add_argument("--rules", nargs="+", default=None, metavar="METHOD",
                        help="only these methods (conf/method/<name>.yaml; bp is always timed); default: "
                             "learnbench.catalog.comparable_rules('feedforward')")
    parser.add_argument("--no-variants", action="store_true", help="leave out the variant rows (np no clean pass, fresh noise)")
    parser.add_argument("--directions", type=int, default=16, help="K of the per-direction rows (K < 2: no such rows)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None, help="MNIST root (e.g. ../shared/datasets) for the epoch comparison")
    parser.add_argument("--epoch-hidden", type=int, nargs="+", default=[1000, 1000])
    parser.add_argument("--epoch-batch", type=int, default=256)
    parser.add_argument("--epoch-repeats", type=int, default=2)
    parser.add_argument("--epoch-only", action="store_true", help="only the MNIST epoch comparison (needs --data-dir)")
    parser.add_argument("--layer-norm", action="store_true", help="LayerNorm in the MLP's hidden blocks (Ren et al.'s S/1/1); also for --rule-epochs")
    parser.add_argument("--local-heads", choices=["every", "last"], default="every",
                        help="where the local-loss rows (l_*, lg_*) put their heads: after every hidden block (the MLP's "
                             "default) or one after the last (Ren et al.'s S/1/1 preset, experiment=ren_s11_mnist); also for --rule-epochs")
    parser.add_argument("--rule-epochs", nargs="+", default=None, metavar="METHOD",
                        help="instead: each METHOD's whole MNIST training epoch over BP's (needs --data-dir; "
                             "S/1/1: --epoch-hidden 256 256 --layer-norm --epoch-batch 100)")
    parser.add_argument("--processes", choices=["per-rule", "one"], default="per-rule",
                        help="per-rule: each row in its own process, as in training (default); one: every row in this "
                             "process on one model (before 2026-11-24; the rows' allocations then share one heap, so one "
                             "row's memory churn can put page faults on another's steps)")
    parser.add_argument("--malloc", choices=["keep", "default"], default="keep",
                        help="keep: glibc keeps freed memory mapped (mallopt), so steps do not page-fault their "
                             "temporaries back in, and ratios stop depending on each process's allocation history "
                             "(default); default: glibc's own thresholds, as a training run has them (see the page faults column)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: process CPU time, not inflated by other processes' time "
                             "slices (a loaded machine; meaningful with --threads 1 on a CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--profile", action="store_true", help="instead: profile each rule's step (top ops per step)")
    parser.add_argument("--profile-by", choices=["shape", "op"], default="shape",
                        help="--profile: group the ops by name and input shapes, or by name alone (default: shape)")
    parser.add_argument("--top", type=int, default=8, help="--profile: ops shown per rule (default: 8)")
    parser.add_argument("--profile-steps", type=int, default=5,
                        help="--profile: steps profiled per rule, averaged (more: less noise from other processes; default: 5)")
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
    if args.batch is None:
        args.batch = DEFAULT_BATCH[args.model]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc == "keep" and not keep_freed_memory():  # here (profile, --processes one); each row's process sets its own
        args.malloc = "default (no glibc mallopt here)"
    if args.profile:
        return emit(profile_steps(args, device), args.json, print_profile)
    if args.rule_epochs:
        if not args.data_dir:
            raise SystemExit("--rule-epochs times MNIST epochs: give --data-dir (e.g. ../shared/datasets)")
        return emit(rule_epochs_result(args, device), args.json, print_rule_epochs)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {
        "setting": {"model": model_name(args.model, args.hidden, args.layer_norm, args.local_heads), "batch": args.batch, "device": str(device),
                    "threads": torch.get_num_threads(), "clock": args.clock, "rounds": args.rounds, "processes": args.processes,
                    "malloc": args.malloc,
                    "epoch_hidden": args.epoch_hidden, "epoch_batch": args.epoch_batch,
                    "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count()},
        "steps": {} if args.epoch_only else rule_ratios(args, device),
    }
    # The 1-minute load average before and after (the machine's other work; a loaded machine's times are longer and noisier).
    result["setting"]["load_average"] = [load_before, os.getloadavg()[0] if load_before is not None else None]
    if args.data_dir:
        result["epoch"] = epoch_ratio(args, device)
    return emit(result, args.json, print_table)


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setting"]
    load = s.get("load_average", [None])
    load = "" if load[0] is None else f"; load average {load[0]:.1f} -> {load[1]:.1f} on {s['cpus']} CPUs"
    table = Table(title=f"Step time over backprop: {s['model']}, batch {s['batch']}, {s['device']} ({s['threads']} threads, "
                        f"{s['clock']} clock, median of {s['rounds']} rounds, processes: {s['processes']}, malloc: {s.get('malloc', 'default')}{load})")
    for column in ("step", "ms", "over BP", "90% interval", "per direction / K=1 step", "page faults"):
        table.add_column(column, justify="right" if column != "step" else "left")
    for name, row in result["steps"].items():
        per = row.get("per_direction_over_k1")
        lo, hi = row["over_bp_90"]
        table.add_row(name, f"{row['ms']:.2f}", f"{row['over_bp']:.2f}", f"{lo:.2f}-{hi:.2f}" if name != "bp" else "",
                      "" if per is None else f"{per:.2f}", f"{row['page_faults']:.0f}")
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


def rule_epochs_result(args, device) -> dict:
    load_before = os.getloadavg()[0]
    epochs = rule_epochs(args, device)
    setting = {"model": mlp_name(args.epoch_hidden, args.layer_norm, args.local_heads), "batch": args.epoch_batch, "device": str(device),
               "threads": torch.get_num_threads(), "repeats": args.epoch_repeats,
               "load_average": [load_before, os.getloadavg()[0]], "cpus": os.cpu_count(),
               "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")}
    return {"setting": setting, "epochs": epochs}


def print_rule_epochs(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setting"]
    table = Table(title=f"MNIST training epoch over backprop's: {s['model']}, batch {s['batch']}, {s['device']} "
                        f"({s['threads']} threads, best of {s['repeats']}; load average {s['load_average'][0]:.1f} -> "
                        f"{s['load_average'][1]:.1f} on {s['cpus']} CPUs)")
    for column in ("rule", "epoch s", "over BP"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for name, row in result["epochs"].items():
        table.add_row(name, f"{row['epoch_s']:.2f}", f"{row['over_bp']:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
