"""A digest of the weights a short run of every family leaves: to show a refactor changes no result.

    python -m learnbench.tools.weight_digest --out before.txt      # in a checkout of the old code
    python -m learnbench.tools.weight_digest --out after.txt       # in the new one
    diff before.txt after.txt                                      # no output: bit-identical

Each run trains 12 optimiser steps (lr 0.01, CSV logger, one thread) and hashes its last checkpoint's
state_dict (every tensor's bytes in key order, sha256): feed-forward rules on the spiral, local-loss and
predictive-coding variants, and the recurrent and perturbation rules on the RNN's sequence tasks.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

RUNS = {
    "bp_spiral": "data=spiral method=bp",
    "np_spiral": "data=spiral method=np",
    "fg_a_spiral": "data=spiral method=fg_a",
    "fg_w_spiral": "data=spiral method=fg_w",
    "wp_spiral": "data=spiral method=wp",
    "fa_spiral": "data=spiral method=fa",
    "kp_spiral": "data=spiral method=kp",
    "pc_spiral": "data=spiral method=pc",
    "ipc_spiral": "data=spiral method=ipc method.weight_updates=per_step",
    "lg_fg_a_spiral": "data=spiral method=lg_fg_a",
    "l_bp_spiral": "data=spiral method=l_bp",
    "bptt_sine": "data=sine_trajectory model=rnn method=bptt method.truncation=7",
    "rtrl_sine": "data=sine_trajectory model=rnn method=rtrl model.hidden_size=12",
    "rflo_sine": "data=sine_trajectory model=rnn method=rflo method.update_every=10",
    "eprop_sine": "data=sine_trajectory model=rnn method=eprop method.feedback=adaptive",
    "np_rnn": "data=sine_trajectory model=rnn method=np",
    "fg_a_rnn": "data=sine_trajectory model=rnn method=fg_a",
    "fg_w_rnn": "data=sine_trajectory model=rnn method=fg_w",
    "bp_add": "data=add_task model=rnn method=bp",
}
COMMON = ["trainer.max_steps=12", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
          "+trainer.enable_progress_bar=false", "logger=csv", "optimizer.lr=0.01"]


def state_digest(checkpoint: Path) -> str:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def run_digest(name: str, overrides: str, root: Path) -> str:
    out = root / name
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "learnbench.train", *overrides.split(), *COMMON, f"hydra.run.dir={out}", f"paths.output_dir={out}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    checkpoints = list(out.rglob("last.ckpt"))
    if done.returncode or not checkpoints:
        return f"FAILED (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:] or ''}"
    return state_digest(checkpoints[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write one 'name: digest' line per run")
    parser.add_argument("--runs", nargs="*", choices=sorted(RUNS), help="a subset (default: all)")
    args = parser.parse_args(argv)
    lines = []
    with tempfile.TemporaryDirectory() as root:
        for name in args.runs or RUNS:
            lines.append(f"{name}: {run_digest(name, RUNS[name], Path(root))}")
            print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
