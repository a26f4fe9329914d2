"""Records from run directories: every results.json at or below the given paths."""

from __future__ import annotations

import json
from pathlib import Path

from learnbench.results import RESULTS_FILE
from learnbench.tools.report.common import warn


def find_results(paths: list[str | Path]) -> list[Path]:
    """Every results.json at or below the given paths (a path may also be a results.json itself)."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_file() and path.name == RESULTS_FILE:
            found[path.resolve()] = None
        elif path.is_dir():
            for hit in sorted(path.rglob(RESULTS_FILE)):
                found[hit.resolve()] = None
        else:
            warn(f"{path}: no such run directory or results.json")
    return list(found)


def stack_with_its_seeds(record: dict, path: Path) -> bool:
    """A seed stack's own record (seeds=[...], learnbench/seeds.py) whose seeds wrote their records beside it."""
    return any((path.parent / folder / RESULTS_FILE).is_file() for folder in record.get("seed_stack", {}).get("seed_dirs", []))


def load_records(paths: list[str | Path]) -> list[dict]:
    records = []
    for path in find_results(paths):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            warn(f"{path}: unreadable ({error}); skipped")
            continue
        if stack_with_its_seeds(record, path):  # each seed's own record (seed_<s>/results.json) is a row's run
            continue
        record.setdefault("output_dir", str(path.parent))
        record["_source"] = str(path)
        records.append(record)
    return records
