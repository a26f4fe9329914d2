"""Per-sequence time of the recurrent rules over BPTT's: `python -m learnbench.tools.bench_recurrent`.

One rule call on a whole batch of sequences (the gradient of one sequence batch, no optimiser step,
no Lightning), on one thread by default, for each hidden size; the median of `--repeats` timed calls
after one warm-up. RTRL's cost model is N^2 P multiply-adds per example and step (P = N^2 + N I + N
hidden-layer parameters), so its time should grow like N^4; the table gives the measured growth
beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from learnbench.models import RNN
from learnbench.rules import BPTT, RFLO, RTRL, EProp
from learnbench.tasks import get_task

RULES = {"bptt": BPTT, "rflo": RFLO, "eprop": EProp, "rtrl": RTRL}


def time_rule(rule_name: str, n: int, batch: int, steps: int, inputs: int, repeats: int) -> float:
    """Median seconds of one estimate_grads over a batch of `steps`-step sequences."""
    torch.manual_seed(0)
    model = RNN(inputs, 1, hidden_size=n, tau=10.0)
    rule = RULES[rule_name]()
    rule.bind(model, seed=0)
    x, y = torch.randn(batch, steps, inputs), torch.randn(batch, steps, 1)
    loss = get_task("sequence_regression").loss
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        rule.estimate_grads(model, x, y, loss)
        if i:  # the first call warms up the allocator and kernels
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--inputs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rtrl-repeats", type=int, default=1, help="RTRL is slow: fewer timed calls")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.steps} steps, {args.inputs} input(s), {args.threads} thread(s); ms per sequence batch (x BPTT)")
    print("| N | " + " | ".join(args.rules) + " | RTRL growth (measured / N^4 model) |")
    print("|---" * (len(args.rules) + 2) + "|")
    previous = None
    for n in args.sizes:
        seconds = {r: time_rule(r, n, args.batch, args.steps, args.inputs, args.rtrl_repeats if r == "rtrl" else args.repeats)
                   for r in args.rules}
        base = seconds.get("bptt")
        cells = [f"{1e3 * s:.1f}" + (f" ({s / base:.2f}x)" if base and r != "bptt" else "") for r, s in seconds.items()]
        growth = ""
        if "rtrl" in seconds and previous is not None:
            p_n, p_s = previous
            model_ratio = (n**2 * (n**2 + n * args.inputs + n)) / (p_n**2 * (p_n**2 + p_n * args.inputs + p_n))
            growth = f"{seconds['rtrl'] / p_s:.1f} / {model_ratio:.1f}"
        if "rtrl" in seconds:
            previous = (n, seconds["rtrl"])
        print(f"| {n} | " + " | ".join(cells) + f" | {growth} |", flush=True)


if __name__ == "__main__":
    main()
