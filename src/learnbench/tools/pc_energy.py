"""Predictive coding's energy over the inference steps, at a few points of a short training run.

    python -m learnbench.tools.pc_energy [--steps 300] [--at 0 10 100 299] [--inference-lr 0.1] [--T 20] [--out docs/img/pc]

Trains model=mlp (2-64-64-2 ReLU) on the default spiral with method=pc (SGD, momentum 0.9) and, at
the chosen training steps, records E after each inference step of that step's batch (the same
inference the update uses: `PredictiveCoding.infer`). One line per training step; a line that rises
is an inference step size above the stability bound for the weights of that moment. Writes
pc_energy.png/.pdf and prints the curves.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch

from learnbench.data import SpiralDataModule
from learnbench.models import MLP
from learnbench.rules.predictive_coding import PredictiveCoding
from learnbench.tasks import per_example_loss


def energy_curves(steps: int, at: list[int], rule_options: dict, lr: float, seed: int = 0) -> dict[int, list[float]]:
    """{training step: [E after inference step 0 .. T]} for the steps in `at`."""
    torch.manual_seed(seed)
    model = MLP(2, 2, (64, 64))
    x, y = SpiralDataModule().load_splits().train
    rule = PredictiveCoding(**rule_options)
    rule.setup(model, seed=seed, rank=0, device=torch.device("cpu"))
    loss_fn = partial(per_example_loss, "classification")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    curves = {}
    for step in range(steps):
        rows = torch.randint(0, len(x), (100,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        if step in at:
            curves[step] = [float(e) for e in rule.infer(model, x[rows], y[rows], loss_fn).energies]
        rule.estimate_grads(model, x[rows], y[rows], loss_fn)
        optimizer.step()
    return curves


def plot(curves: dict[int, list[float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.4, 2.4))
    for step, energies in curves.items():
        ax.plot(range(len(energies)), energies, marker="o", markersize=2, label=f"training step {step}")
    ax.set_xlabel("inference step t")
    ax.set_ylabel("energy E (batch mean)")
    ax.set_yscale("log")
    ax.legend(frameon=False, fontsize=6.5)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"pc_energy.{suffix}", dpi=200)
    plt.close(fig)


def main(argv=None) -> dict[int, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--at", type=int, nargs="+", default=[0, 10, 100, 299])
    parser.add_argument("--T", type=int, default=20)
    parser.add_argument("--inference-lr", type=float, default=0.1)
    parser.add_argument("--output-weight", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=Path("docs/img/pc"))
    args = parser.parse_args(argv)
    options = dict(inference_steps=args.T, inference_lr=args.inference_lr, output_weight=args.output_weight)
    curves = energy_curves(args.steps, args.at, options, args.lr)
    for step, energies in curves.items():
        print(f"step {step:5d}: " + " ".join(f"{e:.4g}" for e in energies))
    plot(curves, args.out)
    return curves


if __name__ == "__main__":
    main()
