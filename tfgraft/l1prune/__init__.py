"""L1-norm filter pruning (Li et al., ICLR 2017): the "L1" baseline.

`prune` ranks the filters of a trained zoo network by their L1 norms,
searches the one pruning fraction shared by all prunable channel groups
that meets a FLOPs target, and builds the pruned network with the kept
weights; `job.L1Prune` chains pretrained net -> prune -> fine-tune ->
export (`python -m train.l1prune`).

Submodules are imported on demand (`from tfgraft.l1prune import job`), so
that `import tfgraft.l1prune` stays light.
"""

from tfgraft.l1prune.prune import FilterGroup
from tfgraft.l1prune.prune import L1PruneError
from tfgraft.l1prune.prune import PrunePlan
from tfgraft.l1prune.prune import build_pruned
from tfgraft.l1prune.prune import channel_config_of
from tfgraft.l1prune.prune import copy_kept_weights
from tfgraft.l1prune.prune import find_groups
from tfgraft.l1prune.prune import kept_count
from tfgraft.l1prune.prune import plan_pruning

__all__ = [
    "FilterGroup",
    "L1PruneError",
    "PrunePlan",
    "build_pruned",
    "channel_config_of",
    "copy_kept_weights",
    "find_groups",
    "kept_count",
    "plan_pruning",
]
