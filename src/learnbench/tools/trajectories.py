"""The trained outputs of sequence-regression runs beside their targets:
`python -m learnbench.tools.trajectories <dirs> --out fig.png`.

For every run under the given directories (each with results.json and checkpoints/last.ckpt), the model is
rebuilt from its checkpoint (learnbench.checkpoints.load_module) and run on the first test sequence of its
own data config; one panel per method, one line per seed, the target dashed.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from learnbench.checkpoints import load_module  # noqa: E402


def runs(dirs: list[Path]) -> dict[str, list[Path]]:
    """method -> run directories (sorted by seed) that finished and kept a checkpoint."""
    by_method = defaultdict(list)
    for path in sorted(p for d in dirs for p in d.rglob("results.json")):
        record = json.loads(path.read_text())
        if record.get("status") == "ok" and (path.parent / "checkpoints" / "last.ckpt").exists():
            by_method[record["method"]].append((record["seed"], path.parent))
    return {m: [d for _, d in sorted(v)] for m, v in sorted(by_method.items())}


def trajectory(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, target) of the first test sequence, [time]."""
    module = load_module(run_dir / "checkpoints" / "last.ckpt")
    data_cfg = OmegaConf.create(module.hparams["config"]["data"])
    x, y = instantiate(data_cfg).load_splits().test
    with torch.no_grad():
        out = module.rule.predict(module.model, x[:1].to(module.model.w_rec.dtype))
    return out[0, :, 0], y[0, :, 0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    found = runs(args.dirs)
    fig, axes = plt.subplots(1, len(found), figsize=(3 * len(found), 2.6), sharey=True, squeeze=False)
    for ax, (method, run_dirs) in zip(axes[0], found.items()):
        for i, run_dir in enumerate(run_dirs):
            out, target = trajectory(run_dir)
            ax.plot(out.numpy(), lw=1.2, alpha=0.8, label=f"seed {i}")
        ax.plot(target.numpy(), "--k", lw=1, label="target")
        ax.set_title(method)
        ax.set_xlabel("time step")
    axes[0][0].set_ylabel("output")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
