"""Every rule's estimate against backprop's gradient at the initial weights, as a Markdown table (docs/results.md,
"Every rule under learnbench verify"): `learnbench.verify`'s gradient check, one row per rule.

    python -m learnbench.tools.verify_table [--draws 100]

The feed-forward catalogue on the spiral's MLP, then the sequence rules on Murray's sine task (RNN)."""

from __future__ import annotations

import argparse
import re

import torch

from learnbench.catalog import comparable_rules
from learnbench.verify import verify

SEQUENCE = ["data=sine_trajectory", "model=rnn"]
SEQUENCE_RULES = [("bptt", []), ("bptt", ["method.truncation=7"]), ("rtrl", ["model.hidden_size=12"]), ("rflo", []), ("eprop", [])]
FIGURES = re.compile(r"cos\(mean, g\) ([-\d.]+), relative bias ([\de.+-]+), relative spread of one estimate ([\de.+-]+)")


def cases() -> list[tuple[str, list[str]]]:
    rows = [(m, [f"method={m}"]) for m in comparable_rules("feedforward")]
    for method, extra in SEQUENCE_RULES:
        rows.append((" ".join([f"{method} (RNN, sine)", *extra]), [f"method={method}", *SEQUENCE, *extra]))
    return rows


def row(name: str, overrides: list[str], draws: int) -> str:
    check = verify(overrides, draws=draws, checks=("gradient",))[0]
    found = FIGURES.search(check.detail)
    cos, bias, spread = found.groups() if found else ("", "", "")
    claim = check.name.replace("gradient", "").strip(" ()") or "-"
    verdict = {True: "PASS", False: "FAIL", None: "reported"}[check.passed]
    return f"| {name} | {claim} | {verdict} | {cos} | {bias} | {spread} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| rule | claim | verdict | cos | bias | spread |\n| --- | --- | --- | ---: | ---: | ---: |")
    for name, overrides in cases():
        print(row(name, overrides, args.draws), flush=True)


if __name__ == "__main__":
    main()
