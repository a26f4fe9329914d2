"""Which way is better for a metric, by its name: one list for the run recorder and the tables.

A metric's kind is the last part of its key ('val/acc' -> 'acc'; a table column such as
'test/err %' -> 'err'). Anything not listed as higher-is-better is taken as lower-is-better by the
run recorder's best values; the tables mark a best cell only where the direction is known.
"""

from __future__ import annotations

HIGHER_IS_BETTER = frozenset({"acc", "cos", "r2", "memory_capacity"})
LOWER_IS_BETTER = frozenset({"loss", "mse", "rmse", "nrmse", "mae", "err", "error", "nll", "loc_err_deg", "sse"})


def metric_kind(name: str) -> str:
    """'val/acc' -> 'acc', 'test/err %' -> 'err', 'wall_time_s' -> 'wall_time_s', 'val/acc@3' (seed 3 of a stack) -> 'acc'."""
    return name.rsplit("/", 1)[-1].split(" ")[0].split("@")[0]


def direction(name: str) -> int:
    """+1 where higher is better, -1 where lower is, 0 where neither is known."""
    kind = metric_kind(name)
    return 1 if kind in HIGHER_IS_BETTER else -1 if kind in LOWER_IS_BETTER else 0


def higher_is_better(name: str) -> bool:
    return metric_kind(name) in HIGHER_IS_BETTER
