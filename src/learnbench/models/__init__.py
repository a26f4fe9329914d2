"""Plain nn.Module models. Activity-space rules find their perturbation sites by module type."""

from learnbench.models.mlp import MLP, Autoencoder, Block, PerturbationSite

__all__ = ["MLP", "Autoencoder", "Block", "PerturbationSite"]
