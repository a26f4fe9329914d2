"""Zipser & Andersen (1988, Nature 331:679): retinal position + eye position -> head-centred position.

One example: a spot at retinal position r (degrees, x and y) seen with the eye at position e; the
target is where the spot is relative to the head, h = r + e. Retina, eye and head all span
-40..+40 degrees here; pairs whose h falls outside are redrawn (rejection), so every target lies on
the output grid.

    input  = [retina (8 x 8 Gaussian units) | eye position (4 x 8 monotonic units, or 2 values)]
    target = [head-centred code (8 x 8 Gaussian map, or 4 x 8 monotonic units) | h in degrees (2)]

The two last target columns carry the true position, so the task's metric (the localisation error
in degrees, decoded from the output) needs no other input; the loss reads the code columns only.

Codes (the paper's formats):
- Gaussian units on an 8 x 8 grid of centres c: activity exp(-|p - c|^2 / w^2), falling to 1/e at
  w degrees from the centre (w = `spot_width_deg`, 15 by default: the paper's 1/e width of the
  retinal fields as we recall it; we could not retrieve the paper's methods text here).
- monotonic units, per axis 8 with a positive and 8 with a negative slope (as area 7a's eye-position
  cells), intercepts spread over the range: 0.5 + s (p - c_k) / (4 E), linear and inside [0, 1]
  for |p|, |c_k| <= E (so a sigmoid unit can produce it).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torchmetrics
from torch import Tensor

from learnbench.data.in_memory import InMemoryDataModule, Splits
from learnbench.options import Interval, NonNegativeInt, Positive, PositiveInt
from learnbench.tasks import Task, register_task

GRID = 8  # units per axis of every Gaussian map
EXTENT_DEG = 40.0  # retina, eye and head positions span -EXTENT_DEG..+EXTENT_DEG
MONOTONIC_PER_SLOPE = 8  # monotonic units per axis and slope sign
GAUSSIAN_MAP, MONOTONIC, LINEAR = "gaussian_map", "monotonic", "linear"


def grid_centres(n: int = GRID, extent: float = EXTENT_DEG) -> Tensor:
    """The n centres per axis, evenly from -extent to +extent (float64)."""
    return torch.linspace(-extent, extent, n, dtype=torch.float64)


def grid_step(n: int = GRID, extent: float = EXTENT_DEG) -> float:
    return 2 * extent / (n - 1)


# ---- encoders: positions [batch, 2] in degrees -> unit activities ---------------------------------


def gaussian_map(positions: Tensor, width_deg: float, n: int = GRID, extent: float = EXTENT_DEG) -> Tensor:
    """[batch, n*n] activities, row-major (index = iy * n + ix), peak 1 at a unit's centre."""
    c = grid_centres(n, extent).to(positions)
    dx = positions[:, 0:1] - c  # [batch, n] along x
    dy = positions[:, 1:2] - c
    maps = torch.exp(-(dy.unsqueeze(2) ** 2 + dx.unsqueeze(1) ** 2) / width_deg**2)  # [batch, y, x]
    return maps.flatten(1)


def monotonic_slopes_and_intercepts(extent: float = EXTENT_DEG) -> tuple[Tensor, Tensor]:
    """Per axis: slope signs [2k] (+1 x k, -1 x k) and intercepts [2k] spread over the range."""
    k = MONOTONIC_PER_SLOPE
    intercepts = torch.linspace(-extent, extent, k, dtype=torch.float64).repeat(2)
    signs = torch.cat([torch.ones(k, dtype=torch.float64), -torch.ones(k, dtype=torch.float64)])
    return signs, intercepts


def monotonic_code(positions: Tensor, extent: float = EXTENT_DEG) -> Tensor:
    """[batch, 2 axes * 2 slopes * 8] = [batch, 32]: x units first, then y units."""
    signs, intercepts = (t.to(positions) for t in monotonic_slopes_and_intercepts(extent))
    per_axis = [0.5 + signs * (positions[:, a : a + 1] - intercepts) / (4 * extent) for a in (0, 1)]
    return torch.cat(per_axis, dim=1)


def linear_code(positions: Tensor, extent: float = EXTENT_DEG) -> Tensor:
    """[batch, 2]: the position itself, scaled to [-1, 1]."""
    return positions / extent


ENCODERS = {MONOTONIC: monotonic_code, LINEAR: linear_code}


# ---- decoders: unit activities -> positions [batch, 2] in degrees ---------------------------------


def decode_gaussian_map(maps: Tensor, n: int = GRID, extent: float = EXTENT_DEG) -> Tensor:
    """The peak of an 8 x 8 map: on the row and column through the most active unit, a parabola
    through the log activities of three neighbouring units (moved inwards at the edges).

    The log of a Gaussian is a parabola, so this is exact for a noise-free map of any width,
    wherever the spot lies (also between centres and at the edges). A flat or inverted parabola
    (possible for a network's output) falls back to the peak unit's centre; the result is clipped
    to the grid's extent (every target lies inside it).
    """
    grid = maps.reshape(-1, n, n).double().clamp_min(1e-30)
    rows = torch.arange(len(grid))
    peak = grid.flatten(1).argmax(1)
    iy, ix = peak // n, peak % n
    x = _parabola_peak(grid[rows, iy, :].log(), ix, n, extent)  # the row through the peak: varies x
    y = _parabola_peak(grid[rows, :, ix].log(), iy, n, extent)
    return torch.stack([x, y], dim=1).to(maps.dtype)


def _parabola_peak(log_profile: Tensor, peak: Tensor, n: int, extent: float) -> Tensor:
    """Vertex of the parabola through (i-1, i, i+1) of each row of `log_profile` [batch, n], i the
    peak moved inside [1, n-2]; in degrees."""
    centre = peak.clamp(1, n - 2)
    rows = torch.arange(len(log_profile))
    left, mid, right = (log_profile[rows, centre + d] for d in (-1, 0, 1))
    curvature = left - 2 * mid + right
    offset = 0.5 * (left - right) / curvature  # in grid steps from `centre`
    concave = curvature < -1e-12
    index = torch.where(concave, centre + offset, peak.double())
    degrees = -extent + index * grid_step(n, extent)
    return degrees.clamp(-extent, extent)


def decode_monotonic(code: Tensor, extent: float = EXTENT_DEG) -> Tensor:
    """Least squares over the 16 units of each axis: each unit's activity gives p = c + s (r - 0.5) 4E
    (all slopes equal in size, so the fit is the mean of these); exact for a noise-free code."""
    signs, intercepts = (t.to(code.device) for t in monotonic_slopes_and_intercepts(extent))
    per_axis = code.double().reshape(-1, 2, 2 * MONOTONIC_PER_SLOPE)
    estimates = intercepts + signs * (per_axis - 0.5) * 4 * extent
    return estimates.mean(dim=2).to(code.dtype)


DECODERS = {GAUSSIAN_MAP: decode_gaussian_map, MONOTONIC: decode_monotonic}


# ---- the data -----------------------------------------------------------------------------------


def sample_positions(
    count: int, eye_range_deg: float, generator: torch.Generator, extent: float = EXTENT_DEG
) -> tuple[Tensor, Tensor]:
    """Retinal positions uniform on the retina, eye positions uniform in +-eye_range_deg, redrawn
    until retina + eye lies inside the head-centred range: (retina, eye), each [count, 2], float64."""
    kept_retina, kept_eye, kept = [], [], 0
    while kept < count:
        retina = (torch.rand(2 * count, 2, generator=generator, dtype=torch.float64) * 2 - 1) * extent
        eye = (torch.rand(2 * count, 2, generator=generator, dtype=torch.float64) * 2 - 1) * eye_range_deg
        inside = ((retina + eye).abs() <= extent).all(dim=1)
        kept_retina.append(retina[inside])
        kept_eye.append(eye[inside])
        kept += int(inside.sum())
    return torch.cat(kept_retina)[:count], torch.cat(kept_eye)[:count]


class ZipserAndersenDataModule(InMemoryDataModule):
    """Coordinate transform: inputs [retina 64 | eye 32 or 2], targets [head-centred code | h (2)]."""

    split_options = {"train": "data.train_size", "val": "data.val_size", "test": "data.test_size"}

    def __init__(
        self,
        eye_encoding: Literal["monotonic", "linear"] = MONOTONIC,
        output_encoding: Literal["gaussian_map", "monotonic"] = GAUSSIAN_MAP,
        spot_width_deg: Positive = 15.0,
        eye_range_deg: Annotated[float, Interval(gt=0, le=40)] = 20.0,  # <= EXTENT_DEG
        train_size: PositiveInt = 8000,
        val_size: PositiveInt = 1000,
        test_size: PositiveInt = 2000,
        data_seed: NonNegativeInt = 1234,
        **batching,
    ):
        super().__init__(**batching)
        if eye_encoding not in ENCODERS:
            raise ValueError(f"data.eye_encoding={eye_encoding!r}: choose one of {sorted(ENCODERS)}")
        if output_encoding not in DECODERS:
            raise ValueError(f"data.output_encoding={output_encoding!r}: choose one of {sorted(DECODERS)}")
        if not 0 < eye_range_deg <= EXTENT_DEG:
            raise ValueError(
                f"data.eye_range_deg={eye_range_deg}: must lie in (0, {EXTENT_DEG:g}] (retina + eye must reach the "
                f"head-centred range -{EXTENT_DEG:g}..+{EXTENT_DEG:g})"
            )
        self.eye_encoding, self.output_encoding = eye_encoding, output_encoding
        self.spot_width_deg, self.eye_range_deg, self.data_seed = spot_width_deg, eye_range_deg, data_seed
        self.sizes = (train_size, val_size, test_size)
        eye_units = 2 if eye_encoding == LINEAR else 4 * MONOTONIC_PER_SLOPE
        self.input_shape = (GRID * GRID + eye_units,)
        self.output_dim = GRID * GRID if output_encoding == GAUSSIAN_MAP else 4 * MONOTONIC_PER_SLOPE
        self.task = HEAD_CENTRED_TASKS[output_encoding]

    def encode_inputs(self, retina: Tensor, eye: Tensor) -> Tensor:
        """[batch, input size] float32 from positions in degrees (also what the gain-field analysis probes)."""
        return torch.cat([gaussian_map(retina, self.spot_width_deg), ENCODERS[self.eye_encoding](eye)], dim=1).float()

    def encode_targets(self, head: Tensor) -> Tensor:
        code = gaussian_map(head, self.spot_width_deg) if self.output_encoding == GAUSSIAN_MAP else monotonic_code(head)
        return torch.cat([code, head], dim=1).float()

    def make_split(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        retina, eye = sample_positions(count, self.eye_range_deg, generator)
        return self.encode_inputs(retina, eye), self.encode_targets(retina + eye)

    def load_splits(self) -> Splits:
        # Each split from its own generator: changing the test size never changes the training set.
        return Splits(*(self.make_split(n, torch.Generator().manual_seed(self.data_seed + i)) for i, n in enumerate(self.sizes)))


# ---- the task: loss on the code, error in degrees decoded from the output -------------------------


class HeadCentredLocalisation(Task):
    """Sigmoid output units (the paper's): the model's readout is their pre-activation and the task
    applies the sigmoid, so every rule sees the same loss of the same output units (a local rule's
    error at the last block is the error at those units' input, as in a network with sigmoid outputs).

    Loss: half the squared error summed over the code's units, the paper's E = 1/2 sum (t - o)^2 (the
    true position columns are not part of it; a mean over 64 units would shrink every step 64-fold).
    Metric `loc_err_deg`: Euclidean distance in degrees between the position decoded from the output
    and the true head-centred position.
    """

    def __init__(self, encoding: str):
        self.encoding = encoding
        self.name = f"head_centred_{'map' if encoding == GAUSSIAN_MAP else encoding}"

    def activities(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return 0.5 * (self.activities(output) - target[:, :-2]).pow(2).sum(dim=1)

    def localisation_error(self, output: Tensor, target: Tensor) -> Tensor:
        decoded = DECODERS[self.encoding](self.activities(output).detach())
        return (decoded - target[:, -2:]).norm(dim=1)

    def metrics(self, num_outputs: int) -> dict[str, torchmetrics.Metric]:
        return {"loc_err_deg": torchmetrics.MeanMetric()}

    def update(self, metrics, output, target):
        metrics["loc_err_deg"].update(self.localisation_error(output, target))


HEAD_CENTRED_TASKS = {encoding: register_task(HeadCentredLocalisation(encoding)).name for encoding in DECODERS}
