"""What every part of the report shares: the record fields that name config choices, the dash
shown for a missing value, warnings on stderr, and reading a number out of a record."""

from __future__ import annotations

import sys

# Record fields that name the chosen config-group options.
CHOICE_KEYS = ("method", "data", "model", "optimizer", "experiment")
DASH = "—"


def warn(message: str) -> None:
    print(f"learnbench.tools.report: {message}", file=sys.stderr)


def as_number(value):
    """A metric value as a float (W&B may hand back NaN as the string 'NaN'); None if not numeric."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "infinity", "-inf", "-infinity"):
        return float(value.strip().lower().replace("infinity", "inf"))
    return None


def show_value(value) -> str:
    """A config value in a cell: floats compactly (0.1, 1e-05), lists in brackets, None as a dash."""
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(show_value, value)) + "]"
    return str(value)
