"""method=stdp and method=rstdp (rules/plasticity/): the plumbing around spike_timing.py's maths (proven in
tests/test_spike_timing.py against explicit pair sums), each against an oracle.

- the rule's change on a tiny SNN equals weight_change(...) computed by hand from the same spike trains (the model's
  encoded input and its first hidden layer's spikes), for every pairing, bound and the triplet terms;
- the bounds: multiplicative keeps W in [0, w_max] through training, additive clips it there, normalisation keeps
  every neuron's sum;
- the change is applied exactly through the real module (a Lightning fit under Adam: W_final = W_0 + sum of the
  changes), the readout trained by gradient or fixed, the rest fixed; identically on 2 DDP ranks (slow);
- R-STDP: no change under zero reward and zero baseline; its expected change under a reward independent of the
  activity is zero (within the standard error of many draws); its eligibility equals the STDP terms weighed by
  exp(-(T - 1 - t) dt / tau_e), by hand;
- the refusals (negative times or rates, a non-spiking model, a current code, triplet with nearest pairing).
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from learnbench.data import SpiralDataModule
from learnbench.models import MLP, SNN
from learnbench.module import LearningRuleModule
from learnbench.rules import STDP, RewardModulatedSTDP
from learnbench.rules.base import DIRECT, GRADIENT
from learnbench.rules.plasticity.spike_timing import (
    STDPTimes, before_this_step, pair_correlations, trace, triplet_correlations, weight_change,
)
from learnbench.tasks import get_task

pytestmark = pytest.mark.usefixtures("restore_process_state")  # DDP runs below (conftest.py)

TASK = "sum_over_steps_classification"


def tiny_snn(encoding: str = "rate", inputs: int = 6, hidden: int = 5, steps: int = 30, dt: float = 0.5, seed: int = 0) -> SNN:
    torch.manual_seed(seed)
    model = SNN(inputs, 2, hidden_sizes=[hidden], encoding=encoding, steps=steps, dt=dt, max_rate=400.0, tau_mem=10.0,
                latency_tau=5.0, latency_threshold=0.05, encoding_seed=seed).double()
    with torch.no_grad():  # strong enough input weights that the hidden layer spikes
        model.hidden[0].weight.uniform_(0.2, 0.9)
    return model


def examples(n: int = 4, inputs: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, inputs, generator=g, dtype=torch.float64), torch.randint(0, 2, (n,), generator=g)


def loss_fn(output, y):
    return get_task(TASK).loss(output, y)


# ============================================================================= the SNN's new entry points
def test_the_network_run_from_encoded_inputs_is_its_forward_pass():
    model = tiny_snn("latency")  # a deterministic code: forward encodes the same spikes
    x, _ = examples()
    with torch.no_grad():
        spikes = model.hidden_spikes(model.encode(x))
        torch.testing.assert_close(model.output_from(spikes[-1]), model(x), rtol=0, atol=1e-12)
    assert spikes[0].shape == (4, 30, 5) and spikes[0].sum() > 0


# ============================================================================= the rule's change = the maths by hand
CASES = {
    "additive": dict(),
    "multiplicative": dict(bounds="multiplicative", w_max=1.5),
    "nearest": dict(pairing="nearest", a_plus=2e-3, a_minus=3e-3),
    "triplet": dict(triplet=True, a3_plus=5e-3, a3_minus=1e-3, tau_x=30.0, tau_y=40.0),
}


@pytest.mark.parametrize("options", CASES.values(), ids=CASES.keys())
def test_the_rules_change_is_weight_change_of_the_same_spike_trains(options):
    model, (x, y) = tiny_snn(), examples()
    rule = STDP(tau_pre=8.0, tau_post=12.0, **options)
    rule.bind(model, seed=0)
    twin = copy.deepcopy(model)  # the same rate-code generator state: it draws the same input spikes
    w0 = model.hidden[0].weight.detach().clone()
    rule.estimate_grads(model, x, y, loss_fn)
    # by hand: encode once, the first hidden layer's spikes on those inputs, then spike_timing.py
    with torch.no_grad():
        pre = twin.encode(x)
        post = twin.hidden_spikes(pre)[0]
    assert pre.sum() > 0 and post.sum() > 0
    times = STDPTimes(tau_pre=8.0, tau_post=12.0, dt=0.5, tau_x=rule.tau_x, tau_y=rule.tau_y)
    potentiation, depression = pair_correlations(pre, post, times, rule.pairing)
    expected = weight_change(w0, potentiation, depression, rule.a_plus, rule.a_minus, rule.bounds, rule.w_max)
    if rule.triplet:
        potentiation, depression = triplet_correlations(pre, post, times)
        expected = expected + weight_change(w0, potentiation, depression, rule.a3_plus, rule.a3_minus, rule.bounds, rule.w_max)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(-model.hidden[0].weight.grad, expected, rtol=1e-12, atol=1e-15)
    # nothing else written: the rest is fixed
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["hidden.0.weight"]
    assert all(p.grad is None for n, p in model.named_parameters() if n != "hidden.0.weight")


def test_update_modes_the_stdp_layer_direct_the_readout_by_gradient():
    fixed, trained = tiny_snn(), tiny_snn()
    STDP().bind(fixed, 0)
    rule = STDP(readout="gradient")
    rule.bind(trained, 0)
    assert STDP().update_modes(fixed) == {"hidden.0.weight": DIRECT}
    assert rule.update_modes(trained) == {"hidden.0.weight": DIRECT, "readout.weight": GRADIENT, "readout.bias": GRADIENT}
    x, y = examples()
    rule.estimate_grads(trained, x, y, loss_fn)
    assert trained.readout.weight.grad is not None and trained.readout.weight.grad.abs().sum() > 0


# ============================================================================= bounds and normalisation
def train_by_hand(model, rule, batches: int = 40):
    """The module's direct step, by hand: W -= p.grad, then the rule's after-step hook."""
    for i in range(batches):
        x, y = examples(seed=100 + i)
        rule.estimate_grads(model, x, y, loss_fn)
        with torch.no_grad():
            w = model.hidden[0].weight
            w.sub_(w.grad)
            w.grad = None
        rule.after_optimizer_step(model)
        yield model.hidden[0].weight.detach().clone()


def test_multiplicative_bounds_keep_the_weights_in_range_by_themselves():
    model = tiny_snn()
    rule = STDP(bounds="multiplicative", w_max=1.0, a_plus=0.01, a_minus=0.015)  # A P <= 1: ~45 pairs at most
    rule.bind(model, 0)
    w0 = model.hidden[0].weight.detach().clone()
    weights = list(train_by_hand(model, rule))
    for w in weights:
        assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0
    # they did move, far (towards soft bounds' interior fixed point A+ P / (A+ P + A- D): a unimodal distribution)
    assert (weights[-1] - w0).abs().max() > 0.1


def test_additive_bounds_clip_to_zero_and_w_max():
    model = tiny_snn()
    rule = STDP(a_plus=0.3, a_minus=0.5, w_max=0.8)
    rule.bind(model, 0)
    assert float(model.hidden[0].weight.detach().max()) <= 0.8  # clipped into the bounds when bound
    weights = list(train_by_hand(model, rule, batches=10))
    assert all(float(w.min()) >= 0.0 and float(w.max()) <= 0.8 for w in weights)
    assert any(bool((w == 0.8).any()) or bool((w == 0.0).any()) for w in weights)  # the clip acted


def test_normalisation_keeps_every_neurons_sum():
    model = tiny_snn()
    rule = STDP(a_plus=0.05, a_minus=0.02, normalize_to=2.5)
    rule.bind(model, 0)
    for w in train_by_hand(model, rule, batches=10):
        torch.testing.assert_close(w.sum(dim=1), torch.full((5,), 2.5, dtype=torch.float64), rtol=1e-12, atol=1e-12)
        assert float(w.min()) >= 0.0


# ============================================================================= through the real module
class Records:
    """Keeps every change the rule asks for (p.grad = -dW), to add them up."""

    def estimate_grads(self, model, x, y, loss_fn):
        out = super().estimate_grads(model, x, y, loss_fn)
        self.changes = getattr(self, "changes", []) + [-model.hidden[0].weight.grad.detach().clone()]
        return out


class Recording(Records, STDP):
    pass


class RecordingRSTDP(Records, RewardModulatedSTDP):
    pass


class SaveState(L.Callback):
    def __init__(self, directory: str):
        self.directory = directory

    def on_train_end(self, trainer, pl_module):
        state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
        changes = torch.stack(pl_module.rule.changes)
        rule = {k: v.detach().cpu().clone() for k, v in pl_module.rule.state_dict().items()}
        torch.save({"state": state, "changes": changes, "rule": rule}, Path(self.directory) / f"rank{trainer.global_rank}.pt")


def spiral(batch_size: int) -> SpiralDataModule:
    return SpiralDataModule(train_per_arm=16, val_per_arm=4, test_per_arm=4, batch_size=batch_size, seed=11)


def fit(directory: Path, batch_size: int, readout: str, rstdp: bool = False, **trainer_kwargs) -> dict:
    torch.manual_seed(0)
    model = SNN(2, 2, hidden_sizes=[6], encoding="rate", steps=20, max_rate=500.0, tau_mem=10.0, encoding_seed=5)
    with torch.no_grad():
        model.hidden[0].weight.uniform_(0.3, 1.0)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    rule = (RecordingRSTDP(lr=0.01, tau_e=20.0, readout=readout) if rstdp  # no clipping: W_0 + sum
            else Recording(bounds="multiplicative", a_plus=0.02, a_minus=0.02, readout=readout))
    module = LearningRuleModule(model, rule, optimizer=functools.partial(torch.optim.Adam, lr=0.05), task=TASK)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[SaveState(str(directory))], **trainer_kwargs)
    trainer.fit(module, datamodule=spiral(batch_size))
    return start


@pytest.mark.parametrize(("readout", "rstdp"), [("fixed", False), ("gradient", False), ("gradient", True)],
                         ids=["stdp-fixed", "stdp-gradient", "rstdp-gradient"])
def test_the_change_is_applied_exactly_under_adam_through_the_module(readout, rstdp, tmp_path):
    start = fit(tmp_path, 8, readout, rstdp, devices=1)
    saved = torch.load(tmp_path / "rank0.pt")
    final, changes = saved["state"], saved["changes"]
    assert len(changes) == 4 and changes.abs().sum() > 0  # 32 examples, batches of 8
    # W_0 + the sum of the changes, exactly as asked (no Adam scaling), in float64 up to float32 rounding per step
    torch.testing.assert_close(final["hidden.0.weight"], start["hidden.0.weight"] + changes.sum(0), rtol=0, atol=1e-6)
    if not rstdp:  # multiplicative bounds
        assert final["hidden.0.weight"].min() >= 0 and final["hidden.0.weight"].max() <= 1.0
    assert torch.equal(final["hidden.0.bias"], start["hidden.0.bias"])  # fixed
    moved = not torch.equal(final["readout.weight"], start["readout.weight"])
    assert moved == (readout == "gradient")


@pytest.mark.slow
@pytest.mark.parametrize("rstdp", [False, True], ids=["stdp", "rstdp"])
def test_two_ddp_ranks_stay_identical(rstdp, tmp_path):
    fit(tmp_path, 4, "gradient", rstdp, devices=2, strategy="ddp_spawn")
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for key, value in [*rank0["state"].items(), *rank0["rule"].items()]:  # R-STDP's baseline: the same on both
        assert torch.equal(value, rank1["state" if key in rank1["state"] else "rule"][key]), key
    if rstdp:
        assert float(rank0["rule"]["baseline"]) != 0.0
    assert not torch.equal(rank0["changes"], rank1["changes"])  # each rank's own examples ...
    assert torch.equal(rank0["state"]["hidden.0.weight"], rank1["state"]["hidden.0.weight"])  # ... one all-reduced step


# ============================================================================= R-STDP
def test_rstdp_eligibility_is_the_stdp_terms_decayed_to_the_trials_end():
    model, (x, _) = tiny_snn(), examples()
    with torch.no_grad():
        pre = model.encode(x)
        post = model.hidden_spikes(pre)[0]
    rule = RewardModulatedSTDP(lr=0.5, tau_e=7.0, tau_pre=8.0, tau_post=12.0, a_plus=1.0, a_minus=1.5)
    weights = torch.tensor([1.0, -0.5, 2.0, 0.0], dtype=torch.float64)
    # by hand: the eligibility of each example, step by step, then its weighed mean
    xs = trace(pre, 8.0, 0.5)
    ys = before_this_step(trace(post, 12.0, 0.5), 12.0, 0.5)
    expected = torch.zeros(5, 6, dtype=torch.float64)
    for b in range(4):
        e = torch.zeros(5, 6, dtype=torch.float64)
        for t in range(30):
            e = math.exp(-0.5 / 7.0) * e + torch.outer(post[b, t], xs[b, t]) - 1.5 * torch.outer(ys[b, t], pre[b, t])
        expected += weights[b] * e / 4
    assert expected.abs().sum() > 0
    torch.testing.assert_close(rule.eligibility_change(pre, post, 0.5, weights), expected, rtol=1e-10, atol=1e-13)


class ZeroReward(RewardModulatedSTDP):
    def rewards(self, output, y, loss_fn):
        return torch.zeros(len(y), dtype=output.dtype)


def test_rstdp_changes_nothing_under_zero_reward():
    model, (x, y) = tiny_snn(), examples()
    rule = ZeroReward()
    rule.bind(model, 0)
    rule.estimate_grads(model, x, y, loss_fn)
    assert torch.equal(model.hidden[0].weight.grad, torch.zeros_like(model.hidden[0].weight))
    assert float(rule.baseline) == 0.0


def test_rstdp_expected_change_under_a_reward_independent_of_the_activity_is_zero():
    """R = +-1 by a coin, independent of the spikes: E[(R - 0) e] = E[R] E[e] = 0. The mean over many draws (fixed
    seed, fresh spikes each draw) is within 4.5 standard errors of zero for every synapse; a reward that follows
    the activity (R = +1 when the example's hidden layer spikes more than the median) is far from zero."""
    model = tiny_snn(steps=20)
    rule = RewardModulatedSTDP(lr=1.0, tau_e=50.0)
    coin = torch.Generator().manual_seed(0)
    independent, following = [], []
    for draw in range(400):
        x, _ = examples(n=8, seed=1000 + draw)
        with torch.no_grad():
            pre = model.encode(x)
            post = model.hidden_spikes(pre)[0]
        r = torch.randint(0, 2, (8,), generator=coin).double() * 2 - 1
        independent.append(rule.change_from_rewards(pre, post, 0.5, r))
        counts = post.sum((1, 2))
        following.append(rule.change_from_rewards(pre, post, 0.5, torch.where(counts > counts.median(), 1.0, -1.0).double()))
    for changes, zero in ((torch.stack(independent), True), (torch.stack(following), False)):
        mean, se = changes.mean(0), changes.std(0) / math.sqrt(len(changes))
        assert bool((mean.abs() <= 4.5 * se + 1e-12).all()) == zero


def test_rstdp_baseline_is_a_running_mean_of_the_reward_in_the_checkpoint():
    model, (x, y) = tiny_snn(), examples()
    rule = RewardModulatedSTDP(baseline_decay=0.5)
    rule.bind(model, 0)
    twin = copy.deepcopy(model)  # the same input spikes, by hand
    with torch.no_grad():
        rewards = rule.rewards(twin.output_from(twin.hidden_spikes(twin.encode(x))[-1]), y, loss_fn)
    out = rule.estimate_grads(model, x, y, loss_fn)
    assert float(out.metrics["baseline"]) == 0.0  # the change used the baseline before this batch
    assert float(rule.baseline) == pytest.approx(0.5 * float(rewards.mean()), abs=1e-15)
    rule.estimate_grads(model, x, y, loss_fn)
    assert "baseline" in rule.state_dict()


def test_rstdp_reward_correct_is_plus_one_for_the_tasks_prediction():
    output = torch.tensor([[[0.0, 1.0], [0.0, 1.0]], [[2.0, 0.0], [1.0, 0.0]]])  # [batch, steps, classes]
    rule = RewardModulatedSTDP()
    assert rule.rewards(output, torch.tensor([1, 1]), loss_fn).tolist() == [1.0, -1.0]
    max_over_time = get_task("max_over_time_classification").loss
    assert rule.rewards(output, torch.tensor([1, 0]), max_over_time).tolist() == [1.0, 1.0]
    assert torch.equal(RewardModulatedSTDP(reward="loss").rewards(output, torch.tensor([1, 0]), loss_fn),
                       -loss_fn(output, torch.tensor([1, 0])))


def test_rstdp_reward_correct_on_a_final_window_task_is_the_tasks_accuracy():
    """Evidence accumulation's targets are (class, weight) pairs at every step [batch, time, 2]: the reward is +1 exactly
    where the task's own accuracy metric counts the example correct (oracle: tasks.FinalWindowClassification.update, one
    example at a time). Random outputs, a 3-step window at the end of 8 steps."""
    task = get_task("final_window_classification")
    generator = torch.Generator().manual_seed(5)
    output = torch.randn(16, 8, 2, generator=generator)
    classes = torch.randint(0, 2, (16,), generator=generator).float()
    weights = torch.cat([torch.zeros(5), torch.full((3,), 1 / 3)])
    y = torch.stack([classes[:, None].expand(-1, 8), weights.expand(16, -1)], dim=-1)
    rewards = RewardModulatedSTDP().rewards(output, y, task.loss)
    expected = []
    for b in range(16):
        metrics = task.metrics(2)
        task.update(metrics, output[b:b + 1], y[b:b + 1])
        expected.append(1.0 if float(metrics["acc"].compute()) == 1.0 else -1.0)
    assert rewards.tolist() == expected and 0 < expected.count(1.0) < 16


def test_rstdp_trains_on_evidence_accumulation(tmp_path):
    """The run that crashed in R-STDP's reward (class targets assumed) now trains, a few batches of a short cue task."""
    from conftest import CSV_ONLY, compose_config, tiny
    from learnbench.train import train

    short = ["data.cues=3", "data.slot_ms=15", "data.cue_ms=10", "data.delay_ms=30", "data.recall_ms=10",
             "data.train_sequences=32", "data.val_sequences=8", "data.test_sequences=8", "data.batch_size=8"]
    record = train(compose_config(["experiment=evidence_accumulation", "method=rstdp", "model.rate_penalty=0",
                                   "model.hidden_sizes=[16]", "model.alif_units=8", *short, *tiny(train_batches=3),
                                   *CSV_ONLY], tmp_path))
    assert record["status"] == "ok", record.get("message")


# ============================================================================= refusals
@pytest.mark.parametrize(("rule", "options", "message"), [
    (STDP, dict(tau_pre=-1.0), "method.tau_pre=-1.0: expected a number > 0"),
    (STDP, dict(tau_post=0.0), "method.tau_post=0.0: expected a number > 0"),
    (STDP, dict(a_plus=-1e-3), "method.a_plus=-0.001: expected a number >= 0"),
    (STDP, dict(triplet=True, pairing="nearest"), "all-to-all model: set method.pairing=all_to_all"),
    (RewardModulatedSTDP, dict(lr=-0.1), "method.lr=-0.1: expected a number >= 0"),
    (RewardModulatedSTDP, dict(tau_e=-5.0), "method.tau_e=-5.0: expected a number > 0"),
])
def test_bad_options_are_refused_in_one_line(rule, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")) as error:
        rule(**options)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("rule", [STDP, RewardModulatedSTDP])
def test_a_non_spiking_model_or_a_current_code_is_refused(rule):
    with pytest.raises(ValueError, match="trains only spiking networks") as error:
        LearningRuleModule(MLP(2, 2, hidden_sizes=(4,)), rule(), optimizer=torch.optim.SGD)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="use model.encoding=rate or model.encoding=latency"):
        rule().bind(SNN(2, 2, encoding="current"), 0)


# ----------------------------------------------------------------------------- refused at start, from the config
SNN_RATE = ["data=mnist", "data.normalize=unit", "model=snn", "model.encoding=rate", "model.hidden_sizes=[4]", "model.steps=5"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["model=snn", "method=stdp"], "method=stdp pairs input spikes with hidden spikes, but model.encoding=current"),
    (["model=snn", "method=rstdp"], "method=rstdp pairs input spikes with hidden spikes, but model.encoding=current"),
    ([*SNN_RATE, "method=stdp", "method.tau_pre=-20"], "method.tau_pre=-20: expected a number > 0"),
    ([*SNN_RATE, "method=stdp", "method.a_minus=-1"], "method.a_minus=-1: expected a number >= 0"),
    ([*SNN_RATE, "method=rstdp", "method.tau_e=0"], "method.tau_e=0: expected a number > 0"),
    ([*SNN_RATE, "method=stdp", "method.triplet=true", "method.pairing=nearest"], "set method.pairing=all_to_all"),
])
def test_a_bad_config_is_refused_before_anything_runs(overrides, message, tmp_path):
    from conftest import compose_config
    from learnbench.config_validation import ConfigError
    from learnbench.train import check_config

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")) as error:
        check_config(compose_config(overrides, tmp_path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("model", ["mlp", "rnn"])
def test_an_stdp_rule_on_a_non_spiking_model_is_refused_at_build(model, tmp_path):
    from conftest import compose_config
    from learnbench.config_validation import ConfigError
    from learnbench.train import build, check_config

    data = "spiral" if model == "mlp" else "add_task"
    cfg = compose_config([f"data={data}", f"model={model}", "method=stdp", "logger=csv"], tmp_path)
    check_config(cfg)
    expected = "trains only spiking networks: use model=snn" if model == "mlp" else "does not train recurrent models"
    with pytest.raises(ConfigError, match=expected) as error:
        build(cfg)
    assert "\n" not in str(error.value)

