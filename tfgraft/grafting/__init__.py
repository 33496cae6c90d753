"""Filter Grafting (Meng et al., CVPR 2020): criteria and pure graft math.

`criteria` scores tensors (entropy, L1) and maps score differences to the
grafting coefficient alpha; `blend` mixes the pre-graft weights of the nets on
a ring. Both work on plain tensors: `Grafter` wires them to N live nets, and
the custom trainer's job (`tfgraft.grafting.job`) or `GraftingModel` (N nets
under one `model.fit`) call its graft step.

`tfgraft.grafting.blend` is the module; the two-tensor mix is
`tfgraft.grafting.blend.blend` (not re-exported here, so that the function
does not shadow its module).
"""

from tfgraft.grafting import blend
from tfgraft.grafting import criteria
from tfgraft.grafting.blend import FilterGraftUnit
from tfgraft.grafting.blend import expand_alphas
from tfgraft.grafting.blend import graft_filter_level
from tfgraft.grafting.blend import graft_kernel
from tfgraft.grafting.blend import graft_layer_level
from tfgraft.grafting.blend import ring_alphas
from tfgraft.grafting.blend import ring_peers
from tfgraft.grafting.criteria import NUM_BINS
from tfgraft.grafting.criteria import alpha
from tfgraft.grafting.criteria import bn_gamma_weights
from tfgraft.grafting.criteria import entropy
from tfgraft.grafting.criteria import filter_entropy
from tfgraft.grafting.criteria import filter_l1
from tfgraft.grafting.criteria import invalid_filter_count
from tfgraft.grafting.criteria import l1
from tfgraft.grafting.grafter import Grafter
from tfgraft.grafting.grafting_model import GraftingModel
from tfgraft.grafting.grafting_model import difflr_scales
from tfgraft.grafting.grafting_model import per_net_dataset

__all__ = [
    "NUM_BINS",
    "FilterGraftUnit",
    "Grafter",
    "GraftingModel",
    "alpha",
    "blend",
    "criteria",
    "difflr_scales",
    "bn_gamma_weights",
    "entropy",
    "expand_alphas",
    "filter_entropy",
    "filter_l1",
    "graft_filter_level",
    "graft_kernel",
    "graft_layer_level",
    "invalid_filter_count",
    "l1",
    "per_net_dataset",
    "ring_alphas",
    "ring_peers",
]
