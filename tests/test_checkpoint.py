"""Resuming from a checkpoint continues the same trajectory, for every rule.

Oracle: the uninterrupted run. Two epochs straight must leave the same parameters as one epoch,
a checkpoint, and a second run resumed from it (ckpt_path) for the second epoch: the data order,
the rule's noise (re-seeded from (seed, rank, step)), its state (learned feedback, running
baselines) and the optimiser state all carry over.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from conftest import CSV_ONLY, compose_config
from learnbench.catalog import comparable_rules, method_config
from learnbench.paths import CONFIG_DIR
from learnbench.train import build

# (method=diehl_cook trains only its own network: tests/test_diehl_cook.py resumes it mid-epoch)
METHODS = sorted(p.stem for p in (CONFIG_DIR / "method").glob("*.yaml") if p.stem != "diehl_cook")
COMMON = [
    "data=spiral", "data.train_per_arm=200", "model.hidden_sizes=[16]", "optimizer.momentum=0.9",
    "+trainer.limit_val_batches=1", "+trainer.enable_progress_bar=false", "callbacks=none",
    "method.table_size=262144", *CSV_ONLY,
]


# The rules that train only recurrent models train the RNN on sequences: 4 sequences of 12 steps per epoch.
RECURRENT = set(comparable_rules("recurrent")) - set(comparable_rules("feedforward"))
# Options that exercise what a recurrent rule carries in a checkpoint: windows, or online updates every 5 steps
# (the optimiser steps inside sequences, 3 times a sequence; 8 batches either way); e-prop's learned feedback.
ONLINE_EVERY = 5
RECURRENT_OPTIONS = {"bptt": [f"method.truncation={ONLINE_EVERY}"], "rtrl": [f"method.update_every={ONLINE_EVERY}"],
                     "rflo": [f"method.update_every={ONLINE_EVERY}"], "eprop": ["method.feedback=adaptive"]}
SEQUENCES = ["data=add_task", "data.steps=12", "data.train_sequences=4", "data.val_sequences=2", "model=rnn",
             "model.hidden_size=6", "+trainer.limit_val_batches=1", "+trainer.enable_progress_bar=false", "callbacks=none",
             "optimizer.momentum=0.9", *CSV_ONLY]


# Closed-form readouts (ridge) fit a reservoir's on the same sequences (their statistics rebuilt every epoch).
ON_RESERVOIR = [*(o for o in SEQUENCES if not o.startswith(("model=", "model.hidden_size"))), "model=esn", "model.units=6"]
RESERVOIR = set(comparable_rules("reservoir"))

# The spike-timing rules (stdp, rstdp) train a spiking network on a rate code of synthetic Fashion-MNIST (conftest.vision_data;
# not MNIST, whose budget decays the lr over the run's epochs, so 1 epoch + 1 resumed would not be 2 straight):
# 4 batches of 8 an epoch (8 steps in all, as the others), the readout by gradient (optimiser state) and R-STDP's running baseline carried over.
SPIKING = set(comparable_rules("spiking")) - set(comparable_rules("feedforward")) - set(comparable_rules("recurrent"))
ON_SPIKES = ["data=fashion_mnist", "data.normalize=unit", "data.val_size=16", "data.batch_size=8", "+trainer.limit_train_batches=4",
             "model=snn", "model.encoding=rate", "model.hidden_sizes=[8]", "model.steps=6", "method.readout=gradient",
             "+trainer.limit_val_batches=1", "+trainer.enable_progress_bar=false", "callbacks=none", "optimizer.momentum=0.9",
             *CSV_ONLY]


# SpikeProp trains only SpikeProp's network on XOR in spike times: 4 examples of batch 1 an epoch (8 steps in all).
SPIKE_TIMES = set(comparable_rules("spike_times"))
ON_SPIKE_TIMES = ["experiment=spikeprop_xor", "callbacks=none", "+trainer.limit_val_batches=1", "+trainer.enable_progress_bar=false",
                  "optimizer.momentum=0.9", *CSV_ONLY]


def fit(tmp_path, method: str, epochs: int, ckpt_path=None, save_to=None, data_dir=None):
    common = [*SEQUENCES, *RECURRENT_OPTIONS.get(method, [])] if method in RECURRENT else COMMON
    if method in RESERVOIR:
        common = ON_RESERVOIR
    if method in SPIKING:
        common = [*ON_SPIKES, f"paths.data_dir={data_dir}"]
    if method in SPIKE_TIMES:
        common = ON_SPIKE_TIMES
    overrides = [*common, f"method={method}", f"trainer.max_epochs={epochs}"]
    if "method.table_size=262144" in overrides and "table_size" not in method_config(method):
        overrides.remove("method.table_size=262144")
    cfg = compose_config(overrides, tmp_path)
    L.seed_everything(cfg.seed, verbose=False)  # as train() does: the same initial weights
    datamodule, module, trainer, _ = build(cfg)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    # The model and the rule's state (Kolen-Pollack's learned feedback, running baselines).
    state = {k: v.detach().clone() for k, v in module.state_dict().items() if k.startswith(("model.", "rule."))}
    return state, trainer.global_step, module.rule.updates_per_batch


# Fast: one rule of each family (backprop, perturbation, learned feedback, local losses, recurrent); the rest slow.
FAST = {"bp", "np", "kp", "l_fa", "rflo"}


@pytest.mark.parametrize("method", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow) for m in METHODS])
def test_resumed_run_follows_the_uninterrupted_trajectory(method, tmp_path, request):
    data_dir = request.getfixturevalue("vision_data")[0] if method in SPIKING else None
    straight, steps, updates_per_batch = fit(tmp_path / "straight", method, epochs=2, data_dir=data_dir)
    checkpoint = tmp_path / "epoch1.ckpt"
    fit(tmp_path / "first", method, epochs=1, save_to=checkpoint, data_dir=data_dir)
    resumed, resumed_steps, _ = fit(tmp_path / "resumed", method, epochs=2, ckpt_path=str(checkpoint), data_dir=data_dir)
    # Optimiser steps: online recurrent rules take ceil(12 / 5) = 3 a sequence, FORCE 12 / 2 = 6 (an RLS update every
    # 2 steps), iPC per_step T a batch.
    online = f"method.update_every={ONLINE_EVERY}" in RECURRENT_OPTIONS.get(method, [])
    assert resumed_steps == steps == 8 * (3 if online else 6 if method == "force" else updates_per_batch)
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, equal_nan=True, msg=f"{method}: {key}")
    if method == "kp":
        assert any(key.startswith("rule.feedback") for key in straight)
    if method == "rstdp":
        assert "rule.baseline" in straight


@pytest.mark.parametrize("method", ["bp", "kp"])
def test_a_checkpoint_loads_back_without_hydra(method, tmp_path):
    """Oracle: the trained module itself. load_module rebuilds model and rule from the checkpoint alone
    (Kolen-Pollack's learned feedback included) and predicts exactly what the trained module predicts."""
    from learnbench.checkpoints import load_module

    checkpoint = tmp_path / "run.ckpt"
    overrides = [o for o in COMMON if not o.startswith("method.table_size")]
    cfg = compose_config([*overrides, f"method={method}", "trainer.max_epochs=1"], tmp_path)
    datamodule, module, trainer, _ = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(checkpoint)
    loaded = load_module(checkpoint)
    x = torch.randn(7, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module(x), rtol=0, atol=0)
    for key, value in module.rule.state_dict().items():
        torch.testing.assert_close(loaded.rule.state_dict()[key], value, rtol=0, atol=0, equal_nan=True)
    assert type(loaded.rule) is type(module.rule) and loaded.hparams["config"]["seed"] == cfg.seed


# Every model kind, each on data it trains on (the vision ones on the synthetic IDX files of conftest.vision_data).
MODEL_KINDS = {
    "mlp": ["data=spiral", "model.hidden_sizes=[16]"],
    "cnn": ["data=mnist", "model=cnn", "model.channels=[2,4]", "model.hidden_sizes=[8]"],
    "lenet": ["data=fashion_mnist", "model=lenet"],
    "autoencoder": ["data=mnist_autoencoder", "model=autoencoder", "model.encoder_sizes=[16]", "model.bottleneck=4"],
    "rnn": ["data=add_task", "data.steps=8", "data.train_sequences=4", "data.val_sequences=2", "data.test_sequences=2",
            "model=rnn", "model.hidden_size=6", "data.batch_size=2"],
}


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_lightnings_load_from_checkpoint_rebuilds_every_model_kind(kind, vision_data, tmp_path):
    """Oracle: the trained module itself. `LearningRuleModule.load_from_checkpoint(path)` failed (its constructor
    takes built objects); it now rebuilds model and rule from the config saved in the checkpoint and predicts
    exactly what the trained module predicts, on a batch of the data it trained on."""
    from learnbench.module import LearningRuleModule

    root, _ = vision_data
    overrides = [*MODEL_KINDS[kind], "method=bp", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", *COMMON[4:7], *CSV_ONLY]
    if "data=spiral" not in overrides and "data=add_task" not in overrides:
        overrides += [f"paths.data_dir={root}", "data.download=false", "data.val_size=40", "data.batch_size=50"]
    cfg = compose_config(overrides, tmp_path)
    datamodule, module, trainer, _ = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    checkpoint = tmp_path / f"{kind}.ckpt"
    trainer.save_checkpoint(checkpoint)

    loaded = LearningRuleModule.load_from_checkpoint(checkpoint)
    assert type(loaded) is LearningRuleModule and type(loaded.model) is type(module.model)
    assert loaded.hparams["config"]["model"] == cfg_section(cfg, "model")
    x = datamodule.splits.test[0][:3]
    module.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module(x), rtol=0, atol=0)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, equal_nan=True, msg=key)
    with pytest.raises(TypeError, match="takes no hparams_file or overrides"):
        LearningRuleModule.load_from_checkpoint(checkpoint, seed=3)


def cfg_section(cfg, name: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg[name], resolve=True)
