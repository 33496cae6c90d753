"""Keras layers that users can put into their own models."""

from tfgraft.layers.batch_norm import FusedBatchNormalization
from tfgraft.layers.gate import ChannelGate
from tfgraft.layers.gate import FrozenStatsBatchNormalization
from tfgraft.layers.gate import GatedConv2D
from tfgraft.layers.gate import GatedDense
from tfgraft.layers.hyper_conv import HyperConv2D
from tfgraft.layers.standardize import Standardize
from tfgraft.layers.stripe_conv import CompactStripeConv2D
from tfgraft.layers.stripe_conv import StripeConv2D

__all__ = [
    "ChannelGate",
    "CompactStripeConv2D",
    "FrozenStatsBatchNormalization",
    "FusedBatchNormalization",
    "GatedConv2D",
    "GatedDense",
    "HyperConv2D",
    "Standardize",
    "StripeConv2D",
]
