"""What a run prints: known harmless messages from the libraries are silenced, everything else shows;
an error the user can fix (a bad option, a missing or damaged data file) is one message, no traceback.

`quiet_known_noise()` is called first thing in the app, `learnbench.train.hydra_app()` (also in DDP ranks 1..N-1,
which re-run it). Each entry below silences ONE message, matched by its text (a regex) and by
the module or logger that emits it, so a new warning, or the same words from another place, still
shows. When a library drops or rewords a message, its entry simply stops matching; nothing else
changes. Two messages no filter can single out are avoided at their source instead: W&B's
"anonymous" warning (WandbLogger below) and torch's TorchScript deprecation while it loads its own
forward-AD decompositions (_load_torch_jvp_decompositions_quietly).

What is kept on purpose: Lightning's warnings about a real misconfiguration (e.g. "The number of
training batches (5) is smaller than the logging interval"), "GPU available: ..., used: ...", the
divergence message of a rule, and any warning from user code.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from hydra.errors import CompactHydraException, ConfigCompositionException
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from omegaconf.errors import OmegaConfBaseException

from learnbench.config_validation import ConfigError
from learnbench.data.vision import DamagedDataFileError, DatasetNotFoundError

__all__ = [
    "EXIT_USER_ERROR", "KNOWN_LOG_NOISE", "KNOWN_WARNINGS", "USER_ERRORS", "JobFailed", "WandbLogger",
    "app_started", "expect_own_checkpoints", "quiet_known_noise", "run_app", "stop",
]


def _outside_a_slurm_allocation() -> bool:
    return "SLURM_JOB_ID" not in os.environ


def _always() -> bool:
    return True


# (message regex, category, module regex, when) for warnings.filterwarnings: the regex is matched
# against the start of the message, the module against the module the warning points at (its
# stacklevel); `when()` says whether the entry applies to this process.
KNOWN_WARNINGS: list[tuple[str, type[Warning], str, Callable[[], bool]]] = [
    # Lightning's SLURM environment check: "The `srun` command is available on your system but is not
    # used. HINT: If your intention is to run Lightning on SLURM, prepend your python command with `srun`
    # ..." (a PossibleUserWarning from lightning/fabric/plugins/environments/slurm.py, printed twice).
    # Lightning prints it whenever an `srun` executable is on PATH, i.e. on every login node of a
    # cluster, also for a run that is not a SLURM job at all (or on a workstation with SLURM's client
    # tools). Silenced only outside a SLURM allocation (no SLURM_JOB_ID): inside one (salloc, an
    # interactive job) the hint may be the right one and still shows. The suite's SLURM jobs are
    # started through conf/hydra/launcher/slurm*.yaml (sbatch/srun) and never trigger it.
    (
        r"The `srun` command is available on your system but is not used",
        Warning,
        r"lightning\.fabric\.plugins\.environments\.slurm",
        _outside_a_slurm_allocation,
    ),
    # torch >= 2.10 deprecates `LeafSpec`: "`isinstance(treespec, LeafSpec)` is deprecated, use
    # `isinstance(treespec, TreeSpec) and treespec.is_leaf()` instead." (FutureWarning), raised where
    # Lightning's own lightning/pytorch/utilities/_pytree.py builds a LeafSpec while it moves a batch.
    # Lightning's code, not ours; nothing a user can change.
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"lightning\.pytorch\.utilities\._pytree",
        _always,
    ),
    # Lightning's ModelCheckpoint with every_n_train_steps under manual optimisation (every run here: one
    # LightningModule, manual optimisation; D&C's preset saves every 50 batches): "Using ModelCheckpoint with manual
    # optimization and every_n_train_steps, but no pre-optimization state was saved. The checkpoint will contain the
    # model state AFTER optimization. ..." followed by a 12-line code example (UserWarning, at every save, from
    # lightning/pytorch/callbacks/model_checkpoint.py). The suite's checkpoints hold the state after the batch by
    # design, as Lightning's loop counters do: a run resumed from one goes on with the next batch (tests/test_resume.py).
    (
        r"Using ModelCheckpoint with manual optimization and every_n_train_steps",
        UserWarning,
        r"",
        _always,
    ),
]

# (logger name, message regex): log records of that logger whose message matches are dropped.
KNOWN_LOG_NOISE: list[tuple[str, str]] = [
    # Lightning's Trainer advertises another logging service at start whenever no LitLogger is used:
    # "💡 Tip: For seamless cloud logging and experiment tracking, try installing
    # [litlogger](https://pypi.org/project/litlogger/) to enable LitLogger, ..." (INFO, from
    # lightning/pytorch/trainer/connectors/logger_connector/logger_connector.py through
    # rank_zero_info, i.e. the `lightning.pytorch.utilities.rank_zero` logger, or fabric's twin,
    # whichever Lightning installed last). An advertisement: this suite logs to W&B and CSV.
    ("lightning.pytorch.utilities.rank_zero", r"💡 Tip: .*litlogger"),
    ("lightning.fabric.utilities.rank_zero", r"💡 Tip: .*litlogger"),
    ("lightning_utilities.core.rank_zero", r"💡 Tip: .*litlogger"),
    # Its twin for checkpoints, printed when Lightning adds its default ModelCheckpoint (callbacks=none):
    # "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels](...) to enable
    # LitModelCheckpoint, ..." (lightning/pytorch/trainer/connectors/callback_connector.py). Also an advertisement.
    ("lightning.pytorch.utilities.rank_zero", r"💡 Tip: .*litmodels"),
    ("lightning.fabric.utilities.rank_zero", r"💡 Tip: .*litmodels"),
    ("lightning_utilities.core.rank_zero", r"💡 Tip: .*litmodels"),
]
# W&B's "wandb: WARNING The anonymous setting has no effect and will be removed in a future version."
# (wandb/sdk/wandb_settings.py, printed straight to stderr by wandb.termwarn: no warnings or logging
# filter reaches it) is not silenced but not caused: Lightning's WandbLogger always passes
# `anonymous=None` to wandb.init, and wandb warns whenever the argument is passed at all. The
# WandbLogger below (conf/logger/wandb.yaml) leaves the argument out; W&B then behaves exactly as
# before (the setting has no effect either way).


def expect_own_checkpoints(output_dir: str | Path) -> None:
    """Two warnings of Lightning's ModelCheckpoint (lightning/pytorch/callbacks/model_checkpoint.py) that a
    resumed run prints about this run's own <run dir>/checkpoints, silenced for that one folder (a checkpoint
    folder named elsewhere still warns):
    - "Checkpoint directory <dir> exists and is not empty.": it holds the checkpoint being resumed (or, for a
      sweep job run again, the one it replaces);
    - "The dirpath has changed from '<other>' to '<dir>', therefore `best_model_score`, ... won't be reloaded":
      resuming another run's checkpoint into this folder; the suite's checkpoint callback keeps the last
      checkpoint only (monitor null), so there is no best-model bookkeeping to lose."""
    folder = os.path.realpath(Path(output_dir).expanduser() / "checkpoints")
    module = r"lightning\.pytorch\.callbacks\.model_checkpoint"
    warnings.filterwarnings("ignore", message=re.escape(f"Checkpoint directory {folder} exists and is not empty."), module=module)
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from '.*' to " + re.escape(f"'{folder}'"), module=module)


class _DropMessages(logging.Filter):
    """Drops the records whose formatted message matches `pattern` (one filter per logger)."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge: let it through
            return True
        return not self.pattern.search(message)


def _load_torch_jvp_decompositions_quietly() -> None:
    """torch registers its forward-AD (jvp) decompositions the first time a dual tensor is made (the
    forward-gradient rules fg_w / fg_a / ..., through torch.func.jvp), and scripts 18 functions while
    it does: 18 times "`torch.jit.script` is deprecated. Please switch to `torch.compile` or
    `torch.export`." (FutureWarning, from torch/jit/_script.py, called by torch's own
    torch/_decomp/decompositions_for_jvp.py). torch's code, not ours or the user's. The warning points
    at torch.jit._script whoever calls it, so no module filter can tell torch's calls from a user's:
    instead torch's loading is done here, now, with that message ignored for its duration only; a
    later torch.jit.script call (user code) still warns. Costs about 0.2 s, which the first forward-AD
    step would otherwise pay; skipped where torch would skip it (PYTORCH_JIT=0, python -O)."""
    try:
        from torch.autograd import forward_ad

        load = getattr(forward_ad, "_maybe_load_decompositions", None)  # private: absent, nothing to do
        if load is None:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
            load()
    except Exception:  # a torch that loads differently: the warning may show, the run must not fail
        return


def quiet_known_noise() -> None:
    """Install the filters above. Idempotent: calling it again (a multirun's next job, a DDP rank)
    adds nothing twice."""
    _load_torch_jvp_decompositions_quietly()
    for message, category, module, when in KNOWN_WARNINGS:
        if when():  # filterwarnings replaces an identical filter, so repeats do not pile up
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, pattern in KNOWN_LOG_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(_DropMessages(pattern))


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger without the `anonymous=None` it passes to `wandb.init` (see above).

    Every argument is Lightning's (conf/logger/wandb.yaml; the config check follows `**kwargs` to
    Lightning's signature). Only the never-effective `anonymous` entry is removed, and only when unset.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        init_args = getattr(self, "_wandb_init", None)  # Lightning's wandb.init arguments (private)
        if isinstance(init_args, dict) and init_args.get("anonymous") is None:
            init_args.pop("anonymous", None)


# ----------------------------------------------------------------------------- errors the user fixes
# Errors whose message says what to change; a traceback adds nothing to them.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DamagedDataFileError, DatasetNotFoundError)
EXIT_USER_ERROR = 2  # like argparse: the command line (or the files it names) needs changing


class JobFailed(CompactHydraException):
    """A multirun job stopped by a user error. Hydra runs the sweep's other jobs, then reports the
    first failure by its message alone (a CompactHydraException prints no traceback)."""


def stop(error: Exception, log: logging.Logger) -> NoReturn:
    """End a run on a user error: log its message (no traceback), then exit with status 2; in a
    multirun, fail only this job (its results.json says status failed) and let the sweep go on."""
    log.error("%s", error)
    if _in_multirun():
        raise JobFailed(f"{type(error).__name__}: {error}") from None
    raise SystemExit(EXIT_USER_ERROR)


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


# ----------------------------------------------------------------------------- before the app starts
# Hydra meets some user errors before the app runs, and prints them its own way: an override of a key the
# config lacks ("Could not override 'method.sigmaa'. To append to your config use +method.sigmaa=0.1":
# advice that adds the typo), a run folder it cannot make (a traceback). run_app() turns these into one
# line that says what to change. It asks Hydra to raise what it meets (HYDRA_FULL_ERROR=1) until the app
# starts; app_started(), first thing in the app, gives the variable back its own value, so errors inside
# the app are reported as before. The user's own value waits in an environment variable, not in this
# process: processes started before any app ran (joblib workers, SLURM jobs of a multirun) inherit both
# and restore it the same way when their app starts.
_FULL_ERROR = "HYDRA_FULL_ERROR"
_HELD = "LEARNBENCH_HELD_HYDRA_FULL_ERROR"  # the user's HYDRA_FULL_ERROR while run_app holds it
_UNSET = "<unset>"


def app_started() -> None:
    """Give HYDRA_FULL_ERROR back its own value (the app is running: Hydra reports its errors as usual)."""
    held = os.environ.pop(_HELD, None)
    if held == _UNSET:
        os.environ.pop(_FULL_ERROR, None)
    elif held is not None:
        os.environ[_FULL_ERROR] = held


def run_app(app: Callable[[], object]) -> None:
    """Run a @hydra.main app; an error Hydra meets before the app starts is one line and exit status 2 when
    the user can fix it (see above), and reported as Hydra reports it otherwise."""
    user_value = os.environ.get(_FULL_ERROR)
    os.environ[_HELD] = _UNSET if user_value is None else user_value
    os.environ[_FULL_ERROR] = "1"
    try:
        app()
    except Exception as error:
        before_the_app = _HELD in os.environ
        app_started()
        message = setup_error_message(error) if before_the_app else None
        if message is not None:
            sys.stderr.write(message + "\n")
            raise SystemExit(EXIT_USER_ERROR) from None
        if user_value or not before_the_app or not isinstance(error, CompactHydraException):
            raise
        _report_as_hydra_does(error)
    finally:
        app_started()


def setup_error_message(error: Exception) -> str | None:
    """One line for an error Hydra met before the app started that the user can fix, else None."""
    if isinstance(error, ConfigCompositionException):
        return _missing_key_message(error)
    if isinstance(error, OSError):
        return _run_folder_message(error)
    return None


def _missing_key_message(error: ConfigCompositionException) -> str | None:
    """`key=value` for a key the composed config lacks: the key's close matches, or what to use instead."""
    from learnbench.config_validation import missing_key_message

    cause, text = error.__cause__, str(error)
    marker = "To append to your config use +"
    node, dotted = getattr(cause, "parent_node", None), getattr(cause, "full_key", None)
    if marker not in text or node is None or not dotted:
        return None
    shown = text.split(marker, 1)[1].strip().split("=", 1)[-1]
    try:
        return missing_key_message(str(dotted), shown, node)
    except Exception:  # a config this check does not understand: Hydra's own message stays
        return None


def _run_folder_message(error: OSError) -> str | None:
    """The run folder could not be made or written (before the app, Hydra writes nothing else: the run or
    sweep folder, its .hydra/ and the job's log): say which path stands in the way."""
    if not error.filename:
        return None
    failed = Path(error.filename).absolute()
    blocker = next(p for p in (failed, *failed.parents) if p.exists())
    if blocker.is_file():
        reason = f"{blocker} is a file, not a folder"
    elif isinstance(error, PermissionError) or not os.access(blocker, os.W_OK):
        reason = f"{blocker} is not writable"
    else:
        reason = error.strerror or str(error)
    return f"cannot make the run folder {failed}: {reason}: set paths.log_dir (or LEARNBENCH_LOG_DIR) to a folder you can write"


def _report_as_hydra_does(error: CompactHydraException) -> NoReturn:
    """Hydra's own report of a compact error (hydra._internal.utils.run_and_report), had it not raised it."""
    sys.stderr.write(str(error) + os.linesep)
    if isinstance(error.__cause__, OmegaConfBaseException):
        sys.stderr.write(str(error.__cause__) + os.linesep)
    sys.stderr.write(f"\nSet the environment variable {_FULL_ERROR}=1 for a complete stack trace.\n")
    raise SystemExit(1)
