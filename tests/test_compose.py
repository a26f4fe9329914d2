"""Every data x model x method combination composes and instantiates; bad configs fail clearly.

Options are discovered from the yaml files in the config dir, so a new rule (conf/method/*.yaml)
is covered without editing this file.
"""

from __future__ import annotations

import itertools
import json
from functools import cache, partial

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from hydra.utils import instantiate

from conftest import TINY, compose_config, few_fast
from learnbench.tasks import per_example_loss
from learnbench.catalog import comparable_rules, method_config
from learnbench.paths import CONFIG_DIR
from learnbench.rules import LearningRule
from learnbench.train import ConfigError, build, check_config, task_of, train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


# The local-loss variants (l_bp, lg_fg_a, ...: ${rules:local}) are options of their base rules, composed in test_local_losses.
DATA, MODELS, METHODS = options("data"), options("model"), [m for m in options("method") if m not in comparable_rules("local")]


def test_the_representative_combinations_hold_every_option_and_every_combination_that_trains():
    chosen = representative_combinations()
    assert {c[0] for c in chosen} == set(DATA) and {c[1] for c in chosen} == set(MODELS) and {c[2] for c in chosen} == set(METHODS)
    trains = [c for c in itertools.product(DATA, MODELS, METHODS) if outcome(*c) == "trains"]
    assert set(trains) <= set(chosen)


def test_the_option_lists_are_not_empty():
    assert {"spiral", "mnist", "fashion_mnist", "mnist_autoencoder", "fashion_mnist_autoencoder"} <= set(DATA)
    assert {"mlp", "autoencoder", "lenet", "cnn", "rnn", "snn"} <= set(MODELS)
    assert "bp" in METHODS


SEQUENCE_DATA = {"sine_trajectory", "add_task", "evidence_accumulation", "sequential_mnist", "mackey_glass", "narma10", "lorenz", "memory_capacity",
                 "force_pattern"}
# The rules that train model=esn (a fixed reservoir, its readout learning); the others refuse it (train.check_time_fits,
# or their check_model: rtrl is not exact on its update; rflo and eprop keep a trace per synapse there; np and fg_a
# perturb its sites, models/esn_sites.py).
ESN_RULES = {"ridge", "force", "bp", "bptt", "wp", "fg_w", "rflo", "eprop", "np", "fg_a"}
# The rules that train model=lsm (a fixed spiking reservoir; by default, encoding none, it runs over sequences): its
# readout by a closed form (ridge), recursive least squares (force), surrogate BPTT (bp) or parameter perturbation.
LSM_RULES = {"ridge", "force", "bp", "wp", "fg_w"}
# Sequence data that a least-squares readout (ridge, force) cannot fit: one class per sequence.
ONE_CLASS_PER_SEQUENCE = {"sequential_mnist", "evidence_accumulation"}


# What model=snn classifies: static examples of a classification task (it owns its time axis).
STATIC_CLASSIFICATION = {"spiral", "mnist", "fashion_mnist"}


def incompatible(data: str, model: str) -> bool:
    return (
        (model == "autoencoder" and not data.endswith("_autoencoder"))
        or (model in ("lenet", "cnn") and data in ("spiral", "zipser_andersen", "spike_xor", *SEQUENCE_DATA))
        or (model == "snn" and data not in STATIC_CLASSIFICATION | SEQUENCE_DATA)
        or (model == "srm" and data != "spike_xor")  # spike times in, spike times out
    )


@cache
def rule_trains(method: str) -> tuple[str, ...]:
    from hydra.utils import get_class

    return get_class(method_config(method)._target_).trains


def time_mismatch(data: str, model: str, method: str) -> bool:
    """Sequence data goes with the RNN only, and the RNN with rules that train recurrent models; the recurrent
    rules (bptt, rtrl, rflo, eprop) train nothing else; the SNN takes static examples and the rules that train
    spiking models (train.check_time_fits refuses the rest)."""
    if model == "esn":  # ridge fits a target at every step: sequential MNIST has one per sequence
        return data not in SEQUENCE_DATA or method not in ESN_RULES or (method in ("ridge", "force") and data in ONE_CLASS_PER_SEQUENCE)
    if model == "lsm":
        return data not in SEQUENCE_DATA or method not in LSM_RULES or (method in ("ridge", "force") and data in ONE_CLASS_PER_SEQUENCE)
    rnn, trains = model == "rnn", rule_trains(method)
    if model == "srm" or "spike_times" in trains:  # SpikeProp's network and SpikeProp go only with each other
        return model != "srm" or "spike_times" not in trains
    if model == "snn":
        return data in SEQUENCE_DATA or "spiking" not in trains
    return (data in SEQUENCE_DATA) != rnn or ("recurrent" if rnn else "feedforward") not in trains


def random_target(task: str, x: torch.Tensor, output_dim: int) -> torch.Tensor:
    if task == "reconstruction":
        return x
    if task in ("sequence_regression", "series_regression", "memory_capacity"):
        return torch.randn(*x.shape[:2], output_dim)
    if task == "sequence_soft_classification":
        return torch.softmax(torch.randn(*x.shape[:2], output_dim), dim=-1)
    if task == "final_window_classification":  # (class, weight): scored over the last 10 steps
        classes = torch.randint(0, output_dim, (len(x), 1)).float().expand(-1, x.shape[1])
        weights = torch.zeros(x.shape[1]).index_fill(0, torch.arange(x.shape[1] - 10, x.shape[1]), 0.1)
        return torch.stack([classes, weights.expand(len(x), -1)], dim=-1)
    if task == "spike_time_regression":  # target spike times in ms
        return 10 + 6 * torch.rand(len(x), output_dim)
    if task.startswith("head_centred"):  # data=zipser_andersen: the code in [0, 1], then the position (2 columns)
        return torch.cat([torch.rand(len(x), output_dim), 80 * torch.rand(len(x), 2) - 40], dim=1)
    return torch.randint(0, output_dim, (len(x),))


def needs_spikes(model: str, method: str) -> bool:
    """The STDP rules read input spikes, and model=snn's default code is a current: check_config refuses it."""
    from hydra.utils import get_class

    return model == "snn" and hasattr(get_class(method_config(method)._target_), "option_problem")


def outcome(data: str, model: str, method: str) -> str:
    """The branch of test_every_combination_composes_and_instantiates a combination takes."""
    if "diehl_cook" in (model, method):
        return "refused: diehl_cook"
    if needs_spikes(model, method):
        return "refused: a current code"
    if time_mismatch(data, model, method) and not incompatible(data, model):
        return "refused: recurrent or feed-forward"
    return "refused: data and model" if incompatible(data, model) else "trains"


def what_decides(data: str, model: str, method: str) -> tuple:
    """The combination itself where it trains; for a refusal, what the oracle's branch reads: the (data, model) pair for
    a model that does not fit the data, else the data's kind (sequence, static classification, one class a sequence,
    spike times) with the model and the rule. Combinations with the same answer take the same branch for the same
    reason, so one of each is run: 1,178 of the 3,840 (0.25-0.33 s a combination here: the whole product was ~10-15
    of CI's 45 minutes)."""
    kind = outcome(data, model, method)
    if kind == "trains":
        return (data, model, method)
    if kind == "refused: data and model":
        return (kind, data, model)
    return (kind, data in SEQUENCE_DATA, data in STATIC_CLASSIFICATION, data in ONE_CLASS_PER_SEQUENCE, data == "spike_xor", model, method)


def representative_combinations() -> list[tuple[str, str, str]]:
    """Every combination that trains, and the first of each kind of refusal (what_decides)."""
    first: dict[tuple, tuple[str, str, str]] = {}
    for combination in itertools.product(DATA, MODELS, METHODS):
        first.setdefault(what_decides(*combination), combination)
    return list(first.values())


# Fast: a few combinations that hold every data set, model, rule and branch (training ones first); the rest slow.
@pytest.mark.parametrize(
    ("data", "model", "method"),
    few_fast(representative_combinations(), key=lambda *c: (*c, outcome(*c)), prefer=lambda *c: outcome(*c) == "trains"),
)
def test_every_combination_composes_and_instantiates(data, model, method, tmp_path):
    cfg = compose_config([f"data={data}", f"model={model}", f"method={method}", f"paths.data_dir={tmp_path}"], tmp_path)
    choices = HydraConfig.get().runtime.choices
    assert (choices.data, choices.model, choices.method) == (data, model, method)
    if "diehl_cook" in (model, method):  # that network and its rule go together, on pixels in [0, 1] (test_diehl_cook.py)
        with pytest.raises(ConfigError) as error:
            check_config(cfg)
            build(cfg)
        # (a combination refused for its own reason, sequences or a model that does not fit the data, is refused first)
        assert "diehl_cook" in str(error.value) or data in SEQUENCE_DATA or incompatible(data, model) or model == "lsm"
        return
    if needs_spikes(model, method):
        with pytest.raises(ConfigError, match=f"method={method} pairs input spikes .* use model.encoding=rate or model.encoding=latency"):
            check_config(cfg)
        return
    check_config(cfg)
    if time_mismatch(data, model, method) and not incompatible(data, model):
        # (a convolutional model on vector data is refused first, for its own reason)
        with pytest.raises(ConfigError, match="recurrent|sequence|spiking|image data|ESN|LSM"):
            build(cfg)
        return
    if incompatible(data, model):
        with pytest.raises(ConfigError) as error:
            build(cfg)
        message = str(error.value)
        if model == "snn":  # a rule that does not train it, or data that is not a static classification
            assert "model=snn" in message and any(text in message for text in ("does not train spiking models", f"data={data} is a",
                                                                                   "trains only model=srm"))
        elif model == "srm":  # a rule other than spikeprop, or data other than spike times
            assert "model=srm" in message and ("use method=spikeprop" in message or "use data=spike_xor" in message)
        elif model == "autoencoder":
            assert f"data={data}" in message and "data=mnist_autoencoder" in message and "model=mlp" in message
        else:
            assert f"model={model}" in message and "image" in message and f"data={data}" in message
        return
    datamodule = instantiate(cfg.data)  # no file is read before setup()
    net = instantiate(cfg.model, input_shape=datamodule.input_shape, output_dim=datamodule.output_dim)
    rule = instantiate(cfg.method)
    if cfg.method.get("table_size"):  # a smaller noise table: drawing the default 16 M numbers is slow
        rule = instantiate(cfg.method, table_size=2**20)
    assert isinstance(rule, LearningRule)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr  # oracle: the composed config

    # One gradient estimate on a random batch of the data's shape: every trainable parameter gets a
    # finite gradient of its own shape, and the rule does not step.
    torch.manual_seed(0)
    shape = datamodule.input_shape
    x = torch.randn(4, min(shape[0], 100), *shape[1:]) if model in ("rnn", "esn", "lsm") else torch.randn(4, *shape)  # 100 steps at most
    y = random_target(datamodule.task, x, datamodule.output_dim)
    out_shape = net(x).shape
    expected_shape = {"rnn": (4, x.shape[1], datamodule.output_dim), "esn": (4, x.shape[1], datamodule.output_dim),
                      "lsm": (4, x.shape[1], datamodule.output_dim),
                      "snn": (4, cfg.model.get("steps"), datamodule.output_dim)}
    assert out_shape == expected_shape.get(model, (4, datamodule.output_dim))
    if datamodule.task == "reconstruction":
        assert datamodule.output_dim == datamodule.input_dim == 784
    before = [p.detach().clone() for p in net.parameters()]
    rule.setup(net, seed=0, rank=0, device=torch.device("cpu"))
    out = rule.estimate_grads(net, x, y, partial(per_example_loss, task_of(cfg, datamodule)))  # the SNN's: a loss over time
    assert torch.isfinite(out.loss)
    closed_form = method == "ridge"  # writes no gradient: statistics, solved before validation
    for p, p0 in zip(net.parameters(), before):
        if closed_form or not p.requires_grad:
            assert p.grad is None
        else:
            assert p.grad is not None and p.grad.shape == p.shape and torch.isfinite(p.grad).all()
        assert torch.equal(p.detach(), p0)
    if closed_form:
        assert all(bool(s.abs().sum() > 0) for s in rule.statistics())


@pytest.mark.parametrize("data", [d for d in DATA if not d.endswith("_autoencoder") and d not in SEQUENCE_DATA])
def test_autoencoder_on_a_classification_dataset_fails_through_train(data, tmp_path):
    cfg = compose_config([f"data={data}", "model=autoencoder", *TINY, "logger=csv"], tmp_path)
    with pytest.raises(ConfigError, match=f"data={data} is a \\S+ task: use a reconstruction dataset such as data=mnist_autoencoder"):
        train(cfg)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "failed" and "ConfigError" in record["message"]


@pytest.mark.parametrize("group", ["method", "data", "model", "optimizer", "trainer"])
def test_unknown_option_lists_the_available_ones(group):
    with pytest.raises(MissingConfigException) as error:
        compose_config([f"{group}=nope"])
    message = str(error.value)
    assert f"Could not find '{group}/nope'" in message
    assert f"Available options in '{group}'" in message
    for option in options(group):
        assert option in message


def test_gradient_clip_val_names_grad_clip_norm(tmp_path):
    cfg = compose_config(["+trainer.gradient_clip_val=1", *TINY, "logger=csv"], tmp_path)
    with pytest.raises(ConfigError, match="grad_clip_norm"):
        train(cfg)


def test_accumulate_grad_batches_is_refused(tmp_path):
    cfg = compose_config(["+trainer.accumulate_grad_batches=2"], tmp_path)
    with pytest.raises(ConfigError, match="data.batch_size"):
        check_config(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainer_without_gpu_is_a_clear_error(trainer, tmp_path):
    cfg = compose_config([f"trainer={trainer}", *TINY, "logger=csv"], tmp_path)
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert "no CUDA device" in str(error.value) and "trainer=cpu" in str(error.value)
    # A failed run still leaves its record behind.
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "failed" and "ConfigError" in record["message"]


def test_fp16_with_a_hand_written_rule_is_refused(tmp_path):
    non_bp = [m for m in METHODS if m != "bp"]
    if not non_bp:
        pytest.skip("no rule besides backprop yet")
    cfg = compose_config([f"method={non_bp[0]}", "trainer.precision=16-mixed"], tmp_path)
    with pytest.raises(ConfigError, match="bf16-mixed"):
        check_config(cfg)
    check_config(compose_config(["method=bp", "trainer.precision=16-mixed"], tmp_path))


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bar_switch_keeps_the_other_callbacks(enabled, tmp_path):
    """`+trainer.enable_progress_bar=false` with the default callbacks: no bar, checkpointing kept
    (Lightning itself refuses the combination of the switch and a RichProgressBar callback)."""
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

    cfg = compose_config(["callbacks=default", "logger=csv", f"+trainer.enable_progress_bar={str(enabled).lower()}"], tmp_path)
    _, _, trainer, _ = build(cfg)
    assert any(isinstance(c, RichProgressBar) for c in trainer.callbacks) == enabled
    assert trainer.progress_bar_callback is None if not enabled else isinstance(trainer.progress_bar_callback, RichProgressBar)
    assert any(isinstance(c, ModelCheckpoint) for c in trainer.callbacks)


EXPERIMENTS = options("experiment")


def leaves(node, prefix=()):
    """(dotted key, value) for every leaf of a plain dict/list tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*prefix, str(key)))
    else:
        yield ".".join(prefix), node


# Fast: a few pairs that hold every preset and every rule; the rest slow.
@pytest.mark.parametrize(("experiment", "method"), few_fast(itertools.product(EXPERIMENTS, METHODS)))
def test_every_experiment_preset_composes_with_every_rule(experiment, method, tmp_path):
    """Oracle: the preset's yaml files. Each value the preset sets (and its per-rule file
    conf/tuned/<experiment>/<method>.yaml, which wins) is the value the composed config holds."""
    from omegaconf import OmegaConf

    expected = {}
    for path in (CONFIG_DIR / "experiment" / f"{experiment}.yaml", CONFIG_DIR / "tuned" / experiment / f"{method}.yaml"):
        if path.exists():
            raw = OmegaConf.to_container(OmegaConf.load(path))
            raw.pop("defaults", None)
            expected.update(dict(leaves(raw)))
    cfg = compose_config([f"experiment={experiment}", f"method={method}"], tmp_path)
    assert HydraConfig.get().runtime.choices["method"] == method
    for key, value in expected.items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        if isinstance(value, str) and value.startswith("${") and value.endswith("}") and ":" not in value:
            value = OmegaConf.select(cfg, value[2:-1])  # the preset ties it to another key (force_sine: leak = dt)
        assert got == value, f"{experiment} x {method}: {key} = {got!r}, the preset says {value!r}"
    output_dim = 784 if cfg.data.get("reconstruction") else 10
    from hydra.utils import get_class

    if getattr(get_class(cfg.model._target_), "kind", None) == "spike_times":  # model=srm: XOR's 3 input spike times, 1 output
        instantiate(cfg.model, input_shape=(3,), output_dim=1)
    else:
        model_cfg = cfg.model
        if cfg.model.get("units", 0) > 300:
            # The preset's values are checked above; the build at 100 units (a 1000-unit ESN's echo-state check alone
            # takes tens of CPU seconds, once per rule of this matrix).
            model_cfg = OmegaConf.merge(cfg.model, {"units": 100})
        instantiate(model_cfg, input_shape=(1, 28, 28), output_dim=output_dim)
    instantiate(cfg.method)
