"""Bellec et al. 2020's evidence accumulation task (data/evidence.py), its loss over a final window
(tasks.FinalWindowClassification) and model=snn over the data's time steps (model.encoding=none)."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch
import torch.nn.functional as F

from conftest import CSV_ONLY, compose_config, tiny
from learnbench.data import EvidenceAccumulationDataModule
from learnbench.tasks import get_task
from learnbench.train import ConfigError, build, check_config, train

SHORT = dict(cues=3, slot_ms=15.0, cue_ms=10.0, delay_ms=30.0, recall_ms=10.0, channels_per_group=2)


def splits(**options):
    data = EvidenceAccumulationDataModule(**dict(dict(SHORT, train_sequences=64, val_sequences=8, test_sequences=8), **options))
    return data, data.load_splits()


def test_bellec_lengths_are_the_defaults():
    data = EvidenceAccumulationDataModule()
    assert data.input_shape == (150 * 7 + 1200, 40) and data.rate == pytest.approx(0.04)


def test_certain_spikes_show_the_cue_schedule_by_hand():
    """At 1000 Hz and dt 1 ms every channel fires with probability 1 where it is on: the input is the schedule
    itself, checked against slots written out by hand (3 cues: silence 5, cue 10 in 15-step slots; recall last 10)."""
    data, s = splits(rate_hz=1000.0)
    x, y = s.train
    assert x.shape == (64, 3 * 15 + 30, 8)
    for n in range(8):
        sides = []
        for k in range(3):
            slot = x[n, 15 * k:15 * (k + 1), :4]
            assert slot[:5].sum() == 0  # the silent start of each slot
            left, right = slot[5:, :2], slot[5:, 2:4]
            assert {left.sum().item(), right.sum().item()} == {0.0, 20.0}  # one side, both channels, all 10 steps
            sides.append(int(right.sum() > 0))
        assert x[n, 45:, :4].sum() == 0  # nothing on the cue groups during the delay
        assert x[n, :-10, 4:6].sum() == 0 and x[n, -10:, 4:6].sum() == 20  # recall: its last 10 steps only
        assert (y[n, :, 0] == float(sum(sides) >= 2)).all()  # the majority side, at every step
    torch.testing.assert_close(y[0, :, 1], torch.cat([torch.zeros(65), torch.full((10,), 0.1)]))


def test_cue_statistics():
    """Each sequence's likely side is drawn fairly and takes each cue with probability 0.7: a cue is on the right
    half the time, and two cues of a sequence agree with probability 0.7^2 + 0.3^2 = 0.58; noise fires at rate / 4."""
    _, s = splits(rate_hz=1000.0, cues=7, train_sequences=4000)
    x = s.train[0]
    right = torch.stack([x[:, 15 * k + 5, 2] for k in range(7)], dim=1)  # 1 where cue k was on the right
    assert abs(right.mean() - 0.5) < 0.02
    agree = torch.stack([(right[:, i] == right[:, j]).float().mean() for i in range(7) for j in range(i + 1, 7)])
    assert abs(agree.mean() - 0.58) < 0.015
    _, noisy = splits(rate_hz=40.0, train_sequences=400)
    assert abs(noisy.train[0][..., 6:].mean() - 0.01) < 0.002


def test_the_splits_are_reproducible_and_independent():
    _, a = splits()
    _, b = splits()
    torch.testing.assert_close(a.train[0], b.train[0])
    assert not torch.equal(a.train[0][:8], a.val[0])


def epoch_examples(loader, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training example of one epoch as the loader gives it, in its order."""
    loader.set_epoch(epoch)
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_every_epoch_draws_new_training_sequences_and_a_resumed_run_draws_the_same():
    """data.fresh_train (the default): epoch 0 trains on the training split, epoch e > 0 on the sequences that
    evidence_accumulation draws from a generator seeded epoch_seed(data_seed, e) (the oracle: that call made here),
    each example once; a new loader at epoch e (a resumed run) gives the same batches; validation stays fixed."""
    from learnbench.data.evidence import evidence_accumulation
    from learnbench.data.in_memory import epoch_seed

    data, split = splits(batch_size=16)
    data.setup()
    loader = data.train_dataloader()
    x0, _ = epoch_examples(loader, 0)
    assert sorted(map(tuple, x0.flatten(1).tolist())) == sorted(map(tuple, split.train[0].flatten(1).tolist()))
    x1, y1 = epoch_examples(loader, 1)
    expected = evidence_accumulation(64, 3, 15, 10, 30, 10, 2, 0.04, 0.3, torch.Generator().manual_seed(epoch_seed(1234, 1)))
    order = torch.randperm(64, generator=torch.Generator().manual_seed(epoch_seed(0, 1)))  # the loader's shuffle
    torch.testing.assert_close(x1, expected[0][order])
    torch.testing.assert_close(y1, expected[1][order])
    assert not torch.equal(x1[:8], x0[:8])
    resumed = EvidenceAccumulationDataModule(**dict(SHORT, train_sequences=64, val_sequences=8, test_sequences=8, batch_size=16))
    resumed.setup()
    torch.testing.assert_close(epoch_examples(resumed.train_dataloader(), 1)[0], x1)
    torch.testing.assert_close(data.splits.val[0], split.val[0])
    fixed, fixed_split = splits(batch_size=16, fresh_train=False)
    fixed.setup()
    assert sorted(map(tuple, epoch_examples(fixed.train_dataloader(), 3)[0].flatten(1).tolist())) == sorted(
        map(tuple, fixed_split.train[0].flatten(1).tolist()))


def test_final_window_loss_is_the_mean_cross_entropy_over_the_window():
    """Oracle: F.cross_entropy averaged by hand over the last steps; the windows' shares sum to it."""
    task = get_task("final_window_classification")
    output, classes = torch.randn(5, 12, 2, dtype=torch.float64), torch.randint(0, 2, (5,))
    weights = torch.cat([torch.zeros(8), torch.full((4,), 0.25)]).double()
    target = torch.stack([classes[:, None].expand(-1, 12).double(), weights.expand(5, -1)], dim=-1)
    expected = torch.stack([F.cross_entropy(output[:, t], classes, reduction="none") for t in range(8, 12)]).mean(dim=0)
    torch.testing.assert_close(task.loss(output, target), expected)
    shares = sum(task.window_loss(12, t0, t0 + 5)(output[:, t0:t0 + 5], task.window_target(target, t0, t0 + 5))
                 for t0 in range(0, 12, 5))
    torch.testing.assert_close(shares, expected)


SHORT_OVERRIDES = [f"data.{k}={v}" for k, v in SHORT.items()] + ["data.train_sequences=64", "data.val_sequences=16",
                                                                 "data.test_sequences=16", "data.batch_size=16"]


@pytest.mark.parametrize("method", ["bp", "eprop"])
def test_the_snn_trains_on_the_data_steps(method, tmp_path):
    overrides = ["data=evidence_accumulation", *SHORT_OVERRIDES, "model=snn", "model.encoding=none", "model.recurrent=true",
                 "model.hidden_sizes=[16]", "model.readout=leaky_integrator", f"method={method}", *tiny(train_batches=4),
                 *CSV_ONLY]
    cfg = compose_config(overrides, tmp_path)
    check_config(cfg)
    record = train(cfg)
    assert record["status"] == "ok" and math.isfinite(record["history"][-1]["val/loss"])


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data=evidence_accumulation", "model=snn"], "is already a sequence task.*model.encoding=none"),
        (["data=spiral", "model=snn", "model.encoding=none"], "runs over the data's time steps, but data=spiral gives static"),
        (["data=evidence_accumulation", "model=snn", "model.encoding=none", "method=bptt"], "does not train spiking models"),
    ],
)
def test_time_axis_refusals(overrides, expected, tmp_path):
    cfg = compose_config([*overrides, *CSV_ONLY], tmp_path)
    with pytest.raises(ConfigError, match=expected):
        check_config(cfg)
        build(cfg)


def test_the_preset_builds_bellecs_network(tmp_path):
    """experiment=evidence_accumulation: 40 inputs, 50 LIF + 50 ALIF recurrent units, 2 outputs over 2250 steps; as Bellec
    et al.'s EligALIF: no autapses, a unit-gain readout filter, 4 blocked steps after a spike with the membrane moving."""
    import math as m

    cfg = compose_config(["experiment=evidence_accumulation", *CSV_ONLY], tmp_path)
    check_config(cfg)
    datamodule, module, _, _ = build(cfg)
    model = module.model
    assert datamodule.input_shape == (2250, 40) and module.task.name == "final_window_classification"
    assert model.hidden[0].weight.shape == (100, 40) and model.recurrent.weight.shape == (100, 100)
    expected_strength = 1.7 * (1 - m.exp(-1 / 2000)) / (1 - m.exp(-1 / 20))
    strengths = model.adaptation_strengths
    assert (strengths[:50] == 0).all() and torch.allclose(strengths[50:], torch.full((50,), expected_strength))
    assert model.neuron.beta == pytest.approx(m.exp(-1 / 20)) and model.readout_decay == pytest.approx(m.exp(-1 / 20))
    assert model.neuron.refractory_steps == 4 and not model.neuron.refractory_hold and model.neuron.threshold == 0.6
    assert type(module.rule).__name__ == "EProp"
    assert (model.recurrent.weight.diagonal() == 0).all() and model.readout_gain == pytest.approx(1 - m.exp(-1 / 20))
    assert module.rule.feedback_kind == "symmetric"


@pytest.mark.parametrize("overrides", [["method=bp"], ["method.feedback=random"], ["method.feedback=adaptive"]])
def test_the_preset_takes_the_other_rules_of_its_comparison(overrides, tmp_path):
    cfg = compose_config(["experiment=evidence_accumulation", *overrides, *CSV_ONLY], tmp_path)
    check_config(cfg)
    build(cfg)


CUE_TASK_METHODS = sorted(path.stem for path in (pathlib.Path(__file__).parents[1] / "conf" / "method").glob("*.yaml"))
SHORT_CUE_TASK = ["data.cues=3", "data.slot_ms=15", "data.cue_ms=10", "data.delay_ms=30", "data.recall_ms=10",
                  "data.train_sequences=32", "data.val_sequences=8", "data.test_sequences=8", "data.batch_size=8"]


@pytest.mark.slow
@pytest.mark.parametrize("method", CUE_TASK_METHODS)
def test_every_rule_trains_the_cue_task_or_is_refused_in_one_line(method, tmp_path):
    """Every conf/method/ on experiment=evidence_accumulation (shortened; the firing-rate penalty off, which only bp and
    e-prop take): it trains two batches to status ok, or it is refused before any work by a ConfigError of one line.
    R-STDP's reward and fg_a / fg_w's first batch once crashed here (a traceback; a segmentation fault)."""
    overrides = ["experiment=evidence_accumulation", f"method={method}", "model.rate_penalty=0", "model.hidden_sizes=[16]",
                 "model.alif_units=8", *SHORT_CUE_TASK, *tiny(train_batches=2), *CSV_ONLY]
    try:
        cfg = compose_config(overrides, tmp_path)
        check_config(cfg)
        record = train(cfg)  # the checks that need the data or the model raise from here, before any step
    except ConfigError as refusal:
        assert "\n" not in str(refusal) and str(refusal)
        assert not (tmp_path / "results.json").exists() or json.loads((tmp_path / "results.json").read_text())["refused"]
        return
    assert record["status"] == "ok", record.get("message")
