"""Surrogate-BPTT training step of snnTorch's tutorial-5 network, the suite beside its peers:
`python -m learnbench.tools.bench_spiking` (`make bench-spiking`).

The network of `experiment=snntorch_mnist`: 784-1000-10 with biases, LIF beta 0.95, threshold 1, reset by
subtraction (detached), arctan surrogate alpha 2, the static image as input current at each of 25 steps, loss
the cross-entropy of the output membrane summed over the steps, Adam 5e-4, batch 128. Rows, each a full
training step (zero grads, forward, backward, Adam step) on the same seed-0 weights and batch:

    learnbench     the suite's model (models/snn.py, built from the preset's options) and rule (method=bp)
                   through training_loop.train_batch, as a training run takes a batch
    hand-written   a minimal PyTorch loop: W_1 x once, then per step two lines of LIF and a linear readout
    snntorch       snn.Leaky x 2 as tutorial 5 writes them (only W_1 x hoisted out of the loop, as above)
    norse          its LIFBoxCell x 2 (forward Euler: tau_mem_inv dt = 0.05 gives beta 0.95, the input scaled by
                   1 / 0.05); reset by subtraction; norse has no arctan: its SuperSpike surrogate, alpha 100

snnTorch and norse are test-only packages (pip install -e '.[oracles]'): a row whose package does not import
is left out with a note. Before timing, the learnbench step's gradient is checked against the hand-written
loop's (and snnTorch's) on the same weights: the rows compute the same thing (norse: the same forward pass,
another surrogate). All rows in one process, taking turns round-robin, many rounds, at each --threads count;
the median is kept and each row is given over the hand-written loop's (a 90 % bootstrap interval over the
rounds, as learnbench.tools.bench). Timings are for reading, never for pass/fail tests.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import math
import os
import statistics
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from learnbench.models import SNN
from learnbench.paths import CONFIG_DIR
from learnbench.rules import Backprop
from learnbench.tasks import get_task
from learnbench.tools.bench import CLOCKS, BareHooks, keep_freed_memory, ratio_interval, time_round_robin
from learnbench.training_loop import train_batch

INPUTS, HIDDEN, CLASSES = 784, 1000, 10


def preset_options() -> dict:
    """The model options of experiment=snntorch_mnist (conf/model/snn.yaml with the preset's overrides)."""
    base = OmegaConf.load(CONFIG_DIR / "model" / "snn.yaml")
    preset = OmegaConf.load(CONFIG_DIR / "experiment" / "snntorch_mnist.yaml")
    options = OmegaConf.to_container(OmegaConf.merge(base, preset.model), resolve=False)
    options.pop("_target_")
    options["encoding_seed"] = 0
    return options


def preset_lr() -> float:
    return float(OmegaConf.load(CONFIG_DIR / "experiment" / "snntorch_mnist.yaml").optimizer.lr)


def suite_model() -> SNN:
    torch.manual_seed(0)
    return SNN(INPUTS, CLASSES, **preset_options())


def copy_weights(model: SNN) -> tuple[nn.Linear, nn.Linear]:
    """fc1 and fc2 with the suite model's seed-0 weights (every row starts from the same network)."""
    fc1, fc2 = nn.Linear(INPUTS, HIDDEN), nn.Linear(HIDDEN, CLASSES)
    with torch.no_grad():
        for mine, theirs in ((fc1, model.hidden[0]), (fc2, model.readout)):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
    return fc1, fc2


class ArctanSpike(torch.autograd.Function):
    """H(v - thr) forward; snnTorch's atan surrogate, (alpha / 2) / (1 + (pi / 2 alpha x)^2), backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad / (1 + (math.pi * x) ** 2)  # alpha = 2: (2 / 2) / (1 + (pi / 2 * 2 x)^2)


class HandWritten(nn.Module):
    """The minimal loop someone would write for this network by hand."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, steps: int, beta: float):
        super().__init__()
        self.fc1, self.fc2, self.steps, self.beta = fc1, fc2, steps, beta

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        current = self.fc1(x)
        mem1 = torch.zeros_like(current)
        spk1 = torch.zeros_like(current)
        mem2 = x.new_zeros(len(x), CLASSES)
        spk2 = torch.zeros_like(mem2)
        loss = 0
        for _ in range(self.steps):
            mem1 = self.beta * mem1 + current - spk1.detach()
            spk1 = ArctanSpike.apply(mem1 - 1)
            mem2 = self.beta * mem2 + self.fc2(spk1) - spk2.detach()
            spk2 = ArctanSpike.apply(mem2 - 1)
            loss = loss + F.cross_entropy(mem2, y)
        return loss


class SnnTorchNet(nn.Module):
    """Tutorial 5's Net with snn.Leaky (defaults: threshold 1, subtract, atan alpha 2); W_1 x once."""

    def __init__(self, snntorch, fc1: nn.Linear, fc2: nn.Linear, steps: int, beta: float):
        super().__init__()
        self.fc1, self.fc2, self.steps = fc1, fc2, steps
        self.lif1, self.lif2 = snntorch.Leaky(beta=beta), snntorch.Leaky(beta=beta)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        current, loss = self.fc1(x), 0
        for _ in range(self.steps):
            spk1, mem1 = self.lif1(current, mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            loss = loss + F.cross_entropy(mem2, y)
        return loss


class NorseNet(nn.Module):
    """The same network with norse's LIFBoxCell (no synaptic current): Euler decay 1 - dt tau_mem_inv = beta,
    the input current scaled by 1 / (dt tau_mem_inv) so the membrane gets W x; reset by subtraction."""

    def __init__(self, norse, fc1: nn.Linear, fc2: nn.Linear, steps: int, beta: float):
        super().__init__()
        self.fc1, self.fc2, self.steps = fc1, fc2, steps
        rate = 1 - beta  # dt tau_mem_inv with dt = 1
        p = norse.LIFBoxParameters(tau_mem_inv=torch.as_tensor(rate), v_th=torch.as_tensor(1.0),
                                   reset_method=importlib.import_module("norse.torch.functional.reset").reset_subtract)
        self.lif1, self.lif2, self.gain = norse.LIFBoxCell(p, dt=1.0), norse.LIFBoxCell(p, dt=1.0), 1 / rate

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        s1 = s2 = None
        current, loss = self.gain * self.fc1(x), 0
        for _ in range(self.steps):
            z1, s1 = self.lif1(current, s1)
            z2, s2 = self.lif2(self.gain * self.fc2(z1), s2)
            loss = loss + F.cross_entropy(s2.v + z2, y)  # the membrane before its reset: V - z thr + z thr
        return loss


def oracle_package(name: str):
    """A test-only peer, or None (the row is left out) when it does not import."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except ImportError as error:
        print(f"note: {name} does not import ({error}); its row is left out (pip install -e '.[oracles]')")
        return None


def hand_step(net: nn.Module, x: Tensor, y: Tensor, lr: float) -> Callable[[], None]:
    """A training step of a peer or the hand-written loop: zero grads, loss, backward, Adam."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        net.loss(x, y).backward()
        optimizer.step()

    return step


def suite_step(model: SNN, x: Tensor, y: Tensor, lr: float) -> Callable[[], None]:
    """The suite's step: method=bp through training_loop.train_batch with Adam (bare hooks: no logging)."""
    rule = Backprop()
    rule.setup(model, seed=0, rank=0, device=x.device)
    hooks = BareHooks(rule, model, torch.optim.Adam(model.parameters(), lr=lr))
    task = get_task("sum_over_steps_classification")
    return lambda: train_batch(rule, model, x, y, task, hooks)


def check_same_gradient(model: SNN, peers: dict[str, nn.Module], x: Tensor, y: Tensor) -> dict[str, float]:
    """The suite's gradient (its rule on its task) against each peer's on the same weights, before any step:
    the largest difference over the largest gradient entry, per peer. Raises if the hand-written loop or
    snnTorch differ (they compute the same network; norse's surrogate differs, so it is reported only)."""
    rule = Backprop()
    rule.setup(model, seed=0, rank=0, device=x.device)
    rule.estimate_grads(model, x, y, get_task("sum_over_steps_classification").loss)
    ours = [p.grad.clone() for p in (model.hidden[0].weight, model.hidden[0].bias, model.readout.weight, model.readout.bias)]
    model.zero_grad(set_to_none=True)
    differences = {}
    for name, net in peers.items():
        net.zero_grad(set_to_none=True)
        net.loss(x, y).backward()
        theirs = [net.fc1.weight.grad, net.fc1.bias.grad, net.fc2.weight.grad, net.fc2.bias.grad]
        differences[name] = max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(ours, theirs))
        net.zero_grad(set_to_none=True)
        if name != "norse" and differences[name] > 1e-4:
            raise SystemExit(f"the learnbench step's gradient differs from {name}'s by {differences[name]:.2e} "
                             f"(relative to the largest entry): the rows do not compute the same thing")
    return differences


def build_rows(args) -> tuple[dict[str, Callable[[], None]], dict[str, float]]:
    """Every row's step, on the same seed-0 weights and batch; and the gradient check's differences."""
    model = suite_model()
    beta, steps, lr = float(model.neuron.beta), model.steps, preset_lr()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, INPUTS, generator=generator)  # pixels in [0, 1], as data.normalize=unit gives
    y = torch.randint(0, CLASSES, (args.batch,), generator=generator)
    peers: dict[str, nn.Module] = {"hand-written": HandWritten(*copy_weights(model), steps, beta)}
    snntorch = oracle_package("snntorch")
    if snntorch is not None:
        peers["snntorch"] = SnnTorchNet(snntorch, *copy_weights(model), steps, beta)
    norse = oracle_package("norse.torch")
    if norse is not None:
        peers["norse"] = NorseNet(norse, *copy_weights(model), steps, beta)
    differences = check_same_gradient(model, peers, x, y)
    rows = {"learnbench": suite_step(model, x, y, lr)}
    rows.update({name: hand_step(net, x, y, lr) for name, net in peers.items()})
    return rows, differences


def profile_suite(args) -> None:
    """The learnbench step under torch.profiler: the ops with the most self time per step."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads[0])
    rows, _ = build_rows(args)
    for _ in range(args.warmup):
        rows["learnbench"]()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.profile_steps):
            rows["learnbench"]()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m learnbench.tools.bench_spiking", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch.set_num_threads, each in turn (default: 1 2)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time (default); cpu: this process's CPU time, which other processes' time "
                             "slices do not inflate (a loaded machine; with 2 threads, both threads' time, spinning included)")
    parser.add_argument("--profile", action="store_true", help="instead: profile the learnbench step (torch.profiler)")
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    malloc = "keep" if keep_freed_memory() else "default"
    if args.profile:
        profile_suite(args)
        return {}
    rows, differences = build_rows(args)
    print("gradient check, max |learnbench - peer| / max |learnbench|: "
          + ", ".join(f"{name} {d:.1e}" for name, d in differences.items()) + " (norse: another surrogate)")
    result = {"started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
              "load_average": os.getloadavg()[0], "malloc": malloc, "threads": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        times, _ = time_round_robin(rows, args.rounds, args.warmup, torch.device("cpu"), CLOCKS[args.clock])
        base = times["hand-written"]
        result["threads"][threads] = {
            name: {"ms": 1e3 * statistics.median(t), "over_hand": statistics.median(t) / statistics.median(base),
                   "over_hand_90": ratio_interval(t, base)} for name, t in times.items()}
    result["load_average_after"] = os.getloadavg()[0]
    print_table(result, args)
    return result


def print_table(result: dict, args) -> None:
    print(f"snnTorch tutorial-5 network 784-{HIDDEN}-{CLASSES}, T 25, batch {args.batch}, Adam; CPU, {args.clock} clock, median of {args.rounds} "
          f"rounds (round-robin, one process, malloc {result['malloc']}), started {result['started_utc']} UTC, "
          f"load average {result['load_average']:.1f} -> {result['load_average_after']:.1f} on {os.cpu_count()} CPUs")
    print("| threads | step | ms | over hand-written (90 % interval) |")
    print("|---|---|---:|---:|")
    for threads, rows in result["threads"].items():
        for name, row in rows.items():
            lo, hi = row["over_hand_90"]
            interval = "" if name == "hand-written" else f" ({lo:.2f}-{hi:.2f})"
            print(f"| {threads} | {name} | {row['ms']:.1f} | {row['over_hand']:.2f}{interval} |")


if __name__ == "__main__":
    main()
