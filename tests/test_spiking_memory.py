"""Memory against the sequence length (tools/spiking_memory.py): surrogate BPTT keeps every step's graph, so its
peak grows with T; spiking e-prop walks its traces forward in pieces and keeps no trajectory, so its peak must
not. Oracle: BPTT's growth on the same instrument shows it sees per-step memory at all; e-prop's peak at 4x the
length must stay within a stated tolerance of its peak at T. Slow (a few training steps of 300 and 1200 steps)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

SHORT, LONG, BATCH = 300, 1200, 4


def test_eprop_peak_memory_does_not_grow_with_the_sequence_length_while_bptts_does():
    from learnbench.tools.spiking_memory import step_peak_mb

    bptt = {t: step_peak_mb("bp", t, BATCH, repeats=1) for t in (SHORT, LONG)}
    eprop = {t: step_peak_mb("eprop", t, BATCH, repeats=1) for t in (SHORT, LONG)}
    assert bptt[LONG] > 2.5 * bptt[SHORT]  # the instrument sees a graph that grows with T (4x the steps)
    # e-prop: the same pieces of 100 steps at either length; only the outputs and errors [batch, T, 2] grow
    # (~40 kB here). Tolerance: 25 % of the short peak plus 1 MiB.
    assert eprop[LONG] <= 1.25 * eprop[SHORT] + 1.0, (eprop, bptt)
    assert eprop[LONG] < bptt[LONG] / 4
