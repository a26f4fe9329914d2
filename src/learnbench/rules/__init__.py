"""Learning rules: each estimates the loss gradient and writes it to `p.grad`. One rule per file."""

from learnbench.rules.backprop import Backprop
from learnbench.rules.base import LearningRule, RuleOutput
from learnbench.rules.forward_gradient_activity import ForwardGradientActivity
from learnbench.rules.forward_gradient_weight import ForwardGradientWeight
from learnbench.rules.node_perturbation import NodePerturbation
from learnbench.rules.weight_perturbation import WeightPerturbation

__all__ = [
    "Backprop",
    "ForwardGradientActivity",
    "ForwardGradientWeight",
    "LearningRule",
    "NodePerturbation",
    "RuleOutput",
    "WeightPerturbation",
]
