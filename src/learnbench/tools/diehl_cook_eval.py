"""Score a Diehl & Cook checkpoint (model=diehl_cook) on the test set, or on its first `--images` images.

The labels are assigned from the response table the checkpoint holds (the training responses, rules/plasticity/
diehl_cook.py), exactly as the run's own test does before scoring; the network runs in eval mode (theta frozen,
quiet examples shown again). For a run stopped part-way, or scored on a prefix of the test set when time is short:

    python -m learnbench.tools.diehl_cook_eval CHECKPOINT --data-dir /work/shared/datasets --images 2000
    python -m learnbench.tools.diehl_cook_eval CHECKPOINT --data-dir - --summary   # how far the neurons have learned
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from learnbench.checkpoints import load_module
from learnbench.data.vision import VisionDataModule


def save_receptive_fields(model, path: str) -> None:
    """Each excitatory neuron's 784 input weights as a 28 x 28 tile, titled with its assigned class (- : none)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = model.input_weight.detach().reshape(-1, 28, 28)
    labels = model.readout_weight.detach().argmax(dim=0).tolist()
    assigned = model.readout_weight.detach().gt(0).any(dim=0).tolist()
    side = math.ceil(math.sqrt(len(w)))
    fig, axes = plt.subplots(side, side, figsize=(side, side * 1.1))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(w):
            ax.imshow(w[i], cmap="hot_r", vmin=0, vmax=float(w.max()))
            ax.set_title(str(labels[i]) if assigned[i] else "-", fontsize=7, pad=1)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=100)


def learning_summary(model, rule) -> dict:
    """How far the excitatory neurons have learned, from the checkpoint alone (no data): per neuron, the share of its
    input weight (normalised to a fixed sum) held by its top quarter of inputs (`concentration`: about 0.44 for the
    initial uniform draw, near 1 for a sharp digit prototype) and the number of neurons at 0.55 or more (`learned`); how
    the spikes in the response table spread over the neurons; each neuron's selectivity (the share of its recorded
    spikes in its assigned class); and theta. Quantiles 0, 0.1, 0.5, 0.9, 1."""
    q = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    w = model.input_weight.detach().double()
    top = w.sort(dim=1, descending=True).values[:, : w.shape[1] // 4].sum(dim=1) / w.sum(dim=1)
    responses = rule.responses.double()
    spikes = responses.sum(dim=0)
    selectivity = responses.max(dim=0).values / spikes.clamp_min(1)

    def quantiles(values):
        return [round(float(v), 3) for v in torch.quantile(values.double(), q)]

    return {"concentration": quantiles(top), "learned": int((top >= 0.55).sum()), "largest_weight": quantiles(w.max(dim=1).values),
            "table_spikes_per_neuron": quantiles(spikes), "selectivity": quantiles(selectivity),
            "theta_mV": quantiles(model.theta.detach()), "table_spikes_per_example": round(float(spikes.sum() / rule.counts.sum()), 2)}


def test_accuracy(model, data_dir: str, images: int, batch: int = 100) -> tuple[int, float]:
    """(images scored, accuracy) of a model=diehl_cook network, labels assigned, on the first `images` MNIST test
    images, `batch` at a time: each class's mean spike count over its assigned neurons, the largest wins."""
    data = VisionDataModule(dataset="mnist", data_dir=data_dir, normalize="unit", val_size=1)
    data.setup()
    x, y = data.splits.test
    x, y = x[:images], y[:images]
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(x[i : i + batch]).sum(dim=1).argmax(dim=1) == y[i : i + batch]).sum())
    return len(x), correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--figure", help="also save every neuron's input weights as a 28 x 28 image grid here (png)")
    parser.add_argument("--summary", action="store_true",
                        help="print how far the neurons have learned (learning_summary) and stop: no data, no scoring")
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = load_module(args.checkpoint)
    model, rule = module.model.eval(), module.rule
    if args.summary:
        print(json.dumps({"checkpoint": args.checkpoint, **learning_summary(model, rule)}))
        return
    rule.solve(model, [s.clone() for s in rule.statistics()])
    if args.figure:
        save_receptive_fields(model, args.figure)
    start = time.perf_counter()
    images, accuracy = test_accuracy(model, args.data_dir, args.images, args.batch)
    assigned = model.readout_weight.detach().gt(0).sum(dim=0)
    print(json.dumps({"checkpoint": args.checkpoint, "global_step": torch.load(args.checkpoint, weights_only=False)["global_step"],
                      "test_images": images, "test_acc": accuracy, "neurons_assigned": int(assigned.sum()),
                      "theta_mean_mV": float(model.theta.mean()), "eval_seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
