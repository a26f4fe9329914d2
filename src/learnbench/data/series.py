"""Time-series tasks of reservoir computing, generated in memory from a seed (no download).

Each split is one sequence [1, steps, features] with a target at every step, scored as a series
(task series_regression: RMSE, NRMSE, R^2; memory_capacity: the sum of squared correlations):

    MackeyGlassDataModule     1-step-ahead forecast of the Mackey-Glass series (reservoirpy's generator)
    NARMA10DataModule         NARMA of order 10 (Atiya & Parlos 2000) driven by u_t ~ U[0, 0.5]
    LorenzDataModule          next-sample forecast of the Lorenz-63 system (x, y, z)
    MemoryCapacityDataModule  Jaeger (2002): recall u_{t-k} for k = 1 .. K from i.i.d. inputs
    ForcePatternDataModule    Sussillo & Abbott (2009): generate a sum of four sines with no input (FORCE)

A trajectory (Mackey-Glass, Lorenz) is generated once and cut into train | val | test in that order, so the test
is its future; an i.i.d.-driven task (NARMA, memory capacity) generates each split from its own seed
(data_seed + split index), starting at rest like the model does, so no target reaches back before its split.
Every split starts the model from its initial state: its first `model.washout` steps are not scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from learnbench.data.in_memory import InMemoryDataModule, Splits
from learnbench.options import NonNegativeInt, Positive, PositiveInt


class SeriesDataModule(InMemoryDataModule):
    """Base: subclasses give `features`, `output_dim` and `generate(steps, rng)`; one sequence per split."""

    task = "series_regression"
    features = 1
    #: One run cut into train | val | test (a trajectory); False: each split its own run from its own seed.
    contiguous = True

    def __init__(self, train_steps: PositiveInt, val_steps: PositiveInt, test_steps: PositiveInt, data_seed: NonNegativeInt = 0,
                 **batching):
        batching.setdefault("batch_size", 1)
        batching.setdefault("eval_batch_size", 1)
        super().__init__(**batching)
        self.split_steps = (train_steps, val_steps, test_steps)
        self.data_seed = data_seed
        self.input_shape = (train_steps, self.features)

    def generate(self, steps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(inputs [steps, features], targets [steps, outputs]), float64."""
        raise NotImplementedError

    def series(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(inputs, targets) of train, val and test, float64."""
        if not self.contiguous:
            return [self.generate(n, np.random.default_rng(self.data_seed + i)) for i, n in enumerate(self.split_steps)]
        u, y = self.generate(sum(self.split_steps), np.random.default_rng(self.data_seed))
        ends = np.cumsum(self.split_steps)
        return [(u[end - n:end], y[end - n:end]) for n, end in zip(self.split_steps, ends)]

    def load_splits(self) -> Splits:
        return Splits(*((torch.from_numpy(u).float()[None], torch.from_numpy(y).float()[None]) for u, y in self.series()))

    def setup(self, stage: str | None = None) -> None:
        # One training sequence cannot be shared out: every rank but one would train (or fit) on nothing.
        if self.trainer is not None and self.trainer.world_size > 1:
            raise ValueError(f"{type(self).__name__} holds one sequence per split, which cannot be sharded over "
                             f"{self.trainer.world_size} processes: run it on one (trainer=cpu or trainer=gpu)")
        super().setup(stage)


# ----------------------------------------------------------------------------- Mackey-Glass
def mackey_glass(length: int, rng: np.random.Generator, tau: int = 17, a: float = 0.2, b: float = 0.1, n: int = 10,
                 x0: float = 1.2, h: float = 1.0) -> np.ndarray:
    """dx/dt = a x(t - tau) / (1 + x(t - tau)^n) - b x(t), sampled every h, as reservoirpy.datasets.mackey_glass
    makes it (so the same seed gives its series): a history of floor(tau / h) values x0 + U[-0.1, 0.1) drawn from
    `rng`, then its Runge-Kutta-like step with x(t - tau) held over the step. Returns [length]."""
    lag = int(math.floor(tau / h))
    x = np.empty(lag + length)
    x[:lag] = x0 * np.ones(lag) + 0.2 * (rng.random(lag) - 0.5)
    xt = x0
    bh = -b * h
    for i in range(lag, lag + length):
        x[i] = xt
        delayed = x[i - lag] if tau > 0 else 0.0
        k1 = bh * xt + a * delayed / (1 + delayed**n)  # reservoirpy's _mg_rk4, term for term
        k2 = 2 * k1 + bh * k1
        k3 = 2 * k1 + bh * k2
        k4 = k1 + bh * k3
        xt = xt + (k1 + k2 + k3 + k4) / 6
    return x[lag:]


class MackeyGlassDataModule(SeriesDataModule):
    """Forecast x(t + horizon) from x(t): reservoirpy's settings (tau 17, a 0.2, b 0.1, n 10, x0 1.2, h 1) and its
    default seed 5555, so the series is the one of its README's example. Not normalised (it lies in about [0.2, 1.4])."""

    output_dim = 1

    def __init__(self, train_steps: PositiveInt = 1400, val_steps: PositiveInt = 200, test_steps: PositiveInt = 400,
                 horizon: PositiveInt = 1, tau: PositiveInt = 17, a: Positive = 0.2, b: Positive = 0.1, n: Positive = 10,
                 x0: float = 1.2, h: Positive = 1.0, data_seed: NonNegativeInt = 5555, **batching):
        super().__init__(train_steps, val_steps, test_steps, data_seed, **batching)
        self.horizon = horizon
        self.equation = {"tau": tau, "a": a, "b": b, "n": n, "x0": x0, "h": h}

    def generate(self, steps, rng):
        x = mackey_glass(steps + self.horizon, rng, **self.equation)
        return x[:steps, None], x[self.horizon:, None]


# ----------------------------------------------------------------------------- NARMA 10
def narma10(u: np.ndarray) -> np.ndarray:
    """y_{t+1} = 0.3 y_t + 0.05 y_t sum_{i=0}^{9} y_{t-i} + 1.5 u_{t-9} u_t + 0.1 (Atiya & Parlos 2000), from rest
    (y and u are 0 before the start). Returns y_1 .. y_T for u_0 .. u_{T-1}: the target at step t is y_{t+1}."""
    steps = len(u)
    y = np.zeros(steps + 1)
    for t in range(steps):
        recent = y[max(t - 9, 0):t + 1].sum()
        lagged = u[t - 9] if t >= 9 else 0.0
        y[t + 1] = 0.3 * y[t] + 0.05 * y[t] * recent + 1.5 * lagged * u[t] + 0.1
    return y[1:]


class NARMA10DataModule(SeriesDataModule):
    """NARMA10 system identification: input u_t ~ U[0, 0.5] i.i.d., target y_{t+1} (narma10 above). reservoirpy's
    `narma` is another indexing (its sum and its lagged input reach one step further back) with NARMA30's constants
    by default; this is the usual NARMA10 of the reservoir literature."""

    output_dim = 1
    contiguous = False

    def __init__(self, train_steps: PositiveInt = 1000, val_steps: PositiveInt = 1000, test_steps: PositiveInt = 1000,
                 data_seed: NonNegativeInt = 1234, **batching):
        super().__init__(train_steps, val_steps, test_steps, data_seed, **batching)

    def generate(self, steps, rng):
        u = rng.uniform(0.0, 0.5, size=steps)
        y = narma10(u)
        if not np.isfinite(y).all():  # NARMA can blow up for rare input draws
            raise ValueError(f"NARMA10 diverged with data.data_seed={self.data_seed}: choose another seed")
        return u[:, None], y[:, None]


# ----------------------------------------------------------------------------- Lorenz-63
def lorenz(length: int, x0: Sequence[float], rho: float, sigma: float, beta: float, h: float, substeps: int) -> np.ndarray:
    """The Lorenz-63 system sampled every h from x0 (the first sample), integrated by classical Runge-Kutta with
    `substeps` steps per sample. Returns [length, 3]."""
    def derivative(x, y, z):
        return sigma * (y - x), x * (rho - z) - y, x * y - beta * z

    dt = h / substeps
    out = np.empty((length, 3))
    state = tuple(float(v) for v in x0)
    for i in range(length):
        out[i] = state
        for _ in range(substeps):
            k1 = derivative(*state)
            k2 = derivative(*(s + dt / 2 * k for s, k in zip(state, k1)))
            k3 = derivative(*(s + dt / 2 * k for s, k in zip(state, k2)))
            k4 = derivative(*(s + dt * k for s, k in zip(state, k3)))
            state = tuple(s + dt / 6 * (p + 2 * q + 2 * r + w) for s, p, q, r, w in zip(state, k1, k2, k3, k4))
    return out


class LorenzDataModule(SeriesDataModule):
    """Forecast (x, y, z) at the next sample from the current one. reservoirpy's defaults (rho 28, sigma 10,
    beta 8/3, x0 (1, 1, 1), a sample every h = 0.03), integrated by RK4 with 30 steps a sample. A deterministic
    system: no seed (another trajectory: another x0). `standardize`: each component by the training split's mean
    and std (inputs and targets alike), since raw values of +-20 to 50 saturate tanh units."""

    output_dim = 3
    features = 3
    SUBSTEPS = 30

    def __init__(self, train_steps: PositiveInt = 2000, val_steps: PositiveInt = 500, test_steps: PositiveInt = 1000,
                 horizon: PositiveInt = 1, rho: Positive = 28.0, sigma: Positive = 10.0, beta: Positive = 8 / 3,
                 x0: Sequence[float] = (1.0, 1.0, 1.0), h: Positive = 0.03, standardize: bool = True, **batching):
        super().__init__(train_steps, val_steps, test_steps, **batching)
        self.horizon, self.standardize = horizon, standardize
        self.system = {"x0": tuple(x0), "rho": rho, "sigma": sigma, "beta": beta, "h": h}

    def generate(self, steps, rng):
        x = lorenz(steps + self.horizon, substeps=self.SUBSTEPS, **self.system)
        return x[:steps], x[self.horizon:]

    def series(self):
        parts = super().series()
        if not self.standardize:
            return parts
        train_inputs = parts[0][0]
        mean, std = train_inputs.mean(axis=0), train_inputs.std(axis=0)
        return [((u - mean) / std, (y - mean) / std) for u, y in parts]


# ----------------------------------------------------------------------------- memory capacity
class MemoryCapacityDataModule(SeriesDataModule):
    """Jaeger's (2002) memory capacity: u_t ~ U[-amplitude, amplitude] i.i.d.; output k (k = 1 .. max_delay) is
    trained to recall u_{t-k} (0 before the split's start, where the model is at rest too). Scored by
    memory_capacity = sum_k corr(y_k, u_{t-k})^2 over the scored steps: at most N for N linear units."""

    task = "memory_capacity"
    contiguous = False

    def __init__(self, max_delay: PositiveInt = 40, amplitude: Positive = 0.5, train_steps: PositiveInt = 2000,
                 val_steps: PositiveInt = 500, test_steps: PositiveInt = 1000, data_seed: NonNegativeInt = 1234, **batching):
        super().__init__(train_steps, val_steps, test_steps, data_seed, **batching)
        self.max_delay, self.amplitude = max_delay, amplitude
        self.output_dim = max_delay

    def generate(self, steps, rng):
        u = rng.uniform(-self.amplitude, self.amplitude, size=steps)
        padded = np.concatenate([np.zeros(self.max_delay), u])
        targets = np.stack([padded[self.max_delay - k:self.max_delay - k + steps] for k in range(1, self.max_delay + 1)], axis=1)
        return u[:, None], targets


# ----------------------------------------------------------------------------- FORCE's periodic pattern
def force_pattern(t: np.ndarray, amplitude: float = 1.3, frequency: float = 1 / 60) -> np.ndarray:
    """Sussillo & Abbott's (2009, Fig. 2D) target, as their supplementary script force_external_feedback_loop.m writes
    it (amp 1.3, freq 1/60, time in units of tau):

        f(t) = (amp / 1.5) [sin(pi freq t) + sin(2 pi freq t) / 2 + sin(3 pi freq t) / 6 + sin(4 pi freq t) / 3]

    Its four sines have periods 2 / freq, 1 / freq, 2 / (3 freq), 1 / (2 freq): the pattern repeats every 2 / freq
    (120 time units; the "period 60" one reads off freq is the second sine's)."""
    phase = np.pi * frequency * t
    return amplitude / 1.5 * (np.sin(phase) + np.sin(2 * phase) / 2 + np.sin(3 * phase) / 6 + np.sin(4 * phase) / 3)


class ForcePatternDataModule(SeriesDataModule):
    """FORCE's pattern generation: no input (one input channel of zeros: the network is driven by its own output fed
    back) and the target f(t) at t = t_start + i dt, step i of a split. Lengths are in time units (tau); `dt` is the
    step (the model's leak rate must be dt for tau = 1). Training runs from t = 0; the val and test splits both start
    at the time training ended, since FORCE tests the trained network running on from where training left it
    (method=force with evaluate_from=training_end), so their targets continue the training's in phase."""

    output_dim = 1

    def __init__(self, train_time: Positive = 1440.0, val_time: Positive = 240.0, test_time: Positive = 1440.0,
                 dt: Positive = 0.1, amplitude: Positive = 1.3, frequency: Positive = 1 / 60, **batching):
        self.dt, self.amplitude, self.frequency = dt, amplitude, frequency
        super().__init__(*(max(1, round(time / dt)) for time in (train_time, val_time, test_time)), **batching)

    def series(self):
        train_steps = self.split_steps[0]
        starts = (0, train_steps, train_steps)  # in steps: val and test both run on from the training's end
        return [(np.zeros((steps, 1)), force_pattern((start + np.arange(steps)) * self.dt, self.amplitude, self.frequency)[:, None])
                for start, steps in zip(starts, self.split_steps)]
