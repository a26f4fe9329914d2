"""Spike rasters and membrane traces of a trained spiking network on one test example:
`python -m learnbench.tools.raster <run dir or .ckpt> [--example 0] [--out raster.png]`.

Loads the run's checkpoint (learnbench.checkpoints.load_module: the run's own config rebuilds model=snn and its
weights), takes test example `--example` of the run's data (its config's data module, `--data-dir` to read
the data from elsewhere) and draws, over the network's time steps:

    input       the encoded input: a raster for spike codes (latency, rate, spike sequences), the current otherwise
    hidden      every unit's spikes of the last hidden layer
    membranes   a few hidden units' membranes V_t (the most active ones) with the threshold
    readout     each output's trace (the readout's membrane), the true class drawn thick

The arithmetic is the model's own (models/snn.py run_layer with its membranes), not a copy of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from learnbench.checkpoints import load_module
from learnbench.models import SNN
from learnbench.models.snn import run_layer


def checkpoint_path(path: Path) -> Path:
    """A .ckpt as given, or a run directory's checkpoints/last.ckpt (else its only checkpoint)."""
    if path.is_file():
        return path
    found = sorted((path / "checkpoints").glob("*.ckpt")) if (path / "checkpoints").is_dir() else []
    preferred = [p for p in found if p.name == "last.ckpt"] or found
    if not preferred:
        raise SystemExit(f"{path}: no checkpoints/*.ckpt in it; give a run directory written with checkpoints on, or a .ckpt")
    return preferred[0]


def test_example(path: Path, index: int, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Test example `index` of the run's data (x with a batch axis of 1, its target)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    cfg = OmegaConf.create(checkpoint["hyper_parameters"]["config"])
    if data_dir is not None and "data_dir" in cfg.data:
        cfg.data.data_dir = data_dir
    x, y = instantiate(cfg.data).load_splits().test
    return x[index:index + 1], y[index]


@torch.no_grad()
def trajectories(model: SNN, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The encoded input, the last hidden layer's spikes and membranes and the readout's outputs, [steps, ...]."""
    state = model.initial_state(len(x))
    currents = model.input_currents(x)
    for i, layer_state in enumerate(state.hidden):
        if i > 0:
            currents = model.hidden[i](spikes)
        recurrent = model.recurrent if i == len(model.hidden) - 1 else None
        spikes, membranes, _ = run_layer(model.neuron, currents, layer_state, recurrent)
    return {"input": model.encode(x)[0], "spikes": spikes[0], "membranes": membranes[0], "output": model(x)[0]}


def draw(traces: dict[str, torch.Tensor], model: SNN, label: int, out: Path, title: str, shown: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = traces["spikes"].shape[0]
    time = torch.arange(steps) * model.dt
    fig, axes = plt.subplots(4, 1, figsize=(6.5, 8), sharex=True, gridspec_kw={"height_ratios": [2, 2, 1.5, 1.5]})
    inputs = traces["input"]
    if set(inputs.unique().tolist()) <= {0.0, 1.0}:
        t, unit = inputs.nonzero(as_tuple=True)
        axes[0].scatter(time[t], unit, s=1.5, c="k", marker="|")
    else:
        axes[0].imshow(inputs.T, aspect="auto", cmap="Greys", extent=(0, steps * model.dt, inputs.shape[1], 0))
    axes[0].set_ylabel("input")
    t, unit = traces["spikes"].nonzero(as_tuple=True)
    axes[1].scatter(time[t], unit, s=2, c="k", marker="|")
    axes[1].set_ylabel("hidden unit")
    axes[1].set_ylim(-0.5, traces["spikes"].shape[1] - 0.5)
    busiest = traces["spikes"].sum(dim=0).argsort(descending=True)[:shown]
    for unit in busiest.tolist():
        axes[2].plot(time, traces["membranes"][:, unit], lw=0.8, label=f"unit {unit}")
    axes[2].axhline(model.neuron.threshold, color="k", ls="--", lw=0.7)
    axes[2].set_ylabel("membrane V")
    axes[2].legend(fontsize=6, loc="upper right", ncol=2)
    for k in range(traces["output"].shape[1]):
        axes[3].plot(time, traces["output"][:, k], lw=2.2 if k == label else 0.7, color="C3" if k == label else "0.6",
                     label=f"class {k} (true)" if k == label else None)
    axes[3].set_ylabel("readout")
    axes[3].set_xlabel(f"time (ms, dt = {model.dt:g})")
    axes[3].legend(fontsize=7, loc="upper left")
    axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m learnbench.tools.raster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run directory (its checkpoints/last.ckpt) or a .ckpt file")
    parser.add_argument("--example", type=int, default=0, help="index into the test split (default: 0)")
    parser.add_argument("--data-dir", default=None, help="read the data from here instead of the run's paths.data_dir")
    parser.add_argument("--units", type=int, default=4, help="membrane traces drawn: the most active hidden units (default: 4)")
    parser.add_argument("--out", type=Path, default=None, help="the PNG (default: <run dir>/raster_<example>.png)")
    args = parser.parse_args(argv)
    path = checkpoint_path(args.run)
    model = load_module(path).model.eval()
    if not isinstance(model, SNN):
        raise SystemExit(f"{path} holds a {type(model).__name__}, not a spiking network (model=snn): nothing to draw")
    x, y = test_example(path, args.example, args.data_dir)
    label = int(y.flatten()[0]) if y.dim() else int(y)
    traces = trajectories(model, x)
    predicted = int(traces["output"].amax(dim=0).argmax()) if model.loss_over_time == "max_over_time" else int(traces["output"].mean(dim=0).argmax())
    out = args.out or (path.parent.parent / f"raster_{args.example}.png")
    title = (f"test example {args.example}: class {label}, predicted {predicted}; "
             f"{int(traces['spikes'].sum())} hidden spikes over {traces['spikes'].shape[0]} steps")
    draw(traces, model, label, out, title, args.units)
    print(out)
    return out


if __name__ == "__main__":
    main()
