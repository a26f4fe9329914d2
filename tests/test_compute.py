"""The work a run counts (results.json's `compute`: learnbench/compute.py, callbacks.ComputeMeter).

Oracle: the closed form of each rule's dense arithmetic on an MLP, written from the layer sizes alone. A layer of
n inputs and m outputs on B examples costs f = 2 B n m (a multiply and an add per weight and example); F = sum f
is one forward pass, f_0 its input layer. Per training batch:

    bp                 3F - f_0           forward, the input gradient of every layer but the first, the weight gradients
    fg_w (K)           F + K (2F - f_0) + c_K   primal; per direction V z at every layer, W dz above the first
    fg_a (K)           2F + K (F - f_0)   primal; per direction W du above the first; the local updates delta^T z
    np (K, clean)      F + f_0 + (K+1)(F - f_0)   the first layer once; clean + K noisy copies above; local updates
    wp (K)             (K + 1) F + c_K    the clean pass and K perturbed ones
    pc (T)             2F + 2T (F - f_0)  feed-forward; per inference step the errors sent down and the new
                                           predictions above the first layer; the local updates at the end
    ipc (T, per step)  T (3F - f_0) + F - f_0   per step: the predictions, errors sent down, local updates; the last
                                           step's predictions at the moved nodes (energy_last)
with c_K = 2 K P for K > 1 (P parameters): g = sum_k d_k v_k taken as one [1, K] x [K, P] product (at K = 1 a
scaled copy, elementwise, not counted). And a real short run's totals are the per-batch count times the batches it trained.
"""

from __future__ import annotations

import pytest
import torch

from conftest import CSV_ONLY, compose_config, tiny
from learnbench.catalog import rule_from_config
from learnbench.compute import measure_step
from learnbench.models import MLP
from learnbench.tasks import CLASSIFICATION, get_task
from learnbench.train import train

SIZES = [20, 16, 12, 5]  # input, two hidden layers, classes
B = 8


def layer_flops(sizes: list[int], batch: int) -> list[int]:
    return [2 * batch * n * m for n, m in zip(sizes[:-1], sizes[1:])]


def closed_form(method: str, K: int = 1, T: int = 1) -> int:
    f = layer_flops(SIZES, B)
    F, f0 = sum(f), f[0]
    P = sum(n * m + m for n, m in zip(SIZES[:-1], SIZES[1:]))
    combine = 2 * K * P if K > 1 else 0  # g = (d / K) [1, K] x v [K, P]
    return {
        "bp": 3 * F - f0,
        "fg_w": F + K * (2 * F - f0) + combine,
        "fg_a": 2 * F + K * (F - f0),
        "np": F + f0 + (K + 1) * (F - f0),
        "wp": (K + 1) * F + combine,
        "pc": 2 * F + 2 * T * (F - f0),
        "ipc": T * (3 * F - f0) + F - f0,
    }[method]


def measured(method: str, **overrides) -> dict:
    torch.manual_seed(0)
    model = MLP(SIZES[0], SIZES[-1], SIZES[1:-1])
    rule = rule_from_config(method, **overrides)
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    x, y = torch.randn(B, SIZES[0]), torch.randint(0, SIZES[-1], (B,))
    return measure_step(rule, model, x, y, get_task(CLASSIFICATION))


CASES = [
    ("bp", {}, {}),
    ("fg_w", {"directions": 1}, {"K": 1}),
    ("fg_w", {"directions": 4}, {"K": 4}),
    ("fg_a", {"directions": 1}, {"K": 1}),
    ("fg_a", {"directions": 4}, {"K": 4}),
    ("fg_a", {"directions": 16}, {"K": 16}),
    ("np", {"directions": 1}, {"K": 1}),
    ("np", {"directions": 3}, {"K": 3}),
    ("wp", {"directions": 1}, {"K": 1}),
    ("wp", {"directions": 3}, {"K": 3}),
    ("pc", {"inference_steps": 5}, {"T": 5}),
    ("pc", {"inference_steps": 20}, {"T": 20}),
    ("ipc", {"inference_steps": 8}, {"T": 8}),
]


@pytest.mark.parametrize("method, overrides, shape", CASES, ids=[f"{m}-{'-'.join(f'{k}{v}' for k, v in s.items())}" for m, _, s in CASES])
def test_a_training_step_counts_its_closed_form(method, overrides, shape):
    counts = measured(method, **overrides)
    assert counts["forward_flops"] == sum(layer_flops(SIZES, B))
    assert counts["predict_flops"] == counts["forward_flops"]  # every rule here evaluates the forward pass
    assert counts["train_step_flops"] == closed_form(method, **shape)


def test_the_count_leaves_the_run_untouched():
    """Measured on copies: the model's weights and gradients, and the rule's noise table, are as they were."""
    torch.manual_seed(0)
    model = MLP(SIZES[0], SIZES[-1], SIZES[1:-1])
    rule = rule_from_config("np", directions=2)
    rule.setup(model, seed=0, rank=0, device=torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    measure_step(rule, model, torch.randn(B, SIZES[0]), torch.randint(0, SIZES[-1], (B,)), get_task(CLASSIFICATION))
    assert all(torch.equal(a, p) and p.grad is None for a, p in zip(before, model.parameters()))
    assert rule.noise.table.numel() == 0  # the copy drew its own table


def test_a_run_records_its_totals_as_the_count_per_batch_times_its_batches(tmp_path):
    """A real short run of bp on the spiral's MLP: the per-batch count is bp's closed form on its layer sizes, the
    totals are that times the 2 x 5 batches trained, the history's running total grows by one epoch's share, and
    evaluation counts one forward pass per evaluated example."""
    record = train(compose_config(["data=spiral", "method=bp", "model.hidden_sizes=[16,8]", *tiny(train_batches=5, epochs=2),
                                   *CSV_ONLY], tmp_path))
    compute, batch = record["compute"], record["config"]["data"]["batch_size"]
    f = layer_flops([2, 16, 8, 2], batch)
    assert record["status"] == "ok" and compute["error"] is None and compute["processes"] == 1
    assert compute["forward_flops"] == sum(f) and compute["train_step_flops"] == 3 * sum(f) - f[0]
    assert compute["train_batches"] == 10 and compute["train_examples"] == 10 * batch
    assert compute["train_flops"] == compute["train_step_flops"] * 10
    per_step = (3 * sum(f) - f[0]) / sum(f)
    assert compute["forward_equivalents_per_step"] == pytest.approx(per_step)
    assert compute["train_forward_equivalents"] == pytest.approx(per_step * 10 * batch)
    assert [e["train_forward_equivalents"] for e in record["history"]] == pytest.approx([per_step * 5 * batch, per_step * 10 * batch])
    evaluated = compute["eval_examples"]
    assert evaluated["validation"] == 2 * 400 and evaluated["test"] == 2000  # 1 val batch of the 400 a validation, 2 of them
    assert compute["eval_forward_equivalents"] == evaluated["total"] == 2800
    assert compute["eval_flops"] == sum(f) / batch * 2800


def test_a_count_that_fails_is_said_and_does_not_stop_the_run():
    """Accounting never stops a run: the error goes into results.json's `compute`, the examples are still counted."""
    from types import SimpleNamespace

    from learnbench.callbacks import ComputeMeter

    meter, batch = ComputeMeter(), (torch.zeros(2, 3), torch.zeros(2))
    meter.on_train_batch_start(SimpleNamespace(world_size=1), SimpleNamespace(rule=None, model=None, task=None), batch, 0)
    meter.on_train_batch_end(None, None, None, batch, 0)
    summary = meter.summary()
    assert summary["error"].startswith("AttributeError") and summary["train_examples"] == 2
    assert "train_forward_equivalents" not in summary and meter.train_forward_equivalents() is None


def test_a_budget_in_forward_equivalents_buys_each_rule_the_batches_it_can_pay_for(tmp_path):
    """`forward_equivalents=N`: bp's batch costs its closed form, (3F - f_0) / F forward passes an example, so it trains
    floor(N / that) batches, past the config's 2 epochs of 5 batches; wp with 4 directions costs more a batch and trains
    fewer. Each run's own count of what it trained (ComputeMeter, at run time) lands within one batch under N."""
    budget, batch = 5000, 100
    common = ["data=spiral", "model.hidden_sizes=[16,8]", *tiny(train_batches=5, epochs=2), *CSV_ONLY,
              f"forward_equivalents={budget}"]
    f = layer_flops([2, 16, 8, 2], batch)
    records = {}
    for method, extra in (("bp", []), ("wp", ["method.directions=4"])):
        records[method] = train(compose_config([*common, f"method={method}", *extra], tmp_path / method))
    bp_per_batch = (3 * sum(f) - f[0]) / sum(f) * batch
    assert records["bp"]["budget"]["forward_equivalents_per_batch"] == pytest.approx(bp_per_batch)
    for method, record in records.items():
        per_batch = record["budget"]["forward_equivalents_per_batch"]
        assert record["status"] == "ok" and record["steps"] == int(budget // per_batch) == record["budget"]["max_steps"]
        assert record["epochs"] == record["budget"]["max_epochs"] == -(-record["steps"] // 5)
        trained = record["compute"]["train_forward_equivalents"]
        assert budget - per_batch < trained <= budget, (method, trained, per_batch)
    assert records["bp"]["steps"] == 17 > 10 and records["wp"]["steps"] < records["bp"]["steps"]


@pytest.mark.parametrize("value", ["-1", "0", "true", "lots"])
def test_a_budget_in_forward_equivalents_that_is_no_positive_number_is_refused(value, tmp_path):
    from learnbench.config_validation import ConfigError

    with pytest.raises(ConfigError, match=r"forward_equivalents=.*: expected a number > 0"):
        train(compose_config(["data=spiral", f"forward_equivalents={value}", *TINY_RUN], tmp_path))


TINY_RUN = [*tiny(), *CSV_ONLY]
