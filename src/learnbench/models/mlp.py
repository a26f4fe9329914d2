"""Multi-layer perceptrons built from blocks: Linear -> [LayerNorm] -> site -> activation.

`PerturbationSite` is an identity that marks a layer's pre-activation (after LayerNorm, before
the non-linearity, as in Ren et al. 2023). Node perturbation and activity-perturbed forward
gradients add noise or tangents there through forward hooks, so the models stay plain modules
and every rule trains exactly the same network.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}


class PerturbationSite(nn.Identity):
    """Marks a pre-activation; an identity unless a learning rule hooks it."""


class Block(nn.Module):
    """One layer: `pre` (Linear, optional LayerNorm, site) then the activation.

    `pre` is what a local learning rule differentiates: its parameters' gradient follows from the
    block input and the error signal at the site, with no chain through other layers.
    """

    def __init__(self, in_features: int, out_features: int, activation: str, layer_norm: bool, bias: bool):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.activation={activation!r} is not known; choose one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = [nn.Linear(in_features, out_features, bias=bias)]
        if layer_norm:
            layers.append(nn.LayerNorm(out_features))
        layers.append(PerturbationSite())
        self.pre = nn.Sequential(*layers)
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.pre(x))


class MLP(nn.Module):
    """input (flattened) -> hidden blocks -> linear readout block (no LayerNorm, no activation).

    `input_dim` and `output_dim` come from the data module, never from the user's config.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "relu",
        layer_norm: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        sizes = [input_dim, *hidden_sizes]
        blocks = [Block(i, o, activation, layer_norm, bias) for i, o in zip(sizes[:-1], sizes[1:])]
        blocks.append(Block(sizes[-1], output_dim, "identity", layer_norm=False, bias=bias))
        self.blocks = nn.Sequential(*blocks)
        self.input_dim, self.output_dim = input_dim, output_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x.flatten(1))


class Autoencoder(MLP):
    """An MLP whose hidden sizes are the encoder, the bottleneck and the mirrored decoder.

    The output has the input's (flattened) size; the data module checks that the target is the
    input (`data=*_autoencoder`).
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        encoder_sizes: Sequence[int] = (256,),
        bottleneck: int = 32,
        activation: str = "relu",
        layer_norm: bool = False,
        bias: bool = True,
    ):
        if output_dim != input_dim:
            raise ValueError(
                f"model=autoencoder reconstructs its input (output size {input_dim}) but the data asks for "
                f"{output_dim} outputs: use a reconstruction dataset such as data=mnist_autoencoder, "
                f"or model=mlp for classification"
            )
        hidden = [*encoder_sizes, bottleneck, *reversed(list(encoder_sizes))]
        super().__init__(input_dim, output_dim, hidden, activation, layer_norm, bias)
