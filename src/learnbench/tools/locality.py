"""The locality profile of every rule in the catalogue, from the rules' own declarations (`LearningRule.reads`).

    python -m learnbench.tools.locality                          # the markdown table on stdout
    python -m learnbench.tools.locality --write docs/locality.md # replace the table between its markers there

One row per conf/method/<name>.yaml (its defaults: an option can change what a rule reads), one column per signal
of rules/locality.py's vocabulary. tests/test_locality.py checks every row by intervention and that the page holds
the table this tool writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra.utils import get_class

from learnbench.catalog import method_config, rule_from_config
from learnbench.paths import CONFIG_DIR
from learnbench.rules.locality import SIGNALS

START, END = "<!-- locality-profile:start -->", "<!-- locality-profile:end -->"


def method_names() -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / "method").glob("*.yaml"))


def kinds_trained(method: str) -> tuple[str, ...]:
    """The model kinds the rule trains; a local-loss variant (l_bp, lg_fa, ...) walks feed-forward blocks only."""
    cfg = method_config(method)
    return ("feedforward",) if cfg.get("local", "none") != "none" else get_class(cfg._target_).trains


def profile() -> dict[str, frozenset[str] | None]:
    """method name -> the signals its rule declares (None: no declaration)."""
    return {name: rule_from_config(name).reads() for name in method_names()}


def markdown_table() -> str:
    """The profile as a markdown table: x where the rule's update reads the signal, the legend below."""
    columns = list(SIGNALS)
    lines = ["| method | trains | " + " | ".join(columns) + " |",
             "|---|---|" + "|".join(":-:" for _ in columns) + "|"]
    for name, reads in profile().items():
        kinds = ", ".join(kinds_trained(name))
        cells = ["**undeclared**"] * len(columns) if reads is None else ["x" if s in reads else "" for s in columns]
        lines.append(f"| {name} | {kinds} | " + " | ".join(cells) + " |")
    legend = [f"- `{name}`: {meaning}" for name, meaning in SIGNALS.items()]
    return "\n".join([*lines, "", *legend])


def replace_between_markers(text: str, table: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"no {START} ... {END} markers in the page: add them where the table goes")
    head, rest = text.split(START, 1)
    return f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="a markdown page whose table (between the markers) to replace")
    args = parser.parse_args(argv)
    table = markdown_table()
    if args.write is None:
        print(table)
        return
    args.write.write_text(replace_between_markers(args.write.read_text(), table))
    print(f"wrote the locality profile ({len(method_names())} rules) into {args.write}")


if __name__ == "__main__":
    main()
