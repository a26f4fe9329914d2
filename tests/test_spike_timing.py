"""STDP by traces (rules/plasticity/spike_timing.py) against the explicit sums over spike pairs and
triplets, in float64 on random spike trains."""

from __future__ import annotations

import math

import pytest
import torch

from learnbench.rules.plasticity.spike_timing import (
    STDPTimes, pair_correlations, triplet_correlations, weight_change,
)

TIMES = STDPTimes(tau_pre=7.0, tau_post=11.0, dt=0.5, tau_x=30.0, tau_y=40.0)


def random_trains(seed: int, batch=3, steps=60, pre=4, post=3, rate=0.15):
    g = torch.Generator().manual_seed(seed)
    return (torch.bernoulli(torch.full((batch, steps, pre), rate, dtype=torch.float64), generator=g),
            torch.bernoulli(torch.full((batch, steps, post), rate, dtype=torch.float64), generator=g))


def spike_steps(train):
    return [int(t) for t in torch.nonzero(train).flatten()]


def explicit_pairs(pre, post, times, nearest=False):
    """Oracle: potentiation sums exp(-(t_post - t_pre) dt / tau_pre) over pairs with t_pre <= t_post,
    depression exp(-(t_pre - t_post) dt / tau_post) over pairs with t_post < t_pre (nearest: only the latest
    partner before each spike), averaged over the batch."""
    pot, dep = zeros_like_weights(pre, post)
    for i, j, posts, pres in synapse_trains(pre, post):
        for tp in posts:
            partners = [t for t in pres if t <= tp]
            for t in (partners[-1:] if nearest else partners):
                pot[i, j] += math.exp(-(tp - t) * times.dt / times.tau_pre)
        for tq in pres:
            partners = [t for t in posts if t < tq]
            for t in (partners[-1:] if nearest else partners):
                dep[i, j] += math.exp(-(tq - t) * times.dt / times.tau_post)
    return pot / pre.shape[0], dep / pre.shape[0]


def zeros_like_weights(pre, post):
    """Two [post, pre] float64 accumulators (potentiation, depression)."""
    shape = (post.shape[2], pre.shape[2])
    return torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)


def synapse_trains(pre, post):
    """(post unit i, pre unit j, post spike steps, pre spike steps) for every example and synapse."""
    for b in range(pre.shape[0]):
        for i in range(post.shape[2]):
            posts = spike_steps(post[b, :, i])
            for j in range(pre.shape[2]):
                yield i, j, posts, spike_steps(pre[b, :, j])


@pytest.mark.parametrize("pairing", ["all_to_all", "nearest"])
@pytest.mark.parametrize("seed", [0, 1])
def test_traces_equal_the_explicit_sum_over_spike_pairs(pairing, seed):
    pre, post = random_trains(seed)
    pot, dep = pair_correlations(pre, post, TIMES, pairing)
    expected = explicit_pairs(pre, post, TIMES, nearest=pairing == "nearest")
    torch.testing.assert_close(pot, expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dep, expected[1], rtol=1e-12, atol=1e-12)


def test_a_simultaneous_pair_counts_once_as_potentiation():
    pre, post = torch.zeros(1, 5, 1, dtype=torch.float64), torch.zeros(1, 5, 1, dtype=torch.float64)
    pre[0, 2, 0] = post[0, 2, 0] = 1
    pot, dep = pair_correlations(pre, post, TIMES)
    assert float(pot) == 1.0 and float(dep) == 0.0


def explicit_triplets(pre, post, times):
    """Oracle of the minimal all-to-all triplet terms: at a post spike t, sum over pre spikes t_j <= t and
    earlier post spikes t' < t of exp(-(t - t_j) dt / tau_pre) exp(-(t - t') dt / tau_y); at a pre spike t,
    sum over post spikes t_i < t and earlier pre spikes t' < t of exp(-(t - t_i) dt / tau_post) exp(-(t - t') dt / tau_x)."""
    pot, dep = zeros_like_weights(pre, post)
    for i, j, posts, pres in synapse_trains(pre, post):
        for t in posts:
            x = sum(math.exp(-(t - u) * times.dt / times.tau_pre) for u in pres if u <= t)
            o2 = sum(math.exp(-(t - u) * times.dt / times.tau_y) for u in posts if u < t)
            pot[i, j] += x * o2
        for t in pres:
            y = sum(math.exp(-(t - u) * times.dt / times.tau_post) for u in posts if u < t)
            r2 = sum(math.exp(-(t - u) * times.dt / times.tau_x) for u in pres if u < t)
            dep[i, j] += y * r2
    return pot / pre.shape[0], dep / pre.shape[0]


def test_triplet_traces_equal_the_explicit_sum_over_triplets():
    pre, post = random_trains(5, steps=40)
    pot, dep = triplet_correlations(pre, post, TIMES)
    expected = explicit_triplets(pre, post, TIMES)
    torch.testing.assert_close(pot, expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dep, expected[1], rtol=1e-12, atol=1e-12)


def test_multiplicative_bounds_keep_weights_in_range():
    g = torch.Generator().manual_seed(3)
    w_max = 1.0
    w = torch.rand(3, 4, generator=g, dtype=torch.float64)
    for seed in range(50):
        pre, post = random_trains(seed, rate=0.3)
        pot, dep = pair_correlations(pre, post, TIMES)
        a = 0.9 / float(torch.max(pot.max(), dep.max()) * 2)  # A+ P + A- D <= 0.9: each step a convex combination
        w = w + weight_change(w, pot, dep, a, a, "multiplicative", w_max)
        assert float(w.min()) >= 0.0 and float(w.max()) <= w_max
