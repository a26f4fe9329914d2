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
    assert record["status"] == "failed"
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
    if cfg.model.get("encoding") == "current" and method in ("stdp", "rstdp"):  # they read input spikes
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
