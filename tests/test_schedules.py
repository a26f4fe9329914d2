"""learnbench.schedules against their closed forms.

Each schedule steps a real torch optimiser; the lr the optimiser holds before step s (s = 0, 1, ...,
total_steps and beyond) must be the documented closed form, with W = round(warmup_epochs * steps_per_epoch)
warm-up steps and T = total_steps:

    warmup_cosine:  s < W: lr * (s + 1) / W;  else lr * (r + (1 - r) * (1 + cos(pi * min(1, (s - W) / (T - W)))) / 2)
    warmup_linear:  s < W: lr * (s + 1) / W;  else lr * max(0, (T - s) / (T - W))
    exponential:    lr * exp(-d * s)

Besides the formula at every step, each case pins hand-computed values (the peak after warm-up, the
midpoint of the decay, the floor at the last step). The last test checks the wiring in a real run: the
lr the training module logs at each step, with T and steps_per_epoch taken from the trainer.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from conftest import CSV_ONLY, compose_config, tiny
from learnbench.schedules import exponential, warmup_cosine, warmup_linear
from learnbench.train import train

BASE_LR = 0.4


def lrs_along(factory, total_steps: int, steps_per_epoch: int, n: int | None = None, **kwargs) -> list[float]:
    """The lr an SGD optimiser holds before each of n steps (default total_steps + 1: through the end)."""
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([parameter], lr=BASE_LR, momentum=0.9)
    scheduler = factory(optimizer, total_steps, steps_per_epoch, **kwargs)
    seen = []
    for _ in range(total_steps + 1 if n is None else n):
        seen.append(optimizer.param_groups[0]["lr"])
        parameter.grad = torch.ones_like(parameter)
        optimizer.step()
        scheduler.step()
    return seen


def cosine_closed_form(s: int, total: int, warmup: int, min_ratio: float) -> float:
    if s < warmup:
        return BASE_LR * (s + 1) / warmup
    progress = min(1.0, (s - warmup) / (total - warmup))
    return BASE_LR * (min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * progress)) / 2)


def linear_closed_form(s: int, total: int, warmup: int) -> float:
    if s < warmup:
        return BASE_LR * (s + 1) / warmup
    return BASE_LR * max(0.0, (total - s) / (total - warmup))


# ----------------------------------------------------------------------------- warmup_cosine
@pytest.mark.parametrize(
    "total, per_epoch, warmup_epochs, min_ratio, warmup_steps",
    [
        (40, 10, 0.0, 0.0, 0),   # no warm-up: cosine from the first step
        (40, 10, 1.0, 0.0, 10),  # one epoch of warm-up
        (40, 10, 0.3, 0.1, 3),   # a fraction of an epoch, a floor of 10 %
        (24, 8, 2.0, 0.25, 16),
    ],
)
def test_warmup_cosine_follows_its_closed_form(total, per_epoch, warmup_epochs, min_ratio, warmup_steps):
    seen = lrs_along(warmup_cosine, total, per_epoch, n=total + 5, warmup_epochs=warmup_epochs, min_lr_ratio=min_ratio)
    expected = [cosine_closed_form(s, total, warmup_steps, min_ratio) for s in range(total + 5)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # hand values: warm-up starts at lr / W and reaches lr; the decay starts at lr, passes (1 + r) / 2 * lr
    # halfway, ends at r * lr after the last step and stays there
    if warmup_steps:
        assert seen[0] == pytest.approx(BASE_LR / warmup_steps)
        assert seen[warmup_steps - 1] == pytest.approx(BASE_LR)
    assert seen[warmup_steps] == pytest.approx(BASE_LR)
    half = warmup_steps + (total - warmup_steps) / 2
    if half == int(half):
        assert seen[int(half)] == pytest.approx(BASE_LR * (1 + min_ratio) / 2)
    assert seen[total] == pytest.approx(BASE_LR * min_ratio, abs=1e-15)
    assert seen[total - 1] > seen[total]  # the last step still takes a (small) positive decayed lr
    assert seen[total + 4] == pytest.approx(BASE_LR * min_ratio, abs=1e-15)


def test_warmup_cosine_without_warmup_starts_at_the_full_lr_and_decays_monotonically():
    seen = lrs_along(warmup_cosine, 100, 10)
    assert seen[0] == BASE_LR
    assert all(a > b for a, b in zip(seen, seen[1:]))
    assert seen[25] == pytest.approx(BASE_LR * (1 + math.cos(math.pi / 4)) / 2)  # a quarter of the way: 0.8536 lr
    assert seen[100] == pytest.approx(0.0, abs=1e-15)


# ----------------------------------------------------------------------------- warmup_linear
@pytest.mark.parametrize(
    "total, per_epoch, warmup_epochs, warmup_steps",
    [
        (30, 10, 0.0, 0),   # no warm-up: lr * (T - s) / T
        (30, 10, 1.0, 10),  # the Ren et al. setting: one epoch of warm-up
        (50, 10, 0.2, 2),
        (12, 4, 3.0, 12),   # warm-up over the whole run: the decay never starts before the end
    ],
)
def test_warmup_linear_follows_its_closed_form(total, per_epoch, warmup_epochs, warmup_steps):
    seen = lrs_along(warmup_linear, total, per_epoch, n=total + 5, warmup_epochs=warmup_epochs)
    if warmup_steps == total:
        expected = [BASE_LR * (s + 1) / total if s < total else 0.0 for s in range(total + 5)]
    else:
        expected = [linear_closed_form(s, total, warmup_steps) for s in range(total + 5)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if warmup_steps:
        assert seen[0] == pytest.approx(BASE_LR / warmup_steps)
        assert seen[warmup_steps - 1] == pytest.approx(BASE_LR)
    else:
        assert seen[0] == BASE_LR
        assert seen[total - 1] == pytest.approx(BASE_LR / total)  # the last step: one T-th of the lr
    if warmup_steps < total:
        assert seen[warmup_steps] == pytest.approx(BASE_LR)
        assert seen[(total + warmup_steps) // 2] == pytest.approx(BASE_LR / 2)  # halfway through the decay
    assert seen[total] == 0.0 and seen[total + 4] == 0.0  # zero after the last step, never negative


def test_warmup_linear_ren_setting_by_hand():
    """One warm-up epoch of 4 steps in a 12-step run: 0.1, 0.2, 0.3, 0.4, then 0.4 * (12 - s) / 8."""
    seen = lrs_along(warmup_linear, 12, 4, warmup_epochs=1)
    hand = [0.1, 0.2, 0.3, 0.4, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0.0]
    assert seen == pytest.approx(hand, rel=1e-12, abs=1e-15)


# ----------------------------------------------------------------------------- exponential
@pytest.mark.parametrize("decay", [1e-4, 0.05, math.log(2) / 10])
def test_exponential_follows_its_closed_form(decay):
    seen = lrs_along(exponential, 40, 10, n=60, decay_per_step=decay)
    assert seen == pytest.approx([BASE_LR * math.exp(-decay * s) for s in range(60)], rel=1e-12)
    assert seen[0] == BASE_LR


def test_exponential_halves_every_ln2_over_d_steps():
    seen = lrs_along(exponential, 40, 10, decay_per_step=math.log(2) / 10)
    assert [seen[s] for s in (0, 10, 20, 30, 40)] == pytest.approx([0.4, 0.2, 0.1, 0.05, 0.025], rel=1e-12)


def test_exponential_with_zero_decay_is_constant():
    assert lrs_along(exponential, 20, 5, decay_per_step=0.0) == [BASE_LR] * 21


# ----------------------------------------------------------------------------- in a real run
def test_the_training_module_steps_the_schedule_once_per_step(tmp_path):
    """2 epochs of 5 steps with scheduler=warmup_linear (1 warm-up epoch): T = 10 and steps_per_epoch = 5
    come from the trainer. The lr logged at step s (Lightning logs after the optimiser and scheduler step)
    is the closed form at k = s + 1: 0.4, 0.6, 0.8, 1.0 x lr, then lr * (10 - k) / 5 down to 0."""
    overrides = [
        "data=spiral", "scheduler=warmup_linear", "scheduler.warmup_epochs=1", f"optimizer.lr={BASE_LR}",
        *tiny(train_batches=5, epochs=2), "trainer.log_every_n_steps=1", *CSV_ONLY,
    ]
    train(compose_config(overrides, tmp_path))
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    logged = {int(r["step"]): float(r["lr"]) for r in rows if r.get("lr") not in (None, "")}
    assert sorted(logged) == list(range(10))
    expected = {s: linear_closed_form(s + 1, total=10, warmup=5) for s in range(10)}
    assert logged == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert logged[3] == pytest.approx(BASE_LR) and logged[9] == 0.0
