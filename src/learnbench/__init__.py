"""learnbench: compare learning rules for neural networks on equal terms."""

from learnbench.catalog import register_resolver

__version__ = "0.1.0"

register_resolver()  # `${rules:feedforward}` in the comparison sweeps
