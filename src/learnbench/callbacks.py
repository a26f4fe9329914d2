"""Callbacks the suite always adds (users add theirs through the `callbacks` config group)."""

from __future__ import annotations

import math
import time

import lightning as L

from learnbench.metric_direction import higher_is_better


def _is_better(name: str, new: float, old: float | None) -> bool:
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    return new > old if higher_is_better(name) else new < old


class RunRecorder(L.Callback):
    """Keeps, per epoch, the logged epoch metrics with the step and wall-clock time since fit start.

    This history goes into results.json, so learning curves (against epochs or seconds) can be
    drawn from the run directory alone, offline W&B runs included (alignment curves too: the
    epoch means of align/*). It also tracks the best value
    of each validation metric and counts the optimiser steps taken.
    """

    def __init__(self) -> None:
        self.history: list[dict] = []
        self.best: dict[str, float] = {}
        self.fit_seconds = 0.0
        self._start = None
        self._seconds_before = 0.0  # fit time of the run this one resumed (from the checkpoint)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_seconds = self._elapsed()

    def _elapsed(self) -> float:
        return self._seconds_before + time.perf_counter() - self._start

    # A resumed run keeps the epochs, best values and fit time of the part before the stop.
    def state_dict(self) -> dict:
        return {"history": self.history, "best": self.best, "seconds": self._elapsed() if self._start else 0.0}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.best = list(state["history"]), dict(state["best"])
        self._seconds_before = float(state["seconds"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith(("val/", "train/")) and v.numel() == 1 and k != "train/batch_loss"
        }
        # train/* epoch means are logged after this hook: read them from the metric objects.
        metrics["train/loss"] = float(pl_module.train_loss.compute()) if pl_module.train_loss.update_count else math.nan
        # Diagnostics (align/*, rule/*) are logged per step; the history keeps each epoch's mean.
        metrics.update(pl_module.pop_epoch_diagnostics())
        entry = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step, "time": self._elapsed()}
        self.history.append({**entry, **metrics})
        for key, value in metrics.items():
            if key.startswith("val/") and _is_better(key, value, self.best.get(key)):
                self.best[key] = value
