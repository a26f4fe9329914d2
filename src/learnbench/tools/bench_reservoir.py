"""Reservoir speed: the ridge fit of an ESN (state collection + solve) beside reservoirpy's on the same matrices.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m learnbench.tools.bench_reservoir [--units 1000]
        [--steps 10000] [--repeats 5] [--growth] [--json]

The task: reservoirpy's Mackey-Glass series (data/series.py), a 1-step-ahead forecast; `--steps` training steps, a
1000-step test sequence; the README's ESN (spectral radius 1.25, leak 0.3, connectivity 0.1, input connectivity 0.1,
no bias), ridge 1e-5, washout 100, float64. Ours is model=esn fitted by method=ridge as the training module does it
(Ridge.estimate_grads over the sequence, then Ridge.solve); reservoirpy's is Reservoir(W, Win, lr) >> Ridge fitted
with warmup = the washout, its nodes built from our W and W_in (W as its own initialiser leaves it: a scipy CSR
matrix). Both fits take turns, round-robin, `--repeats` rounds; the median is kept. Clock: this process's CPU time
(`--clock cpu`, the default: other processes' time slices on a loaded machine stay out of it; meaningful with one
thread) or elapsed time (`--clock wall`). Threads: torch.set_num_threads(--threads); numpy's BLAS reads the
*_NUM_THREADS variables at start, so set them (the bench says when they are not --threads).

Also checked, not timed: both fitted readouts predict the test sequence (from a zero state, the washout not scored),
and the relative difference of their RMSEs is printed (the target: 1e-6). The states agree to ~1e-15; the readouts
then differ by about cond(X X^T + lambda I) times that: ~1e-5 at the README's lambda 1e-5 (cond ~5e9 at 1000 units,
10,000 steps), below 1e-6 from lambda 1e-3 (`--ridge`).

`--growth`: our fit time against N (--growth-units) at --steps, and against the sequence length (--growth-steps) at
--units, split into its parts, each timed alone: the run (the reservoir's states), the Gram sums (X X^T and Y X^T)
and the solve. reservoirpy is not needed for it.
Timings are for reading, never for pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from learnbench.data import MackeyGlassDataModule
from learnbench.models import ESN
from learnbench.rules import Ridge
from learnbench.rules.readout.reservoir import features as readout_features
from learnbench.rules.readout.ridge import gram
from learnbench.tasks import get_task

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
ESN_OPTIONS = dict(spectral_radius=1.25, leak_rate=0.3, connectivity=0.1, input_connectivity=0.1, bias_scaling=0.0)
RIDGE, WASHOUT, TEST_STEPS = 1e-5, 100, 1000
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def series(steps: int) -> tuple[np.ndarray, ...]:
    """(u, y) of `steps` training steps and of the TEST_STEPS after them: Mackey-Glass, [time, 1] each."""
    (u, y), _, (u_test, y_test) = MackeyGlassDataModule(train_steps=steps, val_steps=1, test_steps=TEST_STEPS).series()
    return u, y, u_test, y_test


def make_esn(units: int) -> ESN:
    torch.manual_seed(0)
    return ESN(1, 1, units=units, washout=WASHOUT, **ESN_OPTIONS).double()


# ------------------------------------------------------------------ the two fits
def fit_ours(model: ESN, u: np.ndarray, y: np.ndarray, clock: Callable[[], float], ridge: float = RIDGE) -> dict[str, float]:
    """Ridge's fit as the training module calls it; seconds of the collection (estimate_grads) and the solve."""
    x, target = torch.from_numpy(u)[None], torch.from_numpy(y)[None]
    rule = Ridge(ridge=ridge)
    rule.bind(model, seed=0)
    rule.begin_epoch(model)
    start = clock()
    rule.estimate_grads(model, x, target, get_task("series_regression").with_washout(WASHOUT).loss)
    collected = clock()
    rule.solve(model, rule.statistics())
    return {"collect": collected - start, "solve": clock() - collected}


def reservoirpy_nodes(model: ESN, ridge: float = RIDGE):
    """reservoirpy's Reservoir >> Ridge on our matrices (W and W_in as CSR matrices, its initialisers' form)."""
    from reservoirpy.nodes import Reservoir
    from reservoirpy.nodes import Ridge as RidgeNode
    from scipy import sparse

    w, w_in, b = (p.detach().numpy() for p in (model.w, model.w_in, model.b))
    reservoir = Reservoir(lr=model.a, W=sparse.csr_matrix(w), Win=sparse.csr_matrix(w_in), bias=b)
    readout = RidgeNode(ridge=ridge)
    return reservoir, readout


def fit_reservoirpy(model: ESN, u: np.ndarray, y: np.ndarray, clock: Callable[[], float], ridge: float = RIDGE):
    reservoir, readout = reservoirpy_nodes(model, ridge)
    start = clock()
    (reservoir >> readout).fit(u, y, warmup=WASHOUT)
    return clock() - start, readout


def test_rmse_ours(model: ESN, u_test: np.ndarray, y_test: np.ndarray) -> float:
    with torch.no_grad():
        prediction = model(torch.from_numpy(u_test)[None])[0].numpy()
    return float(np.sqrt(np.mean((prediction[WASHOUT:] - y_test[WASHOUT:]) ** 2)))


def test_rmse_reservoirpy(model: ESN, readout, u_test: np.ndarray, y_test: np.ndarray) -> float:
    reservoir, _ = reservoirpy_nodes(model)  # a fresh reservoir: the test starts from a zero state, as ours
    prediction = readout.run(reservoir.run(u_test))
    return float(np.sqrt(np.mean((prediction[WASHOUT:] - y_test[WASHOUT:]) ** 2)))


def side_by_side(units: int, steps: int, repeats: int, clock: Callable[[], float], ridge: float = RIDGE) -> dict:
    """Both fits, `repeats` rounds taking turns (one warm-up round first); medians and the RMSE check."""
    u, y, u_test, y_test = series(steps)
    model = make_esn(units)
    try:
        import reservoirpy  # noqa: F401 (test-only: `pip install -e .[oracles]`)
    except ImportError:
        reservoirpy = None
    ours, theirs, readout = [], [], None
    for round_ in range(repeats + 1):
        times = fit_ours(model, u, y, clock, ridge)
        if reservoirpy is not None:
            seconds, readout = fit_reservoirpy(model, u, y, clock, ridge)
        if round_:  # the first round warms up allocators, caches and lazy imports
            ours.append(times)
            if reservoirpy is not None:
                theirs.append(seconds)
    row = {"units": units, "steps": steps, "ridge": ridge, "ours_s": statistics.median(t["collect"] + t["solve"] for t in ours),
           "ours_collect_s": statistics.median(t["collect"] for t in ours), "ours_solve_s": statistics.median(t["solve"] for t in ours),
           "ours_rmse": test_rmse_ours(model, u_test, y_test)}
    if reservoirpy is not None:
        row |= {"reservoirpy_s": statistics.median(theirs), "reservoirpy_rmse": test_rmse_reservoirpy(model, readout, u_test, y_test)}
        row["rmse_relative_difference"] = abs(row["ours_rmse"] - row["reservoirpy_rmse"]) / row["reservoirpy_rmse"]
        row["ours_over_reservoirpy"] = row["ours_s"] / row["reservoirpy_s"]
    return row


def fit_parts(model: ESN, u: np.ndarray, y: np.ndarray, clock: Callable[[], float]) -> dict[str, float]:
    """Ridge's fit in its three parts, each timed alone: the run (the states), the Gram sums (ridge.gram of the
    features after the washout, and Y X^T) and the solve (Ridge.solve)."""
    x, target = torch.from_numpy(u)[None], torch.from_numpy(y)[None]
    rule = Ridge(ridge=RIDGE)
    rule.bind(model, seed=0)
    rule.begin_epoch(model)
    start = clock()
    with torch.no_grad():
        states = model.run(x)
    ran = clock()
    features = readout_features(model, states[:, WASHOUT:])
    rule.xx += gram(features)
    rule.yx += target[0, WASHOUT:].T @ features
    summed = clock()
    rule.solve(model, rule.statistics())
    return {"run": ran - start, "gram": summed - ran, "solve": clock() - summed}


def growth_row(units: int, steps: int, repeats: int, clock: Callable[[], float]) -> dict:
    """Our fit's parts (fit_parts); medians over `repeats` after a warm-up."""
    u, y, _, _ = series(steps)
    model = make_esn(units)
    parts = [fit_parts(model, u, y, clock) for _ in range(repeats + 1)][1:]
    medians = {f"{k}_s": statistics.median(p[k] for p in parts) for k in ("run", "gram", "solve")}
    return {"units": units, "steps": steps, **medians, "fit_s": sum(medians.values())}


# ------------------------------------------------------------------ the command line
def thread_note(threads: int) -> str | None:
    unset = [v for v in THREAD_VARIABLES if os.environ.get(v) != str(threads)]
    return f"note: {', '.join(unset)} not {threads}: numpy's BLAS may use more threads than torch" if unset else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ridge", type=float, default=RIDGE, help="lambda of the side-by-side fit (the RMSE check's "
                        "agreement is bounded by the conditioning of X X^T + lambda I: docs/speed.md)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu")
    parser.add_argument("--growth", action="store_true", help="also our fit time against N and against the sequence length")
    parser.add_argument("--growth-units", type=int, nargs="+", default=[100, 300, 1000, 3000])
    parser.add_argument("--growth-steps", type=int, nargs="+", default=[1000, 3000, 10_000, 30_000])
    parser.add_argument("--growth-repeats", type=int, default=3)
    parser.add_argument("--figure", default=None, help="with --growth: write the growth figure here (png)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    note = thread_note(args.threads)
    setting = {"threads": args.threads, "clock": args.clock, "repeats": args.repeats, "load_average": os.getloadavg(),
               "torch": torch.__version__, "esn": ESN_OPTIONS | {"ridge": args.ridge, "washout": WASHOUT, "dtype": "float64"}}
    result = {"setting": setting, "fit": side_by_side(args.units, args.steps, args.repeats, clock, args.ridge)}
    if args.growth:
        result["growth_units"] = [growth_row(n, args.steps, args.growth_repeats, clock) for n in args.growth_units]
        result["growth_steps"] = [growth_row(args.units, t, args.growth_repeats, clock) for t in args.growth_steps]
    if args.growth and args.figure:
        growth_figure(result, args.figure)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_tables(result, note)
    return result


def growth_figure(result: dict, path: str) -> None:
    """Two log-log panels: the fit's parts (run, Gram sums, solve) against N and against the sequence length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, label in ((axes[0], "growth_units", "units"), (axes[1], "growth_steps", "steps")):
        rows = result[key]
        xs = [row[label] for row in rows]
        for part, style in (("run", "o-"), ("gram", "s-"), ("solve", "^-"), ("fit", "k--")):
            ax.loglog(xs, [max(row[f"{part}_s"], 1e-4) for row in rows], style, label=part if part != "gram" else "Gram sums")
        fixed = f"{rows[0]['steps']} steps" if label == "units" else f"N = {rows[0]['units']}"
        ax.set(xlabel="N (units)" if label == "units" else "sequence length (steps)", ylabel="seconds", title=f"ridge fit, {fixed}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    s = result["setting"]
    figure.suptitle(f"ESN ridge fit cost (float64, {s['threads']} thread, {s['clock']} clock)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def print_tables(result: dict, note: str | None) -> None:
    s, fit = result["setting"], result["fit"]
    print(f"ESN ridge fit, {fit['units']} units, {fit['steps']} steps, lambda {fit['ridge']:g}, float64; {s['threads']} thread(s), {s['clock']} clock, "
          f"median of {s['repeats']} rounds (load average {s['load_average'][0]:.1f})")
    if note:
        print(note)
    print("| | fit s (collect + solve) | test RMSE |")
    print("|---|---:|---:|")
    print(f"| learnbench | {fit['ours_s']:.3f} ({fit['ours_collect_s']:.3f} + {fit['ours_solve_s']:.3f}) | {fit['ours_rmse']:.8g} |")
    if "reservoirpy_s" in fit:
        print(f"| reservoirpy | {fit['reservoirpy_s']:.3f} | {fit['reservoirpy_rmse']:.8g} |")
        print(f"ours / reservoirpy: {fit['ours_over_reservoirpy']:.2f}x; RMSE relative difference {fit['rmse_relative_difference']:.1e}")
    for key, label in (("growth_units", "N"), ("growth_steps", "steps")):
        if key in result:
            print(f"\n| {label} | run s | Gram s | solve s | fit s |")
            print("|---:|---:|---:|---:|---:|")
            for row in result[key]:
                print(f"| {row['units'] if label == 'N' else row['steps']} | {row['run_s']:.3f} | {row['gram_s']:.3f} | "
                      f"{row['solve_s']:.3f} | {row['fit_s']:.3f} |")


if __name__ == "__main__":
    main()
