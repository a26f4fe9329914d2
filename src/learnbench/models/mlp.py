"""Multi-layer perceptrons: dense blocks Linear -> [LayerNorm] -> activation, then a linear readout."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from learnbench.models.blocks import BlockChain, dense_block


def flat_size(shape: int | Sequence[int]) -> int:
    return shape if isinstance(shape, int) else math.prod(shape)


class MLP(BlockChain):
    """input (flattened) -> hidden blocks -> linear readout block (no LayerNorm, no activation).

    `input_shape` (one example's shape, or its flattened size) and `output_dim` come from the data
    module, never from the user's config.
    """

    def __init__(
        self,
        input_shape: int | Sequence[int],
        output_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "relu",
        layer_norm: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        input_dim = flat_size(input_shape)
        sizes = [input_dim, *hidden_sizes]
        blocks = [dense_block(i, o, activation, layer_norm, bias) for i, o in zip(sizes[:-1], sizes[1:])]
        blocks.append(dense_block(sizes[-1], output_dim, "identity", layer_norm=False, bias=bias))
        self.blocks = nn.Sequential(*blocks)
        self.input_shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        self.input_dim, self.output_dim = input_dim, output_dim


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
