"""Tests for tfgraft.stripe.flops_target: threshold for a FLOPs cut."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import complexity
from tfgraft import models
from tfgraft.layers import StripeConv2D
from tfgraft.stripe import flops_target
from tfgraft.stripe import prune
from tfgraft.stripe import skeleton


def _net(name="resnet20", width=0.25, seed=0, dead=0.0, **kwargs):
    """A PFF net with random skeletons U(0.05, 1) of random sign.

    `dead`: the share of pruned-conv stripes set to U(-0.02, 0.02), as
    training with the threshold 0.02 leaves them (0 up to momentum
    residues).
    """
    keras.utils.set_random_seed(1)
    model = models.build_model(
        name,
        preset="pff",
        width_mult=width,
        conv_layer=StripeConv2D,
        **kwargs,
    )
    rng = np.random.default_rng(seed)
    pruned = set(skeleton.skeleton_plan(model).names())
    for layer in model.layers:
        if isinstance(layer, StripeConv2D):
            shape = layer.filter_skeleton.shape
            fs = rng.uniform(0.05, 1.0, shape) * rng.choice([-1, 1], shape)
            if dead and layer.name in pruned:
                off = rng.random(shape) < dead
                fs[off] = rng.uniform(-0.02, 0.02, off.sum())
                fs[0, 0, 0] = 1.0  # no conv loses every stripe
            layer.filter_skeleton.assign(fs.astype("f4"))
    return model


def _skeletons(model):
    return [
        layer.filter_skeleton.numpy().copy()
        for layer in model.layers
        if isinstance(layer, StripeConv2D)
    ]


def _compact_cut(model, threshold, dead_branches):
    """The cut of the model the job exports: hard mask, then compact."""
    before = complexity.count(model, "pff").flops
    masked = prune.hard_mask(model, threshold)
    result = prune.compact(masked, threshold, dead_branches=dead_branches)
    return 1 - complexity.count(result.model, "pff").flops / before


def _next_below(model, threshold):
    """The largest pruned-stripe |FS| below `threshold` (0 if none)."""
    values = [
        np.abs(model.get_layer(n).filter_skeleton.numpy()).ravel()
        for n in skeleton.skeleton_plan(model).names()
    ]
    values = np.concatenate(values)
    below = values[values < np.float32(threshold)]
    return float(below.max()) if below.size else 0.0


class ThresholdForFlopsCutTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("cut_40", 0.4),
        ("cut_70", 0.7),
        ("cut_90", 0.9),
    )
    @pytest.mark.large
    def test_hits_target_within_tolerance(self, target):
        model = _net(shortcut="projection")
        fs_before = _skeletons(model)
        r = flops_target.threshold_for_flops_cut(model, target, 0.02)
        self.assertTrue(r.within_tolerance)
        self.assertLessEqual(abs(r.cut - target), 0.02)
        self.assertEqual((r.target, r.tolerance), (target, 0.02))
        self.assertEqual(r.convention, "pff")
        # Bisection: about log2(#stripes) compactions, not one per value.
        self.assertLessEqual(r.evaluations, 16)
        # The search leaves the model alone.
        for a, b in zip(fs_before, _skeletons(model)):
            self.assertAllEqual(a, b)
        # The exported (hard-masked, compacted) model has that cut, in
        # both dead-branch forms.
        before = complexity.count(model, "pff").flops
        self.assertEqual(r.flops_before, before)
        self.assertAllClose(r.cut, 1 - r.flops_after / before, atol=1e-12)
        for form in ("constant", "shortcut"):
            self.assertAllClose(
                _compact_cut(model, r.threshold, form), r.cut, atol=1e-12
            )
        # The pair around the target: when the choice reached the target,
        # the next threshold down falls short of it, and further away.
        lower, _ = flops_target.flops_cut(
            model, _next_below(model, r.threshold)
        )
        self.assertLessEqual(lower, r.cut)
        if r.cut >= target:
            self.assertLess(lower, target)
            self.assertGreater(target - lower, r.cut - target)

    def test_min_threshold_keeps_dead_stripes_dead(self):
        # 80% of the pruned stripes died in training (|FS| <= 0.02): a 0.4
        # target cannot be met without bringing them back, so the training
        # threshold itself is chosen and reported as out of tolerance.
        model = _net(dead=0.8, shortcut="projection")
        r = flops_target.threshold_for_flops_cut(
            model, 0.4, min_threshold=0.02
        )
        self.assertEqual(r.threshold, 0.02)
        self.assertGreater(r.cut, 0.42)
        self.assertFalse(r.within_tolerance)
        self.assertAllClose(r.cut, _compact_cut(model, 0.02, "shortcut"))
        # Without the floor the residues count: they are brought back.
        r = flops_target.threshold_for_flops_cut(model, 0.4)
        self.assertLess(r.threshold, 0.02)
        self.assertTrue(r.within_tolerance)

    def test_vgg_stops_before_a_conv_loses_every_stripe(self):
        # Nothing bypasses a VGG conv: the highest threshold that still
        # compacts is the smallest per-conv maximum |FS|, just below it.
        model = _net("vgg16", width=0.125)
        r = flops_target.threshold_for_flops_cut(model, 0.999, 0.0)
        self.assertFalse(r.within_tolerance)
        limit = min(
            float(np.abs(model.get_layer(n).filter_skeleton.numpy()).max())
            for n in skeleton.skeleton_plan(model).names()
        )
        self.assertLess(r.threshold, limit)
        self.assertEqual(r.threshold, _next_below(model, limit))
        with self.assertRaisesRegex(skeleton.StripePruningError, "pruned"):
            prune.compact(model, limit)
        self.assertBetween(r.cut, 0.9, 0.999)

    @parameterized.named_parameters(
        ("zero", 0.0),
        ("one", 1.0),
        ("above_one", 1.5),
        ("negative", -0.1),
        ("nan", float("nan")),
        ("string", "half"),
    )
    def test_cut_out_of_range(self, cut):
        with self.assertRaisesRegex(
            ValueError, r"cut must be a fraction in \(0, 1\)\. Received: cut="
        ):
            flops_target.threshold_for_flops_cut(_net(), cut)

    @parameterized.named_parameters(
        ("negative", -0.01),
        ("one", 1.0),
        ("nan", float("nan")),
    )
    def test_tolerance_out_of_range(self, tolerance):
        with self.assertRaisesRegex(ValueError, "Received: tolerance="):
            flops_target.threshold_for_flops_cut(_net(), 0.5, tolerance)

    @parameterized.named_parameters(
        ("negative", -1.0),
        ("nan", float("nan")),
        ("inf", float("inf")),
    )
    def test_min_threshold_out_of_range(self, value):
        with self.assertRaisesRegex(ValueError, "Received: min_threshold="):
            flops_target.threshold_for_flops_cut(
                _net(), 0.5, min_threshold=value
            )

    def test_unknown_convention(self):
        with self.assertRaisesRegex(ValueError, "convention=flops"):
            flops_target.threshold_for_flops_cut(
                _net(), 0.5, convention="flops"
            )


if __name__ == "__main__":
    tf.test.main()
