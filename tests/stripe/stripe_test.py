"""Tests for tfgraft.stripe: skeleton update, trainer, hard mask, compact."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import complexity
from tfgraft import export as export_lib
from tfgraft import models
from tfgraft.layers import CompactStripeConv2D
from tfgraft.layers import StripeConv2D
from tfgraft.layers import stripe_conv
from tfgraft.stripe import prune
from tfgraft.stripe import skeleton
from tfgraft.stripe import trainer as trainer_lib
from tfgraft.testing import devices
from tfgraft.training import optimizers
from train import flags as flags_lib

THRESHOLD = 0.01


def _zoo(name, width=0.25, **kwargs):
    keras.utils.set_random_seed(1)
    return models.build_model(
        name,
        preset="pff",
        width_mult=width,
        conv_layer=StripeConv2D,
        **kwargs,
    )


def _randomize(model, seed, dead=0.4):
    """Random skeletons (>= `dead` stripes at |FS| <= 0.01), BN statistics."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, StripeConv2D):
            fs = rng.uniform(0.05, 1.5, layer.filter_skeleton.shape)
            fs *= rng.choice([-1.0, 1.0], fs.shape)
            off = rng.random(fs.shape) < dead
            fs[off] = rng.uniform(-0.01, 0.01, off.sum())
            layer.filter_skeleton.assign(fs.astype("f4"))
        elif isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("f4"))
            layer.beta.assign(rng.normal(0, 0.2, c).astype("f4"))
            layer.moving_mean.assign(rng.normal(0, 0.2, c).astype("f4"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, c).astype("f4"))
    return model


def _images(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, 32, 32, 3)).astype("f4")


def _tiny_net(bn=True):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    x = StripeConv2D(4, 3, use_bias=False, name="c1")(inputs)
    if bn:
        x = keras.layers.BatchNormalization(name="b1")(x)
    x = keras.layers.ReLU()(x)
    x = StripeConv2D(4, 3, use_bias=False, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


def _mirrored():
    # One strategy per process, shared with the other test files.
    return devices.mirrored_strategy()


class SkeletonTest(tf.test.TestCase, parameterized.TestCase):
    def test_update_math(self):
        fs = np.array([[[0.5, -0.005, 0.02], [0.0, 0.01, -0.3]]], "f4")
        grad = np.array([[[0.1, 0.2, -0.3], [0.4, 0.5, 0.6]]], "f4")
        new_fs, new_grad, alive = skeleton.skeleton_update(fs, grad, 0.1, 0.01)
        keep = np.abs(fs) > 0.01
        self.assertAllEqual(new_fs, fs * keep)
        want = (grad + 0.1 * np.sign(fs)) * keep
        self.assertAllClose(new_grad, want, atol=1e-7)
        self.assertAllEqual(alive, [True, False, True])

    def test_plan_resnet(self):
        plan = skeleton.skeleton_plan(_zoo("resnet20", shortcut="projection"))
        by_name = {p.name: p for p in plan.pruned}
        self.assertFalse(by_name["stem_conv"].removable)
        self.assertIsNone(by_name["stem_conv"].bn)
        self.assertEqual(by_name["stage2_block1_conv1"].bn, "stage2_block1_bn1")
        self.assertTrue(by_name["stage2_block1_conv1"].removable)
        self.assertFalse(by_name["stage2_block1_conv2"].removable)
        self.assertEqual(
            plan.free,
            ("stage2_block0_shortcut_conv", "stage3_block0_shortcut_conv"),
        )
        self.assertLen(plan.pruned, 19)

    def test_plan_vgg(self):
        plan = skeleton.skeleton_plan(_zoo("vgg16", width=0.125))
        self.assertLen(plan.pruned, 13)
        for i, p in enumerate(plan.pruned):
            self.assertEqual(
                (p.name, p.bn, p.removable), (f"conv{i}", f"bn{i}", True)
            )

    def test_no_stripe_layers(self):
        model = models.build_model("resnet20", width_mult=0.25)
        with self.assertRaisesRegex(
            skeleton.StripePruningError, "no StripeConv2D"
        ):
            prune.compact(model, THRESHOLD)


class StripeTrainerTest(tf.test.TestCase, parameterized.TestCase):
    def _trainer(self, strategy, net_fn, sr=0.1, threshold=0.05, batch=8):
        with strategy.scope():
            net = net_fn()
            opt = optimizers.TorchSGD(0.1, momentum=0.9, weight_decay=1e-4)
            trainer = trainer_lib.StripeTrainer(
                [net],
                [opt],
                strategy,
                sr=sr,
                threshold=threshold,
                global_batch_size=batch,
            )
        return trainer

    def test_errors_name_python_arguments(self):
        for kwargs, message in (
            (dict(sr=-0.1, threshold=0.0), "StripeTrainer: sr=-0.1 must"),
            (dict(sr=0.0, threshold=-1), "StripeTrainer: threshold=-1 must"),
            (
                dict(sr=0.0, threshold=float("nan")),
                "StripeTrainer: threshold=nan must",
            ),
        ):
            with self.assertRaises(ValueError) as ctx:
                trainer_lib.StripeTrainer(
                    [], [], None, global_batch_size=8, **kwargs
                )
            self.assertEqual(str(ctx.exception), message + " be >= 0")

    def test_transform_gradients(self):
        trainer = self._trainer(tf.distribute.get_strategy(), _tiny_net)
        net = trainer.nets[0]
        fs = np.full((3, 3, 4), 0.5, "f4")
        fs[:, :, 1] = 0.04  # every stripe of filter 1 dies
        fs[0, 0, 2] = -0.03  # one stripe of filter 2 dies
        net.get_layer("c1").filter_skeleton.assign(fs)
        variables = net.trainable_variables
        grads = [tf.ones_like(v) for v in variables]
        out = trainer.transform_gradients(0, grads)
        index = {id(v): i for i, v in enumerate(variables)}
        c1, b1 = net.get_layer("c1"), net.get_layer("b1")
        keep = np.abs(fs) > 0.05
        self.assertAllEqual(c1.filter_skeleton.numpy(), fs * keep)
        g = out[index[id(c1.filter_skeleton)]].numpy()
        self.assertAllClose(g, (1 + 0.1 * np.sign(fs)) * keep, atol=1e-7)
        self.assertAllEqual(g[~keep], np.zeros((~keep).sum()))
        for var in (b1.gamma, b1.beta):
            self.assertAllEqual(var.numpy()[1], 0.0)
            self.assertAllEqual(out[index[id(var)]].numpy()[1], 0.0)
            self.assertAllEqual(
                out[index[id(var)]].numpy()[[0, 2, 3]], np.ones(3)
            )
        self.assertAllEqual(b1.gamma.numpy()[[0, 2, 3]], np.ones(3))

    def test_inactive_without_sr(self):
        trainer = self._trainer(tf.distribute.get_strategy(), _tiny_net, sr=0.0)
        grads = [tf.ones_like(v) for v in trainer.nets[0].trainable_variables]
        out = trainer.transform_gradients(0, grads)
        for a, b in zip(out, grads):
            self.assertAllEqual(a, b)

    def test_mirrored_equals_single_device(self):
        images = (
            np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 3)).astype("f4")
        )
        labels = np.arange(8, dtype="int32") % 3
        ds = (
            tf.data.Dataset.from_tensor_slices((images, labels))
            .batch(8)
            .repeat()
        )

        def net_fn():
            net = _tiny_net(bn=False)
            fs = net.get_layer("c1").filter_skeleton
            fs.assign(np.linspace(-1, 1, 36, dtype="f4").reshape(3, 3, 4))
            return net

        results = []
        for strategy in (
            _mirrored(),
            tf.distribute.OneDeviceStrategy("/cpu:0"),
        ):
            trainer = self._trainer(strategy, net_fn, sr=0.05, threshold=0.1)
            it = iter(strategy.experimental_distribute_dataset(ds))
            trainer.train_loop([it], 3)
            fs = trainer.nets[0].get_layer("c1").filter_skeleton
            copies = strategy.experimental_local_results(fs.value)
            for c in copies[1:]:
                self.assertAllEqual(c, copies[0])
            results.append(fs.numpy())
        self.assertAllClose(results[0], results[1], atol=1e-5)
        # Stripes that started at or below the threshold stay exactly 0.
        start = np.linspace(-1, 1, 36).reshape(3, 3, 4)
        dead = results[0][np.abs(start) <= 0.1]
        self.assertAllEqual(dead, np.zeros_like(dead))


class CompactTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("vgg16", "vgg16", None, 1.0),
        ("resnet56", "resnet56", "projection", 1.0),
        ("resnet20_option_a", "resnet20", "A", 0.5),
    )
    def test_compact_equals_masked(self, name, shortcut, width):
        # METHODS §2.6 check 4 on the full-size networks.
        kwargs = {"shortcut": shortcut} if shortcut else {}
        model = _randomize(_zoo(name, width=width, **kwargs), seed=5)
        masked = prune.hard_mask(model, THRESHOLD)
        result = prune.compact(masked, THRESHOLD)
        self.assertEqual(result.removed_blocks, ())
        x = _images(2)
        want = masked(x, training=False).numpy()
        got = result.model(x, training=False).numpy()
        self.assertAllClose(got, want, rtol=1e-4, atol=1e-4)
        kept = sum(s.kept_stripes for s in result.layers)
        total = sum(s.stripes for s in result.layers)
        self.assertLess(kept / total, 0.7)
        compacts = [
            layer
            for layer in result.model.layers
            if isinstance(layer, CompactStripeConv2D)
        ]
        self.assertLen(compacts, len(result.layers))

    def test_formulations_agree(self):
        model = _randomize(_zoo("resnet20", shortcut="projection"), seed=6)
        masked = prune.hard_mask(model, THRESHOLD)
        x = _images(2)
        want = masked(x).numpy()
        for formulation in ("dense", "shift_add", "shift_add_matmul", "im2col"):
            got = prune.compact(masked, THRESHOLD, formulation=formulation)
            self.assertAllClose(got.model(x), want, rtol=1e-4, atol=1e-4)

    def test_calibrate_stores_measured_choices(self):
        model = _randomize(_zoo("resnet20", shortcut="projection"), seed=7)
        masked = prune.hard_mask(model, THRESHOLD)
        x = _images(2)
        want = masked(x).numpy()
        result = prune.compact(
            masked, THRESHOLD, formulation="calibrate", calibrate_batch=2
        )
        self.assertAllClose(result.model(x), want, rtol=1e-4, atol=1e-4)
        for stats in result.layers:
            layer = result.model.get_layer(stats.name)
            self.assertIn(
                stats.formulation, stripe_conv.CALIBRATION_CANDIDATES
            )
            self.assertEqual(
                layer.get_config()["formulation"], stats.formulation
            )

    def test_reference_counts(self):
        # METHODS §2.6 check 5: the unpruned reference numbers.
        for name, kwargs, flops, params in (
            ("vgg16", {}, 627_358_218, 14_762_058),
            ("resnet56", {"shortcut": "projection"}, 252_585_226, 874_154),
        ):
            model = _zoo(name, width=1.0, **kwargs)
            result = complexity.count(model, "pff")
            self.assertEqual((result.flops, result.params), (flops, params))

    def test_dead_filters_leave_bn_conv_and_fc(self):
        model = _zoo("vgg16", width=0.125)
        conv = model.get_layer("conv12")  # 64 filters -> fc
        fs = np.ones(conv.filter_skeleton.shape, "f4")
        fs[:, :, [3, 7, 9]] = 0.0
        fs[1, 2, 5] = 0.0  # a single dead stripe keeps filter 5
        conv.filter_skeleton.assign(fs)
        conv4 = model.get_layer("conv4")
        fs4 = np.ones(conv4.filter_skeleton.shape, "f4")
        fs4[:, :, :10] = 0.0
        conv4.filter_skeleton.assign(fs4)
        masked = prune.hard_mask(model, THRESHOLD)
        result = prune.compact(masked, THRESHOLD)
        m = result.model
        self.assertEqual(m.get_layer("conv12").filters, 61)
        self.assertEqual(m.get_layer("conv12").num_stripes, 61 * 9 - 1)
        self.assertEqual(m.get_layer("bn12").gamma.shape, (61,))
        self.assertEqual(m.get_layer("fc").kernel.shape, (61, 10))
        self.assertEqual(m.get_layer("conv4").filters, 22)
        self.assertEqual(m.get_layer("bn4").moving_mean.shape, (22,))
        self.assertEqual(m.get_layer("conv5").kernel.shape[2], 22)
        x = _images(2, seed=1)
        self.assertAllClose(m(x), masked(x), rtol=1e-4, atol=1e-4)
        # The counts follow: conv5 reads 22 channels, the FC 61 inputs.
        costs = complexity.count(m, "pff").as_dict()
        p5 = m.get_layer("conv5").num_stripes
        self.assertEqual(costs["conv5"].flops, 2 * 22 * p5 * 8 * 8)
        self.assertEqual(costs["bn12"].flops, 2 * 61 * 2 * 2)
        self.assertEqual(costs["fc"].flops, 2 * 61 * 10 + 10)
        stats = {s.name: s for s in result.layers}
        self.assertEqual(stats["conv12"].kept_filters, 61)
        self.assertEqual(stats["conv12"].per_position[1][2], 60)

    def test_every_stripe_pruned_in_vgg_layer(self):
        model = _zoo("vgg16", width=0.125)
        fs = model.get_layer("conv5").filter_skeleton
        fs.assign(np.zeros(fs.shape, "f4"))
        with self.assertRaises(skeleton.StripePruningError) as ctx:
            prune.compact(model, THRESHOLD)
        # The layer and the Python argument; the CLI's flags elsewhere.
        self.assertEqual(
            str(ctx.exception),
            f"Every stripe of layer 'conv5' is pruned (|FS| <= threshold="
            f"{THRESHOLD}) and no shortcut bypasses it: the compact network "
            "would be cut. Lower threshold (or train with a lower sr).",
        )
        self.assertIn(
            f"<= --threshold={THRESHOLD}) and no shortcut bypasses it: the "
            "compact network would be cut. Lower --threshold (or train with "
            "a lower --sr).",
            flags_lib.flag_message(ctx.exception),
        )

    def _cut_blocks(self):
        model = _randomize(_zoo("resnet20", shortcut="projection"), seed=7)
        fs = model.get_layer("stage1_block1_conv1").filter_skeleton
        fs.assign(np.zeros(fs.shape, "f4"))
        fs = model.get_layer("stage2_block0_conv2").filter_skeleton
        fs.assign(np.zeros(fs.shape, "f4"))
        return prune.hard_mask(model, THRESHOLD)

    def test_cut_blocks_become_constants(self):
        masked = self._cut_blocks()
        result = prune.compact(masked, THRESHOLD)
        self.assertLen(result.removed_blocks, 2)
        names = {layer.name for layer in result.model.layers}
        self.assertNotIn("stage1_block1_conv2", names)
        self.assertIn("stage1_block1_out", names)
        const = result.model.get_layer("stage2_block0_add_branch_constant")
        self.assertIsInstance(const, prune.BranchConstant)
        # BN2 of zeros: beta - gamma * mean / sqrt(var + eps).
        bn = masked.get_layer("stage2_block0_bn2")
        want = bn.beta.numpy() - bn.gamma.numpy() * bn.moving_mean.numpy() / (
            np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        )
        self.assertAllClose(const.values, want, atol=1e-5)
        x = _images(2, seed=2)
        self.assertAllClose(
            result.model(x), masked(x, training=False), rtol=1e-4, atol=1e-4
        )

    def test_every_stripe_pruned_in_resnet_block(self):
        # The reference replaces such a block by its shortcut.
        masked = self._cut_blocks()
        result = prune.compact(masked, THRESHOLD, dead_branches="shortcut")
        self.assertEqual(
            result.removed_blocks,
            (
                ("stage1_block1_add", "stage1_block1_conv1"),
                ("stage2_block0_add", "stage2_block0_conv2"),
            ),
        )
        names = {layer.name for layer in result.model.layers}
        for gone in (
            "stage1_block1_conv2",
            "stage1_block1_out",
            "stage2_block0_bn1",
        ):
            self.assertNotIn(gone, names)
        self.assertIn("stage2_block0_shortcut_bn", names)
        # Block 2 now reads block 0's output directly.
        x = _images(2, seed=2)
        before = keras.Model(
            masked.inputs, masked.get_layer("stage1_block0_out").output
        )(x)
        after = keras.Model(
            result.model.inputs,
            result.model.get_layer("stage1_block2_conv1").input,
        )(x)
        self.assertAllClose(after, before, atol=1e-5)
        # Block 1 of stage 2 reads the projection's BN output (no ReLU).
        proj = keras.Model(
            result.model.inputs,
            result.model.get_layer("stage2_block0_shortcut_bn").output,
        )(x)
        reads = keras.Model(
            result.model.inputs,
            result.model.get_layer("stage2_block1_conv1").input,
        )(x)
        self.assertAllClose(reads, proj, atol=1e-5)
        self.assertLess(float(tf.reduce_min(reads)), 0.0)

    def test_auto_named_sequential(self):
        # A user's model, no names given: every step names its own layers.
        def make():
            return keras.Sequential(
                [
                    keras.Input((8, 8, 3)),
                    StripeConv2D(4, 3, padding="same", use_bias=False),
                    keras.layers.BatchNormalization(),
                    keras.layers.ReLU(),
                    StripeConv2D(4, 3, padding="same", use_bias=False),
                    keras.layers.BatchNormalization(),
                    keras.layers.ReLU(),
                    keras.layers.GlobalAveragePooling2D(),
                    keras.layers.Dense(3),
                ]
            )

        keras.utils.set_random_seed(4)
        other, model = make(), _randomize(make(), seed=6)
        masked = prune.hard_mask(model, THRESHOLD)
        result = prune.compact(masked, THRESHOLD)
        x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("f4")
        self.assertAllClose(
            result.model(x, training=False),
            masked(x, training=False),
            rtol=1e-5,
            atol=1e-5,
        )
        self.assertLess(
            complexity.count(result.model, "pff").flops,
            complexity.count(model, "pff").flops,
        )
        # A plan names its own model's layers; another model's is refused.
        with self.assertRaisesRegex(
            ValueError,
            r"plan names layer 'stripe_conv2d_\d+', which model "
            r"'sequential(_\d+)?' does not have.*plan=skeleton_plan\(model\)",
        ):
            prune.layer_stripes(other, THRESHOLD, skeleton.skeleton_plan(model))
        with self.assertRaisesRegex(ValueError, "plan names layer"):
            prune.apply_hard_mask(
                other, THRESHOLD, skeleton.skeleton_plan(model)
            )

    def test_negative_threshold(self):
        with self.assertRaisesRegex(ValueError, "threshold=-1"):
            prune.compact(_zoo("resnet20"), -1)

    @pytest.mark.large
    def test_saved_model_without_tfgraft(self):
        model = _randomize(_zoo("resnet20", shortcut="projection"), seed=8)
        result = prune.compact(prune.hard_mask(model, THRESHOLD), THRESHOLD)
        tmp = self.get_temp_dir()
        path = export_lib.export_saved_model(
            result.model, os.path.join(tmp, "compact")
        )
        x = _images(3, seed=3)
        np.save(os.path.join(tmp, "x.npy"), x)
        script = textwrap.dedent(
            f"""
            import sys
            import numpy as np
            import tensorflow as tf
            loaded = tf.saved_model.load({path!r})
            x = np.load({os.path.join(tmp, "x.npy")!r})
            np.save({os.path.join(tmp, "y.npy")!r}, loaded.serve(x).numpy())
            assert not [m for m in sys.modules if m.startswith("tfgraft")]
            """
        )
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        subprocess.run(
            [sys.executable, "-c", script],
            check=True,
            env=env,
            cwd=tmp,
            capture_output=True,
        )
        got = np.load(os.path.join(tmp, "y.npy"))
        self.assertAllClose(got, result.model(x), atol=1e-5)


if __name__ == "__main__":
    tf.test.main()
