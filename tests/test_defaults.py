"""Every rule a comparison runs trains with its defaults: no divergence, and better than the untrained model.

A user who types `python -m learnbench.train data=sine_trajectory model=rnn method=rflo` expects a run that learns,
not one stopped at step 46 by an lr chosen for the spiral. The cases are derived, not listed: every comparison
sweep (conf/sweep/*_rules.yaml: its preset and the kind of rule it runs, from the catalogue) and every dataset
with its usual model and no preset, each with every rule the catalogue says trains that model. A new rule or a
new sweep is covered without editing this file.

Oracle: the same model before training (the real Lightning `validate` on the same validation batches, the same
seed) scores a higher validation loss than after a short budget of the run's own settings (its tuned file, the
dataset's or the preset's options), and the run ends with status ok. The budget is short (a few dozen steps):
what this guards is the sign and the scale of each rule's step at its defaults, not a number to publish.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import CSV_ONLY, TORCHVISION_FOLDER, compose_config, few_fast, tiny, write_idx
from learnbench.catalog import comparable_rules
from learnbench.paths import CONFIG_DIR
from learnbench.train import build, train

#: A dataset with its usual model and the kind of rule that trains it, run without a preset (the first command a
#: user types); the comparison sweeps below add their presets.
DATASET_DEFAULTS = {
    "spiral": ("mlp", "feedforward"),
    "zipser_andersen": ("mlp", "feedforward"),
    "mnist": ("mlp", "feedforward"),
    "fashion_mnist": ("mlp", "feedforward"),
    "sine_trajectory": ("rnn", "recurrent"),
    "add_task": ("rnn", "recurrent"),
}
VISION = {"mnist", "fashion_mnist"}
#: The short budget: (epochs, batches per epoch at most), about 60 steps; the schedule is fitted to it. The spiral's
#: epoch is 20 batches, the synthetic MNIST's 20 (2,000 training images, batch 100).
BUDGET = {"spiral": (3, 20), "zipser_andersen": (1, 60), "mnist": (3, 20), "fashion_mnist": (3, 20), "sine_trajectory": (1, 60), "add_task": (1, 60)}


def comparison_sweeps() -> list[tuple[str, str, str]]:
    """(sweep, its preset, the kind of rule it runs) for every conf/sweep/*_rules.yaml."""
    sweeps = []
    for path in sorted((CONFIG_DIR / "sweep").glob("*_rules.yaml")):
        cfg = OmegaConf.load(path)
        preset = next(entry["override /experiment"] for entry in cfg.defaults if "override /experiment" in entry)
        method = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=False)["method"]
        kind = method.removeprefix("${rules:").removesuffix("}")
        sweeps.append((path.stem, preset, kind))
    return sweeps


def preset_data(preset: str) -> str:
    raw = OmegaConf.load(CONFIG_DIR / "experiment" / f"{preset}.yaml")
    return next(entry["override /data"] for entry in raw.defaults if "override /data" in entry)


def cases() -> list[tuple[str, str, str]]:
    """(label, rule, overrides as one string): the presets' pairs, then the datasets' defaults."""
    found = []
    for sweep, preset, kind in comparison_sweeps():
        for rule in comparable_rules(kind):
            found.append((f"experiment={preset}", rule, f"experiment={preset} method={rule}"))
    for data, (model, kind) in DATASET_DEFAULTS.items():
        for rule in comparable_rules(kind):
            found.append((f"data={data}", rule, f"data={data} model={model} method={rule}"))
    return found


def learnable_vision_data(root: Path) -> Path:
    """MNIST / Fashion-MNIST IDX files a short run can learn: each class lights its own two rows over noise."""
    rng = np.random.default_rng(0)
    for name in sorted(VISION):  # sorted: a set's order changes with PYTHONHASHSEED, and so would each dataset's images
        raw = root / TORCHVISION_FOLDER[name] / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for prefix, n in (("train", 2200), ("t10k", 200)):
            labels = rng.integers(0, 10, size=n).astype(np.uint8)
            images = rng.integers(0, 80, size=(n, 28, 28)).astype(np.uint8)
            for row in range(2):
                images[np.arange(n), 4 + 2 * labels + row, 4:24] = 255
            write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="module")
def vision_root(tmp_path_factory) -> Path:
    return learnable_vision_data(tmp_path_factory.mktemp("learnable"))


def data_of(overrides: str) -> str:
    first = overrides.split()[0]
    return first.removeprefix("data=") if first.startswith("data=") else preset_data(first.removeprefix("experiment="))


@pytest.mark.parametrize(("label", "rule", "overrides"), few_fast(cases(), key=lambda label, rule, _: (label, rule), ids=[f"{c[0]}-{c[1]}" for c in cases()]))
def test_every_compared_rule_learns_with_its_defaults(label, rule, overrides, vision_root, tmp_path):
    data = data_of(overrides)
    extra = [f"paths.data_dir={vision_root}", "data.val_size=200"] if data in VISION else []
    epochs, batches = BUDGET[data]
    args = [*overrides.split(), *tiny(train_batches=batches, epochs=epochs), "+trainer.limit_val_batches=4", *extra, *CSV_ONLY]
    args = [a for a in args if a != "+trainer.limit_val_batches=1"]  # the untrained and trained scores on the same 4 batches

    cfg = compose_config(args, tmp_path / "untrained")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, trainer, _ = build(cfg)
    untrained = trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val/loss"]

    record = train(compose_config(args, tmp_path / "trained"))
    assert record["status"] == "ok", f"{overrides}: {record['status']}: {record.get('message')} (tuned: {record['tuned']})"
    trained = record["metrics"]["final"]["val/loss"]
    assert trained < untrained, f"{overrides}: val/loss {trained:.4f} after {record['steps']} steps, untrained {untrained:.4f} (tuned: {record['tuned']})"
