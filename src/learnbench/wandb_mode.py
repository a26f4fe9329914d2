"""Online W&B when the user is logged in, offline otherwise (with one line that says why, and how to sync)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path


def wandb_logged_in() -> bool:
    """True when an API key is available: WANDB_API_KEY or a W&B entry in the netrc file."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        hosts = netrc.netrc(str(path)).hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def offline_reason() -> str | None:
    """Why W&B runs offline (or not at all), in words for the log; None when it goes online. Honours an explicit
    WANDB_MODE; otherwise offline when no API key is available."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode}"
    if mode == "online":
        return None
    return None if wandb_logged_in() else "not logged in"


def choose_offline() -> bool:
    """Honour an explicit WANDB_MODE; otherwise go offline when no API key is available."""
    return offline_reason() is not None


def quiet_by_default() -> None:
    """W&B prints a banner and a ~20-line history summary for every run; the app's own log says where the run
    went (online: its URL; offline: how to sync it). Set WANDB_SILENT=false to see W&B's own lines."""
    os.environ.setdefault("WANDB_SILENT", "true")
