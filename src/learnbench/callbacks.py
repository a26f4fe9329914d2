"""Callbacks the suite always adds (users add theirs through the `callbacks` config group)."""

from __future__ import annotations

import hashlib
import logging
import math
import time

import lightning as L
import torch

from learnbench.metric_direction import higher_is_better

log = logging.getLogger("learnbench")


def _is_better(name: str, new: float, old: float | None) -> bool:
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    return new > old if higher_is_better(name) else new < old


class RunRecorder(L.Callback):
    """Keeps, per epoch, the logged epoch metrics with the step, the wall-clock time and the CPU time since fit start.

    This history goes into results.json, so learning curves (against epochs or seconds) can be
    drawn from the run directory alone, offline W&B runs included (alignment curves too: the
    epoch means of align/*), and, when a ComputeMeter counts the run, against the forward-pass
    equivalents trained so far (`train_forward_equivalents`). It also tracks the best value
    of each validation metric and counts the optimiser steps taken.
    """

    def __init__(self) -> None:
        self.history: list[dict] = []
        self.best: dict[str, float] = {}
        self.fit_seconds = 0.0
        self._start = self._cpu_start = None
        self._seconds_before = self._cpu_seconds_before = 0.0  # fit time of the run this one resumed (from the checkpoint)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_seconds = self._elapsed()

    def _elapsed(self) -> float:
        return self._seconds_before + time.perf_counter() - self._start

    def _cpu_elapsed(self) -> float:
        """CPU seconds of this process (every thread) since fit start: unlike the wall clock, not inflated by
        other processes' time slices on a shared machine."""
        return self._cpu_seconds_before + time.process_time() - self._cpu_start

    # A resumed run keeps the epochs, best values and fit time of the part before the stop.
    def state_dict(self) -> dict:
        return {"history": self.history, "best": self.best, "seconds": self._elapsed() if self._start else 0.0,
                "cpu_seconds": self._cpu_elapsed() if self._cpu_start else 0.0}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.best = list(state["history"]), dict(state["best"])
        self._seconds_before = float(state["seconds"])
        self._cpu_seconds_before = float(state.get("cpu_seconds", 0.0))  # checkpoints from before it was kept: 0

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
        metrics.update(pl_module.pop_epoch_reported())  # a seed stack's per-seed values (learnbench/seeds.py)
        entry = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step, "time": self._elapsed(),
                 "cpu_time": self._cpu_elapsed()}
        # The work done so far, where the run counts it: curves and tables at equal compute read it.
        for meter in trainer.callbacks:
            if isinstance(meter, ComputeMeter) and meter.train_forward_equivalents() is not None:
                entry["train_forward_equivalents"] = meter.train_forward_equivalents()
        self.history.append({**entry, **metrics})
        for key, value in metrics.items():
            if key.startswith("val/") and _is_better(key, value, self.best.get(key)):
                self.best[key] = value


# ----------------------------------------------------------------------------- compute and memory
def reset_peak_rss() -> bool:
    """Start the peak resident memory afresh (Linux: writing 5 to /proc/self/clear_refs resets VmHWM to the current
    RSS), so a multirun job, which shares its process with the jobs before it, gets its own peak. False elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The process's peak resident memory in MiB: VmHWM where /proc has it, else getrusage's ru_maxrss (KiB on
    Linux, bytes on macOS), which only ever grows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class ResourceMeter(L.Callback):
    """What a run cost, for results.json's `resources`: CPU seconds of this process (every thread; time.process_time)
    while training, validating and testing, its peak resident memory since the run started, and on CUDA the peak
    memory torch allocated on this rank's device while fitting and while testing. Measured on rank 0's process (the
    one that writes results.json); a resumed run counts only the part after the resume."""

    def __init__(self) -> None:
        self.rss_reset = reset_peak_rss()  # at construction: before the data and the model are built
        self._start = time.process_time()
        self.cpu_s = {"fit": 0.0, "validation": 0.0, "test": 0.0}
        self.cuda_peak_mb: dict[str, float] = {}
        self._phase_start: dict[str, float] = {}

    def _begin(self, phase: str, pl_module) -> None:
        self._phase_start[phase] = time.process_time()
        if phase != "validation" and pl_module.device.type == "cuda":  # validation is part of fit's peak
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def _end(self, phase: str, pl_module) -> None:
        if phase in self._phase_start:
            self.cpu_s[phase] += time.process_time() - self._phase_start.pop(phase)
        if phase != "validation" and pl_module.device.type == "cuda":
            self.cuda_peak_mb[phase] = torch.cuda.max_memory_allocated(pl_module.device) / 2**20

    def on_fit_start(self, trainer, pl_module) -> None:
        self._begin("fit", pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._end("fit", pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._begin("validation", pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._end("validation", pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        self._begin("test", pl_module)

    def on_test_end(self, trainer, pl_module) -> None:
        self._end("test", pl_module)

    def summary(self) -> dict:
        """CPU seconds (training = fit minus its validations), peak RSS, CUDA peaks (null on a CPU run)."""
        cpu = self.cpu_s
        return {
            "cpu_s": {"train": cpu["fit"] - cpu["validation"], "validation": cpu["validation"], "test": cpu["test"],
                      "total": time.process_time() - self._start},
            "peak_rss_mb": peak_rss_mb(),
            "peak_rss_since": "run start" if self.rss_reset else "process start",
            "cuda_peak_allocated_mb": dict(self.cuda_peak_mb) or None,
        }


class ComputeMeter(L.Callback):
    """A run's work, for results.json's `compute` and the history's running total: at the first training batch,
    the FLOPs of one training batch, of one forward pass and of the rule's prediction on that batch
    (learnbench.compute.measure_step, on copies: the run is untouched); then the examples trained and evaluated.

    The unit is the forward-pass equivalent: one forward pass of the model on one example. A training batch of B
    examples costs B x train_step_flops / forward_flops of them (3 B for backprop on an MLP, less the input
    layer's unneeded input gradient), an evaluated example predict_flops / forward_flops (1 unless the rule's
    prediction is not the forward pass). Lightning's sanity-check batches are left out. A resumed run measures
    again and keeps the counts of the part before the stop (from the checkpoint). Under DDP the counts are
    this process's (rank 0 writes results.json; every rank does the same work on its shard): `processes`
    says how many there were."""

    def __init__(self) -> None:
        self.step: dict | None = None
        self.error: str | None = None
        self.train_examples = 0
        self.train_batches = 0
        self.eval_examples = {"validation": 0, "test": 0}
        self.processes = 1

    def state_dict(self) -> dict:
        return {"train_examples": self.train_examples, "train_batches": self.train_batches, "eval_examples": dict(self.eval_examples)}

    def load_state_dict(self, state: dict) -> None:
        self.train_examples, self.train_batches = int(state["train_examples"]), int(state["train_batches"])
        self.eval_examples = dict(state["eval_examples"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.step is not None or self.error is not None:
            return
        from learnbench.compute import measure_step

        self.processes = trainer.world_size

        x, y = batch
        try:
            self.step = measure_step(pl_module.rule, pl_module.model, x, y, pl_module.task)
        except Exception as error:  # accounting never stops a run: results.json says why it has no count
            self.error = f"{type(error).__name__}: {error}"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_examples += len(batch[0])
        self.train_batches += 1

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.eval_examples["validation"] += len(batch[0])

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.eval_examples["test"] += len(batch[0])

    def per_example(self, key: str) -> float | None:
        """FLOPs of `key` (train_step_flops, forward_flops, predict_flops) per example of the measured batch."""
        return None if self.step is None else self.step[key] / self.step["batch"]

    def train_forward_equivalents(self) -> float | None:
        """Forward-pass equivalents trained so far (the history's running total)."""
        from learnbench.compute import ratio

        if self.step is None:
            return None
        per_step = ratio(self.step["train_step_flops"], self.step["forward_flops"])
        return None if per_step is None else per_step * self.train_examples

    def summary(self) -> dict:
        from learnbench.compute import COUNTED_BY, ratio

        record = {"unit": "forward-pass equivalent: one forward pass of the model on one example",
                  "counted_by": COUNTED_BY, "measured_on": "one training batch (its second call, on copies of the "
                  "model and the rule) at the run's first step", "error": self.error,
                  "processes": self.processes,  # the counts are this process's (rank 0's): the run's are processes x them
                  "train_examples": self.train_examples, "train_batches": self.train_batches,
                  "eval_examples": {**self.eval_examples, "total": sum(self.eval_examples.values())}}
        if self.step is None:
            return record
        step, evaluated = self.step, sum(self.eval_examples.values())
        per_step, per_prediction = ratio(step["train_step_flops"], step["forward_flops"]), ratio(step["predict_flops"], step["forward_flops"])
        return {**record, **step,
                "forward_equivalents_per_step": per_step,
                "forward_equivalents_per_prediction": per_prediction,
                "train_forward_equivalents": None if per_step is None else per_step * self.train_examples,
                "eval_forward_equivalents": None if per_prediction is None else per_prediction * evaluated,
                "train_flops": self.per_example("train_step_flops") * self.train_examples,
                "eval_flops": self.per_example("predict_flops") * evaluated}


def tensor_digest(tensor: torch.Tensor) -> int:
    """A 63-bit digest of a tensor's bytes (sha256): equal on two ranks only if the tensors are bit-identical."""
    data = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(str(data.dtype).encode() + str(tuple(data.shape)).encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


class RankSync(L.Callback):
    """At the end of training on several processes: are the ranks' models and rules bit-identical?

    Every rank hashes each tensor of the training module's state (the model's parameters and buffers, the rule's
    feedback matrices, learned feedback and baselines), the digests are all-gathered and compared, and results.json
    says `ranks: {world_size, in_sync, differ}`: the names of the tensors on which some rank differs from rank 0. A
    closed-form rule's statistics are left out (each rank sums its own shard; the fit uses their sum over ranks). A
    rule that steps anything outside the all-reduced update with per-rank noise shows up here; rank 0's model is the
    one that is tested and saved."""

    def __init__(self) -> None:
        self.result: dict | None = None

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.world_size == 1:
            return
        per_rank = {id(t) for t in pl_module.rule.statistics()}
        names = [name for name, t in pl_module.state_dict(keep_vars=True).items() if id(t) not in per_rank]
        state = pl_module.state_dict()
        digests = torch.tensor([tensor_digest(state[name]) for name in names], dtype=torch.int64, device=pl_module.device)
        gathered = trainer.strategy.all_gather(digests).reshape(trainer.world_size, -1).cpu()
        differ = [name for k, name in enumerate(names) if not bool((gathered[:, k] == gathered[0, k]).all())]
        self.result = {"world_size": trainer.world_size, "in_sync": not differ, "differ": differ, "step": trainer.global_step}
        if differ and trainer.global_rank == 0:
            cause = ("allreduce_grads=false" if not pl_module.allreduce_grads
                     else "the rule stepped them outside the all-reduced update")
            log.warning("the ranks' states drifted apart during training (%s differ from rank 0's): %s; the results are "
                        "rank 0's", ", ".join(differ[:5]) + (" ..." if len(differ) > 5 else ""), cause)
