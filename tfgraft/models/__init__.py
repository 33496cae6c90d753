"""Model zoo on explicit per-layer channel configs (see `registry.py`)."""

from tfgraft.models.channel_config import ChannelConfig
from tfgraft.models.channel_config import ChannelConfigError
from tfgraft.models.common import OptionAShortcut
from tfgraft.models.common import surgery_weights
from tfgraft.models.registry import UnknownModelError
from tfgraft.models.registry import available_models
from tfgraft.models.registry import build_model
from tfgraft.models.registry import default_channel_config
from tfgraft.models.registry import layer_slots
from tfgraft.models.registry import model_channel_config
from tfgraft.models.registry import model_family
from tfgraft.models.registry import resolve_topology

__all__ = [
    "ChannelConfig",
    "ChannelConfigError",
    "OptionAShortcut",
    "UnknownModelError",
    "available_models",
    "build_model",
    "default_channel_config",
    "layer_slots",
    "model_channel_config",
    "model_family",
    "resolve_topology",
    "surgery_weights",
]
