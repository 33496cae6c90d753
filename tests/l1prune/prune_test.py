"""L1-norm filter pruning: groups, norms, the FLOPs search, the pruned net."""

import fractions

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import complexity
from tfgraft import graph as graph_lib
from tfgraft import models
from tfgraft.l1prune import prune


def _net(name="resnet20", width_mult=1.0, preset="pff", shortcut=None):
    return models.build_model(
        name, preset=preset, shortcut=shortcut, width_mult=width_mult
    )


def _randomize(net, seed):
    """Trained-looking weights: random BN statistics, gammas and betas."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("f4"))
            layer.beta.assign(rng.normal(0, 0.2, c).astype("f4"))
            layer.moving_mean.assign(rng.normal(0, 0.3, c).astype("f4"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, c).astype("f4"))
        elif getattr(layer, "use_bias", False) and hasattr(layer, "bias"):
            layer.bias.assign(
                rng.normal(0, 0.1, layer.bias.shape).astype("f4")
            )


def _zero_channels(net, group, channels):
    """Makes `channels` of `group` output exactly 0 in every producer.

    Kernel columns, bias and BN gamma *and beta* are zeroed: BN then
    outputs 0 whatever its statistics, ReLU(0) = 0 and a residual sum of
    zeros is 0, so the next conv and the classifier never see them.
    """
    nodes = graph_lib.analyze(net).nodes
    for name in group.producers:
        conv = net.get_layer(name)
        kernel = conv.kernel.numpy()
        kernel[..., channels] = 0.0
        conv.kernel.assign(kernel)
        if conv.use_bias:
            bias = conv.bias.numpy()
            bias[channels] = 0.0
            conv.bias.assign(bias)
        bn = net.get_layer(nodes[name].bn)
        for var in (bn.gamma, bn.beta):
            value = var.numpy()
            value[channels] = 0.0
            var.assign(value)


class KeptCountTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("none", 16, 0.0, 16),
        ("quarter", 16, 0.25, 12),
        ("floor", 10, 0.25, 8),
        ("at_least_one", 16, 1.0, 1),
        ("single_channel", 1, 0.9, 1),
        ("exact_fraction", 3, fractions.Fraction(2, 3), 1),
    )
    def test_kept_count(self, size, fraction, kept):
        self.assertEqual(prune.kept_count(size, fraction), kept)

    def test_fraction_out_of_range(self):
        with self.assertRaisesRegex(prune.L1PruneError, "fraction=1.5"):
            prune.kept_count(4, 1.5)


class GroupsTest(tf.test.TestCase):
    def test_resnet_projection_internal_and_streams(self):
        net = _net(width_mult=0.25)
        groups = prune.find_groups(net, "resnet20", preset="pff")
        kinds = [g.kind for g in groups]
        self.assertEqual(kinds.count("internal"), 9)
        self.assertEqual(kinds.count("stream"), 3)
        stage2 = next(g for g in groups if g.slot == "stage2")
        self.assertEqual(
            stage2.producers,
            (
                "stage2_block0_conv2",
                "stage2_block0_shortcut_conv",
                "stage2_block1_conv2",
                "stage2_block2_conv2",
            ),
        )
        # The stream's norm is the sum over every conv writing it.
        expected = sum(
            np.abs(net.get_layer(p).kernel.numpy()).sum(axis=(0, 1, 2))
            for p in stage2.producers
        )
        self.assertAllClose(stage2.norms, expected, rtol=1e-6)
        inner = next(g for g in groups if g.slot == "stage1/block0/conv1")
        self.assertEqual(inner.producers, ("stage1_block0_conv1",))
        self.assertAllClose(
            inner.norms,
            np.abs(net.get_layer("stage1_block0_conv1").kernel.numpy()).sum(
                axis=(0, 1, 2)
            ),
            rtol=1e-6,
        )

    def test_option_a_and_no_streams_leave_streams_alone(self):
        # Option A zero-pads stage 1 into stage 2 at fixed positions, so
        # no stream can lose channels without moving the others.
        net = _net(width_mult=0.25, preset="grafting", shortcut="A")
        groups = prune.find_groups(net, "resnet20", shortcut="A")
        self.assertEqual({g.kind for g in groups}, {"internal"})
        self.assertLen(groups, 9)
        net = _net(width_mult=0.25)
        groups = prune.find_groups(
            net, "resnet20", preset="pff", prune_streams=False
        )
        self.assertEqual(
            [g.slot for g in groups][:2],
            ["stage1/block0/conv1", "stage1/block1/conv1"],
        )
        self.assertLen(groups, 9)

    def test_vgg_every_conv_is_a_group(self):
        net = _net("vgg16", width_mult=0.125)
        groups = prune.find_groups(net, "vgg16", preset="pff")
        self.assertEqual(
            [g.slot for g in groups], [f"conv{i}" for i in range(13)]
        )

    def test_wrong_model_name(self):
        net = _net("vgg16", width_mult=0.125)
        with self.assertRaisesRegex(
            prune.L1PruneError, "model_name='resnet20'"
        ):
            prune.find_groups(net, "resnet20")


class SearchTest(tf.test.TestCase, parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.nets = {
            "projection": _net(),
            "A": _net(preset="grafting", shortcut="A"),
        }

    @parameterized.product(
        shortcut=("projection", "A"), target=(0.4, 0.7, 0.9)
    )
    def test_resnet20_cut_within_tolerance(self, shortcut, target):
        net = self.nets[shortcut]
        preset = "pff" if shortcut == "projection" else "grafting"
        plan = prune.plan_pruning(
            net,
            "resnet20",
            target_flops_cut=target,
            preset=preset,
            shortcut=shortcut,
        )
        self.assertLessEqual(abs(plan.flops_cut - target), 0.02)
        self.assertEqual(plan.convention, "pff")
        # The count the search used is the built net's count.
        pruned = prune.build_pruned(net, plan)
        before = complexity.count(net, "pff").flops
        after = complexity.count(pruned, "pff").flops
        self.assertEqual(before, plan.flops_before)
        self.assertEqual(after, plan.flops_after)
        # One shared fraction: each group lost floor(f * C) or one fewer.
        for g in plan.groups:
            removed = g.size - len(plan.kept[g.slot])
            full = g.size - prune.kept_count(g.size, plan.fraction)
            self.assertIn(removed, (full, full - 1), g.slot)
            self.assertGreaterEqual(len(plan.kept[g.slot]), 1)
            self.assertEqual(
                pruned.get_layer(g.producers[0]).filters,
                len(plan.kept[g.slot]),
            )

    def test_search_picks_the_nearest_reachable_cut(self):
        # Brute force over every number of single-channel removals: the
        # cut never decreases and the search returns the one nearest to
        # the target.
        net = _net(width_mult=0.25)
        groups = prune.find_groups(net, "resnet20", preset="pff")
        flops = prune._FlopsAt(net, groups, "pff")
        events = prune._removals(groups)
        cuts = [
            flops.cut(prune._removed_after(events, m, len(groups)))
            for m in range(len(events) + 1)
        ]
        self.assertEqual(cuts, sorted(cuts))
        for target in (0.3, 0.55, 0.8):
            plan = prune.plan_pruning(
                net,
                "resnet20",
                target_flops_cut=target,
                preset="pff",
                target_tolerance=0.2,
            )
            nearest = min(abs(c - target) for c in cuts)
            self.assertAllClose(abs(plan.flops_cut - target), nearest)
            self.assertLess(plan.evaluations, 16)

    def test_vgg16_paper_cut(self):
        net = _net("vgg16")
        plan = prune.plan_pruning(
            net, "vgg16", target_flops_cut=0.343, preset="pff"
        )
        self.assertLessEqual(abs(plan.flops_cut - 0.343), 0.02)
        self.assertEqual(plan.flops_before, 627_358_218)

    def test_deterministic(self):
        net = self.nets["projection"]
        a = prune.plan_pruning(
            net, "resnet20", target_flops_cut=0.5, preset="pff"
        )
        b = prune.plan_pruning(
            net, "resnet20", target_flops_cut=0.5, preset="pff"
        )
        self.assertEqual(a.kept, b.kept)
        self.assertEqual(a.fraction, b.fraction)

    def test_unreachable_target(self):
        net = _net(width_mult=0.25)
        with self.assertRaisesRegex(
            prune.L1PruneError, r"target_flops_cut=0.999: at most 0\.9"
        ):
            prune.plan_pruning(
                net, "resnet20", target_flops_cut=0.999, preset="pff"
            )

    def test_tolerance_too_tight(self):
        net = _net(width_mult=0.25)
        with self.assertRaisesRegex(
            prune.L1PruneError, "nearest reachable cuts.*target_tolerance=0.0"
        ):
            prune.plan_pruning(
                net,
                "resnet20",
                target_flops_cut=0.5,
                target_tolerance=0.0,
                preset="pff",
            )

    @parameterized.named_parameters(
        ("both", dict(target_flops_cut=0.5, fraction=0.5), "exactly one"),
        ("neither", dict(), "exactly one"),
        ("target", dict(target_flops_cut=1.0), "target_flops_cut=1.0"),
        (
            "tolerance",
            dict(target_flops_cut=0.5, target_tolerance=-1),
            "target_tolerance=-1",
        ),
        ("convention", dict(fraction=0.5, convention="x"), "convention='x'"),
    )
    def test_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(prune.L1PruneError, message):
            prune.plan_pruning(
                self.nets["projection"], "resnet20", preset="pff", **kwargs
            )


class PrunedNetTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("resnet_projection", "resnet20", 0.25, "pff", "projection"),
        ("resnet_option_a", "resnet20", 0.25, "grafting", "A"),
        ("vgg_with_bias", "vgg16", 0.125, "grafting", None),
    )
    def test_pruning_zero_filters_keeps_the_logits(
        self, name, width_mult, preset, shortcut
    ):
        net = _net(name, width_mult, preset, shortcut)
        _randomize(net, 0)
        fraction = 0.25
        groups = prune.find_groups(
            net, name, preset=preset, shortcut=shortcut
        )
        rng = np.random.default_rng(1)
        zeroed = {}
        for g in groups:
            n = g.size - prune.kept_count(g.size, fraction)
            self.assertGreater(n, 0)
            zeroed[g.slot] = sorted(rng.choice(g.size, n, replace=False))
            _zero_channels(net, g, zeroed[g.slot])
        x = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3))
        x = x.astype("float32")
        before = net(x, training=False).numpy()
        plan = prune.plan_pruning(
            net, name, fraction=fraction, preset=preset, shortcut=shortcut
        )
        for g in plan.groups:
            self.assertEmpty(set(zeroed[g.slot]) & set(plan.kept[g.slot]))
        pruned = prune.build_pruned(net, plan, model_name="pruned")
        self.assertLess(pruned.count_params(), net.count_params())
        self.assertEqual(
            plan.channel_config.widths,
            {
                s: len(plan.kept[s]) if s in plan.kept else w
                for s, w in plan.original_config.widths.items()
            },
        )
        after = pruned(x, training=False).numpy()
        self.assertGreater(np.abs(before).max(), 1e-3)
        self.assertAllClose(after, before, atol=1e-4, rtol=1e-4)

    def test_kept_slices_are_copied(self):
        net = _net(width_mult=0.25)
        _randomize(net, 3)
        plan = prune.plan_pruning(net, "resnet20", fraction=0.5, preset="pff")
        pruned = prune.build_pruned(net, plan)
        out = np.asarray(plan.kept["stage2"])
        inner = np.asarray(plan.kept["stage2/block1/conv1"])
        kernel = net.get_layer("stage2_block1_conv2").kernel.numpy()
        self.assertAllEqual(
            pruned.get_layer("stage2_block1_conv2").kernel,
            kernel[:, :, inner][..., out],
        )
        bn = net.get_layer("stage2_block1_bn2")
        for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
            self.assertAllEqual(
                getattr(pruned.get_layer("stage2_block1_bn2"), attr),
                getattr(bn, attr).numpy()[out],
            )
        fc = net.get_layer("fc").kernel.numpy()
        self.assertAllEqual(
            pruned.get_layer("fc").kernel,
            fc[np.asarray(plan.kept["stage3"])],
        )

    def test_plan_for_another_model_is_refused(self):
        a = _net(width_mult=0.25)
        plan = prune.plan_pruning(a, "resnet20", fraction=0.5, preset="pff")
        vgg = _net("vgg16", width_mult=0.125)
        with self.assertRaisesRegex(prune.L1PruneError, "another model"):
            prune.build_pruned(vgg, plan)


if __name__ == "__main__":
    tf.test.main()
