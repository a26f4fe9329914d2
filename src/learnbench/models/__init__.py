"""Models: plain nn.Modules. Feed-forward models are chains of named blocks (models/blocks.py); the
recurrent models are a leaky rate RNN (models/rnn.py) and an echo state network (models/esn.py); the spiking
network is models/snn.py (its neurons in neurons.py, its surrogate derivatives in surrogates.py), the spiking
reservoir models/lsm.py."""

from learnbench.models.blocks import Block, BlockChain
from learnbench.models.conv import CNN, LeNet
from learnbench.models.diehl_cook import DiehlCook
from learnbench.models.esn import ESN, ESNState
from learnbench.models.lsm import LSM, LSMState
from learnbench.models.mlp import MLP, Autoencoder
from learnbench.models.rnn import RNN, RNNState
from learnbench.models.snn import SNN, SNNState
from learnbench.models.srm import SRM
from learnbench.models.temporal import TemporalModel

__all__ = ["DiehlCook", "MLP", "Autoencoder", "Block", "BlockChain", "CNN", "ESN", "ESNState", "LeNet", "LSM", "LSMState", "RNN", "RNNState", "SNN", "SNNState", "SRM",
           "TemporalModel"]
