"""Predictive coding: value nodes, inference on an energy, local weight updates (pc.py: the rule and its
variants standard / fpa / zil / ipc; energy.py: the energy's local derivatives and the stability bound)."""

from learnbench.rules.predictive_coding.pc import InferenceStabilityWarning, PredictiveCoding

__all__ = ["InferenceStabilityWarning", "PredictiveCoding"]
