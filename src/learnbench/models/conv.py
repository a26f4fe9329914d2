"""Convolutional chains: conv blocks (Conv2d -> activation -> pool), then dense blocks and a readout."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from learnbench.models.blocks import Block, BlockChain, dense_block


def conv_block(in_channels: int, out_channels: int, kernel_size: int, padding: int, activation: str, pool: int, bias: bool = True) -> Block:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
    return Block(conv, activation, pool=nn.MaxPool2d(pool) if pool > 1 else None)


class CNN(BlockChain):
    """`channels[i]` filters of size `kernel_sizes[i]` (padding keeps the map size when `same_padding`),
    each followed by the activation and a `pool` x `pool` max-pool; then `hidden_sizes` dense blocks and
    a linear readout. `input_shape` (C, H, W) and `output_dim` come from the data module."""

    def __init__(
        self,
        input_shape: Sequence[int],
        output_dim: int,
        channels: Sequence[int] = (16, 32),
        kernel_sizes: Sequence[int] = (5, 5),
        same_padding: bool = True,
        first_padding: int | None = None,
        pool: int = 2,
        hidden_sizes: Sequence[int] = (128,),
        activation: str = "relu",
        bias: bool = True,
    ):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"a convolutional model needs image inputs (C, H, W); this dataset gives examples of shape {tuple(input_shape)}")
        if len(kernel_sizes) != len(channels):
            raise ValueError(f"model.kernel_sizes has {len(kernel_sizes)} entries but model.channels has {len(channels)}: give one kernel size per conv layer")
        blocks, in_channels = [], input_shape[0]
        for i, (out_channels, k) in enumerate(zip(channels, kernel_sizes)):
            padding = k // 2 if same_padding else 0
            if i == 0 and first_padding is not None:
                padding = first_padding
            blocks.append(conv_block(in_channels, out_channels, k, padding, activation, pool, bias))
            in_channels = out_channels
        with torch.no_grad():  # the flattened size of the last map, whatever the kernels and pools
            flat = nn.Sequential(*blocks)(torch.zeros(1, *input_shape)).numel()
        sizes = [flat, *hidden_sizes]
        blocks += [dense_block(i, o, activation, bias=bias) for i, o in zip(sizes[:-1], sizes[1:])]
        blocks.append(dense_block(sizes[-1], output_dim, "identity", bias=bias))
        self.blocks = nn.Sequential(*blocks)
        self.input_shape, self.output_dim = tuple(input_shape), output_dim


class LeNet(CNN):
    """LeNet-5 as the feedback-alignment literature trains it on MNIST / Fashion-MNIST (e.g. biotorch):
    conv 6@5x5 -> pool 2 -> conv 16@5x5 -> pool 2 -> 120 -> 84 -> classes, ReLU by default. The
    original's 32x32 input is the 28x28 image zero-padded by 2, which `first_padding=2` does."""

    def __init__(self, input_shape: Sequence[int], output_dim: int, activation: str = "relu", bias: bool = True):
        super().__init__(
            input_shape, output_dim, channels=(6, 16), kernel_sizes=(5, 5), same_padding=False, first_padding=2,
            pool=2, hidden_sizes=(120, 84), activation=activation, bias=bias,
        )
