"""MNIST and Fashion-MNIST through torchvision, held in memory as normalised tensors.

torchvision reads the raw IDX files under `<data_dir>/<MNIST|FashionMNIST>/raw/`. The validation
split is carved from the official training set with a fixed seed (the same for every run seed),
the test split is the official one. With `reconstruction=true` the target is the input (MSE).
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor
from torchvision import datasets

from learnbench.data.in_memory import CLASSIFICATION, RECONSTRUCTION, InMemoryDataModule, Splits

# name -> (torchvision class, pixel mean, pixel std): the usual training-set statistics.
DATASETS = {
    "mnist": (datasets.MNIST, 0.1307, 0.3081),
    "fashion_mnist": (datasets.FashionMNIST, 0.2860, 0.3530),
}
RAW_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing and cannot be downloaded; the message says where to put it."""


class VisionDataModule(InMemoryDataModule):
    input_shape = (1, 28, 28)

    def __init__(
        self,
        dataset: str = "mnist",
        data_dir: str = "data",
        val_size: int = 5000,
        split_seed: int = 0,
        reconstruction: bool = False,
        download: bool = True,
        **batching,
    ):
        super().__init__(**batching)
        if dataset not in DATASETS:
            raise ValueError(f"data.dataset={dataset!r} is not known; choose one of {sorted(DATASETS)}")
        self.dataset = dataset
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.val_size = val_size
        self.split_seed = split_seed
        self.download = download
        self.task = RECONSTRUCTION if reconstruction else CLASSIFICATION
        self.output_dim = self.input_dim if reconstruction else 10

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / DATASETS[self.dataset][0].__name__ / "raw"

    def missing_files(self) -> list[str]:
        # torchvision also accepts the .gz archives it downloads; either form counts as present.
        return [f for f in RAW_FILES if not (self.raw_dir / f).exists() and not (self.raw_dir / f"{f}.gz").exists()]

    def extract_archives(self) -> None:
        """torchvision reads only the unpacked files: unpack any file that is present only as .gz."""
        for name in RAW_FILES:
            target, archive = self.raw_dir / name, self.raw_dir / f"{name}.gz"
            if not target.exists() and archive.exists():
                partial = target.with_name(f"{name}.{os.getpid()}.tmp")  # atomic: other ranks may be reading
                with gzip.open(archive, "rb") as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(partial, target)

    def prepare_data(self) -> None:
        """Download when files are missing and downloads are allowed; else a clear error."""
        missing = self.missing_files()
        if not missing:
            self.extract_archives()
            return
        cls = DATASETS[self.dataset][0]
        reason = "data.download=false"
        if self.download:
            try:
                for train in (True, False):
                    cls(root=str(self.data_dir), train=train, download=True)
                return
            except Exception as error:  # no network, a mirror down, a read-only directory
                reason = f"the download failed ({type(error).__name__}: {error})"
        raise DatasetNotFoundError(
            f"{self.dataset} is not in {self.raw_dir} and {reason}.\n"
            f"Missing files: {', '.join(missing)}.\n"
            f"Put the raw IDX files (torchvision's layout: <data_dir>/{cls.__name__}/raw/<file>) there, "
            f"or point the suite at a folder that has them, e.g. paths.data_dir=../shared/datasets "
            f"or LEARNBENCH_DATA_DIR=/path/to/datasets."
        )

    def _load(self, train: bool) -> tuple[Tensor, Tensor]:
        cls, mean, std = DATASETS[self.dataset]
        raw = cls(root=str(self.data_dir), train=train, download=False)
        x = (raw.data.unsqueeze(1).float() / 255.0 - mean) / std
        return x, (x if self.task == RECONSTRUCTION else raw.targets.long())

    def load_splits(self) -> Splits:
        self.prepare_data()  # also here: under ddp_spawn, prepare_data ran in another process
        x, y = self._load(train=True)
        if not 0 < self.val_size < len(x):
            raise ValueError(f"data.val_size={self.val_size} must lie between 0 and the training set size {len(x)}")
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        val, train = order[: self.val_size], order[self.val_size :]
        return Splits(train=(x[train], y[train]), val=(x[val], y[val]), test=self._load(train=False))
