"""What both benchmarks build (learnbench.tools.bench and its `comm` subcommand): a rule from its
method config, the benchmark models (the MNIST-shaped MLP, LeNet-5) and a random batch for them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import torch
from omegaconf import OmegaConf
from torch import nn

from learnbench.catalog import rule_from_config
from learnbench.models import MLP, LeNet
from learnbench.paths import CONFIG_DIR

IN_FEATURES, CLASSES = 784, 10  # MNIST-shaped
IMAGE_SHAPE = (1, 28, 28)
#: The benchmark models and the batch each is timed at unless --batch says otherwise.
DEFAULT_BATCH = {"mlp": 256, "lenet": 64}


def method_config(method: str):
    return OmegaConf.load(CONFIG_DIR / "method" / f"{method}.yaml")


def make_rule(method: str, **overrides):
    """The rule of conf/method/<method>.yaml, with keyword overrides (directions=16, comm='scalars', ...)."""
    return rule_from_config(method, **overrides)


def has_directions(method: str) -> bool:
    """Whether the method averages K directions (its config has a `directions` option)."""
    return "directions" in method_config(method)


def make_mlp(hidden: list[int], layer_norm: bool = False, local_heads: str = "every") -> MLP:
    return MLP(IN_FEATURES, CLASSES, hidden, layer_norm=layer_norm, local_heads=local_heads)


def mlp_name(hidden: list[int], layer_norm: bool = False, local_heads: str = "every") -> str:
    """'MLP 784-1000-1000-10' (', LayerNorm' when the hidden blocks have one; ', local heads last' when the
    local-loss rules put one head after the last hidden block instead of one after each)."""
    return (f"MLP {'-'.join(map(str, [IN_FEATURES, *hidden, CLASSES]))}" + (", LayerNorm" if layer_norm else "")
            + (f", local heads {local_heads}" if local_heads != "every" else ""))


def make_model(model: str, hidden: list[int], layer_norm: bool = False, local_heads: str = "every") -> nn.Module:
    """`mlp`: the MLP 784-<hidden>-10; `lenet`: LeNet-5 on 1x28x28 images, 10 classes (`hidden` unused)."""
    if model == "mlp":
        return make_mlp(hidden, layer_norm, local_heads)
    if model == "lenet":
        return LeNet(IMAGE_SHAPE, CLASSES)
    raise ValueError(f"--model {model!r}: choose one of {sorted(DEFAULT_BATCH)}")


def model_name(model: str, hidden: list[int], layer_norm: bool = False, local_heads: str = "every") -> str:
    return mlp_name(hidden, layer_norm, local_heads) if model == "mlp" else "LeNet-5 1x28x28-10"


def model_input_shape(model: str) -> tuple[int, ...]:
    """One example's shape as the benchmark feeds it (the MLP gets flat vectors, as before LeNet existed)."""
    return (IN_FEATURES,) if model == "mlp" else IMAGE_SHAPE


def random_batch(
    batch: int, device=None, generator: torch.Generator | None = None, input_shape: Sequence[int] = (IN_FEATURES,)
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` Gaussian inputs of `input_shape` and uniform labels: data the step times do not depend on."""
    x = torch.randn(batch, *input_shape, device=device, generator=generator)
    y = torch.randint(0, CLASSES, (batch,), device=device, generator=generator)
    return x, y


def emit(result: dict, as_json: bool, print_table: Callable[[dict], None]) -> dict:
    """Print the result as JSON or as the benchmark's table; return it."""
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return result
