"""The update modes (rules/base.py): closed-form fits and direct weight changes, each against an oracle.

- ridge (closed_form): the readout equals the least-squares solution on the same states (float64; the bias unpenalised),
  accumulated over batches; it is in place before the first validation (epoch 0's val loss is the fitted
  readout's); statistics summed over 2 DDP processes equal one process on the union of their data.
- a direct rule's change is applied exactly, p -= p.grad, whatever the optimiser (Adam, momentum), and
  identically on 2 DDP ranks.
"""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch

from learnbench.data import AddTaskDataModule, SpiralDataModule
from learnbench.models import MLP, RNN
from learnbench.module import LearningRuleModule
from learnbench.rules import Ridge
from learnbench.rules.base import DIRECT, LearningRule, RuleOutput
from learnbench.tasks import get_task

RIDGE = 1e-3


pytestmark = pytest.mark.usefixtures("restore_process_state")  # DDP runs below (conftest.py)


def reservoir(seed: int = 3) -> RNN:
    torch.manual_seed(seed)
    return RNN(1, 2, hidden_size=12, tau=2.0, learn_input=False, learn_recurrent=False).double()


def add_task(batch_size: int) -> AddTaskDataModule:
    return AddTaskDataModule(steps=9, train_sequences=16, val_sequences=4, test_sequences=4, batch_size=batch_size,
                             eval_batch_size=4, data_seed=7)


def normal_equations(model: RNN, x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """Oracle: [W_out, b_out] minimising ||Y - W_out X - b_out||^2 + lambda ||W_out||^2 (the bias unpenalised, as
    reservoirpy's Ridge) over every step of every sequence, by lstsq on the augmented system
    [X^T 1; sqrt(lambda) I 0] [W_out b_out]^T = [Y^T; 0] (the rule solves centred normal equations: another algorithm)."""
    with torch.no_grad():
        r = model.phi(model.run(x)).reshape(-1, model.hidden_size)
    n = model.hidden_size
    features = torch.cat([r, torch.ones(len(r), 1, dtype=r.dtype)], dim=1)
    penalty = torch.cat([ridge ** 0.5 * torch.eye(n, dtype=r.dtype), torch.zeros(n, 1, dtype=r.dtype)], dim=1)
    a = torch.cat([features, penalty])
    b = torch.cat([y.reshape(-1, y.shape[-1]), torch.zeros(n, y.shape[-1], dtype=r.dtype)])
    return torch.linalg.lstsq(a, b).solution.T


def readout(model: RNN) -> torch.Tensor:
    return torch.cat([model.w_out.detach(), model.b_out.detach().unsqueeze(1)], dim=1)


def test_ridge_accumulated_over_batches_is_the_normal_equation_solution():
    model, data = reservoir(), add_task(batch_size=4)
    x, y = (t.double() for t in data.load_splits().train)
    rule = Ridge(ridge=RIDGE)
    rule.bind(model, seed=0)
    rule.begin_epoch(model)
    for rows in torch.arange(len(x)).split(5):  # uneven batches: the sums do not care
        rule.estimate_grads(model, x[rows], y[rows], lambda out, target: (out - target).pow(2).sum((1, 2)))
    rule.solve(model, rule.statistics())
    assert all(p.grad is None for p in model.parameters())  # closed form: no gradient written
    torch.testing.assert_close(readout(model), normal_equations(model, x, y, RIDGE), rtol=1e-9, atol=1e-11)


class ValLossAtEpochs(L.Callback):
    def __init__(self):
        self.val_losses = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val_losses.append(float(trainer.callback_metrics["val/loss"]))


def fit_ridge(data, directory: Path | None = None, **trainer_kwargs):
    model = reservoir()
    module = LearningRuleModule(model, Ridge(ridge=RIDGE), optimizer=functools.partial(torch.optim.SGD, lr=0.1),
                                task=data.task, num_classes=2)
    record = ValLossAtEpochs()
    callbacks = [record] + ([SaveReadout(str(directory))] if directory else [])
    trainer = L.Trainer(accelerator="cpu", precision="64-true", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, **trainer_kwargs)
    trainer.fit(module, datamodule=data)
    return module, record


def test_the_closed_form_fit_is_in_place_before_the_first_validation():
    data = add_task(batch_size=4)
    module, record = fit_ridge(data, devices=1, num_sanity_val_steps=2)
    splits = data.load_splits()
    x, y = (t.double() for t in splits.train)
    fitted = reservoir()
    xv, yv = (t.double() for t in splits.val)
    loss = get_task(data.task).loss
    with torch.no_grad():
        unfitted_val_loss = float(loss(fitted(xv), yv).mean())
        w = normal_equations(fitted, x, y, RIDGE)
        fitted.w_out.copy_(w[:, :-1])
        fitted.b_out.copy_(w[:, -1])
        oracle_val_loss = float(loss(fitted(xv), yv).mean())
    assert len(record.val_losses) == 1
    # epoch 0's val loss is the fitted readout's (the metric accumulates in float32: torchmetrics' default)
    assert record.val_losses[0] == pytest.approx(oracle_val_loss, rel=1e-6)
    assert abs(unfitted_val_loss - oracle_val_loss) > 1e-3  # 1000x the tolerance above
    torch.testing.assert_close(readout(module.model), w, rtol=1e-9, atol=1e-11)


class SaveReadout(L.Callback):
    def __init__(self, directory: str):
        self.directory = directory

    def on_train_end(self, trainer, pl_module):
        state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
        torch.save(state, Path(self.directory) / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ridge_statistics_summed_over_two_ddp_processes_equal_one_process_on_the_union(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    fit_ridge(add_task(batch_size=8), tmp_path / "one", devices=1, limit_val_batches=0)
    fit_ridge(add_task(batch_size=4), tmp_path / "two", devices=2, strategy="ddp_spawn", limit_val_batches=0)
    one = torch.load(tmp_path / "one" / "rank0.pt")
    rank0, rank1 = (torch.load(tmp_path / "two" / f"rank{r}.pt") for r in range(2))
    x, y = (t.double() for t in add_task(batch_size=8).load_splits().train)
    oracle = normal_equations(reservoir(), x, y, RIDGE)
    for state in (one, rank0, rank1):
        torch.testing.assert_close(torch.cat([state["w_out"], state["b_out"].unsqueeze(1)], dim=1), oracle, rtol=1e-9, atol=1e-11)
    assert torch.equal(rank0["w_out"], rank1["w_out"]) and torch.equal(rank0["b_out"], rank1["b_out"])


# ------------------------------------------------------------------ direct updates
ETA = 0.01


class InputMeanRule(LearningRule):
    """A test rule in direct mode: every weight moves by dW = ETA * mean(x) (p.grad = -dW). Over one epoch of
    equal batches the changes add up to ETA * sum(all inputs) / (batch size * features), whatever the order."""

    def update_modes(self, model):
        return {name: DIRECT for name, p in model.named_parameters() if p.requires_grad}

    def estimate_grads(self, model, x, y, loss_fn):
        for p in model.parameters():
            p.grad = torch.full_like(p, -ETA) * x.mean()
        with torch.no_grad():
            output = model(x)
        return RuleOutput(loss=loss_fn(output, y).mean(), output=output)


def spiral(batch_size: int) -> SpiralDataModule:
    return SpiralDataModule(train_per_arm=64, val_per_arm=8, test_per_arm=8, batch_size=batch_size, seed=11)


def fit_direct(optimizer, batch_size: int, directory: Path, **trainer_kwargs):
    torch.manual_seed(0)
    model = MLP(2, 2, hidden_sizes=(8,), activation="tanh")
    start = {k: v.clone() for k, v in model.state_dict().items()}
    module = LearningRuleModule(model, InputMeanRule(), optimizer=optimizer, task="classification")
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[SaveReadout(str(directory))], **trainer_kwargs)
    trainer.fit(module, datamodule=spiral(batch_size))
    return start


def direct_oracle(start: dict, batch_size: int) -> dict:
    x = spiral(batch_size).load_splits().train[0]
    total = ETA * x.double().sum() / (batch_size * x.shape[1])
    return {k: (v.double() + total).float() for k, v in start.items()}


@pytest.mark.parametrize("optimizer", [functools.partial(torch.optim.Adam, lr=0.5),
                                       functools.partial(torch.optim.SGD, lr=0.5, momentum=0.9, weight_decay=0.1)],
                         ids=["adam", "sgd-momentum-decay"])
def test_a_direct_change_is_applied_exactly_whatever_the_optimiser(optimizer, tmp_path):
    start = fit_direct(optimizer, 32, tmp_path, devices=1)
    final = torch.load(tmp_path / "rank0.pt")
    for k, expected in direct_oracle(start, 32).items():
        torch.testing.assert_close(final[k], expected, rtol=0, atol=1e-6, msg=k)


@pytest.mark.slow
def test_a_direct_change_is_identical_on_two_ddp_ranks(tmp_path):
    start = fit_direct(functools.partial(torch.optim.Adam, lr=0.5), 16, tmp_path, devices=2, strategy="ddp_spawn")
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for k, expected in direct_oracle(start, 32).items():  # the ranks' changes all-reduced: the union batch's mean
        assert torch.equal(rank0[k], rank1[k]), k
        torch.testing.assert_close(rank0[k], expected, rtol=0, atol=1e-6, msg=k)


def test_a_rule_must_give_every_trainable_parameter_a_known_mode():
    class Bad(InputMeanRule):
        def update_modes(self, model):
            return {"blocks.0.linear.weight": "hebbian"}

    with pytest.raises(ValueError, match="update_modes must give one of"):
        LearningRuleModule(MLP(2, 2, hidden_sizes=(4,)), Bad(), optimizer=torch.optim.SGD)
