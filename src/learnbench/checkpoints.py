"""Load a training checkpoint back into a LearningRuleModule for evaluation, without Hydra.

Every checkpoint carries the run's resolved config and the data's shapes (saved by
train.build_module through `save_hyperparameters`), so

    module = load_module("logs/runs/<stamp>/checkpoints/last.ckpt")
    module.eval(); predictions = module(x)                 # or module.rule.predict(module.model, x)

rebuilds the same model and rule (learned feedback included) and loads their weights
(`LearningRuleModule.load_from_checkpoint(path)` does the same, as Lightning's convention reads).

`check_fits(path, module)` refuses, before training, a checkpoint to resume from that was saved by
another model (another size, another rule's parameters), naming the options that differ.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from learnbench.config_validation import ConfigError
from learnbench.module import LearningRuleModule


def load_module(path: str | Path, map_location="cpu", strict: bool = True) -> LearningRuleModule:
    """The module a checkpoint was saved from, its weights loaded, on the device its tensors were mapped to
    (`map_location` as torch.load takes it; None: where they were saved), as Lightning's loader places it."""
    from learnbench.train import build_module

    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    saved = checkpoint.get("hyper_parameters", {})
    if "config" not in saved:
        raise ValueError(f"{path} has no saved run config (written by a learnbench older than its checkpoints' hyper_parameters)")
    cfg = OmegaConf.create(saved["config"])
    module = build_module(cfg, tuple(saved["input_shape"]), saved["output_dim"], saved["task"])
    module.load_state_dict(checkpoint["state_dict"], strict=strict)
    device = next((t.device for t in checkpoint["state_dict"].values() if isinstance(t, torch.Tensor)), torch.device("cpu"))
    return module.to(device)


def check_fits(path: str | Path, module: LearningRuleModule, config: dict | None = None) -> dict:
    """The checkpoint at `path`, loaded on the CPU; ConfigError when it cannot be loaded into `module` (this
    run's model and rule): Lightning would otherwise fail with a traceback after setting everything up.
    `config`: this run's resolved config, to name the options that differ from the ones it was written with."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # not a checkpoint, or one cut short
        raise ConfigError(f"ckpt_path={path} is not a checkpoint that can be read ({type(error).__name__}: {error})") from None
    saved = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(saved, dict):
        raise ConfigError(f"ckpt_path={path} holds no module weights (no state_dict): name a Lightning checkpoint (last.ckpt)")
    mismatch = _first_mismatch(saved, module.state_dict())
    if mismatch is None:
        return checkpoint
    written_with = _differences(checkpoint.get("hyper_parameters", {}).get("config"), config)
    raise ConfigError(
        f"ckpt_path={path} was saved by another model or rule: {mismatch}"
        + (f"; it was written with {written_with}" if written_with else "")
        + ": resume with the options that wrote it"
    )


def _first_mismatch(saved: dict, here: dict) -> str | None:
    """The first tensor that differs in name or shape between a checkpoint's state dict and this module's."""
    for name, tensor in here.items():
        if name not in saved:
            return f"it has no {name}, which this run has"
        if tuple(saved[name].shape) != tuple(tensor.shape):
            return f"{name} is {list(saved[name].shape)} there and {list(tensor.shape)} here"
    extra = next((name for name in saved if name not in here), None)
    return f"it has {extra}, which this run lacks" if extra else None


def _differences(saved: dict | None, current: dict | None, limit: int = 3) -> str:
    """'model.hidden_sizes=[64, 64] (this run: [16])', ...: the model's options that differ, else the rule's,
    else the data's (what sets the tensors' shapes)."""
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return ""
    for group in ("model", "method", "data"):
        old, new = _flat(saved.get(group), group), _flat(current.get(group), group)
        keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k, "(unset)") != new.get(k, "(unset)")]
        if keys:
            return ", ".join(f"{k}={old.get(k, '(unset)')} (this run: {new.get(k, '(unset)')})" for k in keys[:limit])
    return ""


def _flat(node, prefix: str) -> dict[str, object]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, object] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}"))
    return out
