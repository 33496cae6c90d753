"""Stripe-wise pruning with a Filter Skeleton (Meng et al., NeurIPS 2020).

`skeleton` finds the stripe convs of a model and holds the pure per-step
update; `trainer.StripeTrainer` applies it inside the train step; `prune`
hard-masks and compacts a trained model into `CompactStripeConv2D` layers;
`flops_target.threshold_for_flops_cut` picks the pruning threshold that
removes a target share of the FLOPs; `job.Stripe` chains train ->
best -> prune -> compact -> export. `fit` does the same for your own
functional Keras model with plain `model.fit`: `prune_stripes` ->
`compile`/`fit` -> `strip_stripes`. The layers live in
`tfgraft.layers.stripe_conv`.

Submodules are imported on demand (`from tfgraft.stripe import job`), so
that `import tfgraft.stripe` stays light.
"""

from tfgraft.stripe.fit import SkeletonOptimizer
from tfgraft.stripe.fit import StripResult
from tfgraft.stripe.fit import StripeModel
from tfgraft.stripe.fit import prune_stripes
from tfgraft.stripe.fit import strip_stripes
from tfgraft.stripe.flops_target import FlopsCut
from tfgraft.stripe.flops_target import flops_cut
from tfgraft.stripe.flops_target import threshold_for_flops_cut
from tfgraft.stripe.prune import BranchConstant
from tfgraft.stripe.prune import CompactResult
from tfgraft.stripe.prune import LayerStripes
from tfgraft.stripe.prune import apply_hard_mask
from tfgraft.stripe.prune import compact
from tfgraft.stripe.prune import hard_mask
from tfgraft.stripe.prune import layer_stripes
from tfgraft.stripe.skeleton import PrunedConv
from tfgraft.stripe.skeleton import SkeletonPlan
from tfgraft.stripe.skeleton import SkeletonUpdate
from tfgraft.stripe.skeleton import StripePruningError
from tfgraft.stripe.skeleton import skeleton_plan
from tfgraft.stripe.skeleton import skeleton_update

__all__ = [
    "BranchConstant",
    "CompactResult",
    "FlopsCut",
    "LayerStripes",
    "PrunedConv",
    "SkeletonOptimizer",
    "SkeletonPlan",
    "SkeletonUpdate",
    "StripResult",
    "StripeModel",
    "StripePruningError",
    "apply_hard_mask",
    "compact",
    "flops_cut",
    "hard_mask",
    "layer_stripes",
    "prune_stripes",
    "skeleton_plan",
    "skeleton_update",
    "strip_stripes",
    "threshold_for_flops_cut",
]
