"""Memory against the sequence length (tools/spiking_memory.py): surrogate BPTT keeps every step's graph, so its
peak grows with T; spiking e-prop walks its traces forward in 100-step pieces and keeps no trajectory, so its peak
must not. Oracle: BPTT's growth on the same instrument shows that it sees per-step memory at all; e-prop's peak at
3x the length must stay within a stated tolerance of its peak at T. Slow: a few training steps of 200 and 600 steps
under torch.profiler's memory recording (minutes on a loaded CPU, ~2 GB of profiler events for BPTT at 600)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

SHORT, LONG, BATCH = 200, 600, 2


def test_eprop_peak_memory_does_not_grow_with_the_sequence_length_while_bptts_does():
    from learnbench.tools.spiking_memory import step_peak_mb

    bptt = {t: step_peak_mb("bp", t, BATCH, repeats=1) for t in (SHORT, LONG)}
    eprop = {t: step_peak_mb("eprop", t, BATCH, repeats=1) for t in (SHORT, LONG)}
    assert bptt[LONG] > 2 * bptt[SHORT], bptt  # the instrument sees a graph that grows with T (3x the steps)
    # e-prop: the same 100-step pieces at either length; only the outputs and errors [batch, T, 2] grow (~10 kB
    # here). Tolerance: 25 % of the short peak plus 0.5 MiB.
    assert eprop[LONG] <= 1.25 * eprop[SHORT] + 0.5, (eprop, bptt)
