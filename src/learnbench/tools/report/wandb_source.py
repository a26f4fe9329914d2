"""Records from the W&B public API, shaped like results.json (for runs whose directory is not at hand)."""

from __future__ import annotations

import math
import re

from learnbench.results import DIVERGED, FAILED, OK
from learnbench.tools.report.common import CHOICE_KEYS, as_number, warn


def _choices_from_name(group: str | None, name: str | None) -> dict:
    """The logger names runs '<method>-<data>-seed<k>' in group '<method>-<data>' (conf/logger/wandb.yaml)."""
    guess = {}
    match = re.fullmatch(r"(?P<method>[^-]+)-(?P<data>.+)-seed(?P<seed>\d+)", name or "")
    if match:
        guess = {"method": match["method"], "data": match["data"], "seed": int(match["seed"])}
    elif group and "-" in group:
        guess = dict(zip(("method", "data"), group.split("-", 1)))
    return guess


def _class_name(config: dict, key: str) -> str | None:
    target = (config.get(key) or {}).get("_target_") if isinstance(config.get(key), dict) else None
    return target.rsplit(".", 1)[-1] if target else None


def history_from_wandb(rows) -> list[dict]:
    """Per-epoch entries like RunRecorder's from W&B history rows (Lightning logs a 0-based 'epoch')."""
    epochs: dict[int, dict] = {}
    for row in rows:
        if "epoch" not in row or not any(k.startswith(("val/", "train/", "align/")) for k in row):
            continue
        epoch = int(row["epoch"]) + 1
        entry = epochs.setdefault(epoch, {"epoch": epoch})
        for key, value in row.items():
            if key.startswith(("val/", "train/loss", "train/acc", "align/")) and as_number(value) is not None:
                entry[key] = as_number(value)
        if as_number(row.get("trainer/global_step")) is not None:
            entry["step"] = int(row["trainer/global_step"])
        if as_number(row.get("_runtime")) is not None:  # since the W&B run started, not since fit start
            entry["time"] = max(entry.get("time", 0.0), float(row["_runtime"]))
    return [epochs[k] for k in sorted(epochs)]


def record_from_wandb(run) -> dict | None:
    """One W&B public-API run (or anything with its attributes) as a results.json-like record.

    Uses run.config (the resolved Hydra config when the app logged it, optionally with a 'choices'
    dict), run.summary_metrics (last logged values) and run.state. Returns None for runs that are
    still running. Without a logged 'status', a finished run with no test metrics or a non-finite
    metric is taken as diverged: the app skips testing after divergence.
    """
    state = getattr(run, "state", None)
    if state in ("running", "pending", "preempting"):
        return None
    config = dict(getattr(run, "config", None) or {})
    summary = getattr(run, "summary_metrics", None)
    if summary is None:
        summary = dict(getattr(run, "summary", {}) or {})
    final = {k: as_number(v) for k, v in summary.items() if "/" in k and not k.startswith("_") and as_number(v) is not None}
    guess = _choices_from_name(getattr(run, "group", None), getattr(run, "name", None))
    choices = {**guess, **(config.get("choices") or {})}
    for key in CHOICE_KEYS:
        choices.setdefault(key, _class_name(config, key) if key in ("method", "model") else None)
    status, message = summary.get("status"), summary.get("message")
    if status is None:
        if state in ("failed", "crashed", "killed", "preempted"):
            status, message = FAILED, f"W&B state: {state}"
        elif any(not math.isfinite(v) for v in final.values()):
            status, message = DIVERGED, "a non-finite metric in the W&B summary"
        elif not any(k.startswith("test/") for k in final):
            status, message = DIVERGED, "no test metrics in the W&B summary (the app skips testing after divergence)"
        else:
            status = OK
    history = getattr(run, "_learnbench_history", None)
    return {
        **{key: choices.get(key) for key in CHOICE_KEYS},
        "seed": config.get("seed", guess.get("seed")),
        "status": status,
        "message": message,
        "metrics": {"final": {k: (v if math.isfinite(v) else None) for k, v in final.items()}, "best": {}},
        "history": history or [],
        "config": config,
        "started": getattr(run, "created_at", None),
        "output_dir": None,
        "wall_time_s": as_number(summary.get("_runtime")),
        # The budget trained: the app writes both to the summary at the end; older runs have Lightning's last
        # logged step and (0-based) epoch.
        "steps": summary.get("steps", summary.get("trainer/global_step")),
        "epochs": summary.get("epochs", summary["epoch"] + 1 if isinstance(summary.get("epoch"), int) else None),
        "_source": f"wandb:{'/'.join(getattr(run, 'path', []) or [])}" if getattr(run, "path", None) else f"wandb:{getattr(run, 'id', '?')}",
    }


def fetch_wandb_records(project: str, filters: dict | None = None, with_history: bool = False) -> list[dict]:
    """All runs of `entity/project` through wandb.Api (needs network and a login)."""
    import wandb

    records = []
    for run in wandb.Api(timeout=60).runs(project, filters=filters or {}):
        if with_history:
            run._learnbench_history = history_from_wandb(run.scan_history())
        record = record_from_wandb(run)
        if record is None:
            warn(f"W&B run {run.id} is {run.state}; skipped")
        else:
            records.append(record)
    return records
