"""Learning rules, by family: each estimates the loss gradient and writes it to `p.grad`. One rule per file.

    backprop.py                 the exact gradient
    perturbation/               weight and node perturbation, forward gradients (weights, activities)
    feedback/                   feedback alignment, direct feedback alignment, Kolen-Pollack, sign symmetry
    predictive_coding/          predictive coding: inference on value nodes, local updates (pc, ipc; fpa, zil)
    recurrent/                  BPTT (truncated), RTRL, RFLO, e-prop (model=rnn; rflo and e-prop also model=esn)
    plasticity/                 spike-timing-dependent plasticity (stdp, rstdp, stdp_gradient; model=snn; diehl_cook: model=diehl_cook)
    spiking/                    exact spike-time gradients (spikeprop; model=srm)
    readout/                    readouts of a fixed reservoir: closed form (ridge), recursive least squares (force)
    base.py, local.py, noise.py the interface, the block walk and local update, noise sources
"""

from learnbench.rules.backprop import Backprop
from learnbench.rules.base import LearningRule, RuleOutput
from learnbench.rules.feedback.direct_feedback_alignment import DirectFeedbackAlignment
from learnbench.rules.feedback.feedback_alignment import FeedbackAlignment
from learnbench.rules.feedback.kolen_pollack import KolenPollack
from learnbench.rules.feedback.sign_symmetry import SignSymmetry
from learnbench.rules.recurrent.bptt import BPTT
from learnbench.rules.recurrent.eprop import EProp
from learnbench.rules.recurrent.rflo import RFLO
from learnbench.rules.recurrent.rtrl import RTRL
from learnbench.rules.perturbation.forward_gradient_activity import ForwardGradientActivity
from learnbench.rules.perturbation.forward_gradient_weight import ForwardGradientWeight
from learnbench.rules.perturbation.node_perturbation import NodePerturbation
from learnbench.rules.perturbation.weight_perturbation import WeightPerturbation
from learnbench.rules.plasticity.diehl_cook import DiehlCookSTDP
from learnbench.rules.plasticity.reward_modulated_stdp import RewardModulatedSTDP
from learnbench.rules.plasticity.stdp import STDP
from learnbench.rules.plasticity.stdp_gradient import STDPGradient
from learnbench.rules.predictive_coding import PredictiveCoding
from learnbench.rules.readout.force import FORCE
from learnbench.rules.readout.ridge import Ridge
from learnbench.rules.spiking.spikeprop import SpikeProp

__all__ = [
    "BPTT",
    "Backprop",
    "EProp",
    "FORCE",
    "DiehlCookSTDP",
    "DirectFeedbackAlignment",
    "FeedbackAlignment",
    "ForwardGradientActivity",
    "ForwardGradientWeight",
    "KolenPollack",
    "LearningRule",
    "NodePerturbation",
    "PredictiveCoding",
    "RFLO",
    "RTRL",
    "RewardModulatedSTDP",
    "Ridge",
    "RuleOutput",
    "STDP",
    "STDPGradient",
    "SpikeProp",
    "SignSymmetry",
    "WeightPerturbation",
]
