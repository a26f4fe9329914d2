"""Learning rules: each estimates the loss gradient and writes it to `p.grad`. One rule per file."""

from learnbench.rules.backprop import Backprop
from learnbench.rules.base import LearningRule, RuleOutput

__all__ = ["Backprop", "LearningRule", "RuleOutput"]
