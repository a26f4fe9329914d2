"""A tuned file and the optimiser chosen on the command line.

The tuned files (conf/tuned/<data>/<method>.yaml) were chosen with SGD and momentum. `optimizer=adam`
must still win: Adam with the tuned lr and nothing SGD-only (Adam takes no `momentum`; before the fix,
config validation refused such a run), and every other tuned value unchanged. Oracles: the yaml files
themselves (the tuned file's lr, conf/optimizer/adam.yaml) and the same composition with SGD.
"""

from __future__ import annotations

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CSV_ONLY, compose_config, tiny
from learnbench.paths import CONFIG_DIR
from learnbench.train import check_config, train

SPIRAL = sorted(p.stem for p in (CONFIG_DIR / "tuned" / "spiral").glob("*.yaml"))
CASES = [("spiral", method) for method in SPIRAL] + [("mnist", "bp")]


def composed(overrides: list[str], tmp_path) -> tuple[dict, dict]:
    cfg = compose_config(overrides, tmp_path)
    check_config(cfg)  # raises ConfigError for an option the optimiser does not take
    return OmegaConf.to_container(cfg, resolve=False), dict(HydraConfig.get().runtime.choices)


@pytest.mark.parametrize("data, method", CASES, ids=[f"{d}/{m}" for d, m in CASES])
def test_optimizer_adam_wins_over_a_tuned_file_and_keeps_its_lr(data, method, tmp_path):
    tuned = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "tuned" / data / f"{method}.yaml"))
    lr = tuned["optimizer"]["lr"]

    sgd, choices = composed([f"data={data}", f"method={method}"], tmp_path)
    assert choices["tuned"] == f"{data}/{method}" and choices["optimizer"] == "sgd"
    assert sgd["optimizer"]["_target_"] == "torch.optim.SGD" and sgd["optimizer"]["lr"] == lr
    assert sgd["optimizer"]["momentum"] > 0  # the momentum the tuned file was chosen with

    adam, choices = composed([f"data={data}", f"method={method}", "optimizer=adam"], tmp_path)
    assert choices["tuned"] == f"{data}/{method}" and choices["optimizer"] == "adam"
    # Adam's own config with the tuned lr, and nothing else
    expected = {**OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "optimizer" / "adam.yaml")), "lr": lr}
    assert adam["optimizer"] == expected
    # every other value of the tuned file is the same as with SGD
    assert {k: v for k, v in adam.items() if k != "optimizer"} == {k: v for k, v in sgd.items() if k != "optimizer"}

    built = instantiate(OmegaConf.create(adam["optimizer"]))(params=[torch.nn.Parameter(torch.zeros(2))])
    assert type(built) is torch.optim.Adam and built.param_groups[0]["lr"] == lr


def test_optimizer_sgd_given_on_the_command_line_keeps_the_tuned_momentum(tmp_path):
    default, _ = composed(["data=spiral", "method=bp"], tmp_path)
    explicit, _ = composed(["data=spiral", "method=bp", "optimizer=sgd"], tmp_path)
    assert explicit == default
    overridden, _ = composed(["data=spiral", "method=bp", "optimizer.momentum=0.5"], tmp_path)
    assert overridden["optimizer"]["momentum"] == 0.5  # a value on the command line wins over the tuned one


def test_mnist_budget_schedule_yields_to_a_chosen_schedule_or_preset(tmp_path):
    """conf/budget/mnist.yaml decays the lr along a cosine, for every rule, only when nothing else chose a schedule."""
    budget_epochs = OmegaConf.load(CONFIG_DIR / "budget" / "mnist.yaml").trainer.max_epochs
    for method in ("bp", "fa"):
        plain, _ = composed(["data=mnist", f"method={method}"], tmp_path)
        assert plain["scheduler"]["_target_"] == "learnbench.schedules.warmup_cosine"
        assert plain["trainer"]["max_epochs"] == budget_epochs
    # The model's size on MNIST comes from conf/tuned/model/mnist/mlp.yaml, for every rule, unless a preset sets it.
    mnist_mlp = OmegaConf.load(CONFIG_DIR / "tuned" / "model" / "mnist" / "mlp.yaml").hidden_sizes
    for method in ("bp", "fa", "np"):
        assert composed(["data=mnist", f"method={method}"], tmp_path)[0]["model"]["hidden_sizes"] == list(mnist_mlp)
    assert composed(["data=spiral", "method=bp"], tmp_path)[0]["model"]["hidden_sizes"] == [64, 64]

    chosen, _ = composed(["data=mnist", "method=bp", "scheduler=exponential"], tmp_path)
    assert chosen["scheduler"] == OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "scheduler" / "exponential.yaml"))

    # A preset that chooses no schedule (as published) keeps none, and its own optimiser settings.
    preset, choices = composed(["experiment=oumpy_floor_mnist", "method=bp"], tmp_path)
    assert choices["tuned"] == "mnist/bp" and choices["scheduler"] == "none"
    assert not preset.get("scheduler")
    assert preset["optimizer"]["momentum"] == 0.0
    assert preset["model"]["hidden_sizes"] == [512, 512]  # the preset's own size wins over conf/tuned/model


def test_a_run_with_adam_and_a_tuned_file_trains(tmp_path):
    """The reported bug end to end: `optimizer=adam` on the spiral (tuned file for bp) runs."""
    from conftest import results_under

    record = train(compose_config(["data=spiral", "method=bp", "optimizer=adam", *tiny(train_batches=3), *CSV_ONLY], tmp_path))
    assert record["status"] == "ok", record["message"]
    assert record["tuned"] == ["conf/tuned/spiral/bp.yaml"]
    assert record["config"]["optimizer"]["_target_"] == "torch.optim.Adam" and "momentum" not in record["config"]["optimizer"]
    assert list(results_under(tmp_path).values())[0]["status"] == "ok"


@pytest.mark.parametrize(
    ("overrides", "files"),
    [
        (["data=mnist", "method=bp"], ["model/mnist/mlp", "mnist/bp", "cosine/None/none", "momentum/sgd/0.7"]),
        (["data=mnist", "method=bp", "optimizer=adam", "scheduler=exponential"], ["model/mnist/mlp", "mnist/bp"]),
        (["data=spiral", "method=fa"], ["spiral/fa", "momentum/sgd/0.9"]),
        # mnist/fg_w (the lr) and model/mnist/mlp (128-128) are loaded, then every value of them overridden by the
        # preset (S/1/1: 256-256) and its per-rule file: they did not change the run
        (["experiment=ren_s11_mnist", "method=fg_w"], ["ren_s11_mnist/fg_w"]),
        (["data=mnist", "method=fg_w", "optimizer.lr=0.01"], ["model/mnist/mlp", "cosine/None/none"]),  # the command line wins
        (["data=mnist", "method=bp", "optimizer.momentum=0.5"], ["model/mnist/mlp", "mnist/bp", "cosine/None/none"]),
    ],
)
def test_results_list_the_tuned_pieces_a_tuned_file_included(overrides, files, tmp_path):
    """results.json's `tuned` left out the files a tuned file includes (momentum, cosine), which change the run, and
    listed files whose every value a later file or the command line had overridden."""
    from hydra.core.hydra_config import HydraConfig

    from learnbench.train import loaded_tuned_files, tuned_files

    cfg = compose_config(overrides, tmp_path)
    choices = dict(HydraConfig.get().runtime.choices)
    listed = tuned_files(choices, cfg)
    assert sorted(listed) == sorted(f"conf/tuned/{name}.yaml" for name in files)
    assert set(listed) <= set(loaded_tuned_files(choices))
    assert all((CONFIG_DIR.parent / path).is_file() for path in listed)
