"""Compute and memory per run (results.json's `resources`, learnbench.callbacks.ResourceMeter).

Oracles: the process's own clock read around the run (time.process_time), memory the test allocates itself,
and, for the CUDA branch on a machine without a GPU, torch.cuda's peak counters replaced by values set here.
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import pytest
import torch

from conftest import CSV_ONLY, compose_config, tiny
from learnbench.callbacks import ResourceMeter, peak_rss_mb
from learnbench.train import train


def test_a_run_records_its_cpu_seconds_by_phase_and_its_peak_memory(tmp_path):
    before = time.process_time()
    record = train(compose_config(["data=spiral", "method=bp", *tiny(train_batches=10, epochs=2), *CSV_ONLY], tmp_path))
    elapsed = time.process_time() - before
    resources = record["resources"]
    cpu = resources["cpu_s"]
    assert record["status"] == "ok" and set(cpu) == {"train", "validation", "test", "total"}
    assert cpu["train"] > 0 and cpu["validation"] > 0 and cpu["test"] > 0
    assert cpu["train"] + cpu["validation"] + cpu["test"] <= cpu["total"] <= elapsed
    assert 0 < resources["peak_rss_mb"] and resources["cuda_peak_allocated_mb"] is None  # a CPU run


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the peak is reset through /proc/self/clear_refs")
def test_each_run_gets_its_own_peak_memory():
    """A multirun's jobs share one process: 300 MiB held before a run started must not count as the run's peak."""
    block = bytearray(300 * 2**20)
    block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page: resident, not only reserved
    held = peak_rss_mb()
    del block
    meter = ResourceMeter()
    assert meter.rss_reset and meter.summary()["peak_rss_mb"] < held - 200
    block = bytearray(300 * 2**20)
    block[:: 4096] = b"x" * len(block[:: 4096])
    assert meter.summary()["peak_rss_mb"] >= held - 50  # a run's own allocation counts
    assert meter.summary()["peak_rss_since"] == "run start"


def test_cuda_peaks_are_read_per_phase_and_validation_does_not_reset_them(monkeypatch):
    """With the counters of torch.cuda faked: the fit's peak is read at its end (validations inside it reset
    nothing), the test's after a reset of its own."""
    peaks = {"now": 0, "resets": 0}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: peaks.update(now=0, resets=peaks["resets"] + 1))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: peaks["now"])
    module = SimpleNamespace(device=torch.device("cuda", 0))
    meter = ResourceMeter()
    meter.on_fit_start(None, module)
    peaks["now"] = 512 * 2**20
    meter.on_validation_start(None, module)
    meter.on_validation_end(None, module)
    peaks["now"] = 768 * 2**20
    meter.on_fit_end(None, module)
    meter.on_test_start(None, module)
    peaks["now"] = 64 * 2**20
    meter.on_test_end(None, module)
    assert peaks["resets"] == 2
    assert meter.summary()["cuda_peak_allocated_mb"] == {"fit": 768.0, "test": 64.0}
