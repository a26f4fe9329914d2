"""Score a Diehl & Cook checkpoint (model=diehl_cook) on the test set, or on its first `--images` images.

The labels are assigned from the response table the checkpoint holds (the training responses, rules/plasticity/
diehl_cook.py), exactly as the run's own test does before scoring; the network runs in eval mode (theta frozen,
quiet examples shown again). For a run stopped part-way, or scored on a prefix of the test set when time is short:

    python -m learnbench.tools.diehl_cook_eval CHECKPOINT --data-dir /work/shared/datasets --images 2000
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from learnbench.checkpoints import load_module
from learnbench.data.vision import VisionDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = load_module(args.checkpoint)
    model, rule = module.model.eval(), module.rule
    rule.solve(model, [s.clone() for s in rule.statistics()])
    data = VisionDataModule(dataset="mnist", data_dir=args.data_dir, normalize="unit", val_size=1)
    data.setup()
    x, y = data.splits.test
    x, y = x[: args.images], y[: args.images]
    start, correct = time.perf_counter(), 0
    with torch.no_grad():
        for i in range(0, len(x), args.batch):
            correct += int((model(x[i : i + args.batch]).sum(dim=1).argmax(dim=1) == y[i : i + args.batch]).sum())
    assigned = model.readout_weight.detach().gt(0).sum(dim=0)
    print(json.dumps({"checkpoint": args.checkpoint, "global_step": torch.load(args.checkpoint, weights_only=False)["global_step"],
                      "test_images": len(x), "test_acc": correct / len(x), "neurons_assigned": int(assigned.sum()),
                      "theta_mean_mV": float(model.theta.mean()), "eval_seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
