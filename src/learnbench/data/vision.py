"""MNIST and Fashion-MNIST through torchvision, held in memory as normalised tensors.

torchvision reads the raw IDX files under `<data_dir>/<MNIST|FashionMNIST>/raw/`. The validation
split is carved from the official training set with a fixed seed (the same for every run seed),
the test split is the official one. With `reconstruction=true` the target is the input (MSE).

Before torchvision parses them, the files are checked (`check_idx_file`): the IDX header (magic
number, dimensions), that the size is the header's, that images are 28 x 28 with one label each,
and, for the official MNIST / Fashion-MNIST files, their MD5. A damaged file fails with a message
that names it and says what to do, instead of a reshape error deep inside torchvision.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torchvision import datasets

from learnbench.data.in_memory import InMemoryDataModule, Splits
from learnbench.tasks import CLASSIFICATION, RECONSTRUCTION, SIGMOID_CLASSIFICATION
from learnbench.options import NonNegativeInt, PositiveInt

# name -> (torchvision class, pixel mean, pixel std): the usual training-set statistics.
DATASETS = {
    "mnist": (datasets.MNIST, 0.1307, 0.3081),
    "fashion_mnist": (datasets.FashionMNIST, 0.2860, 0.3530),
}
DatasetName = Literal["mnist", "fashion_mnist"]
#: How pixels are scaled: `standard` (x - mean) / std with the training set's mean and std above (what
#: torchvision's examples do), `unit` the pixels / 255 in [0, 1] (ToTensor alone), `signed` [-1, 1].
Normalize = Literal["standard", "unit", "signed"]
RAW_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]
# The official files: their shape, and the MD5 of each unpacked file (torchvision lists the MD5s of
# the .gz archives only). Files of another shape (a subset, the tests' synthetic ones) are checked
# for consistency, not against these.
OFFICIAL_SHAPES = {
    "train-images-idx3-ubyte": (60000, 28, 28),
    "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28),
    "t10k-labels-idx1-ubyte": (10000,),
}
OFFICIAL_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
IDX_UBYTE = 0x08  # the element type of every MNIST-style file: unsigned bytes


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing and cannot be downloaded; the message says where to put it."""


class DamagedDataFileError(ValueError):
    """A dataset file is truncated, not an IDX file, of the wrong shape, or differs from the official one."""


def _damaged(path: Path, problem: str, remedy: str) -> DamagedDataFileError:
    return DamagedDataFileError(f"{path} is damaged: {problem}.\n{remedy}")


def _remedy(path: Path, dataset: str) -> str:
    archive = path.with_name(path.name + ".gz")
    if path.suffix != ".gz" and archive.exists():
        return f"Delete it ({path}); it is unpacked again from {archive.name} at the next run."
    return (
        f"Delete it ({path}) and download it again (data.download=true on a machine with network access), "
        f"or copy an intact {path.name} of {dataset} into {path.parent}/."
    )


# (path, size, mtime) of the files whose MD5 matched in this process: checked once, not at every call.
_VERIFIED: set[tuple[str, int, int]] = set()


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_idx_file(path: Path, dataset: str, ndim: int) -> tuple[int, ...]:
    """Check one unpacked IDX file of unsigned bytes; return its dimensions.

    The header (magic 0x00000801 for labels, 0x00000803 for images, then one big-endian uint32
    per dimension), the size (header + product of the dimensions), and, when the dimensions are
    the official file's, its MD5.
    """
    remedy = _remedy(path, dataset)
    size = path.stat().st_size
    header_size = 4 + 4 * ndim
    with open(path, "rb") as f:
        head = f.read(header_size)
    if head[:2] == b"\x1f\x8b":
        rename = f"Rename it to {path.name}.gz (it is then unpacked at the next run), or {remedy[0].lower()}{remedy[1:]}"
        raise _damaged(path, "it is gzip-compressed, not an unpacked IDX file", rename)
    if len(head) < header_size:
        raise _damaged(path, f"it has {size} bytes, fewer than the {header_size}-byte IDX header", remedy)
    magic = struct.unpack(">I", head[:4])[0]
    expected_magic = (IDX_UBYTE << 8) | ndim
    if magic != expected_magic:
        raise _damaged(
            path,
            f"it does not start with the IDX header of {'labels' if ndim == 1 else 'images'} "
            f"(magic number 0x{expected_magic:08X}: unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}) "
            f"but with 0x{magic:08X}",
            remedy,
        )
    dims = struct.unpack(f">{ndim}I", head[4:header_size])
    expected_size = header_size + math.prod(dims)
    if size != expected_size:
        shape = " x ".join(map(str, dims))
        how = "truncated" if size < expected_size else "longer than its header says"
        raise _damaged(
            path,
            f"its header announces {shape} bytes of data ({expected_size} bytes with the header) "
            f"but the file has {size} bytes ({how})",
            remedy,
        )
    if ndim == 3 and dims[1:] != (28, 28):
        raise _damaged(path, f"it holds {dims[1]} x {dims[2]} images; {dataset} images are 28 x 28", remedy)
    known = OFFICIAL_MD5.get(dataset, {}).get(path.name)
    if known and dims == OFFICIAL_SHAPES.get(path.name):
        stamp = (str(path), size, path.stat().st_mtime_ns)
        if stamp not in _VERIFIED:
            md5 = _md5(path)
            if md5 != known:
                raise _damaged(path, f"it has the official file's size but not its contents (MD5 {md5}, expected {known})", remedy)
            _VERIFIED.add(stamp)
    return dims


def scale_pixels(x: Tensor, normalize: str, mean: float, std: float) -> Tensor:
    """Pixels in [0, 1] -> the scaling a paper used (see Normalize)."""
    if normalize == "standard":
        return (x - mean) / std
    if normalize == "signed":
        return x * 2 - 1
    return x


class VisionDataModule(InMemoryDataModule):
    input_shape = (1, 28, 28)
    split_options = {"val": "data.val_size"}  # the rest of the training set trains; the test set is the official one

    def __init__(
        self,
        dataset: DatasetName = "mnist",
        data_dir: str = "data",
        val_size: PositiveInt = 5000,
        split_seed: NonNegativeInt = 0,
        reconstruction: bool = False,
        download: bool = True,
        normalize: Normalize = "standard",
        loss: Literal["softmax", "sigmoid"] = "softmax",
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
        self.normalize = normalize
        if loss not in ("softmax", "sigmoid"):
            raise ValueError(f"data.loss={loss!r}: choose softmax (cross entropy over the classes) or sigmoid (one binary cross entropy per class)")
        if reconstruction and loss != "softmax":
            raise ValueError(f"data.loss={loss} is a classification loss: a reconstruction task (data=*_autoencoder) takes none")
        self.task = RECONSTRUCTION if reconstruction else (CLASSIFICATION if loss == "softmax" else SIGMOID_CLASSIFICATION)
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
                try:
                    with gzip.open(archive, "rb") as src, open(partial, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except (EOFError, gzip.BadGzipFile, zlib.error) as error:
                    partial.unlink(missing_ok=True)
                    raise _damaged(archive, f"it is not a complete gzip archive ({error})", _remedy(archive, self.dataset)) from None
                os.replace(partial, target)

    def check_files(self) -> None:
        """Each unpacked file's header, size (and MD5 when it is an official file); images and labels agree."""
        dims = {name: check_idx_file(self.raw_dir / name, self.dataset, 3 if "images" in name else 1) for name in RAW_FILES}
        for split in ("train", "t10k"):
            images, labels = dims[f"{split}-images-idx3-ubyte"][0], dims[f"{split}-labels-idx1-ubyte"][0]
            if images != labels:
                raise DamagedDataFileError(
                    f"{self.raw_dir}/{split}-images-idx3-ubyte holds {images} images but {split}-labels-idx1-ubyte "
                    f"holds {labels} labels: one of the two is from another copy of {self.dataset}.\n"
                    f"Replace both with files from one source (download them again with data.download=true, "
                    f"or copy both into {self.raw_dir}/)."
                )

    def prepare_data(self) -> None:
        """Download when files are missing and downloads are allowed; else a clear error. Then check the files."""
        missing = self.missing_files()
        if not missing:
            self.extract_archives()
            self.check_files()
            return
        cls = DATASETS[self.dataset][0]
        reason = "data.download=false"
        if self.download:
            try:
                for train in (True, False):
                    cls(root=str(self.data_dir), train=train, download=True)
            except Exception as error:  # no network, a mirror down, a read-only directory
                reason = f"the download failed ({type(error).__name__}: {error})"
            else:
                self.check_files()
                return
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
        x = scale_pixels(raw.data.unsqueeze(1).float() / 255.0, self.normalize, mean, std)
        return x, (x if self.task == RECONSTRUCTION else raw.targets.long())

    def load_splits(self) -> Splits:
        self.prepare_data()  # also here: under ddp_spawn, prepare_data ran in another process
        x, y = self._load(train=True)
        if not 0 < self.val_size < len(x):
            from learnbench.config_validation import ConfigError

            raise ConfigError(f"data.val_size={self.val_size}: the validation split is carved from the {len(x)} training "
                              f"images and must leave some to train on: use data.val_size={len(x) - 1} or less")
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        val, train = order[: self.val_size], order[self.val_size :]
        return Splits(train=(x[train], y[train]), val=(x[val], y[val]), test=self._load(train=False))
