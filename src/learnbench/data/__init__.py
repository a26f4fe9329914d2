"""Datasets held in memory as tensors and batched by a seeded index permutation."""

from learnbench.data.in_memory import InMemoryDataModule, TensorBatches
from learnbench.data.spiral import SpiralDataModule, make_spiral
from learnbench.data.vision import DatasetNotFoundError, VisionDataModule

__all__ = [
    "DatasetNotFoundError",
    "InMemoryDataModule",
    "SpiralDataModule",
    "TensorBatches",
    "VisionDataModule",
    "make_spiral",
]
