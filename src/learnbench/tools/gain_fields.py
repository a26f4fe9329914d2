"""Gain fields of a network trained on data=zipser_andersen (Zipser & Andersen 1988; Andersen et al. 1985).

    python -m learnbench.tools.gain_fields <run or multirun dirs...> [--figures DIR] [--out table.md]

For every finished run found (results.json with a checkpoint): each hidden unit's response to a
spot at every retinal position of a 17 x 17 probe grid, at each eye position of a 3 x 3 grid
(+-eye_range_deg, the monkeys' fixation grid); a figure per run (one block of 3 x 3 heatmaps per
unit, arranged as the eye positions, one colour scale per unit, so a gain field shows as the same
receptive field at different brightness); and one number per unit:

    gain(e)  = the unit's response to the spot at its preferred retinal position (the probe position
               with the largest mean response over eye positions), at eye position e
    planar R^2 = 1 - SS_res / SS_tot of the least-squares plane gain(e) ~ a + b e_x + c e_y

A unit has a gain field when its gain changes by at least --min-modulation (0.05, in activity units
of a sigmoid unit, 0..1) over the eye positions: saturated or silent units (a flat response) have
none, and a plane fits their near-constant gain trivially. Of the units with a gain field, those with
R^2 >= --planar-threshold (0.9) are planar. The table (Markdown) gives, per rule, the test
localisation error, the units with a gain field, the median R^2 and the planar fraction among them,
mean +- std over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from learnbench.checkpoints import load_module
from learnbench.data.zipser_andersen import EXTENT_DEG
from learnbench.results import OK

RETINA_PROBES = 17  # probe positions per axis, -40..+40 deg (5 deg apart)
EYE_PROBES = 3  # eye positions per axis: -range, 0, +range
NO_GAIN_FIELD = 1e-10  # total sum of squares below this: the gain does not vary with eye position


# ---- the numbers -------------------------------------------------------------------------------------


def planar_r2(gain: Tensor, eye: Tensor) -> float:
    """R^2 of the least-squares plane through gain [n] over eye positions [n, 2]; NaN without variation."""
    gain, eye = gain.double(), eye.double()
    design = torch.cat([torch.ones(len(eye), 1, dtype=torch.float64), eye], dim=1)
    coefficients = torch.linalg.lstsq(design, gain.unsqueeze(1)).solution
    residual = gain - (design @ coefficients).squeeze(1)
    total = ((gain - gain.mean()) ** 2).sum()
    if total < NO_GAIN_FIELD:
        return float("nan")
    return float(1 - (residual**2).sum() / total)


def probe_positions(eye_range_deg: float) -> tuple[Tensor, Tensor]:
    """Retinal probes [R*R, 2] (row-major, y then x) and eye positions [E*E, 2] (same order), degrees."""
    retina_axis = torch.linspace(-EXTENT_DEG, EXTENT_DEG, RETINA_PROBES, dtype=torch.float64)
    eye_axis = torch.linspace(-eye_range_deg, eye_range_deg, EYE_PROBES, dtype=torch.float64)
    return _grid(retina_axis), _grid(eye_axis)


def _grid(axis: Tensor) -> Tensor:
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


@torch.no_grad()
def hidden_responses(model, datamodule, retina: Tensor, eye: Tensor, layer: int = 0) -> Tensor:
    """[units, eye positions, retinal positions]: the output of hidden block `layer` for every pair."""
    pairs_retina = retina.repeat(len(eye), 1)  # eye-major: all retinal probes at eye 0, then at eye 1, ...
    pairs_eye = eye.repeat_interleave(len(retina), dim=0)
    h = datamodule.encode_inputs(pairs_retina, pairs_eye)
    for block in model.blocks[: layer + 1]:
        h = block(h)
    return h.reshape(len(eye), len(retina), -1).permute(2, 0, 1)


def gains(responses: Tensor) -> Tensor:
    """[units, eye positions]: each unit's response at its preferred retinal position."""
    preferred = responses.mean(dim=1).argmax(dim=1)  # [units]
    return responses[torch.arange(len(responses)), :, preferred]


def unit_r2(responses: Tensor, eye: Tensor) -> list[float]:
    return [planar_r2(g, eye) for g in gains(responses)]


def modulated(responses: Tensor, min_modulation: float) -> list[bool]:
    """Per unit: does its gain change by at least `min_modulation` over the eye positions?"""
    g = gains(responses)
    return [bool(x) for x in (g.max(dim=1).values - g.min(dim=1).values) >= min_modulation]


def planar_fraction(r2: list[float], threshold: float) -> float:
    """Fraction of the given units (those with a gain field) whose plane fits with R^2 >= threshold."""
    return sum(1 for r in r2 if r == r and r >= threshold) / len(r2) if r2 else float("nan")


# ---- the figure --------------------------------------------------------------------------------------


def draw_gain_fields(responses: Tensor, r2: list[float], has_field: list[bool], title: str, path: Path) -> None:
    """One block per unit (5 per row), each a 3 x 3 grid of retinal heatmaps placed as the eye positions
    (top row: eye up), one colour scale per unit from 0 to its largest response; units without a gain
    field are titled 'flat'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = len(responses)
    columns = min(5, units)
    rows = -(-units // columns)
    figure = plt.figure(figsize=(1.5 * columns, 1.6 * rows + 0.4))
    outer = figure.add_gridspec(rows, columns, wspace=0.15, hspace=0.35)
    maps = responses.reshape(units, EYE_PROBES, EYE_PROBES, RETINA_PROBES, RETINA_PROBES)  # [u, ey, ex, ry, rx]
    for unit in range(units):
        inner = outer[unit // columns, unit % columns].subgridspec(EYE_PROBES, EYE_PROBES, wspace=0.05, hspace=0.05)
        top = float(maps[unit].max())
        for ey in range(EYE_PROBES):
            for ex in range(EYE_PROBES):
                ax = figure.add_subplot(inner[EYE_PROBES - 1 - ey, ex])  # eye up at the top
                ax.imshow(maps[unit, ey, ex].numpy(), origin="lower", vmin=0, vmax=max(top, 1e-6), cmap="viridis")
                ax.set_xticks([]), ax.set_yticks([])
                if ey == EYE_PROBES - 1 and ex == EYE_PROBES // 2:
                    label = f"R²={r2[unit]:.2f}" if has_field[unit] else "flat"
                    ax.set_title(f"unit {unit}  {label}", fontsize=6)
    figure.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


# ---- runs --------------------------------------------------------------------------------------------


def find_runs(dirs: list[str]) -> list[dict]:
    """Finished runs (status ok, with checkpoints/last.ckpt) under the given dirs, sorted by method, seed."""
    runs = []
    for directory in dirs:
        for results in sorted(Path(directory).rglob("results.json")):
            record = json.loads(results.read_text())
            checkpoint = results.parent / "checkpoints" / "last.ckpt"
            if record.get("status") == OK and checkpoint.is_file():
                runs.append({**record, "checkpoint": checkpoint})
            else:
                print(f"skipped {results.parent}: status {record.get('status')}, checkpoint {checkpoint.is_file()}", file=sys.stderr)
    return sorted(runs, key=lambda r: (str(r.get("method")), r.get("seed", 0)))


def analyse_run(run: dict, threshold: float, min_modulation: float, figures: Path | None, layer: int = 0) -> dict:
    module = load_module(run["checkpoint"]).eval()
    data_cfg = OmegaConf.create(module.hparams["config"]["data"])
    if "ZipserAndersen" not in data_cfg._target_:
        raise ValueError(f"{run['checkpoint']}: trained on {data_cfg._target_}, not data=zipser_andersen")
    datamodule = instantiate(data_cfg)
    retina, eye = probe_positions(datamodule.eye_range_deg)
    responses = hidden_responses(module.model, datamodule, retina, eye, layer)
    r2 = unit_r2(responses, eye)
    has_field = modulated(responses, min_modulation)
    with_field = [r for r, m in zip(r2, has_field) if m]
    fraction = planar_fraction(with_field, threshold)
    name = f"{run.get('method')}_seed{run.get('seed')}"
    if figures is not None:
        loc = run["metrics"]["final"].get("test/loc_err_deg", float("nan"))
        title = f"{run.get('method')} seed {run.get('seed')}: test error {loc:.2f} deg, {len(with_field)} units with a gain field, {fraction:.0%} of them planar"
        draw_gain_fields(responses, r2, has_field, title, figures / f"gain_fields_{name}.png")
    return {
        "method": run.get("method"),
        "seed": run.get("seed"),
        "loc_err_deg": run["metrics"]["final"].get("test/loc_err_deg", float("nan")),
        "r2": with_field,
        "units": len(r2),
        "planar_fraction": fraction,
    }


def _mean_std(values: list[float], digits: int) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summary_table(results: list[dict], threshold: float) -> str:
    """Markdown, one row per rule: seeds, test error (deg), units with a gain field, their median planar
    R^2 and planar fraction."""
    lines = [
        f"| method | seeds | test/loc_err_deg | units with a gain field | median planar R² | planar fraction (R² ≥ {threshold:g}) |",
        "|---|---|---|---|---|---|",
    ]
    for method in sorted({r["method"] for r in results}):
        rows = [r for r in results if r["method"] == method]
        medians = [statistics.median([x for x in r["r2"] if x == x] or [float("nan")]) for r in rows]
        lines.append(
            f"| {method} | {len(rows)} | {_mean_std([r['loc_err_deg'] for r in rows], 2)} | "
            f"{_mean_std([len(r['r2']) for r in rows], 1)} / {rows[0]['units']} | "
            f"{_mean_std(medians, 3)} | {_mean_std([r['planar_fraction'] for r in rows], 2)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learnbench.tools.gain_fields", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="run or multirun directories (searched for results.json)")
    parser.add_argument("--figures", type=Path, help="draw one gain-field figure per run into DIR (PNG)")
    parser.add_argument("--out", type=Path, help="write the Markdown table here instead of stdout")
    parser.add_argument("--planar-threshold", type=float, default=0.9, help="R² from which a unit counts as planar")
    parser.add_argument("--min-modulation", type=float, default=0.05, help="gain change over eye positions from which "
                        "a unit has a gain field (activity units)")
    parser.add_argument("--layer", type=int, default=0, help="which hidden block to probe (0: the first)")
    args = parser.parse_args(argv)
    runs = find_runs(args.dirs)
    if not runs:
        print(f"no finished run with a checkpoint under {', '.join(args.dirs)}", file=sys.stderr)
        return 2
    results = [analyse_run(run, args.planar_threshold, args.min_modulation, args.figures, args.layer) for run in runs]
    table = summary_table(results, args.planar_threshold)
    if args.out:
        args.out.write_text(table)
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
