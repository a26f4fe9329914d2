"""Gradient-alignment diagnostics against closed forms, read back from results.json.

For FG-W with one Gaussian tangent v the estimate is (g.v) v, so its cosine with g is |g_hat.v| / |v|:
the first coordinate of a uniformly random unit vector in P dimensions, whatever g is. Hence
E[cos] = Gamma(P/2) / (sqrt(pi) Gamma((P+1)/2)) and E[cos^2] = 1/P at every step of training.
For backprop the estimate is the gradient: cos = norm ratio = 1.
"""

from __future__ import annotations

import json
import math

import pytest

from conftest import CSV_ONLY, compose_config, tiny
from learnbench.train import train

SMALL_SPIRAL = ["data=spiral", "model.hidden_sizes=[8]", "diagnostics.every_n_steps=1"]


def run(tmp_path, *overrides, epochs: int):
    train(compose_config([*SMALL_SPIRAL, *tiny(train_batches=20, epochs=epochs), *CSV_ONLY, *overrides], tmp_path))
    return json.loads((tmp_path / "results.json").read_text())


def test_backprop_aligns_perfectly_in_every_epoch(tmp_path):
    record = run(tmp_path, "method=bp", epochs=2)
    assert len(record["history"]) == 2
    for entry in [*record["history"], record["metrics"]["final"]]:
        assert entry["align/cos/all"] == pytest.approx(1.0, abs=1e-6)
        assert entry["align/norm_ratio/all"] == pytest.approx(1.0, abs=1e-6)
        assert entry["align/cos/blocks.0"] == pytest.approx(1.0, abs=1e-6)


def test_backprop_aligns_perfectly_with_the_snns_rate_penalty_in_its_objective(tmp_path):
    """model=snn with a firing-rate penalty: bp's estimate includes the penalty's gradient, so the reference must too
    (without it, cos < 1 for bp itself)."""
    record = run(tmp_path, "method=bp", "model=snn", "model.steps=10", "model.rate_penalty=5.0", "model.rate_target_hz=200",
                 epochs=1)
    for entry in [*record["history"], record["metrics"]["final"]]:
        assert entry["align/cos/all"] == pytest.approx(1.0, abs=1e-5)
        assert entry["align/norm_ratio/all"] == pytest.approx(1.0, abs=1e-5)
    assert record["metrics"]["final"]["rule/rate_penalty"] > 0


def test_fg_w_single_tangent_cosine_matches_its_closed_form(tmp_path):
    epochs = 10  # 200 steps, one cosine each
    record = run(tmp_path, "method=fg_w", "method.directions=1", "method.noise=gaussian", "method.table_size=0",
                 "grad_clip_norm=null", epochs=epochs)
    P = record["parameters"]  # 2*8 + 8 + 8*2 + 2 = 42
    assert P == 42
    mean = math.exp(math.lgamma(P / 2) - math.lgamma((P + 1) / 2)) / math.sqrt(math.pi)
    sd = math.sqrt(1 / P - mean**2)
    n = 20 * epochs
    observed = record["metrics"]["final"]["align/cos/all"]  # the run mean over all n steps
    assert abs(observed - mean) < 4 * sd / math.sqrt(n), (observed, mean)
    # the per-epoch history holds each epoch's mean (20 steps): their average is the run mean
    epoch_means = [h["align/cos/all"] for h in record["history"]]
    assert len(epoch_means) == epochs
    assert sum(epoch_means) / epochs == pytest.approx(observed, rel=1e-9)
