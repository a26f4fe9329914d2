"""`python -m learnbench.verify`: it passes the suite's rules on what they claim, and fails, with its figures, a rule
that claims to be unbiased but is not (fg_w plus a constant), a rule whose noise is not drawn from the seed, and a rule
whose DDP ranks drift apart. Oracles: backprop's gradient (autograd; through time for the sequence rules) for the claims;
two builds from one seed for determinism; the ranks' states compared bit for bit; an uninterrupted run for a resume."""

from __future__ import annotations

import pytest
import torch

from learnbench.rules import Backprop, ForwardGradientWeight
from learnbench.verify import main, verify


class ShiftedForwardGradient(ForwardGradientWeight):
    """fg_w plus 0.05 on every weight's estimate: biased, while it still claims to be unbiased."""

    def estimate_grads(self, model, x, y, loss_fn, state=None):
        out = super().estimate_grads(model, x, y, loss_fn)
        for p in model.parameters():
            if p.grad is not None:
                p.grad += 0.05
        return out


class HalfForwardGradient(ForwardGradientWeight):
    """fg_w halved: the README's example; still claims to be unbiased."""

    def estimate_grads(self, model, x, y, loss_fn, state=None):
        out = super().estimate_grads(model, x, y, loss_fn)
        for p in model.parameters():
            p.grad /= 2
        return out


class UnseededNoise(Backprop):
    """bp plus noise from a generator seeded by the clock: the same seed no longer gives the same run."""

    def claims(self) -> frozenset[str]:
        return frozenset()

    def estimate_grads(self, model, x, y, loss_fn, state=None):
        out = super().estimate_grads(model, x, y, loss_fn)
        generator = torch.Generator()
        generator.seed()
        for p in model.parameters():
            p.grad += 1e-3 * torch.randn(p.shape, generator=generator, dtype=p.dtype)
        return out


class DriftingAfterStep(Backprop):
    """bp, then every weight nudged by this rank's own noise after each step, outside the all-reduced update: exact and
    deterministic, and its ranks drift apart."""

    def after_optimizer_step(self, model):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1e-4 * torch.randn(p.shape, generator=self.generator, dtype=p.dtype))


IN_PROCESS = ("gradient", "determinism")


def by_name(checks):
    return {check.name.split(" ")[0]: check for check in checks}


def test_bp_is_exact_and_fg_w_unbiased_and_both_deterministic():
    bp = by_name(verify(["method=bp"], draws=3, checks=IN_PROCESS))
    assert bp["gradient"].passed and "claims exact" in bp["gradient"].name and bp["determinism"].passed
    fg_w = by_name(verify(["method=fg_w"], draws=100, checks=IN_PROCESS))
    assert fg_w["gradient"].passed and "claims unbiased" in fg_w["gradient"].name and fg_w["determinism"].passed


def test_a_rule_that_claims_nothing_is_reported_not_judged():
    fa = by_name(verify(["method=fa"], draws=3, checks=IN_PROCESS))
    assert fa["gradient"].passed is None and "cos(mean, g)" in fa["gradient"].detail


def test_a_biased_rule_that_claims_to_be_unbiased_fails():
    checks = by_name(verify(["method=fg_w", f"method._target_={__name__}.ShiftedForwardGradient"], draws=100, checks=IN_PROCESS))
    assert checks["gradient"].passed is False and "N ||mean - g||^2 / tr(Cov)" in checks["gradient"].detail
    assert checks["determinism"].passed


def test_a_wrongly_scaled_rule_fails_on_its_projection_on_the_gradient():
    """Half of fg_w: its mean error hides in fg_w's large spread (N ||mean - g||^2 / tr(Cov) stays small), but the mean
    projection on g's direction sits many standard errors below ||g||."""
    check = verify(["method=fg_w", f"method._target_={__name__}.HalfForwardGradient"], draws=400, checks=("gradient",))[0]
    assert check.passed is False and "standard errors from ||g||" in check.detail, check.line()


def test_noise_not_drawn_from_the_seed_fails_the_determinism_check():
    checks = by_name(verify(["method=bp", f"method._target_={__name__}.UnseededNoise"], draws=3, checks=IN_PROCESS))
    assert checks["determinism"].passed is False and "weights differ" in checks["determinism"].detail


@pytest.mark.parametrize(("overrides", "claim", "passed"), [
    (["method=rtrl", "model.hidden_size=12"], "claims exact", True),  # forward in time, windows summed at fixed weights
    (["method=bptt"], "claims exact", True),
    (["method=bptt", "method.truncation=7"], "claims neither", None),  # the cut makes it another direction
    (["method=eprop"], "claims neither", None),
])
def test_sequence_rules_are_checked_against_bptt(overrides, claim, passed):
    checks = by_name(verify(["data=sine_trajectory", "model=rnn", *overrides], draws=2, checks=IN_PROCESS))
    assert claim in checks["gradient"].name and checks["gradient"].passed is passed, checks["gradient"].line()
    assert checks["determinism"].passed


def test_an_update_that_is_no_gradient_is_reported_with_its_cosine():
    checks = by_name(verify(["method=force", "model=esn", "data=force_pattern", "data.train_time=60"], draws=2, checks=IN_PROCESS))
    assert checks["gradient"].passed is None and "not a gradient estimate (direct update)" in checks["gradient"].detail
    assert checks["determinism"].passed


@pytest.mark.slow
def test_the_command_exits_1_on_a_failure_and_2_with_one_line_on_what_it_cannot_check(capsys):
    assert main(["method=fg_w", f"method._target_={__name__}.ShiftedForwardGradient", "--draws=50", "--checks=gradient"]) == 1
    assert "FAIL  gradient" in capsys.readouterr().out
    assert main(["method=bp", "--checks=gradient,speed"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "learnbench.verify: --checks: speed unknown; choose from gradient, determinism, ranks, resume, seeds"
    assert main(["method=bp", "--draw=3"]) == 2
    assert "--draw=3 is not an option" in capsys.readouterr().err
    assert main(["method=rtrl"]) == 2  # the config is refused as train refuses it: rtrl trains models that run in time
    err = capsys.readouterr().err.strip()
    assert err.startswith("learnbench.verify: ") and "\n" not in err


@pytest.mark.slow
def test_ranks_in_sync_and_a_bit_exact_resume_pass_and_drifting_ranks_fail(capsys):
    """Two processes (trainer=ddp_sim) and a run killed with SIGKILL and resumed, through `python -m learnbench.train`."""
    assert main(["method=np", "--checks=ranks,resume"]) == 0
    out = capsys.readouterr().out
    assert "PASS  ranks: 2 processes, 9 steps" in out and "PASS  resume: killed at the start of epoch 3 of 3" in out
    assert main(["method=bp", f"method._target_={__name__}.DriftingAfterStep", "--checks=gradient,determinism,ranks"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("PASS  gradient (claims exact)") and lines[1].startswith("PASS  determinism")
    assert lines[2].startswith("FAIL  ranks: 2 processes, 9 steps: rank 1 differs from rank 0 in model.blocks.0.linear.weight")


SEQUENCE = ["data=sine_trajectory", "model=rnn"]
SNN_RATE = ["data=mnist", "data.normalize=unit", "model=snn", "model.encoding=rate", "model.hidden_sizes=[4]", "model.steps=5",
            "data.batch_size=16", "data.val_size=40"]
# Every rule of the suite that does not train the feed-forward MLP, on a small case of what it trains.
OTHER_RULES = {
    "bptt": SEQUENCE, "rtrl": [*SEQUENCE, "model.hidden_size=12"], "rflo": SEQUENCE, "eprop": SEQUENCE,
    "ridge": ["model=esn", "data=mackey_glass"], "force": ["model=esn", "data=force_pattern", "data.train_time=60"],
    "stdp": SNN_RATE, "rstdp": SNN_RATE, "stdp_gradient": SNN_RATE,
    "diehl_cook": ["experiment=diehl_cook_mnist", "data.batch_size=4", "model.neurons=10"],
    "spikeprop": ["experiment=spikeprop_xor"],
}
CATALOGUE = __import__("learnbench.catalog", fromlist=["comparable_rules"])
FEED_FORWARD = CATALOGUE.comparable_rules("feedforward") + CATALOGUE.comparable_rules("local")


def test_every_rule_of_the_suite_has_a_case():
    from learnbench.paths import CONFIG_DIR

    assert {p.stem for p in (CONFIG_DIR / "method").glob("*.yaml")} == set(FEED_FORWARD) | set(OTHER_RULES)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(FEED_FORWARD))
def test_every_feed_forward_rule_of_the_suite_passes_what_it_claims(method):
    """Every rule of the feed-forward catalogue (and the local-loss variants) on the spiral: no check fails (a rule that
    claims nothing is reported)."""
    checks = verify([f"method={method}"], draws=100, checks=IN_PROCESS)
    assert all(check.passed is not False for check in checks), [check.line() for check in checks]


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(OTHER_RULES))
def test_every_other_rule_of_the_suite_passes_what_it_claims(method, vision_data):
    checks = verify([f"method={method}", *OTHER_RULES[method], f"paths.data_dir={vision_data[0]}"], draws=10, checks=IN_PROCESS)
    assert all(check.passed is not False for check in checks), [check.line() for check in checks]
