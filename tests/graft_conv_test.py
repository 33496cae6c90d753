"""Tests for tfgraft.layers.GraftConv2D."""

import json
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.grafting import criteria
from tfgraft.layers import GraftConv2D

INPUT_SHAPE = (2, 8, 8, 4)


def _inputs(seed=0):
    return np.random.default_rng(seed).normal(size=INPUT_SHAPE).astype("f4")


def _model(layer):
    inputs = keras.Input(INPUT_SHAPE[1:])
    return keras.Model(inputs, layer(inputs))


class GraftConv2DTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("entropy_layer", "entropy", "layer", criteria.entropy, ()),
        ("l1_layer", "l1", "layer", criteria.l1, ()),
        ("entropy_filter", "entropy", "filter", criteria.filter_entropy, (6,)),
        ("l1_filter", "l1", "filter", criteria.filter_l1, (6,)),
    )
    def test_information(self, criterion, level, fn, shape):
        layer = GraftConv2D(6, 3, criterion=criterion, level=level)
        layer.build(INPUT_SHAPE)
        got = layer.information()
        self.assertEqual(got.dtype, tf.float32)
        self.assertEqual(tuple(got.shape), shape)
        self.assertAllClose(got, fn(layer.kernel.numpy()), atol=1e-6)
        # It follows the current kernel, also inside a tf.function.
        new_kernel = np.random.default_rng(1).normal(size=(3, 3, 4, 6))
        layer.kernel.assign(new_kernel.astype("f4"))
        self.assertAllClose(
            tf.function(layer.information)(),
            fn(new_kernel.astype("f4")),
            atol=1e-6,
        )

    def test_information_values(self):
        layer = GraftConv2D(2, 1, criterion="l1", level="filter")
        layer.build((1, 4, 4, 3))
        layer.kernel.assign(np.array([[[[1, -2], [0, 3], [-4, 0]]]], "f4"))
        self.assertAllClose(layer.information(), [5.0, 5.0])
        layer.kernel.assign(np.arange(6.0, dtype="f4").reshape(1, 1, 3, 2))
        entropy_layer = GraftConv2D(2, 1)
        entropy_layer.build((1, 4, 4, 3))
        entropy_layer.kernel.assign(layer.kernel)
        # 0..5: the max is not counted, five singleton bins: ln(6) * 5/6.
        self.assertAllClose(
            entropy_layer.information(), 5 / 6 * np.log(6), atol=1e-6
        )

    def test_information_before_build(self):
        with self.assertRaisesRegex(ValueError, "build it before"):
            GraftConv2D(4, 3).information()

    @parameterized.named_parameters(
        ("criterion", dict(criterion="l2"), "criterion=l2"),
        ("level", dict(level="block"), "level=block"),
    )
    def test_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            GraftConv2D(4, 3, **kwargs)

    @parameterized.named_parameters(
        ("valid", (8, 3), {}),
        ("positional_stride_same", (8, 3, 2, "same"), {}),
        ("no_bias", (5, 1), dict(use_bias=False, padding="same")),
        ("dilated", (4, 3), dict(dilation_rate=2, activation="relu")),
        ("grouped", (4, 3), dict(groups=2, padding="same")),
    )
    def test_matches_conv2d(self, args, kwargs):
        graft = GraftConv2D(*args, criterion="l1", **kwargs)
        plain = keras.layers.Conv2D(*args, **kwargs)
        x = _inputs()
        y = graft(x)
        plain(x)
        self.assertEqual(len(graft.weights), len(plain.weights))
        plain.set_weights(graft.get_weights())
        self.assertEqual(y.shape, plain(x).shape)
        self.assertAllClose(y, plain(x), atol=1e-6)

    def test_config_json_round_trip(self):
        layer = GraftConv2D(
            8, 3, strides=2, padding="same", criterion="l1", level="filter"
        )
        blob = json.dumps(keras.saving.serialize_keras_object(layer))
        restored = keras.saving.deserialize_keras_object(json.loads(blob))
        self.assertIsInstance(restored, GraftConv2D)
        self.assertEqual(restored.get_config(), layer.get_config())
        self.assertEqual(restored.criterion, "l1")
        self.assertEqual(restored.level, "filter")
        self.assertEqual(restored.strides, (2, 2))

    def test_keras_file_round_trip(self):
        model = _model(GraftConv2D(8, 3, padding="same", level="filter"))
        path = os.path.join(self.get_temp_dir(), "graft.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        layer = restored.layers[-1]
        self.assertIsInstance(layer, GraftConv2D)
        self.assertEqual(layer.level, "filter")
        x = _inputs(2)
        self.assertAllClose(restored(x), model(x), atol=1e-6)
        self.assertAllClose(
            layer.information(), model.layers[-1].information(), atol=1e-6
        )

    def test_saved_model_export(self):
        model = _model(GraftConv2D(8, 3, padding="same", activation="relu"))
        path = os.path.join(self.get_temp_dir(), "graft_saved_model")
        model.export(path, format="tf_saved_model", verbose=False)
        served = tf.saved_model.load(path)
        x = _inputs(3)
        self.assertAllClose(served.serve(x), model(x), atol=1e-5)


if __name__ == "__main__":
    tf.test.main()
