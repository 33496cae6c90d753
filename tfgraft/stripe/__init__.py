"""Stripe-wise pruning with a Filter Skeleton (Meng et al., NeurIPS 2020).

`skeleton` finds the stripe convs of a model and holds the pure per-step
update; `trainer.StripeTrainer` applies it inside the train step; `prune`
hard-masks and compacts a trained model into `CompactStripeConv2D` layers;
`job.StripeJob` chains train -> best -> prune -> compact -> export. The
layers live in `tfgraft.layers.stripe_conv`.

Submodules are imported on demand (`from tfgraft.stripe import job`), so
that `import tfgraft.stripe` stays light.
"""

from tfgraft.stripe.prune import BranchConstant
from tfgraft.stripe.prune import CompactResult
from tfgraft.stripe.prune import LayerStripes
from tfgraft.stripe.prune import apply_hard_mask
from tfgraft.stripe.prune import compact
from tfgraft.stripe.prune import hard_mask
from tfgraft.stripe.prune import layer_stripes
from tfgraft.stripe.skeleton import PrunedConv
from tfgraft.stripe.skeleton import SkeletonPlan
from tfgraft.stripe.skeleton import StripePruningError
from tfgraft.stripe.skeleton import skeleton_plan
from tfgraft.stripe.skeleton import skeleton_update

__all__ = [
    "BranchConstant",
    "CompactResult",
    "LayerStripes",
    "PrunedConv",
    "SkeletonPlan",
    "StripePruningError",
    "apply_hard_mask",
    "compact",
    "hard_mask",
    "layer_stripes",
    "skeleton_plan",
    "skeleton_update",
]
