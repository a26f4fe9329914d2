"""The building block of every feed-forward model in the suite, and the chain that holds them.

A `Block` is one layer with named parts, applied in this order:

    input z -> linear (nn.Linear or nn.Conv2d) -> h -> norm -> a (the pre-activation) -> activation -> pool

`a`, the pre-activation, is where local learning rules read and inject their error signals (node
perturbation adds noise there, FG-A tangents, as in Ren et al. 2023: after LayerNorm, before the
non-linearity); `linear` is the only part whose input, the block's input z, the local update
needs. A `Linear` block flattens its input, so a convolutional stage can feed a dense one.

A `BlockChain` is a model whose forward is exactly its blocks in sequence. Rules that need the
intermediate values (`learnbench.rules.local.forward_trace`) walk the blocks themselves, so the
models stay plain nn.Modules with no hooks and no rule-specific code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "hard_tanh": nn.Hardtanh,  # clip to [-1, 1] (pcx's backprop baselines)
    "identity": nn.Identity,
}
#: The layer types a block's `linear` part may be (the local update knows exactly these).
LINEAR_TYPES = (nn.Linear, nn.Conv2d)


def activation_module(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"model.activation={name!r} is not known; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Block(nn.Module):
    def __init__(self, linear: nn.Module, activation: str = "relu", norm: nn.Module | None = None, pool: nn.Module | None = None):
        super().__init__()
        if not isinstance(linear, LINEAR_TYPES):
            raise TypeError(f"a Block's linear part must be one of {[t.__name__ for t in LINEAR_TYPES]}, not {type(linear).__name__}")
        self.linear = linear
        self.norm = norm if norm is not None else nn.Identity()
        self.activation = activation_module(activation)
        self.pool = pool if pool is not None else nn.Identity()

    def prepare(self, z: Tensor) -> Tensor:
        """What the linear part reads: a dense layer sees each example flattened; a convolution after a
        dense layer sees its vector as a 1x1 image (a grouped 1x1 convolution is a grouped linear layer)."""
        if isinstance(self.linear, nn.Linear):
            return z.flatten(1)
        return z[:, :, None, None] if z.dim() == 2 else z

    def after_pre_activation(self, a: Tensor) -> Tensor:
        return self.pool(self.activation(a))

    def forward(self, z: Tensor) -> Tensor:
        return self.after_pre_activation(self.norm(self.linear(self.prepare(z))))


class GroupedLinear(nn.Conv2d):
    """G dense maps side by side: a grouped 1x1 convolution on the [B, C, 1, 1] view (so every rule's Conv2d path
    serves it), computed as one batched matrix product. On a CPU, PyTorch's grouped convolution of this shape is
    10-40x slower than the same products by `bmm` (docs/speed.md, many seeds). The rules' hand-written
    convolution steps (feedback_path.py, local.weight_gradient) take the same route for it."""

    def __init__(self, in_features: int, out_features: int, groups: int, bias: bool = True):
        super().__init__(in_features, out_features, 1, groups=groups, bias=bias)

    def forward(self, z: Tensor) -> Tensor:
        return grouped_matmul(z, self.weight, self.bias, self.groups)


def by_group(t: Tensor, groups: int) -> Tensor:
    """[B, G * n, 1, 1] (or [B, G * n]) -> [G, B, n]."""
    return t.reshape(len(t), groups, -1).transpose(0, 1)


def from_groups(t: Tensor) -> Tensor:
    """[G, B, n] -> [B, G * n, 1, 1]."""
    return t.transpose(0, 1).reshape(t.shape[1], -1, 1, 1)


def grouped_matmul(z: Tensor, weight: Tensor, bias: Tensor | None, groups: int) -> Tensor:
    """The grouped 1x1 convolution of z [B, in, 1, 1] with weight [out, in / G, 1, 1]: [B, out, 1, 1]."""
    w = weight.reshape(groups, -1, weight.shape[1])  # [G, out / G, in / G]
    h = from_groups(torch.bmm(by_group(z, groups), w.transpose(1, 2)))
    return h if bias is None else h + bias.view(1, -1, 1, 1)


def grouped_matmul_input_grad(delta: Tensor, weight: Tensor, groups: int) -> Tensor:
    """dL/dz of grouped_matmul for dL/dh = delta, through `weight` (a feedback matrix of W's shape, or W)."""
    return from_groups(torch.bmm(by_group(delta, groups), weight.reshape(groups, -1, weight.shape[1])))


def grouped_matmul_weight_grad(z: Tensor, delta: Tensor, groups: int, shape: torch.Size) -> Tensor:
    """dL/dW of grouped_matmul: each group's delta^T z, [out, in / G, 1, 1]."""
    return torch.bmm(by_group(delta, groups).transpose(1, 2), by_group(z, groups)).reshape(shape)


def dense_block(in_features: int, out_features: int, activation: str, layer_norm: bool = False, bias: bool = True) -> Block:
    norm = nn.LayerNorm(out_features) if layer_norm else None
    return Block(nn.Linear(in_features, out_features, bias=bias), activation, norm)


class BlockChain(nn.Module):
    """A model that is its blocks applied in order (subclasses build `self.blocks`)."""

    blocks: nn.Sequential
    input_shape: tuple[int, ...]  # one example's shape (what a dry run needs)
    #: Where local-loss rules (rules/local_losses.py) put a head: after "every" hidden block, or the "last" only.
    local_heads: str = "every"

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
