"""Choosing the pruning threshold that removes a target share of FLOPs.

The reference prunes with the fixed training threshold (0.01), so how much
a run removes depends on `sr`, the schedule and the data: a blind knob.
`threshold_for_flops_cut(model, cut)` instead picks, on a trained model,
one global threshold on `|FS|` over every pruned stripe conv such that the
compact model (`prune.compact`) has `cut` of the dense model's FLOPs
removed. This is a tfgraft addition, not in the reference or the paper;
training is unchanged (the L1 strength and the training-time threshold
still mask stripes as the reference does), only the final, one-shot
pruning threshold is chosen.

The cut moves in discrete steps (one stripe, a whole filter with its BN
channel and the next conv's input, or a whole residual block at a time),
so the closer of the two thresholds around `cut` wins and `tolerance`
only says whether that is close enough (`within_tolerance`): a large step
(a whole block) can jump past it. Not "the smallest threshold reaching
`cut - tolerance`": with fine steps that lands every run at `cut -
tolerance` (0.38 for a 0.4 target on a ResNet-20 with random skeletons).
Raising the threshold never adds FLOPs, so a bisection over the sorted
`|FS|` values finds the pair with about `log2(stripes)` compactions.
"""

import dataclasses
import functools
import math

import numpy as np

from tfgraft import complexity
from tfgraft.stripe import prune as prune_lib
from tfgraft.stripe import skeleton as skeleton_lib
from tfgraft.stripe.skeleton import StripePruningError


@dataclasses.dataclass(frozen=True)
class FlopsCut:
    """The threshold `threshold_for_flops_cut` chose, and what it removes.

    Attributes:
        target: the requested FLOPs cut (fraction removed).
        tolerance: accepted shortfall/excess (absolute fraction).
        threshold: stripes with `|FS| <= threshold` are pruned.
        cut: the achieved FLOPs cut of the compact model.
        flops_before: FLOPs of the dense model.
        flops_after: FLOPs of the compact model.
        within_tolerance: `|cut - target| <= tolerance`.
        convention: the `tfgraft.complexity` convention counted.
        evaluations: compactions the search ran.
    """

    target: float
    tolerance: float
    threshold: float
    cut: float
    flops_before: int
    flops_after: int
    within_tolerance: bool
    convention: str
    evaluations: int

    def as_dict(self):
        return dataclasses.asdict(self)


def _as_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _check_nonnegative(name, value):
    v = _as_float(value)
    if not 0 <= v < math.inf:  # NaN fails too
        raise ValueError(
            f"{name} must be a finite number >= 0. Received: {name}={value}"
        )
    return v


def _check_fraction(name, value, low_open=True):
    v = _as_float(value)
    # NaN fails both comparisons.
    if not (0 < v < 1 if low_open else 0 <= v < 1):
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise ValueError(
            f"{name} must be a fraction in {interval}. Received: "
            f"{name}={value}"
        )


def flops_cut(model, threshold, *, convention="pff", flops_before=None):
    """The FLOPs cut of compacting `model` at `threshold`.

    Args:
        model: functional model with (trained) `StripeConv2D` layers.
        threshold: stripes with `|FS| <= threshold` are pruned.
        convention: a `tfgraft.complexity` convention.
        flops_before: the dense model's FLOPs, if already counted.

    Returns:
        `(cut, flops_after)`: the fraction of FLOPs removed and the compact
        model's FLOPs.

    Raises:
        StripePruningError: the model cannot be compacted at `threshold`
            (a conv without stripes that no shortcut bypasses).
    """
    if flops_before is None:
        flops_before = complexity.count(model, convention).flops
    # The reference's shortcut form: no probe of cut branches, and the same
    # FLOPs as the constant form (BranchConstant costs nothing; the ReLU it
    # keeps is not counted in residual nets).
    result = prune_lib.compact(model, threshold, dead_branches="shortcut")
    after = complexity.count(result.model, convention).flops
    return 1.0 - after / flops_before, int(after)


def threshold_for_flops_cut(
    model, cut, tolerance=0.02, *, min_threshold=0.0, convention="pff"
):
    """The pruning threshold that removes `cut` of the FLOPs.

    One global threshold on `|FS|` over every stripe conv the method prunes
    (`skeleton.skeleton_plan`; projection shortcuts are never pruned). The
    candidates are `min_threshold` and every distinct `|FS|` value above
    it. Of the smallest candidate whose compact model removes at least
    `cut` of the dense model's FLOPs and the candidate just below it, the
    one closer to `cut` wins (the smaller on a tie). The search never
    changes `model`.

    `min_threshold` keeps dead stripes dead: pass the training threshold,
    so that stripes the training masked (|FS| at or below it: zero up to
    momentum residues such as 1e-27, which the reference drops at its
    final pruning) are never counted back in to meet a target. With the
    default 0 only exactly-zero stripes always go.

    When no threshold gets within `tolerance` -- one stripe, filter or
    block steps past it, training already removed more than `cut +
    tolerance` (stripes at or below `min_threshold`), or a higher
    threshold would leave a conv that nothing bypasses (e.g. in a VGG)
    without stripes -- the closest reachable threshold is returned with
    `within_tolerance=False` (`min_threshold` when training went further;
    the largest one that still compacts when the target needs a cut conv).

    Args:
        model: functional Keras model with (trained) `StripeConv2D` layers.
        cut: FLOPs fraction to remove, in (0, 1) (0.7 removes 70%).
        tolerance: accepted distance to `cut` (absolute), in [0, 1).
        min_threshold: the lowest threshold considered (>= 0).
        convention: `tfgraft.complexity` convention of the FLOPs; `"pff"`
            is the reference's counter.

    Returns:
        A `FlopsCut`.

    Raises:
        ValueError: `cut`, `tolerance` or `min_threshold` out of range (the
            message names the argument), or an unknown convention.
        StripePruningError: no stripe conv in the model, or the model
            cannot be compacted even at `min_threshold`.

    Example:

    >>> from tfgraft import models
    >>> from tfgraft.layers import StripeConv2D
    >>> net = models.build_model(
    ...     "resnet20", width_mult=0.25, conv_layer=StripeConv2D
    ... )
    >>> rng = np.random.default_rng(0)
    >>> for layer in net.layers:
    ...     if isinstance(layer, StripeConv2D):
    ...         fs = layer.filter_skeleton
    ...         fs.assign(rng.uniform(size=fs.shape).astype("f4"))
    >>> r = threshold_for_flops_cut(net, 0.5, tolerance=0.02)
    >>> bool(abs(r.cut - 0.5) <= 0.02), r.within_tolerance
    (True, True)
    """
    _check_fraction("cut", cut)
    _check_fraction("tolerance", tolerance, low_open=False)
    floor = _check_nonnegative("min_threshold", min_threshold)
    if convention not in complexity.CONVENTIONS:
        raise ValueError(
            f"convention must be one of {complexity.CONVENTIONS}. "
            f"Received: convention={convention}"
        )
    plan = skeleton_lib.skeleton_plan(model)
    values = [
        np.abs(model.get_layer(name).filter_skeleton.numpy()).ravel()
        for name in plan.names()
    ]
    if not values:
        raise StripePruningError(
            f"Model '{model.name}' has no stripe conv to prune (only "
            "projection shortcuts)."
        )
    # float32 values, compared as float32 by `stripe_mask`: threshold v
    # prunes exactly the stripes with |FS| <= v.
    values = np.unique(np.concatenate(values).astype("f4"))
    above = values[values > np.float32(floor)]
    candidates = [floor] + [float(v) for v in above]
    before = complexity.count(model, convention).flops

    @functools.cache
    def evaluate(k):
        try:
            threshold = candidates[k]
            return flops_cut(
                model, threshold, convention=convention, flops_before=before
            )
        except StripePruningError:
            return None

    # Smallest k where the threshold reaches the target or no longer
    # compacts; both only get truer as the threshold grows.
    lo, hi = 0, len(candidates)
    while lo < hi:
        mid = (lo + hi) // 2
        value = evaluate(mid)
        if value is None or value[0] >= cut:
            hi = mid
        else:
            lo = mid + 1
    # lo reaches the target (if it compacts), lo - 1 falls just short.
    options = [k for k in (lo - 1, lo) if 0 <= k < len(candidates)]
    options = [k for k in options if evaluate(k) is not None]
    if not options:
        # Not even min_threshold compacts: raise that error (names the conv).
        flops_cut(model, candidates[0], convention=convention)
    k = min(options, key=lambda i: (abs(evaluate(i)[0] - cut), i))
    achieved, after = evaluate(k)
    return FlopsCut(
        target=float(cut),
        tolerance=float(tolerance),
        threshold=candidates[k],
        cut=float(achieved),
        flops_before=int(before),
        flops_after=after,
        within_tolerance=bool(abs(achieved - cut) <= tolerance + 1e-12),
        convention=convention,
        evaluations=evaluate.cache_info().currsize,
    )
