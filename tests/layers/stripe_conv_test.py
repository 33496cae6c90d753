"""Tests for tfgraft.layers.StripeConv2D and CompactStripeConv2D."""

import json
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import complexity
from tfgraft.layers import CompactStripeConv2D
from tfgraft.layers import StripeConv2D
from tfgraft.layers import stripe_conv
from tfgraft.testing import test_case

INPUT_SHAPE = (2, 8, 8, 4)
FORMULATIONS = (
    "dense",
    "shift_add",
    "shift_add_matmul",
    "im2col",
    "shift_add_segment",
    "auto",
)


def _inputs(shape=INPUT_SHAPE, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("f4")


def _layer(x, **kwargs):
    layer = StripeConv2D(**kwargs)
    layer(x)
    return layer


def _random_skeleton(layer, seed, dead=0.4):
    """Random skeleton with a share `dead` of entries at or below 0.01."""
    rng = np.random.default_rng(seed)
    fs = rng.uniform(0.05, 1.5, layer.filter_skeleton.shape)
    fs *= rng.choice([-1.0, 1.0], fs.shape)
    dead_mask = rng.random(fs.shape) < dead
    fs[dead_mask] = rng.uniform(-0.01, 0.01, dead_mask.sum())
    layer.filter_skeleton.assign(fs.astype("f4"))
    return np.abs(fs) > 0.01


class StripeConv2DTest(tf.test.TestCase, parameterized.TestCase):
    def test_weights_and_shapes(self):
        layer = _layer(_inputs(), filters=6, kernel_size=3, strides=2)
        self.assertEqual(
            [w.name for w in layer.weights],
            ["kernel", "bias", "filter_skeleton"],
        )
        self.assertEqual(tuple(layer.filter_skeleton.shape), (3, 3, 6))
        self.assertAllEqual(layer.filter_skeleton.numpy(), np.ones((3, 3, 6)))
        self.assertLen(layer.trainable_weights, 3)
        # Symmetric padding k // 2 at stride 2: ceil(8 / 2) = 4.
        self.assertEqual(tuple(layer(_inputs()).shape), (2, 4, 4, 6))
        self.assertEqual(
            layer.compute_output_shape((None, 7, 7, 4)), (None, 4, 4, 6)
        )

    @parameterized.named_parameters(
        ("symmetric_s1", "symmetric", 1, 3, True),
        ("symmetric_s2", "symmetric", 2, 3, False),
        ("same_s2", "same", 2, 3, True),
        ("valid_s1", "valid", 1, 3, False),
        ("symmetric_1x1_s2", "symmetric", 2, 1, False),
    )
    def test_unit_skeleton_equals_dense_conv(self, padding, stride, k, bias):
        x = _inputs()
        layer = _layer(
            x,
            filters=5,
            kernel_size=k,
            strides=stride,
            padding=padding,
            use_bias=bias,
        )
        plain = keras.layers.Conv2D(
            5,
            k,
            strides=stride,
            padding="valid" if padding == "symmetric" else padding,
            use_bias=bias,
        )
        xin = x
        if padding == "symmetric":
            xin = np.pad(
                x, [(0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)]
            )
        plain(xin)
        plain.set_weights(layer.get_weights()[: len(plain.weights)])
        want = plain(xin).numpy()
        got = layer(x).numpy()
        self.assertEqual(got.shape, want.shape)
        self.assertAllClose(got, want, rtol=1e-6, atol=1e-6)

    @parameterized.named_parameters(
        ("s1", 1, (1, 1, 1, 1)),
        ("s2", 2, (1, 1, 1, 1)),
    )
    def test_numpy_reference(self, stride, pads):
        x = _inputs()
        layer = _layer(x, filters=6, kernel_size=3, strides=stride)
        _random_skeleton(layer, 1)
        kernel = (
            layer.kernel.numpy() * layer.filter_skeleton.numpy()[:, :, None, :]
            + 0.0
        )
        want = test_case.numpy_conv2d(x, kernel, stride, pads)
        want += layer.bias.numpy()
        self.assertAllClose(layer(x), want, rtol=5e-4, atol=1e-5)

    def test_skeleton_gradient_is_sum_of_kernel_times_grad(self):
        x = _inputs()
        layer = _layer(x, filters=6, kernel_size=3, use_bias=False)
        _random_skeleton(layer, 2)
        target = _inputs((2, 8, 8, 6), seed=3)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x) - target))
        g_fs = tape.gradient(loss, layer.filter_skeleton).numpy()
        # G = dL / d(kernel * FS), from a plain conv on the folded kernel.
        folded = tf.Variable(
            layer.kernel.numpy() * layer.filter_skeleton.numpy()[:, :, None]
        )
        xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        with tf.GradientTape() as tape:
            y = tf.nn.conv2d(xp, folded, 1, "VALID")
            loss = tf.reduce_sum(tf.square(y - target))
        g = tape.gradient(loss, folded).numpy()
        want = np.sum(layer.kernel.numpy() * g, axis=2)
        self.assertAllClose(g_fs, want, rtol=1e-5, atol=1e-5)

    def test_skeleton_is_float32_under_mixed_precision(self):
        layer = StripeConv2D(4, 3, dtype="mixed_bfloat16")
        y = layer(_inputs())
        self.assertEqual(layer.filter_skeleton.dtype, "float32")
        self.assertEqual(y.dtype, "bfloat16")

    @parameterized.named_parameters(
        ("padding", dict(padding="causal"), "padding=causal"),
        ("groups", dict(groups=2), "groups=2"),
        ("dilation", dict(dilation_rate=2), "dilation_rate"),
    )
    def test_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            StripeConv2D(4, 3, **kwargs)

    def test_negative_threshold(self):
        layer = _layer(_inputs(), filters=4, kernel_size=3)
        with self.assertRaisesRegex(ValueError, "threshold=-0.1"):
            layer.stripe_mask(-0.1)
        with self.assertRaisesRegex(ValueError, "threshold=-0.1"):
            layer.to_compact(-0.1)

    def test_every_stripe_pruned(self):
        layer = _layer(_inputs(), filters=4, kernel_size=3, name="c7")
        layer.filter_skeleton.assign(np.full((3, 3, 4), 0.005, "f4"))
        with self.assertRaisesRegex(ValueError, "'c7' has every stripe pruned"):
            layer.to_compact(0.01)

    def test_config_json_round_trip(self):
        layer = StripeConv2D(8, 3, strides=2, use_bias=False, name="s")
        restored = test_case.config_round_trip(layer)
        self.assertIsInstance(restored, StripeConv2D)
        self.assertEqual(restored.get_config(), layer.get_config())
        self.assertEqual(restored.padding, "symmetric")

    def test_keras_file_round_trip(self):
        inputs = keras.Input(INPUT_SHAPE[1:])
        layer = StripeConv2D(6, 3, strides=2)
        model = keras.Model(inputs, layer(inputs))
        _random_skeleton(layer, 4)
        restored = test_case.keras_round_trip(model, self.get_temp_dir())
        x = _inputs(seed=5)
        self.assertAllClose(restored(x), model(x), atol=1e-6)
        self.assertAllClose(
            restored.layers[-1].filter_skeleton, layer.filter_skeleton
        )

    def test_complexity_hooks(self):
        inputs = keras.Input((8, 8, 4))
        layer = StripeConv2D(6, 3, strides=2, name="s")
        model = keras.Model(inputs, layer(inputs))
        pff = complexity.count(model, "pff").as_dict()["s"]
        macs = complexity.count(model, "macs").as_dict()["s"]
        kernel = 3 * 3 * 4 * 6
        self.assertEqual(pff.flops, 2 * kernel * 16)
        self.assertEqual(pff.params, kernel + 6 + 3 * 3 * 6)
        self.assertEqual(macs.flops, kernel * 16)
        self.assertEqual(macs.params, kernel + 6)
        self.assertEqual(layer.reference_param_count(), kernel + 6 + 54)


class CompactStripeConv2DTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        (f"k{k}_s{s}_h{h}", k, s, h)
        for k in (1, 3)
        for s in (1, 2)
        for h in (7, 8, 32)
    )
    def test_compact_equals_masked_conv(self, k, s, h):
        x = _inputs((2, h, h, 4), seed=h)
        layer = _layer(x, filters=6, kernel_size=k, strides=s, use_bias=True)
        layer.bias.assign(_inputs((6,), seed=9))
        keep = _random_skeleton(layer, seed=10 * k + s, dead=0.4)
        # At least 30% of the stripes are zero, and some filter is empty
        # (it outputs its bias only).
        layer.filter_skeleton.assign(
            layer.filter_skeleton.numpy() * np.r_[0, np.ones(5)]
        )
        keep[..., 0] = False
        self.assertGreaterEqual(1 - keep.mean(), 0.3)
        masked = layer.folded_kernel() * keep[:, :, None, :]
        want = test_case.numpy_conv2d(x, masked, s, (k // 2,) * 4)
        want += layer.bias.numpy()
        scale = np.abs(want).max()
        for formulation in FORMULATIONS:
            compact = layer.to_compact(0.01, formulation=formulation)
            self.assertEqual(compact.num_stripes, keep.sum())
            got = compact(x).numpy()
            self.assertEqual(got.shape, want.shape)
            self.assertLessEqual(
                np.abs(got - want).max() / scale, 1e-5, formulation
            )

    def test_xla_matches(self):
        x = _inputs((2, 9, 9, 4))
        layer = _layer(x, filters=6, kernel_size=3, strides=2)
        _random_skeleton(layer, 11)
        want = layer.to_compact(0.01, formulation="dense")(x)
        for formulation in ("shift_add", "shift_add_matmul", "im2col"):
            compact = layer.to_compact(0.01, formulation=formulation)
            got = tf.function(compact.__call__, jit_compile=True)(x)
            self.assertAllClose(got, want, rtol=1e-5, atol=1e-5)

    def test_calibrate_picks_a_timed_formulation(self):
        x = _inputs((2, 9, 9, 4))
        layer = _layer(x, filters=6, kernel_size=3, strides=2)
        _random_skeleton(layer, 12)
        want = layer.to_compact(0.01, formulation="dense")(x)
        for jit, candidates in (
            (False, stripe_conv.CALIBRATION_CANDIDATES),
            (True, stripe_conv.CALIBRATION_CANDIDATES_XLA),
        ):
            compact = layer.to_compact(
                0.01,
                formulation="calibrate",
                calibrate_shape=(1, 9, 9, 4),
                jit_compile=jit,
            )
            # The choice is stored: a config round trip keeps it.
            chosen = compact.get_config()["formulation"]
            self.assertIn(chosen, candidates)
            self.assertEqual(compact._resolved, chosen)
            self.assertAllClose(compact(x), want, rtol=1e-5, atol=1e-5)
        with self.assertRaisesRegex(ValueError, "calibrate_shape"):
            layer.to_compact(0.01, formulation="calibrate")
        kernel = layer.folded_kernel()
        mask = layer.stripe_mask(0.01)
        with self.assertRaisesRegex(ValueError, "include 'dense'"):
            stripe_conv.calibrate_formulation(
                kernel, mask, (1, 9, 9, 4), candidates=("shift_add",)
            )
        # Timings of every candidate come back; a stripe formulation wins
        # only by more than the margin (here: never).
        choice, times = stripe_conv.calibrate_formulation(
            kernel, mask, (1, 9, 9, 4), strides=(2, 2), margin=1.0
        )
        self.assertEqual(choice, "dense")
        self.assertEqual(set(times), set(stripe_conv.CALIBRATION_CANDIDATES))

    def test_layer_jit_compile(self):
        x = _inputs((2, 8, 8, 4))
        layer = _layer(x, filters=6, kernel_size=3)
        _random_skeleton(layer, 14)
        want = layer.to_compact(0.01, formulation="dense")(x)
        compact = layer.to_compact(
            0.01, formulation="shift_add", jit_compile=True
        )
        self.assertTrue(compact.get_config()["jit_compile"])
        self.assertAllClose(compact(x), want, rtol=1e-5, atol=1e-5)
        # "auto" with jit_compile picks between dense and shift_add only.
        auto = layer.to_compact(0.01, jit_compile=True)
        self.assertIn(auto._resolved, ("dense", "shift_add"))
        self.assertAllClose(auto(x), want, rtol=1e-5, atol=1e-5)

    def test_auto_cost_model(self):
        # Wide layers at high stripe sparsity take the stripe path, narrow
        # or dense-ish ones the dense convolution.
        for c, sparsity, want in (
            (512, 0.9, "shift_add_matmul"),
            (512, 0.3, "dense"),
            (16, 0.7, "dense"),
        ):
            x = _inputs((1, 4, 4, c))
            layer = _layer(x, filters=c, kernel_size=3, use_bias=False)
            fs = np.ones((3, 3, c), "f4")
            dead = np.random.default_rng(0).permutation(9 * c)
            fs.reshape(-1)[dead[: int(sparsity * 9 * c)]] = 0.0
            layer.filter_skeleton.assign(fs)
            self.assertEqual(layer.to_compact(0.01)._resolved, want)

    def test_kernel_is_position_major(self):
        x = _inputs()
        layer = _layer(x, filters=3, kernel_size=3, use_bias=False)
        fs = np.zeros((3, 3, 3), "f4")
        fs[0, 0, 2] = 2.0
        fs[1, 1, :] = [1.0, -0.5, 0.25]
        fs[2, 1, 0] = 3.0
        layer.filter_skeleton.assign(fs)
        compact = layer.to_compact(0.01, formulation="shift_add")
        order = [(0, 0, 2), (1, 1, 0), (1, 1, 1), (1, 1, 2), (2, 1, 0)]
        self.assertEqual(compact.stripe_order(), order)
        self.assertEqual(tuple(compact.kernel.shape), (1, 1, 4, 5))
        kernel = layer.kernel.numpy()
        for q, (i, j, o) in enumerate(order):
            self.assertAllClose(
                compact.kernel.numpy()[0, 0, :, q],
                kernel[i, j, :, o] * fs[i, j, o],
            )
        self.assertAllEqual(compact.stripe_mask(), np.abs(fs) > 0.01)
        # The dense formulation keeps the zero-filled kernel instead.
        dense = layer.to_compact(0.01, formulation="dense")
        self.assertTrue(dense.stores_dense_kernel)
        self.assertAllClose(
            dense.kernel, kernel * (fs * (np.abs(fs) > 0.01))[:, :, None]
        )
        self.assertEqual(dense.reference_param_count(), 4 * 5)

    def test_selects_inputs_and_filters(self):
        x = _inputs()
        layer = _layer(x, filters=5, kernel_size=3)
        fs = np.ones((3, 3, 5), "f4")
        fs[:, :, 1] = 0.0
        fs[:, :, 3] = 0.0
        layer.filter_skeleton.assign(fs)
        # Input channel 2 of 4 is dropped (zero in the masked input).
        x_masked = x.copy()
        x_masked[..., 2] = 0.0
        want = layer(x_masked).numpy()[..., [0, 2, 4]]
        compact = layer.to_compact(
            0.01, in_channels=[0, 1, 3], filters=[0, 2, 4]
        )
        got = compact(x[..., [0, 1, 3]])
        self.assertAllClose(got, want, rtol=1e-5, atol=1e-5)
        with self.assertRaisesRegex(ValueError, r"filters \[2\] still have"):
            layer.to_compact(0.01, filters=[0, 4])

    @parameterized.named_parameters(
        ("length", dict(stripes=[[0]] * 4), "one filter list per kernel"),
        ("range", dict(stripes=[[5]] + [[]] * 8), "in \\[0, 4\\)"),
        ("empty", dict(stripes=[[]] * 9), "at least one stripe"),
        (
            "formulation",
            dict(stripes=[[0]] * 9, formulation="fft"),
            "formulation=fft",
        ),
    )
    def test_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            CompactStripeConv2D(4, 3, **kwargs)

    def test_round_trips(self):
        x = _inputs()
        layer = _layer(x, filters=6, kernel_size=3, strides=2)
        _random_skeleton(layer, 12)
        inputs = keras.Input(INPUT_SHAPE[1:])
        compact = layer.to_compact(0.01, formulation="shift_add")
        model = keras.Model(inputs, compact(inputs))
        want = model(x).numpy()
        blob = json.dumps(keras.saving.serialize_keras_object(compact))
        restored = keras.saving.deserialize_keras_object(json.loads(blob))
        self.assertEqual(restored.get_config(), compact.get_config())
        path = os.path.join(self.get_temp_dir(), "compact.keras")
        model.save(path)
        self.assertAllClose(keras.saving.load_model(path)(x), want, atol=1e-6)
        export = os.path.join(self.get_temp_dir(), "compact_sm")
        model.export(export, format="tf_saved_model", verbose=False)
        loaded = tf.saved_model.load(export)
        self.assertAllClose(loaded.serve(x), want, atol=1e-5)

    def test_complexity_hooks(self):
        x = _inputs()
        layer = _layer(x, filters=6, kernel_size=3, strides=2)
        keep = _random_skeleton(layer, 13)
        inputs = keras.Input(INPUT_SHAPE[1:])
        compact = layer.to_compact(0.01)
        model = keras.Model(inputs, compact(inputs))
        p = int(keep.sum())
        pff = complexity.count(model, "pff").per_layer[0]
        macs = complexity.count(model, "macs").per_layer[0]
        # Reference: 1x1 conv (C_in -> P stripes) at the 4x4 output size.
        self.assertEqual(pff.flops, 2 * 4 * p * 16)
        # pff params include the reference's boolean (3, 3, 6) stripe mask.
        self.assertEqual(pff.params, 4 * p + 6 + 3 * 3 * 6)
        self.assertEqual(macs.flops, 4 * p * 16)
        self.assertEqual(compact.reference_param_count(), 4 * p + 6)


if __name__ == "__main__":
    tf.test.main()
