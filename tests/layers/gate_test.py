"""Tests for tfgraft.layers.gate (METHODS §3.8 checks 1-3, layer part)."""

import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.layers import gate as gate_lib
from tfgraft.testing import test_case


def _gate(channels=4, order=None, rate=1.0):
    gate = gate_lib.ChannelGate()
    gate.build((None, 3, 3, channels))
    if order is not None:
        gate.order.assign(np.asarray(order, np.float32))
    gate.rate.assign(rate)
    return gate


class ChannelGateTest(tf.test.TestCase, parameterized.TestCase):
    def test_forward_and_custom_gradient(self):
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(size=(2, 3, 3, 4)), tf.float32)
        dy = tf.constant(rng.normal(size=(2, 3, 3, 4)), tf.float32)
        gate = _gate(order=[3, 0, 2, 1], rate=0.5)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            tape.watch(gate.score.value)
            y = gate(x)
            loss = tf.reduce_sum(y * dy)
        mask = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
        self.assertAllClose(y, x.numpy() * mask, atol=0)
        # d/dx is the unmasked upstream gradient.
        self.assertAllClose(tape.gradient(loss, x), dy, atol=1e-6)
        want = np.abs((dy.numpy() * y.numpy()).sum(axis=(0, 1, 2)))
        got = tape.gradient(loss, gate.score.value).numpy()
        self.assertAllClose(got, want, atol=1e-6)
        self.assertGreater(got[1], 0.0)
        # Pruned channels score exactly zero.
        self.assertEqual(got[0], 0.0)
        self.assertEqual(got[2], 0.0)

    def test_shared_gate_sums_abs_terms_of_each_call(self):
        rng = np.random.default_rng(1)
        x1 = tf.constant(rng.normal(size=(2, 3, 3, 4)), tf.float32)
        x2 = tf.constant(rng.normal(size=(2, 3, 3, 4)), tf.float32)
        d1 = rng.normal(size=(2, 3, 3, 4)).astype("float32")
        d2 = rng.normal(size=(2, 3, 3, 4)).astype("float32")
        gate = _gate()
        with tf.GradientTape() as tape:
            tape.watch(gate.score.value)
            loss = tf.reduce_sum(gate(x1) * d1) + tf.reduce_sum(gate(x2) * d2)
        got = tape.gradient(loss, gate.score.value).numpy()
        want = np.abs((d1 * x1.numpy()).sum((0, 1, 2))) + np.abs(
            (d2 * x2.numpy()).sum((0, 1, 2))
        )
        self.assertAllClose(got, want, atol=1e-5)

    @parameterized.named_parameters(
        ("full", 16, 1.0, 16),
        ("ceil", 16, 0.8, 13),
        ("exact", 16, 0.75, 12),
        ("tenth", 10, 0.3, 3),
        ("at_least_one", 16, 0.01, 1),
        ("zero_rate", 8, 0.0, 1),
        ("negative_rate", 8, -0.2, 1),
        ("odd", 7, 0.55, 4),
    )
    def test_mask_keeps_smallest_orders(self, channels, rate, kept):
        rng = np.random.default_rng(channels)
        order = rng.permutation(channels)
        gate = _gate(channels, order, rate)
        mask = gate.mask().numpy()
        self.assertEqual(int(mask.sum()), kept)
        self.assertEqual(gate_lib.kept_channels(channels, rate), kept)
        # Exactly the `kept` channels with the smallest order values.
        self.assertAllEqual(
            np.flatnonzero(mask), np.sort(order.argsort()[:kept])
        )

    def test_kept_channels_agrees_with_mask_on_many_rates(self):
        gate = _gate(37, np.arange(37))
        for rate in np.round(np.linspace(0.0, 1.0, 203), 5):
            gate.rate.assign(rate)
            self.assertEqual(
                int(gate.mask().numpy().sum()),
                gate_lib.kept_channels(37, rate),
            )

    def test_set_order_from_scores_is_descending_stable_rank(self):
        gate = _gate(5)
        order = gate.set_order_from_scores([0.5, 2.0, 0.0, 2.0, 1.0])
        self.assertAllEqual(order, [3, 0, 4, 1, 2])


class MaskedKernelTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("conv", (3, 3, 4, 6)), ("dense", (5, 3)), ("pointwise", (1, 1, 4, 2))
    )
    def test_norm_is_preserved(self, shape):
        rng = np.random.default_rng(0)
        kernel = rng.normal(size=shape).astype("float32")
        in_mask = (rng.uniform(size=shape[-2]) < 0.6).astype("float32")
        in_mask[0] = 1.0
        out_mask = (rng.uniform(size=shape[-1]) < 0.6).astype("float32")
        out_mask[0] = 1.0
        got = gate_lib.masked_kernel(kernel, in_mask, out_mask).numpy()
        masked = kernel * in_mask[:, None] * out_mask
        want = masked * np.linalg.norm(kernel) / np.linalg.norm(masked)
        self.assertAllClose(got, want, rtol=1e-5)
        self.assertAllClose(
            np.linalg.norm(got), np.linalg.norm(kernel), rtol=1e-5
        )

    def test_all_ones_is_identity_and_zeros_stay_finite(self):
        kernel = np.arange(24, dtype="float32").reshape(2, 3, 4)
        got = gate_lib.masked_kernel(kernel, np.ones(3), np.ones(4)).numpy()
        self.assertAllClose(got, kernel, rtol=1e-6)
        zero = gate_lib.masked_kernel(np.zeros((3, 2)), np.ones(3)).numpy()
        self.assertAllEqual(zero, np.zeros((3, 2)))


class GatedLayersTest(tf.test.TestCase, parameterized.TestCase):
    def test_gated_conv_matches_numpy_reference(self):
        rng = np.random.default_rng(2)
        x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
        layer = gate_lib.GatedConv2D(6, 3, padding="same", use_bias=False)
        layer(x)
        self.assertLen(layer.weights, 3)
        self.assertLen(layer.trainable_weights, 1)
        in_mask = np.array([1, 0, 1, 1], np.float32)
        out_mask = np.array([1, 1, 0, 1, 0, 1], np.float32)
        layer.in_mask.assign(in_mask)
        layer.out_mask.assign(out_mask)
        kernel = layer.kernel.numpy()
        masked = kernel * in_mask[:, None] * out_mask
        masked *= np.linalg.norm(kernel) / np.linalg.norm(masked)
        self.assertAllClose(
            layer(x), test_case.numpy_conv2d(x, masked), rtol=5e-4, atol=1e-4
        )

    def test_gated_conv_with_ones_equals_conv2d(self):
        x = np.random.default_rng(3).normal(size=(2, 8, 8, 4))
        conv = keras.layers.Conv2D(5, 3, strides=2, padding="same")
        gated = gate_lib.GatedConv2D.from_config(conv.get_config())
        conv(x)
        gated(x)
        gated.set_weights(conv.get_weights() + [np.ones(4), np.ones(5)])
        self.assertAllClose(gated(x), conv(x), atol=1e-5)

    def test_gated_dense_masks_inputs(self):
        rng = np.random.default_rng(4)
        x = rng.normal(size=(3, 5)).astype("float32")
        layer = gate_lib.GatedDense(2)
        layer(x)
        mask = np.array([1, 0, 1, 0, 1], np.float32)
        layer.in_mask.assign(mask)
        kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
        masked = kernel * mask[:, None]
        masked *= np.linalg.norm(kernel) / np.linalg.norm(masked)
        self.assertAllClose(layer(x), x @ masked + bias, rtol=1e-5, atol=1e-6)

    def test_frozen_stats_batch_norm(self):
        rng = np.random.default_rng(5)
        x = rng.normal(2.0, 3.0, size=(4, 3, 3, 2)).astype("float32")
        bn = gate_lib.FrozenStatsBatchNormalization(epsilon=1e-5)
        bn.build(x.shape)
        bn.gamma.assign([1.5, 0.5])
        bn.beta.assign([0.1, -0.2])
        y = bn(x, training=True).numpy()
        mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
        want = (x - mean) / np.sqrt(var + 1e-5) * [1.5, 0.5] + [0.1, -0.2]
        self.assertAllClose(y, want, atol=1e-4)
        self.assertAllEqual(bn.moving_mean.numpy(), [0.0, 0.0])
        self.assertAllEqual(bn.moving_variance.numpy(), [1.0, 1.0])
        bn.moving_mean.assign([1.0, 2.0])
        y = bn(x, training=False).numpy()
        want = (x - [1.0, 2.0]) / np.sqrt(1 + 1e-5) * [1.5, 0.5] + [0.1, -0.2]
        self.assertAllClose(y, want, atol=1e-5)

    def test_frozen_stats_fused_matches_keras_ops(self):
        # 4-D inputs take the fused kernel: outputs and gradients (through
        # the batch statistics) as Keras's separate ops give them; 2-D
        # inputs take Keras's ops. Neither moves the moving statistics.
        rng = np.random.default_rng(6)
        for shape in [(4, 3, 3, 2), (6, 2)]:
            x = tf.constant(rng.normal(2.0, 3.0, size=shape), tf.float32)
            w = tf.constant(rng.normal(size=shape), tf.float32)
            frozen = gate_lib.FrozenStatsBatchNormalization(epsilon=1e-3)
            keras_bn = keras.layers.BatchNormalization(epsilon=1e-3)
            results = []
            for bn in (frozen, keras_bn):
                bn.build(shape)
                bn.gamma.assign([1.5, 0.5])
                bn.beta.assign([0.1, -0.2])
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = bn(x, training=True)
                    loss = tf.reduce_sum(y * w)
                grads = tape.gradient(loss, [x, bn.gamma.value, bn.beta.value])
                results.append([y] + grads)
            for a, b in zip(*results):
                self.assertAllClose(a, b, rtol=1e-5, atol=1e-5)
            self.assertAllEqual(frozen.moving_mean.numpy(), [0.0, 0.0])
            self.assertAllEqual(frozen.moving_variance.numpy(), [1.0, 1.0])

    @parameterized.named_parameters(
        ("gate", gate_lib.ChannelGate, {}),
        ("conv", gate_lib.GatedConv2D, {"filters": 3, "kernel_size": 3}),
        ("dense", gate_lib.GatedDense, {"units": 3}),
        ("bn", gate_lib.FrozenStatsBatchNormalization, {"momentum": 0.9}),
    )
    def test_config_round_trip(self, cls, kwargs):
        layer = cls(name="x", **kwargs)
        clone = test_case.config_round_trip(layer)
        self.assertIsInstance(clone, cls)
        self.assertEqual(clone.get_config(), layer.get_config())

    def test_keras_and_saved_model_round_trip(self):
        rng = np.random.default_rng(6)
        inputs = keras.Input((8, 8, 4))
        y = gate_lib.GatedConv2D(6, 3, padding="same", name="c")(inputs)
        y = gate_lib.FrozenStatsBatchNormalization(name="bn")(y)
        y = gate_lib.ChannelGate(name="g")(keras.layers.ReLU()(y))
        y = keras.layers.GlobalAveragePooling2D()(y)
        y = gate_lib.GatedDense(3, name="fc")(y)
        model = keras.Model(inputs, y)
        g = model.get_layer("g")
        g.rate.assign(0.5)
        g.order.assign(rng.permutation(6).astype("float32"))
        mask = g.mask().numpy()
        model.get_layer("c").out_mask.assign(mask)
        model.get_layer("fc").in_mask.assign(mask)
        x = rng.uniform(0, 1, (2, 8, 8, 4)).astype("float32")
        want = model(x, training=False).numpy()
        loaded = test_case.keras_round_trip(model, self.get_temp_dir())
        self.assertAllClose(loaded(x, training=False), want, atol=1e-6)
        self.assertAllEqual(loaded.get_layer("g").mask(), mask)
        export = os.path.join(self.get_temp_dir(), "sm")
        reloaded = test_case.saved_model_round_trip(model, export)
        self.assertAllClose(reloaded.serve(x), want, atol=1e-5)

    def test_own_variables_store_masks_and_check_count(self):
        # OwnVariablesMixin: kernel, bias, then the mask; a file with
        # another count fails naming the layer.
        layer = gate_lib.GatedDense(3, name="fc")
        layer.build((None, 4))
        layer.in_mask.assign([1.0, 0.0, 1.0, 0.0])
        store = {}
        layer.save_own_variables(store)
        self.assertEqual(list(store), ["0", "1", "2"])
        self.assertAllEqual(store["2"], [1.0, 0.0, 1.0, 0.0])
        other = gate_lib.GatedDense(3, name="fc2")
        other.build((None, 4))
        other.load_own_variables(store)
        self.assertAllEqual(other.in_mask, [1.0, 0.0, 1.0, 0.0])
        self.assertAllEqual(other.kernel, layer.kernel)
        with self.assertRaisesRegex(
            ValueError,
            "GatedDense 'fc2' expected 3 variables, but the file has 2",
        ):
            other.load_own_variables({"0": store["0"], "1": store["1"]})

    def test_gate_validates_channels(self):
        with self.assertRaisesRegex(ValueError, "known channel axis"):
            gate_lib.ChannelGate().build((None, 3, None))


if __name__ == "__main__":
    tf.test.main()
