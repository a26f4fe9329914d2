"""results.json: one file per run, in its output directory, from which tables and plots are built."""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

OK, DIVERGED, FAILED = "ok", "diverged", "failed"
RESULTS_FILE = "results.json"
_PACKAGES = ["learnbench", "torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "wandb", "numpy"]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_revision(path: Path | None = None) -> str | None:
    """The commit of the code that ran, with '-dirty' when there were uncommitted changes."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _json_number(value):
    """NaN and infinities are not JSON: write them as null (a diverged run's loss, say)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return _json_number(obj)


def write_results(output_dir: Path, record: dict) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(record), indent=2, sort_keys=False) + "\n")
    tmp.replace(path)  # atomic: a report never reads half a file
    return path


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
