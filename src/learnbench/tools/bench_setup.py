"""What both benchmarks build (learnbench.tools.bench and its `comm` subcommand): a rule from its
method config, the MNIST-shaped MLP and a random batch for it."""

from __future__ import annotations

import json
from collections.abc import Callable

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from learnbench.models import MLP
from learnbench.paths import CONFIG_DIR

IN_FEATURES, CLASSES = 784, 10  # MNIST-shaped


def make_rule(method: str, **overrides):
    """The rule of conf/method/<method>.yaml, with keyword overrides (directions=16, comm='scalars', ...)."""
    cfg = OmegaConf.load(CONFIG_DIR / "method" / f"{method}.yaml")
    return instantiate(cfg, **overrides)


def make_mlp(hidden: list[int]) -> MLP:
    return MLP(IN_FEATURES, CLASSES, hidden)


def mlp_name(hidden: list[int]) -> str:
    """'MLP 784-1000-1000-10'."""
    return f"MLP {'-'.join(map(str, [IN_FEATURES, *hidden, CLASSES]))}"


def random_batch(batch: int, device=None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` Gaussian inputs and uniform labels: data the step times do not depend on."""
    x = torch.randn(batch, IN_FEATURES, device=device, generator=generator)
    y = torch.randint(0, CLASSES, (batch,), device=device, generator=generator)
    return x, y


def emit(result: dict, as_json: bool, print_table: Callable[[dict], None]) -> dict:
    """Print the result as JSON or as the benchmark's table; return it."""
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return result
