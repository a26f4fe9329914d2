"""`python -m learnbench.verify`: it passes the suite's rules on what they claim, and fails, with its figures, a rule
that claims to be unbiased but is not (fg_w plus a constant) and a rule whose noise is not drawn from the seed.
Oracles: backprop's gradient (autograd) for the claims; two builds from one seed for determinism."""

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


def by_name(checks):
    return {check.name.split(" ")[0]: check for check in checks}


def test_bp_is_exact_and_fg_w_unbiased_and_both_deterministic():
    bp = by_name(verify(["method=bp"], draws=3))
    assert bp["gradient"].passed and "claims exact" in bp["gradient"].name and bp["determinism"].passed
    fg_w = by_name(verify(["method=fg_w"], draws=100))
    assert fg_w["gradient"].passed and "claims unbiased" in fg_w["gradient"].name and fg_w["determinism"].passed


def test_a_rule_that_claims_nothing_is_reported_not_judged():
    fa = by_name(verify(["method=fa"], draws=3))
    assert fa["gradient"].passed is None and "cos(mean, g)" in fa["gradient"].detail


def test_a_biased_rule_that_claims_to_be_unbiased_fails():
    checks = by_name(verify(["method=fg_w", f"method._target_={__name__}.ShiftedForwardGradient"], draws=100))
    assert checks["gradient"].passed is False and "N ||mean - g||^2 / tr(Cov)" in checks["gradient"].detail
    assert checks["determinism"].passed


def test_noise_not_drawn_from_the_seed_fails_the_determinism_check():
    checks = by_name(verify(["method=bp", f"method._target_={__name__}.UnseededNoise"], draws=3))
    assert checks["determinism"].passed is False and "weights differ" in checks["determinism"].detail


@pytest.mark.slow
def test_the_command_exits_1_on_a_failure_and_2_with_one_line_on_what_it_cannot_check(capsys):
    assert main(["method=fg_w", f"method._target_={__name__}.ShiftedForwardGradient", "--draws=50"]) == 1
    assert "FAIL  gradient" in capsys.readouterr().out
    assert main(["data=sine_trajectory", "model=rnn", "method=rflo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("learnbench.verify: ") and "\n" not in err and "tests/test_recurrent.py" in err
    assert main(["method=ipc"]) == 2
    assert "method.weight_updates=per_batch gives one" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(__import__("learnbench.catalog", fromlist=["comparable_rules"]).comparable_rules("feedforward")))
def test_every_feed_forward_rule_of_the_suite_passes_what_it_claims(method):
    """Every rule of the feed-forward catalogue on the spiral: no check fails (a rule that claims nothing is reported);
    ipc steps its weights at every inference step, several times a batch: checked with one update a batch."""
    checks = verify([f"method={method}", *(["method.weight_updates=per_batch"] if method == "ipc" else [])], draws=100)
    assert all(check.passed is not False for check in checks), [check.line() for check in checks]
