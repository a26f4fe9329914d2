"""Bellec et al. 2020's evidence accumulation task (Nat. Commun. 11:3625, Fig. 3; their code's
generate_click_task_data), sequences of input spikes at dt ms a step:

    channels    4 groups of `channels_per_group` Poisson inputs: left cues, right cues, the recall cue, noise
    cues        `cues` slots of `slot_ms`, each silent for slot_ms - cue_ms, then one side's group fires at
                `rate_hz` for `cue_ms`; per sequence one side is drawn to be likely (each cue on it with
                probability 1 - cue_probability = 0.7), the other gets the rest
    delay       `delay_ms` after the last slot; the recall group fires at rate_hz over its last `recall_ms`
    noise       the noise group fires at rate_hz / 4 throughout
    target      the side that got more cues (0 left, 1 right), scored over the recall window
                (tasks.FinalWindowClassification: cross-entropy at every step of it, averaged)

Bellec's lengths (the defaults): 7 cues of 100 ms in 150 ms slots, a 1200 ms delay, recall 150 ms:
150 x 7 + 1200 = 2250 steps at dt = 1 ms, 40 channels, 40 Hz. Bellec draws fresh sequences every iteration;
here every epoch draws train_sequences fresh ones (`fresh_train`, the default; each is seen once, so every
iteration's batch is new, as theirs) from a seed of its own; validation and test are fixed sets, each from its
own seed. train_sequences bounds the memory (2250 x 40 floats, 360 kB a sequence); an epoch is
train_sequences / batch_size iterations. fresh_train=false: the same training set every epoch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from learnbench.data.in_memory import InMemoryDataModule, Splits, epoch_seed
from learnbench.options import NonNegativeInt, OpenFraction, Positive, PositiveInt

GROUPS = ("left", "right", "recall", "noise")


def cue_sides(sequences: int, cues: int, cue_probability: float, generator: torch.Generator) -> Tensor:
    """0 (left) or 1 (right) for every cue [sequences, cues]: per sequence the likely side is drawn fairly, each
    cue lands on it with probability 1 - cue_probability."""
    likely = torch.randint(0, 2, (sequences, 1), generator=generator)
    on_likely = torch.rand(sequences, cues, generator=generator) >= cue_probability
    return torch.where(on_likely, likely, 1 - likely)


def firing_rates(sides: Tensor, steps: int, channels: int, slot: int, cue: int, recall: int, rate: float) -> Tensor:
    """The spike probability of every channel at every step, [sequences, steps, 4 channels] (rate per step)."""
    sequences, cues = sides.shape
    p = torch.zeros(sequences, steps, len(GROUPS) * channels)
    for k in range(cues):
        start = k * slot + slot - cue  # the slot's silence first, then the cue (Bellec's d_silence)
        for side in (0, 1):
            rows = (sides[:, k] == side).nonzero(as_tuple=True)[0]
            p[rows, start:start + cue, side * channels:(side + 1) * channels] = rate
    p[:, steps - recall:, 2 * channels:3 * channels] = rate
    p[:, :, 3 * channels:] = rate / 4
    return p


def evidence_accumulation(sequences: int, cues: int, slot: int, cue: int, delay: int, recall: int, channels: int,
                          rate: float, cue_probability: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(input spikes [n, steps, 4 channels], targets [n, steps, 2]: (class, weight 1 / recall in the recall
    window, else 0)); `rate` is the spike probability per step, the lengths in steps."""
    steps = cues * slot + delay
    sides = cue_sides(sequences, cues, cue_probability, generator)
    spikes = torch.bernoulli(firing_rates(sides, steps, channels, slot, cue, recall, rate), generator=generator)
    label = (sides.sum(dim=1) > cues // 2).float()  # more right cues than left (cues is odd: no ties)
    weights = torch.zeros(steps)
    weights[steps - recall:] = 1 / recall
    targets = torch.stack([label[:, None].expand(-1, steps), weights.expand(sequences, -1)], dim=-1)
    return spikes, targets


class EvidenceAccumulationDataModule(InMemoryDataModule):
    task = "final_window_classification"
    output_dim = 2

    def __init__(
        self,
        cues: PositiveInt = 7,
        slot_ms: Positive = 150.0,
        cue_ms: Positive = 100.0,
        delay_ms: Positive = 1200.0,
        recall_ms: Positive = 150.0,
        dt: Positive = 1.0,
        channels_per_group: PositiveInt = 10,
        rate_hz: Positive = 40.0,
        cue_probability: OpenFraction = 0.3,
        train_sequences: PositiveInt = 1280,
        val_sequences: PositiveInt = 256,
        test_sequences: PositiveInt = 256,
        data_seed: NonNegativeInt = 1234,
        fresh_train: bool = True,
        **batching,
    ):
        super().__init__(**batching)
        self.fresh_train = fresh_train
        if cues % 2 == 0:
            raise ValueError(f"data.cues={cues}: use an odd number, so that one side always has more cues")
        lengths = {name: round(ms / dt) for name, ms in dict(slot=slot_ms, cue=cue_ms, delay=delay_ms, recall=recall_ms).items()}
        if lengths["cue"] > lengths["slot"] or lengths["recall"] > lengths["delay"]:
            raise ValueError(f"data.cue_ms={cue_ms} must fit in data.slot_ms={slot_ms} and data.recall_ms={recall_ms} in "
                             f"data.delay_ms={delay_ms}")
        self.lengths, self.cues, self.channels = lengths, cues, channels_per_group
        self.rate, self.cue_probability, self.data_seed = rate_hz * dt / 1000, cue_probability, data_seed
        self.sizes = (train_sequences, val_sequences, test_sequences)
        self.input_shape = (cues * lengths["slot"] + lengths["delay"], len(GROUPS) * channels_per_group)

    def sequences(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return evidence_accumulation(n, self.cues, self.lengths["slot"], self.lengths["cue"], self.lengths["delay"],
                                     self.lengths["recall"], self.channels, self.rate, self.cue_probability, generator)

    def load_splits(self) -> Splits:
        # Each split from its own generator: the test size never changes the training set.
        return Splits(*(self.sequences(n, torch.Generator().manual_seed(self.data_seed + i)) for i, n in enumerate(self.sizes)))

    def draw_train(self, epoch: int) -> tuple[Tensor, Tensor]:
        """Epoch e's training sequences: epoch 0's are the training split (seed data_seed), a later epoch's come
        from a generator seeded by (data_seed, e), as Bellec et al. draw new sequences for every iteration."""
        if epoch == 0:
            return self.load().train
        return self.sequences(self.sizes[0], torch.Generator().manual_seed(epoch_seed(self.data_seed, epoch)))
