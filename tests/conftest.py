"""Shared helpers: Hydra compose, synthetic IDX files, CLI runs in a subprocess, W&B datastore reader.

Every run writes under pytest's tmp dirs (never into the repository), W&B is offline, and the
CLI runs are started from a tmp dir so relative paths cannot leak into the checkout.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from learnbench.paths import CONFIG_DIR
from learnbench.rules.base import trainable_parameters
from learnbench.tasks import CLASSIFICATION, per_example_loss

os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

# Under pytest-xdist (`make test`: one worker per core) every worker, and every CLI run it starts, keeps to one
# thread: the workers already fill the cores, and two torch thread pools per core only contend.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)



def tiny(train_batches: int = 5, epochs: int = 1) -> list[str]:
    """A few steps of everything, no checkpoints, no progress bar."""
    return [
        f"trainer.max_epochs={epochs}",
        f"+trainer.limit_train_batches={train_batches}",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_checkpointing=false",
        "callbacks=none",
    ]


TINY = tiny()
CSV_ONLY = ["logger=csv"]

# The usual MNIST / Fashion-MNIST training-set pixel statistics (the documented normalisation:
# x = (pixel / 255 - mean) / std).
PIXEL_STATS = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
N_TRAIN, N_TEST = 240, 60


@pytest.fixture
def float64():
    """float64 as torch's default dtype for one test (exact oracles), restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def restore_process_state():
    """Lightning's launchers export DDP variables and lower the thread count: keep them out of later tests
    (a test module that runs DDP in-process uses it for every test: pytestmark = usefixtures(...))."""
    env, threads = dict(os.environ), torch.get_num_threads()
    yield
    os.environ.clear()
    os.environ.update(env)
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- slow / fast cases
def few_fast(cases, key=None, prefer=None, ids=None) -> list:
    """`cases` (argument tuples of a parametrized test) as pytest.params, every one marked `slow` except a
    covering few: picked greedily so that every value in every position of key(case) (default: the case
    itself; for a product of option lists, every option of every list) is in at least one fast case, and among
    equal picks the one with the highest prefer(case). `make test` runs the few, `make test-slow` the rest;
    a new option (a yaml file in conf/) is covered by both without editing the tests. `ids`: explicit test ids."""
    cases = [case if isinstance(case, tuple) else (case,) for case in cases]
    keys = [set(enumerate(key(*case) if key else case)) for case in cases]
    rank = [prefer(*case) if prefer else 0 for case in cases]
    left, fast = set().union(*keys), set()
    while left:
        pick = max(range(len(cases)), key=lambda i: (len(left & keys[i]), rank[i], -i))
        fast.add(pick)
        left -= keys[pick]
    return [
        pytest.param(*case, marks=() if i in fast else pytest.mark.slow, id=ids[i] if ids else None)
        for i, case in enumerate(cases)
    ]


# ----------------------------------------------------------------------------- what a rule draws at random
#: The rules (conf/method/ names) whose estimate draws nothing new from step to step, and why. Every other rule
#: counts as drawing fresh noise every step, the strict default: a new rule that draws less fails the noise
#: tests of test_rules.py until it is listed here. A local-loss variant (l_fa, lg_fg_w, ...) draws what its
#: base rule draws (its heads come from the seed once).
NO_STEP_NOISE = {
    "bp": "autograd",
    "usf": "B = sign(W)",
    "pc": "inference from the feed-forward pass",
    "ipc": "inference from the feed-forward pass",
    "fa": "B drawn once from the seed",
    "dfa": "B drawn once from the seed",
    "kp": "B drawn once from the seed, then learned",
    "frsf": "B's magnitudes drawn once from the seed",
}
#: Of those, the ones that draw nothing at random at all: the same estimate for any seed.
NO_RANDOMNESS = {"bp", "usf", "pc", "ipc"}


def draws_step_noise(method: str) -> bool:
    """Whether the rule `method=<method>` draws fresh noise every step (see NO_STEP_NOISE)."""
    from hydra.utils import get_class

    from learnbench.catalog import method_config

    cfg = method_config(method)
    base = method if cfg.get("local", "none") == "none" else get_class(cfg._target_).local_base
    return base not in NO_STEP_NOISE


# ----------------------------------------------------------------------------- one estimate of a rule
#: The classification task's per-example cross entropy, bound as the tests pass it (rules write its derivative out).
CLASSIFICATION_LOSS = partial(per_example_loss, CLASSIFICATION)


def estimate(rule, model, x, y, loss_fn=CLASSIFICATION_LOSS, *, seed=None, step=None):
    """One estimate, as the training module asks for it: with a `seed`, the rule is set up on the model first (CPU,
    rank 0); with a `step`, `rule.begin_step(step)` re-seeds its noise (without one, its generator goes on where it
    stopped: successive calls draw new noise); then the model's grads are cleared and the rule writes them.
    Returns (the gradient written for the model's trainable parameters as one flat vector, the rule's RuleOutput)."""
    if seed is not None:
        rule.setup(model, seed=seed, rank=0, device=torch.device("cpu"))
    if step is not None:
        rule.begin_step(step)
    for p in model.parameters():
        p.grad = None
    out = rule.estimate_grads(model, x, y, loss_fn)
    return torch.cat([p.grad.reshape(-1) for p in trainable_parameters(model)]), out


# ----------------------------------------------------------------------------- Hydra compose
def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The app's config as `python -m learnbench.train <overrides>` would see it, HydraConfig set."""
    GlobalHydra.instance().clear()
    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else []
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=[*overrides, *extra], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):  # as Hydra does before calling the app: the app sees its config without `hydra`
        del cfg["hydra"]
    return cfg


# ----------------------------------------------------------------------------- IDX files
def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format: 0x0000 08 <ndim> (uint8 data), big-endian uint32 dims, then the bytes."""
    assert array.dtype == np.uint8
    header = struct.pack(">I", 0x00000800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def make_images(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random images whose first two pixels spell the example's index (so rows can be traced back)."""
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n) % 256
    images[:, 0, 1] = np.arange(n) // 256
    return images


def write_vision_dataset(root: Path, name: str, seed: int, n_train: int = N_TRAIN, n_test: int = N_TEST) -> dict:
    rng = np.random.default_rng(seed)
    raw = root / TORCHVISION_FOLDER[name] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": make_images(n_train, rng),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": make_images(n_test, rng),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    for filename, array in arrays.items():
        write_idx(raw / filename, array)
    return arrays


@pytest.fixture(scope="session")
def vision_data(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """Synthetic MNIST and Fashion-MNIST IDX files in torchvision's layout, and what was written."""
    root = tmp_path_factory.mktemp("datasets")
    written = {name: write_vision_dataset(root, name, seed) for seed, name in enumerate(TORCHVISION_FOLDER)}
    return root, written


# ----------------------------------------------------------------------------- CLI runs
def cli_env() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    for key in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR", "NODE_RANK"):
        env.pop(key, None)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "learnbench.train", *args]


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cli_command(*args), cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def results_under(root: Path) -> dict[Path, dict]:
    """Every results.json below `root`, keyed by its run directory, read back from disk."""
    return {p.parent: json.loads(p.read_text()) for p in sorted(root.rglob("results.json"))}


def multirun_jobs(log_dir: Path) -> list[Path]:
    """The job directories of the (single) multirun under log_dir, in job order."""
    sweeps = [p for p in (log_dir / "multiruns").glob("*/*") if p.is_dir()]
    assert len(sweeps) == 1, f"expected one multirun under {log_dir}, found {sweeps}"
    return sorted((p for p in sweeps[0].iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


@pytest.fixture(scope="session")
def wandb_multirun(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`-m seed=0,1 logger=wandb` on the spiral, offline: shared by the multirun and the W&B tests."""
    root = tmp_path_factory.mktemp("wandb_multirun")
    proc = run_cli(
        "-m",
        "seed=0,1",
        "data=spiral",
        "logger=wandb",
        *tiny(train_batches=15),
        f"paths.log_dir={root / 'logs'}",
        cwd=root,
    )
    return root / "logs", proc


@pytest.fixture(scope="session")
def concurrent_single_runs(tmp_path_factory) -> dict:
    """Two single runs started at the same moment: a normal one and one with lr=1e6 (diverges)."""
    root = tmp_path_factory.mktemp("concurrent")
    log_dir = root / "logs"
    common = ["data=spiral", *TINY, *CSV_ONLY, f"paths.log_dir={log_dir}"]
    procs = {
        "ok": start_cli(*common, "tags=[ok]", cwd=root),
        "diverged": start_cli(*common, "optimizer.lr=1e6", "tags=[diverged]", cwd=root),
    }
    deadline = time.monotonic() + 300
    outputs = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=max(1, deadline - time.monotonic()))
        outputs[name] = (proc.returncode, out)
    return {"log_dir": log_dir, "outputs": outputs}


# ----------------------------------------------------------------------------- W&B offline files
def wandb_records(path: Path):
    """Decode a .wandb datastore: a LevelDB-style log (7-byte header ':W&B' + magic 0xBEE1 + version,
    32 KiB blocks, records framed by crc32 / length / type) of protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1, f"{path} is not a W&B datastore"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a header: the block is padded
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        if kind == 1:  # full
            chunks = payload
        elif kind == 2:  # first
            pending = payload
            continue
        elif kind == 3:  # middle
            pending += payload
            continue
        else:  # last
            chunks, pending = pending + payload, b""
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunks)
        yield record


def wandb_logged(path: Path) -> tuple[str, dict[str, list]]:
    """(run id, every history value logged per key, in order) from a .wandb file."""
    contents = wandb_contents(path)
    return contents["run_id"], contents["history"]


def wandb_contents(path: Path) -> dict:
    """Run id, history (every value per key, in order), config and summary (last value per key),
    and the exit code, decoded from a .wandb file."""
    out = {"run_id": None, "history": {}, "config": {}, "summary": {}, "exit_code": None}

    def key_of(item) -> str:
        return item.key or "/".join(item.nested_key)

    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run_id"] = record.run.run_id
            for item in record.run.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "history":
            for item in record.history.item:
                out["history"].setdefault(key_of(item), []).append(json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                out["summary"][key_of(item)] = json.loads(item.value_json)
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def truncated_mnist(root: Path, seed: int) -> Path:
    """A synthetic MNIST under root whose training images are cut to 1000 bytes; returns that file."""
    write_vision_dataset(root, "mnist", seed=seed)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    return path
