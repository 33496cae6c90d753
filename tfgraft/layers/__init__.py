"""Keras layers that users can put into their own models."""

from tfgraft.layers.graft_conv import GraftConv2D
from tfgraft.layers.standardize import Standardize

__all__ = ["GraftConv2D", "Standardize"]
