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
