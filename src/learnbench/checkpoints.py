"""Load a training checkpoint back into a LearningRuleModule for evaluation, without Hydra.

Every checkpoint carries the run's resolved config and the data's shapes (saved by
train.build_module through `save_hyperparameters`), so

    module = load_module("logs/runs/<stamp>/checkpoints/last.ckpt")
    module.eval(); predictions = module(x)                 # or module.rule.predict(module.model, x)

rebuilds the same model and rule (learned feedback included) and loads their weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from learnbench.module import LearningRuleModule


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> LearningRuleModule:
    from learnbench.train import build_module

    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    saved = checkpoint.get("hyper_parameters", {})
    if "config" not in saved:
        raise ValueError(f"{path} has no saved run config (written by a learnbench older than its checkpoints' hyper_parameters)")
    cfg = OmegaConf.create(saved["config"])
    module = build_module(cfg, tuple(saved["input_shape"]), saved["output_dim"], saved["task"])
    module.load_state_dict(checkpoint["state_dict"])
    return module
