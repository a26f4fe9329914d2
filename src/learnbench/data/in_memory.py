"""A LightningDataModule for datasets that fit in memory.

The whole split lives as tensors on the training device; a batch is an index into them. This
skips the per-sample Python DataLoader, which costs more than a small MLP's step on MNIST.
Under DDP each rank takes an equal, disjoint shard of one shared permutation, so every rank runs
the same number of steps (an unequal count would deadlock the gradient all-reduce).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch import Tensor

from learnbench.tasks import CLASSIFICATION


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed mixed from (seed, epoch): torch's CPU generator keeps only the low 32 bits."""
    return int(np.random.SeedSequence([seed % 2**32, epoch]).generate_state(1)[0])


class TensorBatches:
    """An iterable of (x, y) batches over tensors, re-shuffled every epoch from a fixed seed.

    The permutation for epoch e is drawn from (seed, e) in a generator of its own, so the data
    order depends on nothing else (not on the learning rule's noise, not on the rank). Not from
    `seed + e`: runs with neighbouring seeds would then see the same orders, one epoch apart.
    With `draw`, every epoch also brings its own examples (fresh sequences of a generated task).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        equal_shards: bool | None = None,
        draw: Callable[[int], tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        self.x, self.y = x, y
        # draw(epoch): a fresh set of the same size for every epoch (a generated task's training split, drawn as its
        # generator's seed and the epoch say); x, y are epoch 0's. Tied to the epoch number like the order, so a
        # resumed run draws what an uninterrupted one did.
        self.draw, self.drawn_epoch = draw, 0
        self.batch_size = batch_size
        self.shuffle = shuffle
        # Training batches (shuffled or in a fixed order) give every process an equal shard; evaluation keeps all.
        self.equal_shards = shuffle if equal_shards is None else equal_shards
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.batches_done = 0  # of the current pass: a checkpoint taken mid-epoch resumes after them
        self.resume_at = 0

    # Lightning calls `dataloader.sampler.set_epoch(current_epoch)` before every training epoch,
    # also after resuming from a checkpoint: that keeps the order tied to the epoch number, so a
    # resumed run sees the data order of an uninterrupted one without any state in the checkpoint.
    batch_sampler = None  # (Lightning looks for one as it would on a DataLoader)

    @property
    def sampler(self) -> "TensorBatches":
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_indices(self) -> Tensor:
        n = len(self.x)
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if self.equal_shards and self.world_size > 1:
            # Training: equal shards (the tail that does not divide evenly is left out this epoch).
            order = order[: n - n % self.world_size]
        return order[self.rank :: self.world_size].to(self.x.device)

    def __len__(self) -> int:
        n = len(self._shard_indices()) if self.world_size > 1 else len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    # Resumable mid-epoch (Lightning saves and loads a loader with state_dict / load_state_dict): the state is the
    # number of batches of this epoch's order already taken; Lightning fetches a sized loader without prefetching,
    # so that is the number the training loop has seen. Resuming skips them (their order is the epoch's, as above).
    def state_dict(self) -> dict:
        return {"batches_done": self.batches_done}

    def load_state_dict(self, state: dict) -> None:
        self.resume_at = int(state.get("batches_done", 0))

    def _draw_for_epoch(self) -> None:
        if self.draw is not None and self.drawn_epoch != self.epoch:
            self.x, self.y = self.draw(self.epoch)
            self.drawn_epoch = self.epoch

    def __iter__(self):
        self._draw_for_epoch()
        indices = self._shard_indices()
        self.epoch += 1
        skip, self.resume_at = self.resume_at, 0
        self.batches_done = skip
        for start in range(skip * self.batch_size, len(self) * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            self.batches_done += 1
            yield self.x[batch], self.y[batch]


@dataclass
class Splits:
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]


class InMemoryDataModule(L.LightningDataModule):
    """Base class: subclasses implement `load_splits()` and set the shape attributes.

    Attributes a model is built from: `input_shape` (one example), `output_dim` (classes, or the
    flattened input size for reconstruction), `task` (a name in learnbench.tasks.TASKS).
    """

    input_shape: tuple[int, ...] = ()
    output_dim: int = 0
    task: str = CLASSIFICATION
    # The option that sets each split's size, named when a size does not fit (a split without an entry
    # has a fixed size).
    split_options: dict[str, str] = {}
    # True: a new training set every epoch from `draw_train` (a generated task; the evaluation splits stay fixed).
    fresh_train: bool = False

    def __init__(self, batch_size: int = 128, eval_batch_size: int = 1000, seed: int = 0, drop_last: bool = True, shuffle: bool = True):
        super().__init__()
        self.batch_size = batch_size
        # False: the training batches come in the same order every epoch (Akrout et al.'s code); True: re-shuffled.
        self.shuffle = shuffle
        self.eval_batch_size = eval_batch_size
        self.seed = seed  # data order only; the run's `seed` is passed in here by the config
        self.drop_last = drop_last
        self.splits: Splits | None = None
        self._loaded: Splits | None = None  # on the CPU, until setup() moves it to the device
        self._train_batches: TensorBatches | None = None

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)

    def load_splits(self) -> Splits:
        raise NotImplementedError

    def load(self) -> Splits:
        """The splits, loaded once (on the CPU until setup() moves them to the training device)."""
        if self.splits is not None:
            return self.splits
        if self._loaded is None:
            self._loaded = self.load_splits()
        return self._loaded

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        splits = self.load()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self.splits = Splits(*(tuple(t.to(device) for t in pair) for pair in (splits.train, splits.val, splits.test)))
        self._loaded = None  # only the device copy is kept

    def check_splits_fit(self, world_size: int = 1, name: str = "the data") -> None:
        """Refuse, before any step, sizes that would train nothing or stall the processes: a training split
        that gives no batch (a batch larger than it, the incomplete batch dropped: 0 steps and status ok), and
        under DDP an evaluation split smaller than the number of processes (a process without a batch never
        joins the others' metric all-gather: the run dies in gloo or hangs). Loads the data."""
        from learnbench.config_validation import ConfigError

        sizes = {split: len(getattr(self.load(), split)[0]) for split in ("train", "val", "test")}
        on = f" on the {world_size} processes" if world_size > 1 else ""
        for split, what in (("train", "training"), ("val", "validation"), ("test", "test")):
            if sizes[split] < world_size:
                raise ConfigError(
                    f"the {what} split of {name} has {sizes[split]} example(s), fewer than the {world_size} "
                    f"processes: each process needs at least one: {self._raise_size(split, world_size)}"
                )
        per_process = sizes["train"] // world_size
        if self.drop_last and self.batch_size > per_process:
            share = f"{per_process} per process{on}, of {sizes['train']}" if world_size > 1 else f"{per_process}"
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the training split ({share} examples) and "
                f"data.drop_last=true drops the incomplete batch, so no step would be taken: "
                f"use data.batch_size={per_process} or less (or data.drop_last=false)"
            )

    def _raise_size(self, split: str, world_size: int) -> str:
        """What to change when a split has fewer examples than processes."""
        option = self.split_options.get(split)
        if option is None:
            return "its size is fixed: run on one process (trainer=cpu)"
        return f"raise {option} (the split needs at least {world_size} examples), or run on one process (trainer=cpu)"

    def _rank_and_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def draw_train(self, epoch: int) -> tuple[Tensor, Tensor]:
        """The training set of `epoch` (epoch 0: the training split itself) where `fresh_train` is set: a generated
        task that draws new examples every epoch implements it."""
        raise NotImplementedError

    def _draw_on_device(self, epoch: int) -> tuple[Tensor, Tensor]:
        device = self.splits.train[0].device
        return tuple(t.to(device) for t in self.draw_train(epoch))

    def train_dataloader(self) -> TensorBatches:
        rank, world = self._rank_and_world()
        if self._train_batches is None or self._train_batches.rank != rank:
            x, y = self.splits.train
            self._train_batches = TensorBatches(
                x, y, self.batch_size, shuffle=self.shuffle, seed=self.seed, rank=rank, world_size=world,
                drop_last=self.drop_last, equal_shards=True, draw=self._draw_on_device if self.fresh_train else None,
            )
        return self._train_batches

    def _eval_batches(self, split: tuple[Tensor, Tensor]) -> TensorBatches:
        rank, world = self._rank_and_world()
        x, y = split
        return TensorBatches(x, y, self.eval_batch_size, shuffle=False, rank=rank, world_size=world)

    def val_dataloader(self) -> TensorBatches:
        return self._eval_batches(self.splits.val)

    def test_dataloader(self) -> TensorBatches:
        return self._eval_batches(self.splits.test)
