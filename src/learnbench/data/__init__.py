"""Datasets held in memory as tensors and batched by a seeded index permutation."""

from learnbench.data.evidence import EvidenceAccumulationDataModule
from learnbench.data.in_memory import InMemoryDataModule, TensorBatches
from learnbench.data.sequences import AddTaskDataModule, SequentialMNISTDataModule, SineTrajectoryDataModule
from learnbench.data.series import ForcePatternDataModule, LorenzDataModule, MackeyGlassDataModule, MemoryCapacityDataModule, NARMA10DataModule
from learnbench.data.spike_xor import SpikeXORDataModule, spike_xor_patterns
from learnbench.data.spiral import SpiralDataModule, make_spiral
from learnbench.data.vision import DamagedDataFileError, DatasetNotFoundError, VisionDataModule, check_idx_file
from learnbench.data.zipser_andersen import ZipserAndersenDataModule

__all__ = [
    "AddTaskDataModule",
    "SequentialMNISTDataModule",
    "SineTrajectoryDataModule",
    "DamagedDataFileError",
    "EvidenceAccumulationDataModule",
    "DatasetNotFoundError",
    "InMemoryDataModule",
    "ForcePatternDataModule",
    "LorenzDataModule",
    "MackeyGlassDataModule",
    "MemoryCapacityDataModule",
    "NARMA10DataModule",
    "SpikeXORDataModule",
    "SpiralDataModule",
    "TensorBatches",
    "VisionDataModule",
    "ZipserAndersenDataModule",
    "check_idx_file",
    "make_spiral",
    "spike_xor_patterns",
]
