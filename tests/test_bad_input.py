"""Bad input, tried as a new user would: each fails before any work with a message that names the
key (or the file), the value given and what is accepted.

Oracles: the accepted ranges written here by hand (lr > 0, batch_size >= 1, ...), and the bytes of
IDX files written here (a header that announces more data than the file holds, a wrong magic number).
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import struct

import numpy as np
import pytest

from conftest import CSV_ONLY, TINY, TORCHVISION_FOLDER, compose_config, describe, few_fast, results_under, run_cli, truncated_mnist, write_idx, write_vision_dataset
from learnbench.config_validation import ConfigError
from learnbench.config_validation import describe as describe_type
from learnbench.config_validation import validate_config
from learnbench.data import DamagedDataFileError, VisionDataModule
from learnbench.paths import CONFIG_DIR
from learnbench.train import check_config, train


def refused(overrides: list[str], tmp_path) -> str:
    """The message check_config gives for these overrides (it must refuse them)."""
    cfg = compose_config(overrides, tmp_path)
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    return str(error.value)


# ============================================================================= the reported ones
def test_a_learning_rate_that_is_not_a_number(tmp_path):
    message = refused(["optimizer.lr=abc"], tmp_path)
    assert message == "optimizer.lr='abc': expected a number > 0 (set on the command line)"


def test_a_batch_size_of_zero(tmp_path):
    message = refused(["data.batch_size=0"], tmp_path)
    assert message == "data.batch_size=0: expected an integer >= 1 (set on the command line)"


def test_a_negative_sigma(tmp_path):
    message = refused(["method=np", "method.sigma=-1"], tmp_path)
    assert "method.sigma=-1: expected a number > 0" in message


def test_a_truncated_idx_file(tmp_path):
    """The reported case: a file whose header says 60000 x 28 x 28 but which holds 984 bytes."""
    write_vision_dataset(tmp_path, "mnist", seed=0)
    raw = tmp_path / "MNIST" / "raw"
    path = raw / "train-images-idx3-ubyte"
    header = struct.pack(">4I", 0x00000803, 60000, 28, 28)
    path.write_bytes(header + bytes(984))
    dm = VisionDataModule(dataset="mnist", data_dir=str(tmp_path), download=False, val_size=10)
    with pytest.raises(DamagedDataFileError) as error:
        dm.setup()
    message = str(error.value)
    assert message.startswith(f"{path} is damaged: ")
    assert "60000 x 28 x 28 bytes" in message and f"{16 + 60000 * 28 * 28} bytes with the header" in message
    assert f"the file has {16 + 984} bytes (truncated)" in message
    assert f"Delete it ({path}) and download it again (data.download=true" in message
    assert f"copy an intact train-images-idx3-ubyte of mnist into {raw}/" in message


# ============================================================================= more options
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optimizer.lr=-0.1"], "optimizer.lr=-0.1: expected a number > 0"),
        (["optimizer.lr=0"], "optimizer.lr=0: expected a number > 0"),
        (["optimizer.lr='1e-3'"], "optimizer.lr='1e-3': expected a number > 0"),  # a quoted number stays a string
        (["data.batch_size=abc"], "data.batch_size='abc': expected an integer >= 1"),
        (["data.batch_size=2.5"], "data.batch_size=2.5: expected an integer >= 1"),
        (["data.batch_size=64.0"], "data.batch_size=64.0: expected an integer >= 1"),  # the code would get a float
        (["trainer.max_epochs=0"], "trainer.max_epochs=0: expected -1 or an integer >= 1 or null"),
        (["optimizer.momentum=1"], "optimizer.momentum=1: expected a number in [0, 1)"),
        (["optimizer.weight_decay=-1e-4"], "optimizer.weight_decay=-0.0001: expected a number >= 0"),
        (["optimizer=adam", "data=fashion_mnist", "optimizer.betas=[0.9,1.5]"], "optimizer.betas=[0.9, 1.5]: expected a list of 2 values [a number in [0, 1), a number in [0, 1)]"),
        (["scheduler=cosine", "scheduler.min_lr_ratio=2"], "scheduler.min_lr_ratio=2: expected a number in [0, 1]"),
        (["scheduler=warmup_linear", "scheduler.warmup_epochs=-1"], "scheduler.warmup_epochs=-1: expected a number >= 0"),
        (["data=spiral", "data.arms=1"], "data.arms=1: expected an integer >= 2"),
        (["data=mnist", "data.dataset=cifar10"], "data.dataset='cifar10': expected one of 'mnist', 'fashion_mnist'"),
        (["data=mnist", "data.val_size=0"], "data.val_size=0: expected an integer >= 1"),
        (["data=mnist", "data.download=yes"], "data.download='yes': expected true or false"),
        (["data=mnist", "data.normalize=zscore"], "data.normalize='zscore': expected one of 'standard', 'unit', 'signed'"),
        (["grad_clip_norm=0"], "grad_clip_norm=0: expected a number > 0 or null"),
        (["grad_clip_norm=off"], "grad_clip_norm='off': expected a number > 0 or null"),
        (["diagnostics.every_n_steps=-5"], "diagnostics.every_n_steps=-5: expected an integer >= 0"),
        (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0: expected an integer >= 1 or null"),
        # A size of 0 built a model without units (status ok, 2 parameters); -5 failed inside torch.
        (["model.hidden_sizes=[0]"], "model.hidden_sizes=[0]: expected a list (each item an integer >= 1)"),
        (["model.hidden_sizes=[-5]"], "model.hidden_sizes=[-5]: expected a list (each item an integer >= 1)"),
        (["model=cnn", "data=mnist", "model.channels=[16,0]"], "model.channels=[16, 0]: expected a list (each item an integer >= 1)"),
        (["model=autoencoder", "data=mnist_autoencoder", "model.bottleneck=0"], "model.bottleneck=0: expected an integer >= 1"),
        (["model.activation=relu6"], "model.activation='relu6': expected one of 'relu', "),
        (["seeds=5"], "seeds=5: expected a list (each item an integer in [0, 4294967295]) or null"),
        (["seeds=[0,-1]"], "seeds=[0, -1]: expected a list (each item an integer in [0, 4294967295]) or null"),
    ],
)
def test_out_of_range_and_wrongly_typed_options(overrides, expected, tmp_path):
    message = refused(overrides, tmp_path)
    assert message.startswith(expected), message
    assert message.endswith("(set on the command line)"), message


def test_an_unknown_key_lists_the_accepted_ones(tmp_path):
    message = refused(["method=np", "+method.sigam=0.01"], tmp_path)
    assert message.startswith("method.sigam=0.01: learnbench.rules.NodePerturbation has no option 'sigam' (did you mean 'sigma'?); it accepts: ")
    accepted = message.split("it accepts: ", 1)[1].split(" (", 1)[0].split(", ")
    # The rule's own options and those it passes on to its base class (**kwargs followed along the MRO).
    assert {"sigma", "baseline", "antithetic", "running_decay", "directions", "noise", "table_size", "clip"} <= set(accepted)
    assert accepted == sorted(accepted)


def test_a_key_the_code_supplies_is_refused(tmp_path):
    message = refused(["+model.input_dim=3"], tmp_path)
    assert message.startswith("model.input_dim=3: set by the data module, not in the config; remove it")


def test_every_bad_key_is_reported_at_once(tmp_path):
    message = refused(["optimizer.lr=abc", "data.batch_size=0", "seed=-1"], tmp_path)
    lines = message.splitlines()
    assert lines[0] == "4 options are invalid:"
    assert "  optimizer.lr='abc': expected a number > 0 (set on the command line)" in lines
    assert "  data.batch_size=0: expected an integer >= 1 (set on the command line)" in lines
    assert "  seed=-1: expected an integer in [0, 4294967295] (set on the command line)" in lines
    # data.seed is `${seed}` in conf/data/spiral.yaml: the message says where its value came from.
    assert "  data.seed=-1: expected an integer in [0, 4294967295] (= ${seed}, conf/data/spiral.yaml)" in lines


def test_bad_options_fail_before_the_data_is_looked_at(tmp_path):
    """A bad option and a missing dataset: the option's message comes first, and results.json has it."""
    overrides = ["data=mnist", f"paths.data_dir={tmp_path / 'empty'}", "data.download=false", "optimizer.lr=abc", *TINY, *CSV_ONLY]
    with pytest.raises(ConfigError, match=re.escape("optimizer.lr='abc': expected a number > 0")):
        train(compose_config(overrides, tmp_path))
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "failed" and record["refused"] is True  # reports leave it out, and say so
    assert record["message"] == "ConfigError: optimizer.lr='abc': expected a number > 0 (set on the command line)"


def test_validator_raises_a_value_error_of_its_own_without_hydra(monkeypatch):
    """Standalone (no Hydra app): the same check, the same ConfigError (a ValueError), no source hint."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # as outside a Hydra app (the tests above set it)

    cfg = OmegaConf.create({"optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": "abc"}, "seed": 0})
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert isinstance(error.value, ValueError)
    assert str(error.value) == "optimizer.lr='abc': expected a number > 0"


def test_type_descriptions():
    from typing import Literal, Optional, Sequence

    from learnbench.options import Fraction, HalfOpenFraction, NonNegativeInt, OpenFraction, Positive, PositiveInt

    assert describe_type(Positive) == "a number > 0"
    assert describe_type(PositiveInt) == "an integer >= 1"
    assert describe_type(NonNegativeInt) == "an integer >= 0"
    assert describe_type(Fraction) == "a number in [0, 1]"
    assert describe_type(OpenFraction) == "a number in (0, 1)"
    assert describe_type(HalfOpenFraction) == "a number in [0, 1)"
    assert describe_type(Optional[Positive]) == "a number > 0 or null"
    assert describe_type(Literal["gaussian", "rademacher"]) == "one of 'gaussian', 'rademacher'"
    assert describe_type(Sequence[PositiveInt]) == "a list (each item an integer >= 1)"
    assert describe_type(bool) == "true or false"


# ============================================================================= every shipped config passes
def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


# Fast: a few pairs that hold every preset and every rule; the rest slow.
@pytest.mark.parametrize(("experiment", "method"), few_fast(itertools.product(options("experiment"), options("method"))))
def test_every_experiment_preset_passes_the_validator(experiment, method, tmp_path):
    cfg = compose_config([f"experiment={experiment}", f"method={method}"], tmp_path)
    if cfg.model.get("encoding") == "current" and method in ("stdp", "rstdp", "stdp_gradient"):  # they read input spikes
        with pytest.raises(ConfigError, match="use model.encoding=rate or model.encoding=latency"):
            check_config(cfg)
        return
    check_config(cfg)


EXTRAS = [[], ["scheduler=cosine"], ["scheduler=exponential"], ["scheduler=warmup_linear"], ["trainer=ddp_sim"], ["debug=fast"]]
DATA_EXTRAS = [(data, j) for data in options("data") for j in range(len(EXTRAS))]


# Fast: a few pairs that hold every data set and every extra group option; the rest slow.
@pytest.mark.parametrize(
    ("data", "extra"),
    few_fast(
        [(data, EXTRAS[j]) for data, j in DATA_EXTRAS],
        key=lambda data, extra: (data, EXTRAS.index(extra)),
        ids=[f"{data}-extra{j}" for data, j in DATA_EXTRAS],
    ),
)
def test_every_data_set_and_group_option_passes_the_validator(data, extra, tmp_path):
    check_config(compose_config([f"data={data}", *extra], tmp_path))


# ============================================================================= more data files
def damaged_message(root, name: str = "mnist") -> str:
    dm = VisionDataModule(dataset=name, data_dir=str(root), download=False, val_size=10)
    with pytest.raises(DamagedDataFileError) as error:
        dm.setup()
    return str(error.value)


def test_a_file_with_a_wrong_magic_number(tmp_path):
    write_vision_dataset(tmp_path, "fashion_mnist", seed=1)
    path = tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[2:4] = b"\x0d\x03"  # float32 elements instead of unsigned bytes
    path.write_bytes(bytes(data))
    message = damaged_message(tmp_path, "fashion_mnist")
    assert message.startswith(f"{path} is damaged: it does not start with the IDX header of images")
    assert "(magic number 0x00000803: unsigned bytes, 3 dimensions) but with 0x00000D03" in message
    assert "Delete it" in message


def test_labels_in_place_of_images(tmp_path):
    write_vision_dataset(tmp_path, "mnist", seed=2)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-labels-idx1-ubyte").read_bytes())
    assert "but with 0x00000801" in damaged_message(tmp_path)


def test_a_file_longer_than_its_header_says(tmp_path):
    write_vision_dataset(tmp_path, "mnist", seed=3)
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\0" * 7)
    message = damaged_message(tmp_path)
    assert message.startswith(f"{path} is damaged: its header announces 60 bytes of data (68 bytes with the header)")
    assert "the file has 75 bytes (longer than its header says)" in message


def test_an_empty_file(tmp_path):
    write_vision_dataset(tmp_path, "mnist", seed=4)
    path = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    path.write_bytes(b"")
    assert f"{path} is damaged: it has 0 bytes, fewer than the 8-byte IDX header" in damaged_message(tmp_path)


def test_images_and_labels_that_do_not_match(tmp_path):
    write_vision_dataset(tmp_path, "mnist", seed=5)
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(100, dtype=np.uint8))
    message = damaged_message(tmp_path)
    assert "train-images-idx3-ubyte holds 240 images but train-labels-idx1-ubyte holds 100 labels" in message


def test_an_official_size_file_with_other_contents_fails_its_checksum(tmp_path):
    """Files of the official shape (10000 test images and labels) are checked against the official MD5;
    the synthetic training files (240 images) are not official ones and pass."""
    write_vision_dataset(tmp_path, "mnist", seed=6, n_test=10000)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    message = damaged_message(tmp_path)
    assert message.startswith(f"{path} is damaged: it has the official file's size but not its contents")
    assert "expected 2646ac647ad5339dbf082846283269ea" in message


def test_a_truncated_gzip_archive(tmp_path):
    write_vision_dataset(tmp_path, "mnist", seed=7)
    raw = tmp_path / "MNIST" / "raw"
    packed = gzip.compress((raw / "train-images-idx3-ubyte").read_bytes())
    (raw / "train-images-idx3-ubyte").unlink()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(packed[: len(packed) // 2])
    message = damaged_message(tmp_path)
    assert message.startswith(f"{raw / 'train-images-idx3-ubyte.gz'} is damaged: it is not a complete gzip archive")
    assert not list(raw.glob("*.tmp")), "the partial unpacked file is removed"


def test_a_damaged_file_reaches_results_json(tmp_path):
    root = tmp_path / "datasets"
    path = truncated_mnist(root, seed=8)
    run_dir = tmp_path / "run"
    overrides = ["data=mnist", f"paths.data_dir={root}", "data.download=false", "data.val_size=40", *TINY, *CSV_ONLY]
    with pytest.raises(DamagedDataFileError):
        train(compose_config(overrides, run_dir))
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "failed"
    assert record["message"].startswith(f"DamagedDataFileError: {path} is damaged: its header announces 240 x 28 x 28 bytes")


@pytest.mark.parametrize("name", list(TORCHVISION_FOLDER))
def test_the_shared_official_files_pass(name):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    if not (root / TORCHVISION_FOLDER[name] / "raw").is_dir():
        pytest.skip(f"no official {name} files in {root}")
    VisionDataModule(dataset=name, data_dir=str(root), download=False).prepare_data()


# ============================================================================= through the CLI
@pytest.mark.slow
def test_the_cli_prints_the_message_and_records_it(tmp_path):
    log_dir = tmp_path / "logs"
    proc = run_cli("data=spiral", "optimizer.lr=abc", *TINY, *CSV_ONLY, f"paths.log_dir={log_dir}", cwd=tmp_path)
    assert proc.returncode != 0, describe(proc)
    expected = "optimizer.lr='abc': expected a number > 0 (set on the command line)"
    assert expected in proc.stdout + proc.stderr, describe(proc)
    (record,) = results_under(log_dir).values()
    assert record["status"] == "failed"
    assert record["message"] == f"ConfigError: {expected}"
    assert record["steps"] == 0


# ============================================================================= accepted silently before (issue 27)
def test_a_batch_larger_than_the_training_split_is_refused(tmp_path):
    """It trained 0 steps (the incomplete batch dropped) and reported status ok."""
    with pytest.raises(ConfigError) as error:
        train(compose_config(["data.batch_size=5000", *TINY, *CSV_ONLY], tmp_path))
    assert str(error.value) == (
        "data.batch_size=5000 is larger than the training split (2000 examples) and data.drop_last=true drops the "
        "incomplete batch, so no step would be taken: use data.batch_size=2000 or less (or data.drop_last=false)"
    )
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "failed" and record["steps"] == 0 and record["refused"] is True


def test_the_batch_check_counts_each_process_share():
    from learnbench.data import SpiralDataModule

    data = SpiralDataModule(train_per_arm=500, batch_size=600)  # 1000 examples, 500 per process on 2
    data.check_splits_fit(world_size=1)
    with pytest.raises(ConfigError, match=re.escape("(500 per process on the 2 processes, of 1000 examples)")):
        data.check_splits_fit(world_size=2)
    SpiralDataModule(train_per_arm=500, batch_size=600, drop_last=False).check_splits_fit(world_size=2)  # one short batch


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+foo=1"], "foo=1: the config's top level has no option 'foo'; it accepts: allreduce_grads, bias_lr_scale, callbacks, ckpt_path, "),
        (["+grad_clip=1.0"], "grad_clip=1.0: the config's top level has no option 'grad_clip' (did you mean 'grad_clip_norm'?)"),
        (["+diagnostics.every_n_step=5"], "diagnostics.every_n_step=5: diagnostics has no option 'every_n_step' (did you mean 'every_n_steps'?); it accepts: every_n_steps"),
        (["+paths.datadir=x"], "paths.datadir='x': paths has no option 'datadir' (did you mean 'data_dir'?)"),
    ],
)
def test_an_added_key_nothing_reads_is_refused(overrides, expected, tmp_path):
    message = refused(overrides, tmp_path)
    assert message.startswith(expected), message
    assert message.endswith("(set on the command line)"), message


@pytest.mark.parametrize(
    ("overrides", "dotted", "shown", "expected"),
    [
        (["method=np"], "method.sigmaa", "0.1", "method.sigmaa=0.1: learnbench.rules.NodePerturbation has no option 'sigmaa' (did you mean 'sigma'?); it accepts: "),
        ([], "trainer.max_step", "3", "trainer.max_step=3: lightning.pytorch.Trainer has no option 'max_step' (did you mean 'max_steps', "),
        ([], "trainer.gradient_clip_val", "1.0", "trainer.gradient_clip_val does not work with manual optimisation: use grad_clip_norm=<value>"),
        ([], "trainer.limit_val_batches", "2", "trainer.limit_val_batches=2: trainer's config file does not list 'limit_val_batches'; add it with +trainer.limit_val_batches=2"),
        ([], "grad_clip", "1.0", "grad_clip=1.0: the config's top level has no option 'grad_clip' (did you mean 'grad_clip_norm'?)"),
    ],
)
def test_what_an_override_of_a_missing_key_says(overrides, dotted, shown, expected, tmp_path):
    """Hydra refuses `key=value` for a key the config lacks, and suggests adding the typo with `+`; the app says
    instead what the close matches are (the node is the key's parent in the composed config, as Hydra's error holds it)."""
    from omegaconf import OmegaConf

    from learnbench.config_validation import missing_key_message

    cfg = compose_config(overrides, tmp_path)
    parent = OmegaConf.select(cfg, dotted.rsplit(".", 1)[0]) if "." in dotted else cfg
    assert missing_key_message(dotted, shown, parent).startswith(expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("method.sigmaa=0.1", "method.sigmaa=0.1: learnbench.rules.NodePerturbation has no option 'sigmaa' (did you mean 'sigma'?)"),
        ("trainer.max_step=3", "trainer.max_step=3: lightning.pytorch.Trainer has no option 'max_step' (did you mean 'max_steps'"),
        ("trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val does not work with manual optimisation: use grad_clip_norm=<value>"),
    ],
)
def test_the_cli_names_the_close_matches_of_a_typo_without_plus(override, expected, tmp_path):
    log_dir = tmp_path / "logs"
    proc = run_cli("method=np", override, *TINY, *CSV_ONLY, f"paths.log_dir={log_dir}", cwd=tmp_path)
    assert proc.returncode == 2, describe(proc)
    assert proc.stderr.startswith(expected) and proc.stderr.count("\n") == 1, describe(proc)
    assert "+" + override not in proc.stderr and "Traceback" not in proc.stderr, describe(proc)
    assert not log_dir.exists()  # refused before Hydra made a run folder


@pytest.mark.parametrize("precision", ["16", "'16'", "16-true", "16-mixed"])
def test_fp16_is_refused_for_every_rule_that_writes_gradients_by_hand(precision, tmp_path):
    """The check matched only "16-mixed": `trainer.precision=16 method=fa` ran."""
    message = refused(["method=fa", f"trainer.precision={precision}"], tmp_path)
    assert message == (
        f"trainer.precision={precision.strip(chr(39))}: fp16 rescales or rounds the gradients that method=fa writes by hand: "
        f"use trainer.precision=32 or bf16-mixed"
    )


def test_the_fp16_refusal_recommends_only_what_works(tmp_path):
    """fg_w fails under bf16-mixed: its fp16 refusal must not send the user there."""
    assert refused(["method=fg_w", "trainer.precision=16"], tmp_path).endswith("use trainer.precision=32")
    assert refused(["method=fg_w", "trainer.precision=bf16-mixed"], tmp_path) == (
        "trainer.precision=bf16-mixed: method=fg_w computes its gradients in bf16 under autocast, which cannot be "
        "stored in its float32 weights: use trainer.precision=32"
    )


def test_precision_16_with_backprop_records_the_precision_that_ran(tmp_path):
    """On a CPU Lightning runs fp16 AMP as bf16-mixed: results.json says so, not 16."""
    record = train(compose_config(["method=bp", "trainer.precision=16", *TINY, *CSV_ONLY], tmp_path))
    assert record["status"] == "ok"
    assert record["precision"] == ("16-mixed" if __import__("torch").cuda.is_available() else "bf16-mixed")
    assert json.loads((tmp_path / "results.json").read_text())["precision"] == record["precision"]


# The model each kind of rule is tried on (its first kind that has one), and the data and options of that model.
MODEL_OF_KIND = {"feedforward": "mlp", "recurrent": "rnn", "reservoir": "esn", "spiking": "snn", "spike_times": "srm",
                 "competitive_spiking": "diehl_cook"}
SEQUENCES = ["data=add_task", "data.steps=6", "data.train_sequences=4", "data.val_sequences=2"]
MODEL_DATA = {
    "mlp": ["data=spiral", "data.train_per_arm=50", "model.hidden_sizes=[8]"],
    "rnn": [*SEQUENCES, "model=rnn", "model.hidden_size=4"],
    "esn": [*SEQUENCES, "model=esn", "model.units=4"],
    # rate-coded synthetic MNIST (paths.data_dir: the vision_data fixture): the STDP rules pair input spikes
    "snn": ["data=mnist", "data.normalize=unit", "data.val_size=40", "data.batch_size=20", "model=snn",
            "model.hidden_sizes=[8]", "model.steps=4", "model.encoding=rate"],
    "srm": ["data=spike_xor", "model=srm"],  # SpikeProp's XOR in spike times
    "diehl_cook": ["data=mnist", "data.normalize=unit", "data.val_size=40", "data.batch_size=20", "model=diehl_cook",
                   "model.neurons=8", "model.present_ms=10", "model.rest_ms=5", "model.dt=1.0"],
}


def _rules_and_models() -> list[tuple[str, str]]:
    from hydra.utils import get_class

    from learnbench.catalog import method_config

    def model_for(method: str) -> str:
        trains = get_class(method_config(method)._target_).trains
        return next(MODEL_OF_KIND[kind] for kind in MODEL_OF_KIND if kind in trains)

    return [(method, model_for(method)) for method in options("method")]


@pytest.mark.parametrize(("method", "model"), few_fast(_rules_and_models()))
def test_bf16_mixed_runs_exactly_the_rules_not_listed(method, model, tmp_path, vision_data):
    """Oracle: two real steps under bf16-mixed autocast. A rule listed in train.rules_without_bf16_autocast fails
    there (so its refusal is needed) and one not listed trains (so bf16-mixed may be recommended to it)."""
    import lightning as L
    from hydra.utils import get_class

    from learnbench.train import build, rules_without_bf16_autocast

    cfg = compose_config([*MODEL_DATA[model], f"paths.data_dir={vision_data[0]}", f"method={method}", "trainer.precision=bf16-mixed", *TINY, *CSV_ONLY], tmp_path)
    listed = issubclass(get_class(cfg.method._target_), rules_without_bf16_autocast())
    if listed:
        with pytest.raises(ConfigError, match="bf16"):
            check_config(cfg)
    else:
        check_config(cfg)
    L.seed_everything(0, verbose=False)
    datamodule, module, trainer, _ = build(cfg)
    try:
        trainer.fit(module, datamodule=datamodule)
        failed = None
    except RuntimeError as error:
        failed = error
    assert (failed is not None) == listed, f"{method}: listed={listed}, bf16-mixed run: {failed or 'trained'}"


def test_max_epochs_minus_one_without_a_step_limit_is_refused(tmp_path):
    """It trained until killed ("Epoch 0/-2"); with a step limit it stops there, as Lightning documents."""
    assert refused(["trainer.max_epochs=-1"], tmp_path) == (
        "trainer.max_epochs=-1 with no trainer.max_steps would train until killed: set trainer.max_epochs to a "
        "number of epochs (or trainer.max_steps to a number of steps)"
    )
    check_config(compose_config(["trainer.max_epochs=-1", "trainer.max_steps=10"], tmp_path))


# ============================================================================= tracebacks before (issue 27)
def test_a_checkpoint_that_does_not_exist_is_refused(tmp_path):
    missing = tmp_path / "nope.ckpt"
    assert refused([f"ckpt_path={missing}"], tmp_path) == (
        f"ckpt_path={missing}: no such file (a run's checkpoint is <run dir>/checkpoints/last.ckpt)"
    )
    assert refused([f"ckpt_path={tmp_path}"], tmp_path).startswith(f"ckpt_path={tmp_path} is a folder: name the checkpoint file")


def test_a_checkpoint_of_another_model_is_refused_before_training(tmp_path):
    """It failed inside Lightning's restore with a size-mismatch traceback."""
    import lightning as L

    from learnbench.train import build

    checkpoint = tmp_path / "small.ckpt"
    small = ["data=spiral", "model.hidden_sizes=[16]", *TINY, *CSV_ONLY]
    L.seed_everything(0, verbose=False)
    datamodule, module, trainer, _ = build(compose_config(small, tmp_path / "first"))
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(checkpoint)
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("not a checkpoint")

    with pytest.raises(ConfigError) as error:
        train(compose_config([*small[:1], "model.hidden_sizes=[32]", *TINY, *CSV_ONLY, f"ckpt_path={checkpoint}"], tmp_path / "resumed"))
    assert str(error.value) == (
        f"ckpt_path={checkpoint} was saved by another model or rule: model.blocks.0.linear.weight is [16, 2] there and "
        f"[32, 2] here; it was written with model.hidden_sizes=[16] (this run: [32]): resume with the options that wrote it"
    )
    with pytest.raises(ConfigError, match=r"it has no rule\.feedback\.\d, which this run has; it was written with method\._target_="):
        train(compose_config([*small, "method=kp", f"ckpt_path={checkpoint}"], tmp_path / "kp"))
    with pytest.raises(ConfigError, match=re.escape(f"ckpt_path={not_a_checkpoint} is not a checkpoint that can be read")):
        train(compose_config([*small, f"ckpt_path={not_a_checkpoint}"], tmp_path / "text"))
    assert train(compose_config([*small, f"ckpt_path={checkpoint}", "trainer.max_epochs=2"], tmp_path / "same"))["status"] == "ok"


def test_what_a_run_folder_that_cannot_be_made_says(tmp_path):
    from learnbench.console import setup_error_message

    a_file = tmp_path / "logs"
    a_file.write_text("")
    error = NotADirectoryError(20, "Not a directory", str(a_file / "runs" / "2026"))
    assert setup_error_message(error) == (
        f"cannot make the run folder {a_file / 'runs' / '2026'}: {a_file} is a file, not a folder: "
        f"set paths.log_dir (or LEARNBENCH_LOG_DIR) to a folder you can write"
    )
    error = PermissionError(13, "Permission denied", str(tmp_path / "runs"))
    assert setup_error_message(error).endswith(f": {tmp_path} is not writable: set paths.log_dir (or LEARNBENCH_LOG_DIR) to a folder you can write")


def read_only_folder(tmp_path):
    """A folder this process cannot create anything in: a chmod 555 folder, or for root (who ignores modes)
    a folder under /sys, a file system even root cannot write."""
    import os

    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        (__import__("pathlib").Path("/sys") / "learnbench-probe").mkdir()
    except OSError:
        return __import__("pathlib").Path("/sys")
    pytest.skip("no folder here is read-only for root")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["a file", "read-only"])
def test_a_log_dir_that_cannot_hold_runs_is_one_line(kind, tmp_path):
    """Hydra made the run folder before the app ran, and failed with a traceback."""
    if kind == "a file":
        log_dir = tmp_path / "logs"
        log_dir.write_text("")
        reason = f"{log_dir} is a file, not a folder"
    else:
        log_dir = read_only_folder(tmp_path) / "logs"
        reason = f"{log_dir.parent} is not writable"
    for multirun in ([], ["-m"]):
        proc = run_cli(*multirun, "optimizer.lr=0.1", *TINY, *CSV_ONLY, f"paths.log_dir={log_dir}", cwd=tmp_path)
        assert proc.returncode == 2, describe(proc)
        assert proc.stderr.startswith("cannot make the run folder ") and proc.stderr.count("\n") == 1, describe(proc)
        assert f": {reason}: set paths.log_dir (or LEARNBENCH_LOG_DIR) to a folder you can write" in proc.stderr, describe(proc)
