"""Multi-layer perceptrons: dense blocks Linear -> [LayerNorm] -> activation, then a linear readout."""

from __future__ import annotations

import math
from collections.abc import Sequence

from typing import Literal

from torch import nn

from learnbench.models.blocks import Block, BlockChain, dense_block
from learnbench.options import PositiveInt


def flat_size(shape: int | Sequence[int]) -> int:
    return shape if isinstance(shape, int) else math.prod(shape)


class MLP(BlockChain):
    """input (flattened) -> hidden blocks -> linear readout block (no LayerNorm, no activation).

    `input_shape` (one example's shape, or its flattened size) and `output_dim` come from the data
    module, never from the user's config.

    `groups` (one per hidden layer, default all 1): a layer with G > 1 groups is a grouped linear
    map, G independent (in/G -> out/G) maps side by side, as in Ren et al.'s M/1/16 network
    (google-research local_forward_gradient/mixer_lib.py::group_linear). It is built as a grouped
    1x1 nn.Conv2d on the [B, C, 1, 1] view (so every rule's local update, tangent and feedback path
    serve it unchanged) with a per-group LayerNorm (nn.GroupNorm(G, out): Ren normalises each
    group over its own units, train_mixer_supervised.py::block0), so groups stay independent.
    `local_heads` says where the local-loss rules (method=l_*, lg_*) put their heads: after
    `every` hidden layer, or only after the `last` (Ren's MNIST networks are one block of his
    mixer, block0: both hidden layers under one local loss). `init`: PyTorch's default, or
    `normal_fan_sum` (N(0, 1 / (fan_in + fan_out)) for weights and biases, Akrout et al.'s).
    """

    def __init__(
        self,
        input_shape: int | Sequence[int],
        output_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "relu",
        layer_norm: bool = False,
        bias: bool = True,
        groups: Sequence[PositiveInt] | None = None,
        local_heads: Literal["every", "last"] = "every",
        init: Literal["pytorch", "normal_fan_sum"] = "pytorch",
    ):
        super().__init__()
        input_dim = flat_size(input_shape)
        sizes = [input_dim, *hidden_sizes]
        groups = list(groups) if groups is not None else [1] * len(hidden_sizes)
        check_groups(groups, hidden_sizes)
        blocks = [
            dense_block(i, o, activation, layer_norm, bias) if g == 1 else grouped_block(i, o, g, activation, layer_norm, bias)
            for i, o, g in zip(sizes[:-1], sizes[1:], groups)
        ]
        self.local_heads = local_heads
        blocks.append(dense_block(sizes[-1], output_dim, "identity", layer_norm=False, bias=bias))
        self.blocks = nn.Sequential(*blocks)
        self.input_shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        self.input_dim, self.output_dim = input_dim, output_dim
        if init == "normal_fan_sum":
            normal_fan_sum_init(self)
        elif init != "pytorch":
            raise ValueError(f"model.init={init!r}: choose pytorch or normal_fan_sum")


def normal_fan_sum_init(model: nn.Module) -> None:
    """Every dense weight and bias ~ N(0, 1 / (fan_in + fan_out)): the initialisation of Akrout et al.'s code
    (makrout/Deep-Learning-without-Weight-Transport, fcnn/FCNN_BP.py), biases included; PyTorch's default is
    U(+-1/sqrt(fan_in)) for both."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            std = (module.in_features + module.out_features) ** -0.5
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.normal_(module.bias, 0.0, std)


def check_groups(groups: list[int], hidden_sizes: Sequence[int]) -> None:
    if len(groups) != len(hidden_sizes):
        raise ValueError(f"model.groups={groups} needs one entry per hidden layer (model.hidden_sizes={list(hidden_sizes)})")
    if groups and groups[0] != 1:
        raise ValueError(f"model.groups={groups}: the first hidden layer reads the whole input and cannot be grouped (use 1)")
    for i, (g, size, previous) in enumerate(zip(groups, hidden_sizes, [None, *hidden_sizes])):
        if g > 1 and (size % g or previous % g):
            raise ValueError(f"model.groups[{i}]={g} must divide the layer's input ({previous}) and output ({size}) sizes")


def grouped_block(in_features: int, out_features: int, groups: int, activation: str, layer_norm: bool, bias: bool) -> Block:
    """G independent dense maps side by side: a grouped 1x1 convolution on the [B, C, 1, 1] view,
    then a LayerNorm per group (nn.GroupNorm) when the MLP has LayerNorm."""
    linear = nn.Conv2d(in_features, out_features, 1, groups=groups, bias=bias)
    return Block(linear, activation, nn.GroupNorm(groups, out_features) if layer_norm else None)


class Autoencoder(MLP):
    """An MLP whose hidden sizes are the encoder, the bottleneck and the mirrored decoder.

    The output has the input's (flattened) size; the training app checks that the target is the
    input (`data=*_autoencoder`).
    """

    def __init__(
        self,
        input_shape: int | Sequence[int],
        output_dim: int,
        encoder_sizes: Sequence[int] = (256,),
        bottleneck: int = 32,
        activation: str = "relu",
        layer_norm: bool = False,
        bias: bool = True,
    ):
        if output_dim != flat_size(input_shape):
            raise ValueError(
                f"model=autoencoder reconstructs its input (output size {flat_size(input_shape)}) but the data asks for "
                f"{output_dim} outputs: use a reconstruction dataset such as data=mnist_autoencoder, "
                f"or model=mlp for classification"
            )
        hidden = [*encoder_sizes, bottleneck, *reversed(list(encoder_sizes))]
        super().__init__(input_shape, output_dim, hidden, activation, layer_norm, bias)
