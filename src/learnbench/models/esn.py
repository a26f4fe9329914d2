"""An echo state network (Jaeger 2001): a fixed random leaky-integrator rate reservoir and a linear readout.

    x_t = (1 - a) x_{t-1} + a tanh(W x_{t-1} + W_in u_t + b [+ W_fb y_{t-1}])
    y_t = W_out x_t + b_out

The update, the initialisers and their defaults are reservoirpy's Reservoir node's (reservoirpy 0.4;
tests/test_reservoir.py checks the states against it on the same matrices): W ~ N(0, 1) on a random
`connectivity` fraction of its entries (round(c N^2) of them, as scipy.sparse.random counts), then rescaled to the
requested spectral radius; W_in = +-input_scaling on `input_connectivity` of its entries; b = +-bias_scaling on
every unit (0, reservoirpy's default: no bias); W_fb = +-feedback_scaling on `input_connectivity` of its entries
(`feedback_connectivity` and `feedback_distribution: uniform`, U[-feedback_scaling, feedback_scaling], give Sussillo &
Abbott's dense uniform feedback instead).
W is stored dense (its zeros are zeros); with learn_recurrent=true every entry of it learns. The readout starts at
zero (reservoirpy's Ridge). Only the readout learns by default.

Spectral radius, as reservoirpy scales it (mat_gen._scale_spectral_radius): W is drawn, rho(W) computed and W
multiplied by radius / rho(W). rho is the largest |eigenvalue| of all of them (torch.linalg.eigvals, float64)
up to EXACT_UP_TO units; beyond, an iterative estimate by restarted Arnoldi iteration (what ARPACK's eigs does, which
reservoirpy calls on its sparse W: a Krylov basis from the all-ones vector, the largest-magnitude Ritz value,
restarted from its vector until its residual is below 1e-10 of it).

Output feedback (`feedback: true`): y_{t-1} is the model's own output (y_0 = 0) when it runs freely (how method=force
trains and tests it, as FORCE does); `run(x, teacher=y)` feeds the target in its place (teacher forcing: how
method=ridge fits a readout with feedback, Jaeger 2001).

Initial state: x_0 = 0 by default; `initial_state_scale: s > 0` draws x_0 ~ N(0, s^2) once, at construction (after every
weight, so the weights of a seed do not change), and starts every sequence from it. A reservoir without input, bias or
output (FORCE's pattern generator before training) has 0 as a fixed point and would never move from x_0 = 0.

Washout: the first `washout` steps of every sequence are left out of the loss, the metrics and ridge's fit
(every split is its own sequence from a zero state, so every split pays it).

Echo-state property: at construction, the initial state 0 and a few random states are driven by zero input (no
feedback) for up to FADE_STEPS / leak rate steps; if they have not come together (every distance below FADE_TOLERANCE of its
start), a warning says the states do not fade without input.

Which rules train it: ridge (the readout in closed form), force (the readout by RLS, online), bp and bptt (autograd
through forward), wp (the parameters), np, fg_a and fg_w (the sites p_t and y_t and the forward-mode walk of
models/esn_sites.py; none with output feedback), rflo and eprop (tanh after the sum: a trace per synapse,
TemporalModel.slope_recurrence; Murray 2019 writes RFLO for this form). rtrl is written for the rate RNN's form (phi
applied before W_rec): it refuses this model (rate_recurrence).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from learnbench.models import esn_sites
from learnbench.models.temporal import LeakyRate, TemporalModel
from learnbench.options import NonNegative, NonNegativeInt, Positive, PositiveFraction, PositiveInt
from learnbench.state import State

log = logging.getLogger("learnbench")

#: Up to this many units rho(W) comes from every eigenvalue; beyond, from restarted Arnoldi iteration.
EXACT_UP_TO = 1000
#: The echo-state check: zero input for up to FADE_STEPS / leak rate steps from the initial state 0 and FADE_STARTS random
#: states; they fade if every distance to the state from 0 falls below FADE_TOLERANCE of its start.
FADE_STEPS = 500
FADE_TOLERANCE = 1e-3
FADE_STARTS = 7
#: run() of one sequence on the CPU keeps W in CSR form up to this connectivity (run_sparse; docs/speed.md).
SPARSE_UP_TO = 0.3


@dataclass
class ESNState(State):
    h: Tensor  # [batch, N]: the reservoir's state x_t
    y: Tensor | None = None  # [batch, outputs]: the last output, fed back (feedback only)


def functorch_wrapped(t: Tensor) -> bool:
    """Inside a torch.func transform (fg_w's jvp, vmap): CSR matrices have no strides there, so the dense path runs."""
    return torch._C._functorch.is_functorch_wrapped_tensor(t)


class ESN(LeakyRate, TemporalModel):
    time_axis = "data"  # sequences [batch, time, features] from the data
    slope_recurrence = True  # x_t = (1 - a) x_{t-1} + a tanh(W x_{t-1} + ...): rflo and eprop's per-synapse traces

    def __init__(
        self,
        input_shape: int | Sequence[int],
        output_dim: int,
        units: PositiveInt = 100,
        spectral_radius: Positive = 0.9,
        leak_rate: PositiveFraction = 1.0,
        input_scaling: NonNegative = 1.0,
        input_connectivity: PositiveFraction = 0.1,
        connectivity: PositiveFraction = 0.1,
        bias_scaling: NonNegative = 0.0,
        feedback: bool = False,
        feedback_scaling: NonNegative = 1.0,
        feedback_connectivity: PositiveFraction | None = None,
        feedback_distribution: Literal["bernoulli", "uniform"] = "bernoulli",
        initial_state_scale: NonNegative = 0.0,
        washout: NonNegativeInt = 0,
        learn_input: bool = False,
        learn_recurrent: bool = False,
        learn_output: bool = True,
        output_bias: bool = True,
    ):
        super().__init__()
        input_dim = input_shape if isinstance(input_shape, int) else input_shape[-1]
        self.input_dim, self.units, self.output_dim = input_dim, units, output_dim
        self.a = leak_rate
        self.spectral_radius = spectral_radius
        self.washout = washout
        self.output_feedback = feedback
        # Drawn in float64 from the global generator (seeded by the run's seed, as every model's weights), then cast.
        w = scale_to_spectral_radius(sparse_draw(units, units, connectivity, normal), spectral_radius)
        self.w = nn.Parameter(w.float(), requires_grad=learn_recurrent)
        self.density = connectivity
        self.w_in = nn.Parameter(input_scaling * sparse_draw(units, input_dim, input_connectivity, signs).float(), requires_grad=learn_input)
        self.b = nn.Parameter(bias_scaling * signs(units).float(), requires_grad=learn_recurrent)
        fb_fraction = input_connectivity if feedback_connectivity is None else feedback_connectivity
        fb_values = signs if feedback_distribution == "bernoulli" else uniform
        fb = feedback_scaling * sparse_draw(units, output_dim, fb_fraction, fb_values).float() if feedback else None
        self.w_fb = nn.Parameter(fb, requires_grad=learn_recurrent) if feedback else None
        self.w_out = nn.Parameter(torch.zeros(output_dim, units), requires_grad=learn_output)
        self.b_out = nn.Parameter(torch.zeros(output_dim), requires_grad=learn_output) if output_bias else None
        if initial_state_scale > 0:  # drawn last: the weights of a seed are those of a run without it
            self.register_buffer("h0", (initial_state_scale * normal(units)).float())
        else:
            self.h0 = None
        self.warn_if_states_do_not_fade()

    @property
    def hidden_size(self) -> int:
        return self.units

    # ------------------------------------------------------------------ TemporalModel
    def initial_state(self, batch: int) -> ESNState:
        """x_0 = 0, or the drawn x_0 (initial_state_scale), and y_0 = 0 with feedback, for every sequence: nothing leaks
        between independent sequences."""
        h = self.w.new_zeros(batch, self.units) if self.h0 is None else self.h0.to(self.w.dtype).expand(batch, -1).clone()
        return ESNState(h, self.w.new_zeros(batch, self.output_dim) if self.output_feedback else None)

    def step(self, state: ESNState, x_t: Tensor) -> tuple[ESNState, Tensor]:
        h = self.advance(state.h, x_t @ self.w_in.T + self.b, state.y)
        y = self.readout(h)
        return ESNState(h, y if self.output_feedback else None), y

    def parameter_groups(self) -> dict[str, tuple[str, ...]]:
        return {"input": ("w_in",), "recurrent": ("w", "b", "w_fb"), "readout": ("w_out", "b_out")}

    @property
    def readout_weight(self) -> Tensor:
        return self.w_out

    def readout_input(self, hs: Tensor) -> Tensor:
        """The readout reads the reservoir's state itself: y_t = W_out x_t + b_out."""
        return hs

    def readout_state(self, state: ESNState) -> Tensor:
        """The part of a state the readout reads (through readout_input): x_t."""
        return state.h

    # ------------------------------------------------------------------ what rflo and eprop read (slope_recurrence)
    def state_of(self, h: Tensor) -> ESNState:
        """The state whose reservoir state is h (the online rules carry it; they refuse output feedback)."""
        return ESNState(h)

    def pseudo_derivative(self, hs: Tensor) -> Tensor:
        """d r_t / d x_t = 1: the readout reads x_t itself (tanh's slope is in the traces: slopes)."""
        return torch.ones_like(hs)

    def presynaptic(self, x: Tensor, h_prev: Tensor) -> dict[str, Tensor]:
        """What multiplies a tanh'(.)_i in dx_t,i / dtheta for unit i's own weights: x_{t-1} for W[i, :], u_t for
        W_in[i, :], 1 for b_i; each [batch, time, fan-in]."""
        return {"w": h_prev, "w_in": x, "b": torch.ones_like(x[..., :1])}

    def slopes(self, x: Tensor, h_prev: Tensor) -> Tensor:
        """tanh'(W x_{t-1} + W_in u_t + b) at every step, [batch, time, N] (without feedback: the rules refuse it)."""
        return 1 - torch.tanh(h_prev @ self.w.T + x @ self.w_in.T + self.b) ** 2

    def readout(self, hs: Tensor) -> Tensor:
        y = hs @ self.w_out.T
        return y if self.b_out is None else y + self.b_out

    # ------------------------------------------------------------------ the perturbation sites (np, fg_a, fg_w)
    @property
    def has_sites(self) -> bool:
        """The pre-activation p_t and the readout y_t at every step (models/esn_sites.py); none with output feedback,
        where y_{t-1} would enter p_t."""
        return not self.output_feedback

    def site_shapes(self, x: Tensor) -> list[tuple[int, ...]]:
        return esn_sites.esn_site_shapes(self, x)

    def walk(self, x: Tensor, shifts=None, tangents=None, weight_tangents=None, params=None):
        return esn_sites.esn_walk(self, x, shifts=shifts, tangents=tangents, weight_tangents=weight_tangents, params=params)

    def site_inputs(self, trace: esn_sites.ESNTrace) -> list[dict[str, Tensor | None]]:
        return esn_sites.esn_site_inputs(self, trace)

    def walk_parameters(self) -> tuple[str, ...]:
        return esn_sites.ESN_WEIGHTS

    # ------------------------------------------------------------------ the update
    def advance(self, h: Tensor, drive: Tensor, y_prev: Tensor | None = None) -> Tensor:
        """x_t from x_{t-1}, the input's drive W_in u_t + b and (feedback) y_{t-1}."""
        pre = drive + h @ self.w.T
        if self.output_feedback:
            pre = pre + y_prev @ self.w_fb.T
        return (1 - self.a) * h + self.a * torch.tanh(pre)

    def run(self, x: Tensor, state: ESNState | None = None, teacher: Tensor | None = None) -> Tensor:
        """The states x_1 .. x_T, [batch, time, N], from x_0 = state (or the initial state). With feedback,
        y_{t-1} is the model's own output, or teacher[:, t-1] when a teacher [batch, time, outputs] is given."""
        state = self.initial_state(len(x)) if state is None else state
        h, y = state.h, state.y
        drives = x @ self.w_in.T + self.b  # every step's input drive in one matmul
        if self.sparse_run_applies(len(x)) and not any(map(functorch_wrapped, (self.w, drives, h))):
            return self.run_sparse(drives[0], h[0])[None]
        states = []
        for t in range(x.shape[1]):
            h = self.advance(h, drives[:, t], y)
            states.append(h)
            if self.output_feedback:
                y = self.readout(h) if teacher is None else teacher[:, t]
        return torch.stack(states, dim=1)

    def sparse_run_applies(self, batch: int) -> bool:
        """The sparse path (run_sparse) fits: one sequence on the CPU (a matrix-vector product a step), no feedback, a
        W sparse enough to gain, and no graph to build through the reservoir (ridge's state collection, evaluation)."""
        needs_graph = torch.is_grad_enabled() and any(p is not None and p.requires_grad for p in (self.w, self.w_in, self.b))
        return (batch == 1 and not self.output_feedback and not needs_graph and self.w.device.type == "cpu"
                and self.density <= SPARSE_UP_TO)

    def run_sparse(self, drives: Tensor, h: Tensor) -> Tensor:
        """run() for one sequence, W in CSR form: drives [time, N] (W_in u_t + b), h = x_0 [N] -> states [time, N].

        Why: a step of one sequence is a matrix-vector product, bound by reading W; at connectivity 0.1 the CSR form
        reads ~1/6 of the dense matrix's bytes (reservoirpy keeps W sparse for the same reason), and addmv + lerp
        write x_t = x_{t-1} + a (tanh(W x_{t-1} + drive_t) - x_{t-1}) in three calls, into a preallocated output."""
        with warnings.catch_warnings():  # torch says its CSR support is in beta; addmv with a CSR matrix is exact
            warnings.simplefilter("ignore", UserWarning)
            w = self.w.detach().to_sparse_csr()
        states = drives.new_empty(drives.shape)
        for t in range(len(drives)):
            h = torch.lerp(h, torch.addmv(drives[t], w, h).tanh_(), self.a)
            states[t] = h
        return states

    def forward(self, x: Tensor, state: ESNState | None = None, return_state: bool = False):
        hs = self.run(x, state)
        y = self.readout(hs)
        if not return_state:
            return y
        return y, ESNState(hs[:, -1], y[:, -1] if self.output_feedback else None)

    # ------------------------------------------------------------------ the echo-state property
    @torch.no_grad()
    def fading_ratio(self, steps: int | None = None) -> float:
        """How far apart states stay under zero input (no feedback): the largest ||x_T - x'_T|| / ||x_0 - x'_0||
        between the model's initial state 0 and FADE_STARTS states drawn in [-1, 1] (a fixed generator: the global
        one is left alone); it stops early once below FADE_TOLERANCE. Starting from 0 matters: without bias, 0 is a
        fixed point, and a spectral radius above 1 can make it unstable while random states all fall together."""
        steps = fade_steps(self.a) if steps is None else steps
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(FADE_STARTS + 1, self.units, generator=generator, dtype=torch.float64) * 2 - 1
        x[0] = 0
        start = (x[1:] - x[0]).norm(dim=1)
        w, b = self.w.detach().double().cpu(), self.b.detach().double().cpu()
        ratio = 1.0
        for t in range(steps):
            x = (1 - self.a) * x + self.a * torch.tanh(x @ w.T + b)
            if t % 50 == 49 or t == steps - 1:
                ratio = float(((x[1:] - x[0]).norm(dim=1) / start).max())
                if ratio < FADE_TOLERANCE:
                    break
        return ratio

    def warn_if_states_do_not_fade(self) -> None:
        ratio = self.fading_ratio()
        if ratio >= FADE_TOLERANCE:
            log.warning(
                "model=esn: without input the reservoir's states do not fade (spectral radius %g, leak rate %g: states started "
                "apart are still up to %.3g of that distance apart after %d steps), so the echo-state property is not "
                "guaranteed: only the input can make the states forget where they started (a spectral radius below 1 "
                "usually fades)",
                self.spectral_radius, self.a, ratio, fade_steps(self.a),
            )


def fade_steps(leak_rate: float) -> int:
    """FADE_STEPS steps of a unit without leak; a leaky unit's time constant is 1 / a steps: FADE_STEPS / a (at most
    10 FADE_STEPS)."""
    return min(round(FADE_STEPS / leak_rate), 10 * FADE_STEPS)


# ------------------------------------------------------------------ weights
def normal(k: int) -> Tensor:
    return torch.randn(k, dtype=torch.float64)


def signs(k: int) -> Tensor:
    """+-1 with probability 1/2 each (reservoirpy's bernoulli initialiser)."""
    return torch.randint(0, 2, (k,)).to(torch.float64) * 2 - 1


def uniform(k: int) -> Tensor:
    """U[-1, 1] (Sussillo & Abbott's feedback weights, 2 (rand - 0.5))."""
    return torch.rand(k, dtype=torch.float64) * 2 - 1


def sparse_draw(rows: int, cols: int, fraction: float, values) -> Tensor:
    """A [rows, cols] float64 matrix with round(fraction * rows * cols) entries (at least one) drawn by `values`
    at random positions and zeros elsewhere."""
    total = rows * cols
    count = max(1, round(fraction * total))
    flat = torch.zeros(total, dtype=torch.float64)
    flat[torch.randperm(total)[:count]] = values(count)
    return flat.view(rows, cols)


def scale_to_spectral_radius(w: Tensor, radius: float, exact_up_to: int = EXACT_UP_TO) -> Tensor:
    """W * radius / rho(W) (reservoirpy's convention; a W with rho = 0 is left at 0, as its epsilon floor does)."""
    rho = spectral_radius(w, exact_up_to)
    return w * (radius / max(rho, 1e-8))


def spectral_radius(w: Tensor, exact_up_to: int = EXACT_UP_TO) -> float:
    """max |eigenvalue| of W: from every eigenvalue up to `exact_up_to` rows, else by restarted Arnoldi iteration."""
    w = w.detach().to(torch.float64).cpu()
    if len(w) <= exact_up_to:
        return float(torch.linalg.eigvals(w).abs().max())
    return arnoldi_spectral_radius(w)


def arnoldi_spectral_radius(w: Tensor, krylov: int = 64, restarts: int = 1000, tol: float = 1e-10) -> float:
    """The largest-magnitude eigenvalue's modulus by explicitly restarted Arnoldi iteration (float64).

    Each cycle builds an orthonormal Krylov basis Q of W from v (the all-ones vector first, as reservoirpy's eigs
    call), H = Q^T W Q (upper Hessenberg), and takes H's largest-magnitude eigenvalue (a Ritz value). Its residual
    ||W y - lambda y|| is |h_{m+1,m}| |e_m^T s| for the Ritz vector y = Q s; the cycle restarts from y (its real
    and imaginary parts summed: a complex pair's plane) until that residual is below tol * |lambda|."""
    n = len(w)
    m = min(krylov, n)
    v = torch.ones(n, dtype=torch.float64)
    scale = float(w.abs().sum(dim=1).max())  # ||W||_inf bounds every |eigenvalue|
    radius = 0.0
    for _ in range(restarts):
        q = torch.zeros(n, m + 1, dtype=torch.float64)
        h = torch.zeros(m + 1, m, dtype=torch.float64)
        q[:, 0] = v / v.norm()
        size = m
        for j in range(m):
            z = w @ q[:, j]
            for _ in range(2):  # Gram-Schmidt twice keeps the basis orthogonal in floating point
                c = q[:, : j + 1].T @ z
                z = z - q[:, : j + 1] @ c
                h[: j + 1, j] += c
            h[j + 1, j] = z.norm()
            if h[j + 1, j] <= 1e-14 * scale:  # an invariant subspace: its Ritz values are eigenvalues of W
                size = j + 1
                break
            q[:, j + 1] = z / h[j + 1, j]
        values, vectors = torch.linalg.eig(h[:size, :size])
        k = int(values.abs().argmax())
        radius = float(values[k].abs())
        residual = float(h[size, size - 1].abs() * vectors[size - 1, k].abs())
        if residual <= tol * max(radius, 1e-300) or size < m:
            return radius
        y = q[:, :size].to(values.dtype) @ vectors[:, k]
        v = y.real + y.imag
    log.warning("the spectral radius did not converge in %d Arnoldi cycles: %g is an estimate", restarts, radius)
    return radius
