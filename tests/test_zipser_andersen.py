"""data=zipser_andersen and the gain-field analysis, each against an oracle written here.

- the generator: the inputs read back by closed forms (log ratios of two Gaussian units, one
  monotonic unit's line) give retina and eye; the target position is their sum, inside the grid;
- the decoders: a code built for a position decodes back to it (far below the 11.4 deg grid step),
  also between unit centres and at the edges, and a map shifted by d scores an error of |d|;
- the planar fit: an exact planar gain field gives R^2 = 1, random gains a low R^2;
- every comparable rule composes and takes a few training steps on the task (a finite error in range).
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from conftest import TINY, compose_config, tiny
from learnbench.catalog import comparable_rules
from learnbench.data.zipser_andersen import (
    EXTENT_DEG,
    GRID,
    HeadCentredLocalisation,
    ZipserAndersenDataModule,
    decode_gaussian_map,
    decode_monotonic,
    gaussian_map,
    grid_centres,
    monotonic_code,
)
from learnbench.tasks import get_task
from learnbench.tools.gain_fields import gains, modulated, planar_fraction, planar_r2, unit_r2
from learnbench.train import ConfigError, train

STEP = 2 * EXTENT_DEG / (GRID - 1)


def read_gaussian_map(maps: torch.Tensor, width: float) -> torch.Tensor:
    """Closed form: for units i, j on one row, ln(r_i / r_j) = ((p - c_j)^2 - (p - c_i)^2) / w^2, linear in p.
    Read from the peak unit and its right (upper) neighbour, both well above float32's floor."""
    c = grid_centres().float()
    grid = maps.reshape(-1, GRID, GRID).double()
    peak = grid.flatten(1).argmax(1)
    iy, ix = (peak // GRID).clamp(max=GRID - 2), (peak % GRID).clamp(max=GRID - 2)
    rows = torch.arange(len(grid))
    positions = []
    for i, j, ratio in (
        (ix, ix + 1, grid[rows, iy, ix + 1] / grid[rows, iy, ix]),  # along x, on the peak's row
        (iy, iy + 1, grid[rows, iy + 1, ix] / grid[rows, iy, ix]),
    ):
        ci, cj = c[i].double(), c[j].double()
        positions.append((width**2 * ratio.log() + cj**2 - ci**2) / (2 * (cj - ci)))
    return torch.stack(positions, dim=1)


@pytest.mark.parametrize("eye_range", [20.0, 40.0])
def test_target_is_retina_plus_eye_inside_the_grid(eye_range):
    data = ZipserAndersenDataModule(train_size=500, val_size=10, test_size=10, eye_range_deg=eye_range)
    x, y = data.load_splits().train
    retina = read_gaussian_map(x[:, : GRID * GRID], data.spot_width_deg)
    # eye x: the first positive-slope unit (intercept -E): r = 0.5 + (e + E) / 4E; eye y: the 17th unit
    eye = torch.stack([(x[:, 64 + k].double() - 0.5) * 4 * EXTENT_DEG - EXTENT_DEG for k in (0, 16)], dim=1)
    head = y[:, -2:].double()
    assert torch.allclose(head, retina + eye, atol=1e-3)
    assert head.abs().max() <= EXTENT_DEG and retina.abs().max() <= EXTENT_DEG + 1e-3
    assert eye.abs().max() <= eye_range + 1e-3
    assert eye.abs().max() > 0.9 * eye_range  # the range is used, not just respected
    assert torch.allclose(read_gaussian_map(y[:, :-2], data.spot_width_deg), head, atol=1e-3)  # the target code


def test_shapes_follow_the_encodings():
    for eye, out, inputs, outputs in [("monotonic", "gaussian_map", 96, 64), ("linear", "monotonic", 66, 32)]:
        data = ZipserAndersenDataModule(eye_encoding=eye, output_encoding=out, train_size=20, val_size=5, test_size=5)
        x, y = data.load_splits().train
        assert data.input_shape == (inputs,) and x.shape == (20, inputs)
        assert data.output_dim == outputs and y.shape == (20, outputs + 2)
    x, y = ZipserAndersenDataModule(eye_encoding="linear", train_size=50, val_size=5, test_size=5).load_splits().train
    assert torch.allclose(x[:, 64:] * EXTENT_DEG + read_gaussian_map(x[:, :64], 15.0).float(), y[:, -2:], atol=1e-3)


def probe_positions_everywhere() -> torch.Tensor:
    """On unit centres, half-way between them, at the edges and corners."""
    axis = torch.linspace(-EXTENT_DEG, EXTENT_DEG, 4 * (GRID - 1) + 1, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


@pytest.mark.parametrize("width", [8.0, 15.0, 25.0])
def test_gaussian_map_round_trip(width):
    p = probe_positions_everywhere()
    decoded = decode_gaussian_map(gaussian_map(p, width))
    assert (decoded - p).abs().max() < 1e-6 * STEP


def test_monotonic_round_trip_and_range():
    p = probe_positions_everywhere()
    code = monotonic_code(p)
    assert code.min() >= 0 and code.max() <= 1  # a sigmoid unit can produce it
    assert (decode_monotonic(code) - p).abs().max() < 1e-9


@pytest.mark.parametrize("encoding", ["gaussian_map", "monotonic"])
def test_localisation_error_is_the_distance_to_the_decoded_position(encoding):
    """Oracle: the output units (sigmoid of the readout) produce the exact code of p + d: error |d| in degrees."""
    task = get_task(HeadCentredLocalisation(encoding).name)
    p = torch.tensor([[0.0, 0.0], [10.0, -20.0], [-30.0, 25.0]], dtype=torch.float64)
    d = torch.tensor([[3.0, 4.0], [0.0, 0.0], [-6.0, 8.0]], dtype=torch.float64)
    encode = (lambda q: gaussian_map(q, 15.0)) if encoding == "gaussian_map" else monotonic_code
    code = encode(p + d).clamp(1e-12, 1 - 1e-12)
    output = torch.log(code / (1 - code))  # logit: the sigmoid output units give back the code
    target = torch.cat([encode(p), p], dim=1)
    assert torch.allclose(task.localisation_error(output, target), torch.tensor([5.0, 0.0, 10.0], dtype=torch.float64), atol=1e-5)
    assert task.loss(torch.log(encode(p) / (1 - encode(p))), target).abs().max() < 1e-12  # zero at the target


def eye_grid(n: int) -> torch.Tensor:
    axis = torch.linspace(-20, 20, n, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


def test_planar_fit_is_one_for_an_exact_planar_gain_field():
    """Units built as receptive field x planar gain: gain(e) = a + b e_x + c e_y at every retinal position."""
    eye = eye_grid(3)
    retina = torch.linspace(-40, 40, 17, dtype=torch.float64)
    receptive_field = torch.exp(-((retina - 10) ** 2) / 200)  # peak at 10 deg: the preferred position
    planes = [(0.5, 0.01, -0.005), (0.3, -0.002, 0.01)]
    responses = torch.stack(
        [torch.outer(a + b * eye[:, 0] + c * eye[:, 1], receptive_field) for a, b, c in planes]
    )  # [units, eye, retina]
    assert torch.allclose(gains(responses), torch.stack([a + b * eye[:, 0] + c * eye[:, 1] for a, b, c in planes]))
    assert unit_r2(responses, eye) == pytest.approx([1.0, 1.0], abs=1e-12)


def test_planar_fit_is_low_for_random_gains_and_undefined_for_constant_ones():
    eye = eye_grid(5)
    generator = torch.Generator().manual_seed(0)
    r2 = [planar_r2(torch.rand(len(eye), generator=generator, dtype=torch.float64), eye) for _ in range(20)]
    assert max(r2) < 0.5 and sum(r2) / len(r2) < 0.2  # expected about (3 - 1) / (25 - 1) = 0.08
    assert math.isnan(planar_r2(torch.full((len(eye),), 0.7, dtype=torch.float64), eye))
    flat = torch.full((1, len(eye), 4), 0.99, dtype=torch.float64)
    assert modulated(flat, 0.05) == [False]
    assert planar_fraction([1.0, 0.95, 0.5, float("nan")], 0.9) == 0.5


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("data.eye_encoding=polar", "eye_encoding"),
        ("data.output_encoding=vector", "output_encoding"),
        ("data.spot_width_deg=0", "spot_width_deg"),
        ("data.eye_range_deg=50", "eye_range_deg"),
    ],
)
def test_bad_options_are_refused_with_the_key(option, message, tmp_path):
    cfg = compose_config(["experiment=zipser_andersen", option, *TINY, "logger=csv"], tmp_path)
    with pytest.raises((ConfigError, ValueError), match=message):
        train(cfg)


def short_run_config(method: str, tmp_path, epochs: int = 1, batches: int = 10):
    overrides = ["experiment=zipser_andersen", f"method={method}", "logger=csv", *tiny(batches, epochs),
                 "data.train_size=500", "data.val_size=100", "data.test_size=100"]
    if method in ("wp", "np", "fg_w", "fg_a"):
        overrides.append("method.table_size=1048576")  # drawing the default 16 M table is slow
    return compose_config(overrides, tmp_path)


def short_run(method: str, tmp_path, epochs: int = 1, batches: int = 10) -> dict:
    return train(short_run_config(method, tmp_path, epochs, batches))


@pytest.mark.parametrize("method", comparable_rules("feedforward"))
def test_every_rule_trains_on_the_task(method, tmp_path):
    cfg = short_run_config(method, tmp_path)
    record = train(cfg)
    assert record["status"] == "ok", record["message"]
    # ten batches: ten optimiser steps, or T per batch for a rule that steps at every inference step (per_step iPC)
    assert record["steps"] == 10 * instantiate(cfg.method).updates_per_batch
    final = record["metrics"]["final"]
    assert math.isfinite(final["test/loc_err_deg"]) and 0 <= final["test/loc_err_deg"] <= 2 * math.sqrt(2) * EXTENT_DEG
