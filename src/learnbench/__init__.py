"""learnbench: compare learning rules for neural networks on equal terms."""

__version__ = "0.1.0"
