"""LW-DNA (Li et al., CVPR 2021): widen, shrink by hypernet pruning, retrain.

`hypernet` builds a widened zoo network whose convs are `HyperConv2D` layers
sharing latent vectors along channel groups; `shrink` runs the two-step
search, ranks channels, binary-searches the pruning threshold to a FLOPs
budget and derives the plain network with per-layer widths; `job` wires it
into a training job (search -> derive -> train, optionally next to the
uniform original). `derive`: `derive_widths(model, data)`, the same on
your own functional CNN (latents from its channel graph,
`graph_latent_plan`).
"""

from tfgraft.lwdna.derive import DeriveResult
from tfgraft.lwdna.derive import derive_widths
from tfgraft.lwdna.hypernet import RGB
from tfgraft.lwdna.hypernet import HyperNet
from tfgraft.lwdna.hypernet import LatentPlan
from tfgraft.lwdna.hypernet import LWDNAError
from tfgraft.lwdna.hypernet import build_hypernet
from tfgraft.lwdna.hypernet import graph_latent_plan
from tfgraft.lwdna.hypernet import latent_plan
from tfgraft.lwdna.shrink import FlopsTable
from tfgraft.lwdna.shrink import SearchState
from tfgraft.lwdna.shrink import SearchTrainer
from tfgraft.lwdna.shrink import ShrinkResult
from tfgraft.lwdna.shrink import ThresholdResult
from tfgraft.lwdna.shrink import assign_weights
from tfgraft.lwdna.shrink import build_derived
from tfgraft.lwdna.shrink import channel_mask
from tfgraft.lwdna.shrink import compute_masks
from tfgraft.lwdna.shrink import derive_weights
from tfgraft.lwdna.shrink import derived_config
from tfgraft.lwdna.shrink import importance
from tfgraft.lwdna.shrink import keep_floor
from tfgraft.lwdna.shrink import mask_floors
from tfgraft.lwdna.shrink import run_search
from tfgraft.lwdna.shrink import search_steps
from tfgraft.lwdna.shrink import search_threshold
from tfgraft.lwdna.shrink import shrink_masks
from tfgraft.lwdna.shrink import zero_pruned_channels

__all__ = [
    "RGB",
    "DeriveResult",
    "FlopsTable",
    "HyperNet",
    "LWDNAError",
    "LatentPlan",
    "SearchState",
    "SearchTrainer",
    "ShrinkResult",
    "ThresholdResult",
    "assign_weights",
    "build_derived",
    "build_hypernet",
    "channel_mask",
    "compute_masks",
    "derive_weights",
    "derive_widths",
    "derived_config",
    "importance",
    "graph_latent_plan",
    "keep_floor",
    "latent_plan",
    "mask_floors",
    "run_search",
    "search_steps",
    "search_threshold",
    "shrink_masks",
    "zero_pruned_channels",
]
