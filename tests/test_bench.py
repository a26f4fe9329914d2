"""Smoke test of the step-time benchmark (learnbench.tools.bench): what it times, never how fast.

Tiny models, one round: every rule of the catalog gets a row on the MLP and on LeNet, the ratio
of bp is 1, and the per-direction rows are those of the rules with a `directions` option. The
all-rules tests time in this process (--processes one); one test runs a few rows the default way,
each in a process of its own."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from learnbench.catalog import comparable_rules
from learnbench.paths import CONFIG_DIR
from learnbench.tools import bench
from conftest import write_vision_dataset

# No --threads and glibc's own malloc: torch.set_num_threads and mallopt would outlive the test in this
# process (the rows' own processes, in test_rows_in_their_own_processes, set --malloc keep for themselves).
QUICK = ["--rounds", "1", "--warmup", "0", "--json"]
HERE = ["--processes", "one", "--malloc", "default"]


@pytest.mark.parametrize("model", ["mlp", pytest.param("lenet", marks=pytest.mark.slow)])
def test_every_rule_is_timed_beside_bp(model, capsys):
    result = bench.main(["--model", model, "--hidden", "8", "--batch", "2", "--directions", "2", *HERE, *QUICK])
    rules = comparable_rules("feedforward")
    steps = result["steps"]
    assert set(rules) <= set(steps)
    assert list(steps)[0] == "bp" and steps["bp"]["over_bp"] == 1.0
    assert all(row["ms"] > 0 for row in steps.values())
    k_rows = {name.removesuffix(" K=2") for name in steps if name.endswith(" K=2")}
    assert k_rows == {r for r in rules if "directions" in OmegaConf.load(CONFIG_DIR / "method" / f"{r}.yaml")}
    assert {"wp", "np", "fg_w", "fg_a"} <= k_rows
    assert all("per_direction_over_k1" in steps[f"{r} K=2"] for r in k_rows)
    assert {"forward only", "np (no clean pass)"} <= set(steps)
    expected = "MLP 784-8-10" if model == "mlp" else "LeNet-5 1x28x28-10"
    assert result["setting"]["model"] == expected and result["setting"]["batch"] == 2


@pytest.mark.slow
def test_rows_in_their_own_processes(capsys):
    """The default: each row in a process of its own (forkserver), the parent taking them in turn."""
    result = bench.main(["--hidden", "8", "--batch", "2", "--rules", "wp", "--directions", "2", "--no-variants", *QUICK])
    assert result["setting"]["processes"] == "per-rule" and result["setting"]["malloc"] == "keep"
    assert list(result["steps"]) == ["bp", "wp", "forward only", "wp K=2"]
    assert result["steps"]["bp"]["over_bp"] == 1.0
    assert "per_direction_over_k1" in result["steps"]["wp K=2"]


def test_rule_subset_and_default_batches(capsys):
    result = bench.main(["--model", "lenet", "--rules", "fa", "--directions", "1", "--no-variants", *HERE, *QUICK])
    assert list(result["steps"]) == ["bp", "fa", "forward only"]
    assert result["setting"]["batch"] == 64
    with pytest.raises(SystemExit, match="no such method"):
        bench.main(["--rules", "nope", *HERE, *QUICK])


def test_profile_lists_ops_for_each_rule(capsys):
    profiles = bench.main(["--hidden", "8", "--batch", "2", "--rules", "kp", "--directions", "1", "--warmup", "0",
                           "--profile", "--profile-by", "op", "--top", "3", "--malloc", "default", "--json"])
    assert list(profiles) == ["bp", "kp"]
    assert all(len(p["top"]) == 3 and p["top"][0]["op"] for p in profiles.values())


def test_rule_epochs_time_whole_training_epochs_beside_bp(tmp_path, capsys):
    """--rule-epochs: each rule's training epoch through the Lightning loop on (synthetic) MNIST files,
    on the S/1/1 shape (LayerNorm in the hidden blocks), BP first and its ratio 1."""
    root = tmp_path / "datasets"
    write_vision_dataset(root, "mnist", seed=0, n_train=5100, n_test=10)  # the run's 5 000 validation images + 2 batches
    result = bench.main(["--rule-epochs", "fg_a", "np", "--epoch-hidden", "8", "8", "--layer-norm", "--epoch-batch", "50",
                         "--epoch-repeats", "1", "--data-dir", str(root), "--json"])
    assert list(result["epochs"]) == ["bp", "fg_a", "np"]
    assert result["epochs"]["bp"]["over_bp"] == 1.0 and all(r["epoch_s"] > 0 for r in result["epochs"].values())
    assert result["setting"]["model"] == "MLP 784-8-8-10, LayerNorm" and result["setting"]["batch"] == 50
    with pytest.raises(SystemExit, match="--data-dir"):
        bench.main(["--rule-epochs", "fg_a", "--json"])


def test_local_heads_last_builds_the_ren_s11_preset_model():
    """--hidden 256 256 --layer-norm --local-heads last: the model experiment=ren_s11_mnist composes (Hydra,
    the same parameters by name and shape, and one local head after the last hidden block), so the lg_ rows
    time the preset's rule; the MLP's default puts a head after every hidden block."""
    from hydra.utils import instantiate

    from conftest import compose_config

    args = bench.build_parser().parse_args(["--hidden", "256", "256", "--layer-norm", "--local-heads", "last", "--batch", "2"])
    model = bench.model_and_batch(args, torch.device("cpu"))[0]
    cfg = compose_config(["experiment=ren_s11_mnist", "method=lg_fg_a"])
    preset = instantiate(cfg.model, input_shape=(1, 28, 28), output_dim=10)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in preset.state_dict().items()}
    assert model.local_heads == preset.local_heads == "last"
    assert bench.model_name(args.model, args.hidden, args.layer_norm, args.local_heads) == "MLP 784-256-256-10, LayerNorm, local heads last"
    default = bench.build_parser().parse_args(["--hidden", "256", "256", "--layer-norm", "--batch", "2"])
    assert bench.model_and_batch(default, torch.device("cpu"))[0].local_heads == "every"


@pytest.mark.slow
def test_make_bench_prints_no_runpy_warning(tmp_path):
    """`make bench` printed runpy's "RuntimeWarning: 'learnbench.tools.bench' found in sys.modules ..." once per
    row process (tools/bench.py's forkserver preloads the module that `-m` also runs); the Makefile silences it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    args = "--hidden 16 --batch 8 --rounds 1 --warmup 0 --rules bp fa --no-variants"
    done = subprocess.run(["make", "-s", "-C", str(root), "bench", f"RUN={sys.executable}", f"ARGS={args}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Step time over backprop" in done.stdout
    assert "RuntimeWarning" not in done.stdout + done.stderr, done.stderr[-3000:]
